"""MIME type resolution: explicit > stored content type > magic bytes > extension; only types Gemini takes."""

from __future__ import annotations

import mimetypes

import pytest

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.mime import (
    ALIASES,
    BATCH_INPUT_MIME_TYPES,
    EXTENSION_MIME_TYPES,
    SUPPORTED_MIME_TYPES,
    accepted_types,
    canonical,
    guess_from_name,
    is_supported,
    is_text_type,
    looks_like_text,
    needs_content,
    resolve_mime_type,
    sniff_content,
)

MAGIC = {
    "application/pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    "image/heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",
    "image/heif": b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00",
    "audio/wav": b"RIFF\x24\x08\x00\x00WAVEfmt ",
    "audio/mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "audio/flac": b"fLaC\x00\x00\x00\x22",
    "audio/ogg": b"OggS\x00\x02\x00\x00",
    "audio/aiff": b"FORM\x00\x00\x00\x00AIFFCOMM",
    "video/mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
    "video/quicktime": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00",
    "video/3gpp": b"\x00\x00\x00\x14ftyp3gp5\x00\x00\x00\x00",
    "video/webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81",
    "video/avi": b"RIFF\x24\x00\x00\x00AVI LIST",
}
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00"
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00"
BINARY = b"\x00\x01\x02\x03garbage\xff"
TEXT = b'{"a": 1}\n# title\nx,y\n'


@pytest.mark.parametrize(("expected", "head"), MAGIC.items(), ids=list(MAGIC))
def test_binary_formats_are_recognised_from_their_bytes_even_without_an_extension(expected, head):
    assert sniff_content(head) == expected
    assert resolve_mime_type(source="gs://bucket/incoming/upload-7731", head=head) == expected
    assert is_supported(expected)


def test_mp3_frame_sync_without_id3_tag_is_mp3_and_adts_is_aac():
    assert sniff_content(b"\xff\xfb") == "audio/mp3"  # two bytes are enough
    assert sniff_content(b"\xff\xf1\x50\x80\x00") == "audio/aac"
    assert sniff_content(b"\xff") is None
    assert sniff_content(b"\x00\xe0binary") is None  # sync bits need the 0xFF first byte


def test_sniffing_edge_cases():
    assert sniff_content(b"GIF87a\x01\x00") == sniff_content(b"GIF89a\x01\x00") == "image/gif"
    assert sniff_content(b"RIFF\x00\x00\x00\x00WAVE") == "audio/wav"  # the 12-byte minimum
    assert sniff_content(b"RIFF\x00\x00\x00\x00WAV") is None
    assert sniff_content(b"\x00\x00\x00\x0cftypisom") == "video/mp4"
    assert sniff_content(b"FORM\x00\x00\x00\x00AIFCCOMM") == "audio/aiff"
    assert sniff_content(b"MORF\x00\x00\x00\x00AIFFCOMM") is None
    assert sniff_content(b"plain words") is None


def test_content_wins_over_a_misleading_extension():
    assert resolve_mime_type(source="scan.bin", head=MAGIC["image/png"]) == "image/png"
    assert resolve_mime_type(source="report.txt", head=MAGIC["application/pdf"]) == "application/pdf"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("README.md", "text/markdown"),
        ("table.csv", "text/csv"),
        ("notes.txt", "text/plain"),
        ("page.html", "text/html"),
        ("gs://b/dir/CHANGES.MD", "text/markdown"),
        ("feed.xml", "text/xml"),
        ("tool.py", "text/x-python"),
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
    ],
)
def test_text_formats_gemini_takes_follow_the_extension_when_the_content_is_text(name, expected):
    assert resolve_mime_type(source=name, head=TEXT) == expected


@pytest.mark.parametrize(
    "name",
    ["events.jsonl", "data.json", "export.tsv", "run.log", "kernel.cu", "molecule.xyz", "deploy.sh", "q.sql"],
)
def test_text_gemini_has_no_type_for_goes_as_plain_text(name):
    assert resolve_mime_type(source=name, head=TEXT) == "text/plain"


def test_unknown_extension_with_text_content_is_plain_text():
    head = "Grüße\nline two\n".encode()
    assert resolve_mime_type(source="/data/transcript.vtt2", head=head) == "text/plain"


@pytest.mark.parametrize("name", ["events.jsonl", "data.json"])
def test_a_text_like_guess_with_binary_content_is_refused(name):
    with pytest.raises(GeminiInputError, match=r"does not accept .*content is not text"):
        resolve_mime_type(source=name, head=BINARY)


@pytest.mark.parametrize("name", ["molecule.xyz", "kernel.cu"])
def test_system_table_guesses_with_binary_content_are_refused(name):
    with pytest.raises(GeminiInputError, match=name):  # the message depends on the system's MIME table
        resolve_mime_type(source=name, head=BINARY)


@pytest.mark.parametrize(("head", "kind"), [(GIF, "image/gif"), (M4A, "audio/mp4")])
def test_binary_formats_gemini_refuses_fail_before_upload_naming_file_and_accepted_types(head, kind):
    with pytest.raises(GeminiInputError) as info:
        resolve_mime_type(source="gs://bucket/scans/page-1", head=head)
    message = str(info.value)
    assert f"does not accept '{kind}'" in message
    assert "gs://bucket/scans/page-1" in message
    assert "by its content" in message
    assert "image/png" in message
    assert "application/pdf" in message


def test_explicit_mime_type_wins_over_everything():
    got = resolve_mime_type(
        source="a.pdf", explicit="text/plain", stored="application/pdf", head=MAGIC["application/pdf"]
    )
    assert got == "text/plain"


@pytest.mark.parametrize("mime_type", sorted(SUPPORTED_MIME_TYPES))
def test_every_supported_type_passes_explicitly_unchanged(mime_type):
    assert resolve_mime_type(source="x", explicit=mime_type) == mime_type


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("image/jpg", "image/jpeg"),
        ("audio/x-wav", "audio/wav"),
        ("application/rtf", "text/rtf"),
        ("video/x-msvideo", "video/avi"),
        ("IMAGE/PNG", "image/png"),
        ("text/csv; charset=utf-8", "text/csv"),
    ],
)
def test_other_spellings_of_a_supported_type_are_normalised(given, sent):
    assert resolve_mime_type(source="x", explicit=given) == sent
    assert resolve_mime_type(source="gs://b/x", stored=given) == sent


def test_explicit_text_type_gemini_has_no_name_for_goes_as_plain_text():
    assert resolve_mime_type(source="rows.json", explicit="application/json") == "text/plain"
    assert resolve_mime_type(source="conf.yaml", explicit="text/x-yaml") == "text/plain"


def test_explicit_batch_request_file_type_is_kept():
    assert resolve_mime_type(source="requests.jsonl", explicit="application/jsonl") == "application/jsonl"
    assert resolve_mime_type(source="requests.jsonl", head=TEXT) == "text/plain"  # not by guessing


@pytest.mark.parametrize(
    "mime_type",
    [
        "application/octet-stream",
        "image/gif",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/zip",
    ],
)
def test_explicit_type_gemini_refuses_fails_naming_file_and_accepted_types(mime_type):
    with pytest.raises(GeminiInputError) as info:
        resolve_mime_type(source="/data/report.bin", explicit=mime_type)
    message = str(info.value)
    assert f"does not accept '{mime_type}'" in message
    assert "'/data/report.bin' by its mime_type" in message
    assert accepted_types() in message


def test_gcs_content_type_wins_over_sniffing_unless_generic():
    assert resolve_mime_type(source="gs://b/x.pdf", stored="image/png", head=None) == "image/png"
    generic = "application/octet-stream"
    assert resolve_mime_type(source="gs://b/x", stored=generic, head=MAGIC["image/webp"]) == "image/webp"
    assert resolve_mime_type(source="gs://b/x.pdf", stored=generic, head=None) == "application/pdf"


def test_stored_plain_text_is_checked_against_the_bytes():
    pdf = MAGIC["application/pdf"]
    assert resolve_mime_type(source="gs://b/x", stored="text/plain", head=pdf) == "application/pdf"
    assert resolve_mime_type(source="gs://b/x", stored="text/plain", head=TEXT) == "text/plain"
    with pytest.raises(GeminiInputError, match="'image/gif', the type of 'gs://b/anim' by its content"):
        resolve_mime_type(source="gs://b/anim", stored="text/plain", head=GIF)


def test_stored_type_gemini_refuses_falls_back_to_the_bytes():
    excel_csv = "application/vnd.ms-excel"  # what Windows uploaders record for .csv
    assert resolve_mime_type(source="gs://b/t.csv", stored=excel_csv, head=TEXT) == "text/plain"
    assert resolve_mime_type(source="gs://b/x", stored="image/gif", head=MAGIC["image/png"]) == "image/png"
    assert resolve_mime_type(source="gs://b/x.json", stored="application/json") == "text/plain"
    with pytest.raises(GeminiInputError, match=r"'image/gif'.*by its content"):
        resolve_mime_type(source="gs://b/x", stored="image/gif", head=GIF)


def test_needs_content_only_when_the_stored_type_cannot_stand_alone():
    assert not needs_content("application/pdf", None)
    assert not needs_content(None, "image/png")
    assert needs_content(None, None)
    assert needs_content(None, "application/octet-stream")
    assert needs_content(None, "text/plain")
    assert needs_content(None, "application/vnd.ms-excel")
    assert not needs_content(None, "image/jpg")  # a spelling of a supported type


def test_unknown_binary_content_is_a_clear_error_that_says_how_to_pass_mime_type():
    with pytest.raises(GeminiInputError) as info:
        resolve_mime_type(source="gs://bucket/blob", head=BINARY)
    message = str(info.value)
    assert "gs://bucket/blob" in message
    assert "no known extension and its first bytes match no known format" in message
    assert "mime_type=" in message


def test_no_extension_and_no_content_says_so():
    with pytest.raises(GeminiInputError, match=r"no known extension\. Pass it explicitly"):
        resolve_mime_type(source="gs://bucket/blob")


def test_text_extension_with_binary_content_is_refused_rather_than_mislabelled():
    with pytest.raises(GeminiInputError, match=r"table\.csv.*text/csv.*not text"):
        resolve_mime_type(source="table.csv", head=b"\x00\x00\x00\x01\x02")


def _refusal(**kwargs) -> str:
    with pytest.raises(GeminiInputError) as info:
        resolve_mime_type(**kwargs)
    return str(info.value)


def test_messages_say_where_the_type_came_from():
    stored = _refusal(source="gs://b/photo", stored="image/gif")
    assert "'image/gif', the type of 'gs://b/photo' by its stored content type. Convert" in stored
    mimetypes.add_type("audio/x-gemini-test", ".gtst", strict=False)  # known to the loose table only
    by_name = _refusal(source="song.gtst", head=BINARY)
    assert (
        "'audio/x-gemini-test', the type of 'song.gtst' by its extension, and its content is not text."
        in by_name
    )
    assert "'image/gif', the type of 'page' by its content. Convert" in _refusal(source="page", head=GIF)
    csv = _refusal(source="t.csv", head=BINARY)
    assert (
        "'t.csv' looks like text/csv by its extension, but its first bytes are not text: pass the right"
        in csv
    )
    assert _refusal(source="gs://b/blob").endswith("or set the object's Content-Type in GCS.")


def test_a_supported_stored_type_is_not_second_guessed_by_the_bytes():
    assert (
        resolve_mime_type(source="gs://b/x", stored="image/png", head=MAGIC["application/pdf"]) == "image/png"
    )


def test_explicit_text_type_with_binary_content_is_refused():
    with pytest.raises(GeminiInputError, match="does not accept 'application/json'"):
        resolve_mime_type(source="x.json", explicit="application/json", head=BINARY)


def test_generic_guesses_count_as_unknown():
    assert guess_from_name("blob.bin") is None
    assert guess_from_name("gs://b/dir.v2/README") is None
    assert guess_from_name("CLIP.MOV") == "video/quicktime"


def test_binary_extension_is_trusted_when_the_content_is_not_known():
    assert resolve_mime_type(source="clip.mov", head=BINARY) == "video/quicktime"
    assert resolve_mime_type(source="clip.avi") == "video/avi"


def test_malformed_explicit_mime_type_is_rejected_with_an_example():
    for bad in ("pdf", "/pdf", "application/", "text /plain", "a//", "a/b/c", "image/png x"):
        with pytest.raises(GeminiInputError) as info:
            resolve_mime_type(source="a.pdf", explicit=bad)
        assert str(info.value) == (
            f"mime_type {bad!r} given for 'a.pdf' is not a MIME type: use the form 'type/subtype', "
            "e.g. 'application/pdf' or 'text/plain'."
        )


def test_text_detection_tolerates_a_utf8_character_cut_by_the_sniff_window():
    head = ("x" * 10 + "é").encode()[:-1]
    assert looks_like_text(head)
    assert not looks_like_text(("x" * 10 + "é").encode()[:-1] + b"x" * 5)
    assert not looks_like_text(b"abc\x00def")
    assert not looks_like_text(b"abc\x1b[31mred")
    assert not looks_like_text(b"")
    assert looks_like_text(b"tab\tand\r\nnewline\f")
    assert looks_like_text("abc😀".encode()[:-1])  # a 4-byte character cut after 3 bytes
    assert not looks_like_text(b"abc\xffdefg")
    assert not looks_like_text(b"abcd\xffefg")  # a bad byte 4 from the end is not a cut character


def test_the_tables_only_produce_types_gemini_takes():
    assert all(is_supported(target) for target in ALIASES.values())
    assert not any(is_supported(alias) for alias in ALIASES)
    for ext, mime_type in EXTENSION_MIME_TYPES.items():
        assert is_supported(mime_type) or is_text_type(mime_type), ext
    assert not BATCH_INPUT_MIME_TYPES & set(SUPPORTED_MIME_TYPES)
    assert canonical(" Audio/X-WAV ; rate=8000") == "audio/wav"


def test_accepted_types_lists_every_type_by_kind():
    listed = accepted_types()
    assert listed.startswith("documents application/pdf; text text/plain, text/html, ")
    assert "; images image/png, image/jpeg, " in listed
    assert all(mime_type in listed for mime_type in SUPPORTED_MIME_TYPES)


def test_text_type_classification():
    for text in (
        "text/x-yaml",
        "application/json",
        "application/ld+json",
        "image/svg+xml",
        "text/x-python",
        "application/x-python",
    ):
        assert is_text_type(text), text
    for binary in ("image/png", "application/pdf", "application/octet-stream", "chemical/x-xyz"):
        assert not is_text_type(binary), binary
