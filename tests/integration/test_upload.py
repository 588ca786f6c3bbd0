"""ResumableUpload against the Gemini emulator: faults, dropped connections, resumes, bad keys.

The emulator speaks the resumable protocol as the live API does (session URL, 256 KiB chunk
granularity, `query` answered with `X-Goog-Upload-Size-Received`) and injects faults per operation.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
from collections.abc import Iterator

import pytest
from google import genai
from google.genai import errors, types

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.hooks.retry import RetryPolicy
from airflow_gemini_files.hooks.upload import ResumableUpload, ResumableUploadError

CHUNK = 512 * 1024  # a multiple of the emulator's (and the live API's) 256 KiB granularity
FAST = RetryPolicy(attempts=5, initial_delay=0.01, max_delay=0.05, jitter=0.01)


def uploader(emu: GeminiEmulator, *, key: str | None = None, retry: RetryPolicy = FAST) -> ResumableUpload:
    return ResumableUpload(
        base_url=emu.base_url,
        api_version="v1beta",
        api_key=key or emu.api_key or "",
        retry=retry,
        chunk_size=CHUNK,
        timeout=30,
    )


def sha256_b64(data: bytes) -> str:
    """``sha256Hash`` as the live Files API reports it: base64 of the hex digest's text."""
    return base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(5 * CHUNK + 12345)  # 6 chunks, the last one short


def stored(emu: GeminiEmulator, name: str | None) -> dict:
    [resource] = [f for f in emu.files() if f["name"] == name]
    return resource


class PipeReader:
    """The read end of an OS pipe fed by a thread: a stream that cannot seek and reads short."""

    def __init__(self, data: bytes) -> None:
        read_fd, write_fd = os.pipe()
        self._file = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = threading.Thread(target=self._feed, args=(write_fd, data), daemon=True)
        self._writer.start()

    @staticmethod
    def _feed(fd: int, data: bytes) -> None:
        with os.fdopen(fd, "wb") as out:
            out.write(data)

    def __enter__(self) -> io.RawIOBase:
        return self._file  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        self._writer.join(timeout=10)


@pytest.fixture
def pipe(data: bytes) -> Iterator[io.RawIOBase]:
    with PipeReader(data) as stream:
        yield stream


def test_clean_upload_arrives_whole_with_its_metadata(gemini_emulator: GeminiEmulator, data: bytes) -> None:
    upload = uploader(gemini_emulator)
    file = upload.upload(
        io.BytesIO(data),
        size=len(data),
        mime_type="application/pdf",
        display_name="Q3 report",
        name="q3-report",
    )
    assert file.name == "files/q3-report"
    assert file.size_bytes == len(data)
    assert file.sha256_hash == sha256_b64(data)
    assert file.display_name == "Q3 report"
    assert file.mime_type == "application/pdf"
    assert stored(gemini_emulator, file.name)["sha256Hash"] == sha256_b64(data)
    assert upload.stats.chunks == 6
    assert upload.stats.bytes_sent == len(data)
    assert upload.stats.bytes_resent == 0
    requests = gemini_emulator.stats()["requests"]
    assert (requests["upload_start"], requests["upload_chunk"], requests["upload_query"]) == (1, 6, 0)


def test_the_sdk_sees_the_uploaded_file(gemini_emulator: GeminiEmulator, data: bytes) -> None:
    file = uploader(gemini_emulator).upload(io.BytesIO(data), size=len(data), mime_type="text/plain")
    client = genai.Client(
        api_key=gemini_emulator.api_key, http_options=types.HttpOptions(base_url=gemini_emulator.base_url)
    )
    assert file.name is not None
    fetched = client.files.get(name=file.name)
    assert fetched.sha256_hash == file.sha256_hash
    assert fetched.size_bytes == len(data)


def test_503_and_429_on_chunks_are_retried(gemini_emulator: GeminiEmulator, data: bytes) -> None:
    gemini_emulator.inject_faults("upload_chunk", sequence=[0, 503, 429, 0, 503])
    upload = uploader(gemini_emulator)
    file = upload.upload(io.BytesIO(data), size=len(data), mime_type="text/plain")
    assert file.sha256_hash == sha256_b64(data)
    assert upload.stats.retries == 3
    # A refused chunk is sent again whole: the emulator answered before reading it.
    assert upload.stats.bytes_resent == 3 * CHUNK
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == 6 + 3


def test_connection_dropped_mid_chunk_resumes_at_the_committed_offset(
    gemini_emulator: GeminiEmulator, data: bytes
) -> None:
    gemini_emulator.inject_faults("upload_chunk", sequence=[0, 0], drop_mid_chunk=1)
    upload = uploader(gemini_emulator)
    file = upload.upload(io.BytesIO(data), size=len(data), mime_type="text/plain")
    assert file.sha256_hash == sha256_b64(data)
    assert stored(gemini_emulator, file.name)["sizeBytes"] == str(len(data))
    assert upload.stats.queries >= 1
    assert 0 < upload.stats.bytes_resent <= CHUNK  # one chunk again, not the whole file
    assert gemini_emulator.stats()["requests"]["upload_query"] >= 1


def test_non_seekable_pipe_survives_a_dropped_chunk(
    gemini_emulator: GeminiEmulator, data: bytes, pipe: io.RawIOBase
) -> None:
    gemini_emulator.inject_faults("upload_chunk", drop_mid_chunk=2)
    upload = uploader(gemini_emulator)
    file = upload.upload(pipe, size=len(data), mime_type="text/plain", source_name="pipe")
    assert file.sha256_hash == sha256_b64(data)
    assert upload.stats.bytes_resent <= 2 * CHUNK


def test_random_faults_on_chunks_and_queries_still_deliver_every_byte(
    gemini_emulator: GeminiEmulator, data: bytes
) -> None:
    gemini_emulator.inject_faults("upload_chunk", rate=0.3, statuses=(503, 429, 500), drop_mid_chunk=1)
    gemini_emulator.inject_faults("upload_query", sequence=[503])
    retry = RetryPolicy(attempts=8, initial_delay=0.01, max_delay=0.05, jitter=0.01)
    upload = uploader(gemini_emulator, retry=retry)
    file = upload.upload(io.BytesIO(data), size=len(data), mime_type="text/plain")
    assert file.sha256_hash == sha256_b64(data)
    assert upload.stats.bytes_resent < len(data)


def test_the_sdk_alone_fails_where_we_resume(gemini_emulator: GeminiEmulator, data: bytes) -> None:
    """What this module adds: the SDK's own upload gives up on the same single dropped chunk."""
    gemini_emulator.inject_faults("upload_chunk", sequence=[0], drop_mid_chunk=1)
    client = genai.Client(
        api_key=gemini_emulator.api_key, http_options=types.HttpOptions(base_url=gemini_emulator.base_url)
    )
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the SDK raises, the upload is lost
        client.files.upload(file=io.BytesIO(data), config={"mime_type": "text/plain"})
    assert gemini_emulator.files() == []


def test_empty_file_is_uploaded_with_one_finalize_chunk(gemini_emulator: GeminiEmulator) -> None:
    file = uploader(gemini_emulator).upload(io.BytesIO(b""), size=0, mime_type="text/plain")
    assert file.size_bytes in (0, None)
    assert file.sha256_hash == sha256_b64(b"")
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == 1


def test_wrong_api_key_fails_at_once_without_echoing_the_key(gemini_emulator: GeminiEmulator) -> None:
    with pytest.raises(errors.ClientError) as info:
        uploader(gemini_emulator, key="AIza-wrong-key-0123").upload(
            io.BytesIO(b"hello"), size=5, mime_type="text/plain"
        )
    assert info.value.code in (400, 401, 403)
    assert "AIza-wrong-key-0123" not in str(info.value)
    assert gemini_emulator.stats()["requests"]["upload_start"] <= 1
    assert gemini_emulator.files() == []


def test_start_is_retried_on_429(gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject_faults("upload_start", sequence=[429, 503])
    upload = uploader(gemini_emulator)
    file = upload.upload(io.BytesIO(b"hello"), size=5, mime_type="text/plain")
    assert file.sha256_hash == sha256_b64(b"hello")
    assert upload.stats.retries == 2


def test_persistent_503_gives_up_with_a_clear_error_and_leaves_no_file(
    gemini_emulator: GeminiEmulator, data: bytes
) -> None:
    gemini_emulator.inject_faults("upload_chunk", rate=1.0, statuses=(503,))
    retry = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, jitter=0)
    with pytest.raises(errors.ServerError, match=r"report\.pdf: giving up after 3 attempts") as info:
        uploader(gemini_emulator, retry=retry).upload(
            io.BytesIO(data), size=len(data), mime_type="application/pdf", source_name="report.pdf"
        )
    assert info.value.code == 503
    assert gemini_emulator.files() == []


def test_stream_shorter_than_announced_is_refused_and_nothing_is_stored(
    gemini_emulator: GeminiEmulator, data: bytes
) -> None:
    with pytest.raises(ValueError, match="ended after"):
        uploader(gemini_emulator).upload(io.BytesIO(data[:1000]), size=len(data), mime_type="text/plain")
    assert gemini_emulator.files() == []


def test_unknown_session_is_reported_as_lost(gemini_emulator: GeminiEmulator, data: bytes) -> None:
    """If the emulator forgets every session mid-upload (restart), the error says to upload again."""
    gemini_emulator.inject_faults("upload_chunk", sequence=[0, 503])
    upload = uploader(gemini_emulator)
    stream = io.BytesIO(data)

    class Forgetful(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if stream.tell() == 2 * CHUNK:
                gemini_emulator.reset()
            return stream.read(n)

    with pytest.raises((ResumableUploadError, errors.ClientError), match=r"upload|session"):
        upload.upload(Forgetful(), size=len(data), mime_type="text/plain")
