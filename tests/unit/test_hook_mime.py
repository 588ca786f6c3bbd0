"""MIME type resolution: explicit > stored content type > magic bytes > extension, and clear failures."""

from __future__ import annotations

import pytest

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.mime import looks_like_text, resolve_mime_type, sniff_content

MAGIC = {
    "application/pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/gif": b"GIF89a\x01\x00\x01\x00",
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    "audio/wav": b"RIFF\x24\x08\x00\x00WAVEfmt ",
    "audio/mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "audio/flac": b"fLaC\x00\x00\x00\x22",
    "audio/ogg": b"OggS\x00\x02\x00\x00",
    "video/mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
    "video/quicktime": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00",
    "video/webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81",
    "audio/aiff": b"FORM\x00\x00\x00\x00AIFFCOMM",
}


@pytest.mark.parametrize(("expected", "head"), MAGIC.items(), ids=list(MAGIC))
def test_binary_formats_are_recognised_from_their_bytes_even_without_an_extension(expected, head):
    assert sniff_content(head) == expected
    assert resolve_mime_type(source="gs://bucket/incoming/upload-7731", head=head) == expected


def test_mp3_frame_sync_without_id3_tag_is_mp3_and_adts_is_aac():
    assert sniff_content(b"\xff\xfb\x90\x64\x00") == "audio/mp3"
    assert sniff_content(b"\xff\xf1\x50\x80\x00") == "audio/aac"


def test_content_wins_over_a_misleading_extension():
    assert resolve_mime_type(source="scan.bin", head=MAGIC["image/png"]) == "image/png"
    assert resolve_mime_type(source="report.txt", head=MAGIC["application/pdf"]) == "application/pdf"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("events.jsonl", "application/jsonl"),
        ("README.md", "text/markdown"),
        ("table.csv", "text/csv"),
        ("data.json", "application/json"),
        ("notes.txt", "text/plain"),
        ("page.html", "text/html"),
        ("gs://b/dir/CHANGES.MD", "text/markdown"),
    ],
)
def test_text_formats_follow_the_extension_when_the_content_is_text(name, expected):
    assert resolve_mime_type(source=name, head=b'{"a": 1}\n# title\nx,y\n') == expected


def test_unknown_extension_with_text_content_is_plain_text():
    head = "Grüße\nline two\n".encode()
    assert resolve_mime_type(source="/data/transcript.vtt2", head=head) == "text/plain"


def test_explicit_mime_type_wins_over_everything():
    got = resolve_mime_type(
        source="a.pdf", explicit="text/plain", stored="application/pdf", head=MAGIC["application/pdf"]
    )
    assert got == "text/plain"


def test_gcs_content_type_wins_over_sniffing_unless_generic():
    assert resolve_mime_type(source="gs://b/x.pdf", stored="image/png", head=None) == "image/png"
    assert resolve_mime_type(source="gs://b/x.pdf", stored="text/csv; charset=utf-8") == "text/csv"
    generic = "application/octet-stream"
    assert resolve_mime_type(source="gs://b/x", stored=generic, head=MAGIC["image/gif"]) == "image/gif"


def test_unknown_binary_content_is_a_clear_error_that_says_how_to_pass_mime_type():
    with pytest.raises(GeminiInputError) as info:
        resolve_mime_type(source="gs://bucket/blob.dat", head=b"\x00\x01\x02\x03garbage")
    message = str(info.value)
    assert "gs://bucket/blob.dat" in message
    assert "mime_type=" in message


def test_text_extension_with_binary_content_is_refused_rather_than_mislabelled():
    with pytest.raises(GeminiInputError, match=r"table\.csv.*text/csv"):
        resolve_mime_type(source="table.csv", head=b"\x00\x00\x00\x01\x02")


def test_malformed_explicit_mime_type_is_rejected_with_an_example():
    with pytest.raises(GeminiInputError, match=r"'pdf'.*type/subtype"):
        resolve_mime_type(source="a.pdf", explicit="pdf")


def test_text_detection_tolerates_a_utf8_character_cut_by_the_sniff_window():
    head = ("x" * 10 + "é").encode()[:-1]
    assert looks_like_text(head)
    assert not looks_like_text(b"abc\x00def")
    assert not looks_like_text(b"")
