"""generateContent through the SDK: deterministic descriptions, validation, structured output, latency.

Emulator only: the answers are the emulated model's deterministic descriptions.
"""

from __future__ import annotations

import asyncio
import enum
import io
import json
import struct
import time
import wave
import zlib
from pathlib import Path

import jsonschema
import pydantic
import pytest
from google import genai
from google.genai import errors, types

from airflow_gemini_files.emulator import GeminiEmulator

pytestmark = pytest.mark.emulator_only
MODEL = "gemini-2.5-flash"
MiB = 1024 * 1024


def png_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def pdf_bytes(pages: int) -> bytes:
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Count {pages} >>"]
    objs += ["<< /Type /Page /Parent 2 0 R >>"] * pages
    body = "".join(f"{i + 1} 0 obj\n{o}\nendobj\n" for i, o in enumerate(objs))
    return f"%PDF-1.4\n{body}trailer << /Root 1 0 R >>\n%%EOF\n".encode()


def mp4_bytes(seconds: float, timescale: int = 1000) -> bytes:
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    mvhd = box(b"mvhd", b"\x00\x00\x00\x00" + struct.pack(">IIII", 0, 0, timescale, int(seconds * timescale)))
    return box(b"ftyp", b"isom\x00\x00\x02\x00") + box(b"mdat", b"\x00" * 4096) + box(b"moov", mvhd)


def _upload(client: genai.Client, data: bytes, mime_type: str, display_name: str | None = None) -> types.File:
    config: dict[str, str] = {"mime_type": mime_type}
    if display_name:
        config["display_name"] = display_name
    return client.files.upload(file=io.BytesIO(data), config=config)


def test_answer_describes_each_part(client: genai.Client) -> None:
    text = _upload(client, b"Quarterly report\nRevenue grew by ten percent.\n", "text/plain", "report.txt")
    png = _upload(client, png_bytes(32, 16), "image/png", "chart.png")
    jpeg = _upload(client, jpeg_bytes(640, 480), "image/jpeg")
    wav = _upload(client, wav_bytes(2.5), "audio/wav", "memo.wav")
    pdf = _upload(client, pdf_bytes(3), "application/pdf", "contract.pdf")

    response = client.models.generate_content(
        model=MODEL, contents=["Summarise these.", text, png, jpeg, wav, pdf]
    )

    answer = response.text or ""
    assert "Summarise these." in answer
    assert (
        f"file {text.name} 'report.txt' (text/plain, 46 bytes, sha256 {(text.sha256_hash or '')[:12]})"
        in answer
    )
    assert "7 words; first line: 'Quarterly report'" in answer
    assert "image 32x16 px" in answer
    assert "image 640x480 px" in answer
    assert "WAV audio, 2.500 s" in answer
    assert "'contract.pdf' (application/pdf" in answer
    assert "PDF, 3 page(s)" in answer
    usage = response.usage_metadata
    assert usage is not None
    assert usage.thoughts_token_count  # gemini-2.5-flash thinks by default
    assert usage.total_token_count == (
        (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0) + usage.thoughts_token_count
    )
    modalities = {d.modality.name: d.token_count for d in usage.prompt_tokens_details or [] if d.modality}
    assert set(modalities) == {"TEXT", "IMAGE", "AUDIO", "DOCUMENT"}
    assert sum(v or 0 for v in modalities.values()) == usage.prompt_token_count
    assert modalities["IMAGE"] == 2 * 258


def test_same_request_same_answer_and_tokens_grow_with_input(client: genai.Client) -> None:
    small = _upload(client, b"word " * 10, "text/plain")
    large = _upload(client, b"word " * 10_000, "text/plain")
    first = client.models.generate_content(model=MODEL, contents=["Describe", small])
    again = client.models.generate_content(model=MODEL, contents=["Describe", small])
    bigger = client.models.generate_content(model=MODEL, contents=["Describe", large])
    assert first.text == again.text
    assert first.response_id == again.response_id
    assert first.usage_metadata is not None
    assert bigger.usage_metadata is not None
    assert (bigger.usage_metadata.prompt_token_count or 0) > (
        first.usage_metadata.prompt_token_count or 0
    ) + 10_000


def test_inline_bytes_mixed_with_a_file(client: genai.Client) -> None:
    uploaded = _upload(client, png_bytes(4, 4), "image/png", "first.png")
    response = client.models.generate_content(
        model=MODEL,
        contents=["Compare", uploaded, types.Part.from_bytes(data=png_bytes(8, 2), mime_type="image/png")],
    )
    answer = response.text or ""
    assert "Part 1: file" in answer
    assert "image 4x4 px" in answer
    assert "Part 2: inline data (image/png" in answer
    assert "image 8x2 px" in answer


def test_inline_data_above_the_old_20_mb_limit_is_accepted(client: genai.Client) -> None:
    big = types.Part.from_bytes(data=b"a" * (21 * MiB), mime_type="text/plain")
    usage = client.models.generate_content(model=MODEL, contents=["What is it?", big]).usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count or 0) > 21 * MiB // 4


def test_inline_limits_default_to_100_mb_and_50_mb_for_pdfs(gemini_emulator: GeminiEmulator) -> None:
    settings = gemini_emulator.settings()
    assert (settings["max_inline_bytes"], settings["max_inline_pdf_bytes"]) == (100 * MiB, 50 * MiB)


def test_inline_data_over_the_limit_is_refused(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(max_inline_bytes=3000)
    parts = [types.Part.from_bytes(data=b"a" * 1500, mime_type="text/plain") for _ in range(2)]
    assert client.models.generate_content(model=MODEL, contents=["Two halves", *parts]).text
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents=["Too much", *parts, parts[0]])
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.message == "Request payload size exceeds the limit: 3000 bytes."


def test_inline_pdf_over_its_own_limit_is_refused(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(max_inline_pdf_bytes=len(pdf_bytes(1)))
    assert client.models.generate_content(
        model=MODEL, contents=[types.Part.from_bytes(data=pdf_bytes(1), mime_type="application/pdf")]
    ).text
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(
            model=MODEL, contents=[types.Part.from_bytes(data=pdf_bytes(2), mime_type="application/pdf")]
        )
    assert info.value.code == 400
    assert "Files API" in (info.value.message or "")
    text = types.Part.from_bytes(
        data=b"x" * 4096, mime_type="text/plain"
    )  # other types keep the larger limit
    assert client.models.generate_content(model=MODEL, contents=[text]).text


def test_thinking_budget_zero_means_no_thought_tokens(client: genai.Client) -> None:
    config = {"thinking_config": {"thinking_budget": 0}}
    usage = client.models.generate_content(model=MODEL, contents="hi", config=config).usage_metadata
    assert usage is not None
    assert usage.thoughts_token_count is None
    assert usage.total_token_count == (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0)
    capped = client.models.generate_content(
        model=MODEL, contents="hi", config={"thinking_config": {"thinking_budget": 3}}
    ).usage_metadata
    assert capped is not None
    assert capped.thoughts_token_count == 3


def test_models_that_do_not_think_report_no_thoughts(client: genai.Client) -> None:
    for model in ("gemini-2.0-flash", "gemini-2.5-flash-lite"):
        usage = client.models.generate_content(model=model, contents="hi").usage_metadata
        assert usage is not None
        assert usage.thoughts_token_count is None, model
    lite = client.models.generate_content(
        model="gemini-2.5-flash-lite", contents="hi", config={"thinking_config": {"thinking_budget": 512}}
    ).usage_metadata
    assert lite is not None
    assert lite.thoughts_token_count  # thinking on request


@pytest.mark.parametrize("model", ["gpt-4o", "text-bison-001"])
def test_unknown_model_is_not_found(client: genai.Client, model: str) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=model, contents="hi")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")


def test_processing_file_is_failed_precondition(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(processing_delay=60)
    file = _upload(client, b"abc", "text/plain")
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents=["Describe", file])
    assert (info.value.code, info.value.status) == (400, "FAILED_PRECONDITION")
    gemini_emulator.advance_clock(61)
    assert client.models.generate_content(model=MODEL, contents=["Describe", file]).text


def test_failed_file_is_failed_precondition(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.fail_processing("broken", "bad file")
    file = _upload(client, b"abc", "text/plain", "broken.txt")
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents=["Describe", file])
    assert info.value.status == "FAILED_PRECONDITION"


def test_deleted_and_expired_files_are_refused_like_the_live_api(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    deleted = _upload(client, b"abc", "text/plain")
    expired = _upload(client, b"def", "text/plain")
    assert deleted.name is not None
    client.files.delete(name=deleted.name)
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents=["Describe", deleted])
    assert (info.value.code, info.value.status) == (403, "PERMISSION_DENIED")
    gemini_emulator.advance_clock(48 * 3600 + 1)
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents=["Describe", expired])
    assert info.value.code == 403


class Kind(enum.Enum):
    INVOICE = "invoice"
    LETTER = "letter"


class Summary(pydantic.BaseModel):
    file_name: str
    kind: Kind
    word_count: int
    size_bytes: int
    summary: str | None = None
    tags: list[str]


def test_json_answer_for_pydantic_schema_lists_one_item_per_file(client: genai.Client) -> None:
    a = _upload(client, b"one two three", "text/plain", "a.txt")
    b = _upload(client, b"four five", "text/plain", "b.txt")
    response = client.models.generate_content(
        model=MODEL,
        contents=["Summarise each file", a, b],
        config={"response_mime_type": "application/json", "response_schema": list[Summary]},
    )
    parsed = response.parsed
    assert isinstance(parsed, list)
    assert [s.file_name for s in parsed] == ["a.txt", "b.txt"]
    assert [s.word_count for s in parsed] == [3, 2]
    assert [s.size_bytes for s in parsed] == [13, 9]
    assert all(s.kind is Kind.INVOICE for s in parsed)


def test_json_answer_validates_against_response_json_schema(client: genai.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 8},
            "score": {"type": "number", "minimum": 2, "maximum": 3},
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 2},
            "when": {"type": "string", "format": "date-time"},
            "ref": {"$ref": "#/$defs/Ref"},
            "choice": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]},
        },
        "required": ["title", "score", "flags", "when", "ref", "choice"],
        "$defs": {"Ref": {"type": "object", "properties": {"id": {"const": "x-1"}}, "required": ["id"]}},
    }
    file = _upload(client, b"hello", "text/plain", "greeting-file.txt")
    response = client.models.generate_content(
        model=MODEL,
        contents=["Describe", file],
        config={"response_mime_type": "application/json", "response_json_schema": schema},
    )
    value = json.loads(response.text or "")
    jsonschema.validate(value, schema)
    assert value["title"] == "greeting"
    assert value["ref"] == {"id": "x-1"}
    assert value["choice"] == 5


def test_json_answer_for_api_schema_dict_with_nullable_and_enum(client: genai.Client) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "n": {"type": "INTEGER", "nullable": True},
            "s": {"type": "STRING", "enum": ["x", "y"]},
        },
        "required": ["n", "s"],
    }
    response = client.models.generate_content(
        model=MODEL,
        contents="no files",
        config={"response_mime_type": "application/json", "response_schema": schema},
    )
    assert json.loads(response.text or "") == {"n": 1, "s": "x"}


def test_enum_answer(client: genai.Client) -> None:
    response = client.models.generate_content(
        model=MODEL, contents="pick", config={"response_mime_type": "text/x.enum", "response_schema": Kind}
    )
    assert response.parsed is Kind.INVOICE


def test_model_latency_does_not_serialise_concurrent_requests(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(model_latency=0.5)

    async def fan_out() -> list[str | None]:
        calls = [client.aio.models.generate_content(model=MODEL, contents=f"q{i}") for i in range(20)]
        return [r.text for r in await asyncio.gather(*calls)]

    started = time.monotonic()
    answers = asyncio.run(fan_out())
    elapsed = time.monotonic() - started
    assert len(set(answers)) == 20
    assert 0.5 <= elapsed < 3.0  # 20 x 0.5 s would be 10 s if serialised


def test_text_file_description_streams_large_files(client: genai.Client, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"alpha beta\n" + b"gamma " * 400_000)
    file = client.files.upload(file=path)
    answer = client.models.generate_content(model=MODEL, contents=["Count", file]).text or ""
    assert "400002 words; first line: 'alpha beta'" in answer


def test_video_duration_in_metadata_and_answer(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(processing_delay=1, video_processing_delay=20)
    video = _upload(client, mp4_bytes(4.5), "video/mp4", "clip.mp4")
    assert video.video_metadata is None  # known once processed
    gemini_emulator.advance_clock(21)
    active = client.files.get(name=video.name or "")
    assert active.video_metadata == {"videoDuration": "4.5s"}
    answer = client.models.generate_content(model=MODEL, contents=["Describe", active]).text or ""
    assert "video, 4.500 s" in answer


def test_schema_the_emulator_cannot_satisfy_fails_fast(client: genai.Client) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(
            model=MODEL,
            contents="code?",
            config={"response_mime_type": "application/json", "response_json_schema": schema},
        )
    assert info.value.code == 400
    assert "cannot produce a value" in (info.value.message or "")


def test_json_enums_pick_the_option_the_file_supports_and_language_is_unknown(client: genai.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["invoice", "chart", "audio_recording", "other"]},
            "language": {"type": "string"},
        },
        "required": ["kind", "language"],
    }
    config = {"response_mime_type": "application/json", "response_json_schema": schema}
    chart = _upload(client, png_bytes(4, 3), "image/png", display_name="revenue_chart_q3.png")
    audio = _upload(client, wav_bytes(0.5), "audio/wav", display_name="call.wav")
    unknown = _upload(client, b"plain words", "text/plain", display_name="notes.txt")
    kinds = []
    for file in (chart, audio, unknown):
        reply = client.models.generate_content(model=MODEL, contents=["kind?", file], config=config)
        answer = json.loads(reply.text or "")
        kinds.append(answer["kind"])
        assert answer["language"] == "unknown"  # never a made-up language
    assert kinds == ["chart", "audio_recording", "invoice"]
