"""File lifecycle through the SDK: PROCESSING -> ACTIVE/FAILED, processing delays, 48 h expiry, list paging.

Emulator only: these move the emulator's clock and set its delays.
"""

from __future__ import annotations

import asyncio
import inspect
import io

import pytest
from google import genai
from google.genai import errors, types

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.emulator.store import realistic_delay

from .test_generate import mp4_bytes, png_bytes, wav_bytes

pytestmark = pytest.mark.emulator_only
MiB = 1024 * 1024


def _upload(client: genai.Client, mime_type: str = "text/plain", **config: str) -> types.File:
    return client.files.upload(file=io.BytesIO(b"some bytes"), config={"mime_type": mime_type, **config})


def _state(file: types.File) -> str | None:
    return file.state.name if file.state else None


def test_processing_then_active_after_the_delay(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(processing_delay=30)
    file = _upload(client)
    assert file.name is not None
    assert _state(file) == "PROCESSING"
    assert _state(client.files.get(name=file.name)) == "PROCESSING"
    gemini_emulator.advance_clock(31)
    active = client.files.get(name=file.name)
    assert _state(active) == "ACTIVE"
    assert active.update_time is not None
    assert active.create_time is not None
    assert (active.update_time - active.create_time).total_seconds() == pytest.approx(30)


def test_video_takes_longer_than_other_files(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(processing_delay=10, video_processing_delay=60)
    doc = _upload(client, "application/pdf")
    video = _upload(client, "video/mp4")
    gemini_emulator.advance_clock(11)
    assert doc.name is not None
    assert video.name is not None
    assert _state(client.files.get(name=doc.name)) == "ACTIVE"
    assert _state(client.files.get(name=video.name)) == "PROCESSING"
    gemini_emulator.advance_clock(50)
    assert _state(client.files.get(name=video.name)) == "ACTIVE"


def test_fail_processing_marks_matching_files_failed(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(processing_delay=5)
    already_processing = _upload(client, display_name="corrupt-scan.pdf")
    gemini_emulator.fail_processing("corrupt", "Unsupported or corrupt document.")
    later = _upload(client, display_name="another corrupt one")
    healthy = _upload(client, display_name="fine.pdf")
    gemini_emulator.advance_clock(6)
    for file in (already_processing, later):
        assert file.name is not None
        failed = client.files.get(name=file.name)
        assert _state(failed) == "FAILED"
        assert failed.error is not None
        assert failed.error.message == "Unsupported or corrupt document."
    assert healthy.name is not None
    assert _state(client.files.get(name=healthy.name)) == "ACTIVE"


def test_files_expire_48_hours_after_creation(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    file = _upload(client)
    assert file.name is not None
    gemini_emulator.advance_clock(48 * 3600 - 60)
    assert client.files.get(name=file.name).name == file.name
    gemini_emulator.advance_clock(61)
    with pytest.raises(errors.ClientError) as info:
        client.files.get(name=file.name)
    assert info.value.code == 403
    assert list(client.files.list()) == []
    assert gemini_emulator.stats()["files"] == 0
    assert gemini_emulator.stats()["bytes"] == 0


def test_list_pages_newest_first_with_opaque_tokens(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    names = [_upload(client, display_name=f"doc-{i}").name for i in range(7)]
    pager = client.files.list(config={"page_size": 3})
    assert len(pager.page) == 3
    listed = [f.name for f in pager]
    assert listed == list(reversed(names))
    assert gemini_emulator.stats()["requests"]["list"] == 3  # 3 + 3 + 1


def test_list_default_page_size_is_ten(client: genai.Client) -> None:
    for i in range(12):
        _upload(client, display_name=f"doc-{i}")
    pager = client.files.list()
    assert len(pager.page) == 10
    assert len(list(pager)) == 12


def test_async_list_and_state(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    asyncio.run(_async_list_and_state(client, gemini_emulator))


async def _async_list_and_state(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(processing_delay=1)
    file = await client.aio.files.upload(file=io.BytesIO(b"abc"), config={"mime_type": "text/plain"})
    assert file.name is not None
    assert _state(await client.aio.files.get(name=file.name)) == "PROCESSING"
    gemini_emulator.advance_clock(2)
    assert _state(await client.aio.files.get(name=file.name)) == "ACTIVE"
    assert [f.name async for f in await client.aio.files.list(config={"page_size": 1})] == [file.name]


def test_video_delay_follows_processing_delay_unless_set(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(processing_delay=5)
    assert gemini_emulator.settings()["video_processing_delay"] == 15
    video = _upload(client, "video/mp4")
    gemini_emulator.advance_clock(10)
    assert _state(client.files.get(name=video.name or "")) == "PROCESSING"
    gemini_emulator.advance_clock(6)
    assert _state(client.files.get(name=video.name or "")) == "ACTIVE"
    gemini_emulator.reset()
    assert gemini_emulator.settings()["video_processing_delay"] is None  # realistic by default


def _upload_bytes(client: genai.Client, data: bytes, mime_type: str) -> types.File:
    return client.files.upload(file=io.BytesIO(data), config={"mime_type": mime_type})


def test_realistic_delays_keep_media_processing_as_the_real_service_does(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(processing_delay="realistic")
    assert gemini_emulator.settings()["processing_delay"] is None
    text = _upload_bytes(client, b"notes", "text/plain")
    image = _upload_bytes(client, png_bytes(8, 8), "image/png")
    audio = _upload_bytes(client, wav_bytes(200, rate=8000), "audio/wav")  # ~3 MiB: ~1 s
    video = _upload_bytes(client, mp4_bytes(20), "video/mp4")
    assert [_state(f) for f in (text, image)] == ["ACTIVE", "ACTIVE"]
    assert [_state(f) for f in (audio, video)] == ["PROCESSING", "PROCESSING"]
    gemini_emulator.advance_clock(1.5)
    assert _state(client.files.get(name=audio.name or "")) == "ACTIVE"
    assert _state(client.files.get(name=video.name or "")) == "PROCESSING"
    gemini_emulator.advance_clock(14)  # 5 s start-up + 10 s for a 20 s video
    assert _state(client.files.get(name=video.name or "")) == "ACTIVE"


def test_realistic_delays_grow_with_size_and_stay_bounded() -> None:
    assert realistic_delay("text/csv", 500 * MiB) == 0
    assert realistic_delay("image/jpeg", 50 * MiB) == 0
    assert realistic_delay("application/pdf", MiB) == realistic_delay("audio/wav", MiB) == 0  # small: at once
    assert realistic_delay("application/pdf", 41 * MiB) == 10
    assert realistic_delay("audio/mp3", 11 * MiB) == 5
    assert realistic_delay("video/mp4", 100 * MiB) == 105
    assert realistic_delay("video/mp4", MiB, video_seconds=600) == 305
    assert realistic_delay("video/mp4", 2048 * MiB) == 600


def test_code_that_skips_the_wait_fails_offline_as_it_would_live(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(processing_delay="realistic")
    video = _upload_bytes(client, mp4_bytes(3), "video/mp4")
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents=["Describe", video])
    assert (info.value.code, info.value.status) == (400, "FAILED_PRECONDITION")
    assert (
        info.value.message
        == f"The File {(video.name or '')[6:]} is not in an ACTIVE state and usage is not allowed."
    )


def test_instant_active_is_a_zero_delay(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(processing_delay=0)
    assert _state(_upload_bytes(client, mp4_bytes(60), "video/mp4")) == "ACTIVE"
    gemini_emulator.configure(processing_delay="realistic", video_processing_delay=2)
    assert gemini_emulator.settings()["video_processing_delay"] == 2
    assert _state(_upload_bytes(client, mp4_bytes(60), "video/mp4")) == "PROCESSING"
    assert _state(_upload_bytes(client, b"doc", "text/plain")) == "ACTIVE"


def test_realistic_delays_are_the_default(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    assert inspect.signature(GeminiEmulator).parameters["processing_delay"].default is None
    video = _upload_bytes(client, mp4_bytes(3), "video/mp4")
    assert _state(video) == "PROCESSING"
    assert _state(_upload_bytes(client, b"notes", "text/plain")) == "ACTIVE"
