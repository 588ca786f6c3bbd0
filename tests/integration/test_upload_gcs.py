"""gs:// to Gemini in bounded memory: GcsReadAhead over the GCS emulator feeding ResumableUpload."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.hooks.gcs import GcsReadAhead
from airflow_gemini_files.hooks.retry import RetryPolicy
from airflow_gemini_files.hooks.upload import ResumableUpload

CHUNK = 256 * 1024
FAST = RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.05, jitter=0.01)


class WatchedReader(GcsReadAhead):
    """GcsReadAhead over a real blob whose ranged reads are counted, may fail first or come back flipped."""

    def __init__(
        self,
        blob: Any,
        *,
        failures: list[Exception] | None = None,
        corrupt_at: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.reads = 0
        self.failures = list(failures or [])
        self.corrupt_at = corrupt_at
        self.lock = threading.Lock()
        super().__init__(blob, **kwargs)  # starts the fetcher: set the fields above first

    def _read_range(self, start: int, end: int) -> list[bytes]:
        with self.lock:
            self.reads += 1
            if self.failures:
                raise self.failures.pop(0)
        pieces = super()._read_range(start, end)
        if start == self.corrupt_at:
            pieces[0] = bytes([pieces[0][0] ^ 1]) + pieces[0][1:]  # one flipped bit on the way
        return pieces


@pytest.fixture
def bucket(gcs_emulator: Any) -> Any:
    gcs_emulator.reset()
    return gcs_emulator.client().create_bucket("docs")


@pytest.fixture
def data() -> bytes:
    return os.urandom(7 * CHUNK + 999)


def test_gcs_object_streams_into_gemini_whole(
    bucket: Any, data: bytes, gemini_emulator: GeminiEmulator
) -> None:
    bucket.blob("in/big.bin").upload_from_string(data)
    blob = bucket.blob("in/big.bin")
    upload = ResumableUpload(
        base_url=gemini_emulator.base_url,
        api_version="v1beta",
        api_key=gemini_emulator.api_key or "",
        retry=FAST,
        chunk_size=CHUNK,
    )
    gemini_emulator.inject_faults("upload_chunk", sequence=[0, 503], drop_mid_chunk=0)
    with GcsReadAhead(blob, chunk_size=CHUNK) as reader:
        file = upload.upload(reader, size=reader.size, mime_type="text/plain", source_name="gs://docs/in")
    assert file.sha256_hash == base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()
    assert file.size_bytes == len(data)


def test_reads_ahead_only_depth_chunks(bucket: Any, data: bytes) -> None:
    bucket.blob("a.bin").upload_from_string(data)
    with WatchedReader(bucket.get_blob("a.bin"), chunk_size=CHUNK, depth=2) as reader:
        time.sleep(0.5)  # a stalled consumer: the fetcher must stop at the queue depth
        assert reader.reads == 2
        first = reader.read(CHUNK)
        deadline = time.monotonic() + 5
        while reader.reads < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.reads == 3  # one taken, one more fetched
        rest = reader.read()
    assert first + rest == data
    assert reader.reads == 8


def test_small_reads_return_the_same_bytes(bucket: Any, data: bytes) -> None:
    bucket.blob("b.bin").upload_from_string(data)
    with GcsReadAhead(bucket.blob("b.bin"), chunk_size=CHUNK) as reader:
        assert reader.size == len(data)
        parts = []
        while part := reader.read(100_000):
            parts.append(part)
        assert reader.read(10) == b""
    assert b"".join(parts) == data


def test_transient_gcs_errors_are_retried(bucket: Any, data: bytes) -> None:
    bucket.blob("c.bin").upload_from_string(data)
    failures = [api_exceptions.ServiceUnavailable("busy"), ConnectionResetError("reset")]
    with WatchedReader(bucket.get_blob("c.bin"), failures=failures, chunk_size=CHUNK, retry=FAST) as reader:
        assert reader.read() == data
        assert reader.retries == 2


def test_permanent_gcs_error_surfaces_from_read_and_close_stops_the_thread(bucket: Any, data: bytes) -> None:
    bucket.blob("d.bin").upload_from_string(data)
    failures = [api_exceptions.Forbidden("no access to d.bin")]
    reader = WatchedReader(bucket.get_blob("d.bin"), failures=failures, chunk_size=CHUNK, retry=FAST)
    with pytest.raises(api_exceptions.Forbidden, match=r"d\.bin"):
        reader.read(CHUNK)
    reader.close()
    assert reader.reads == 1
    assert not reader._thread.is_alive()


def test_close_before_the_end_stops_the_fetcher(bucket: Any, data: bytes) -> None:
    bucket.blob("e.bin").upload_from_string(data)
    reader = GcsReadAhead(bucket.blob("e.bin"), chunk_size=CHUNK, depth=1)
    assert len(reader.read(10)) == 10
    reader.close()
    assert not reader._thread.is_alive()
    with pytest.raises(ValueError, match="closed"):
        reader.read(10)


def test_missing_object_fails_when_opened(bucket: Any) -> None:
    with pytest.raises(api_exceptions.NotFound):
        GcsReadAhead(bucket.blob("missing.bin"), chunk_size=CHUNK)


def test_corrupted_read_fails_before_the_upload_is_finalized(
    bucket: Any, data: bytes, gemini_emulator: GeminiEmulator
) -> None:
    bucket.blob("f.bin").upload_from_string(data)
    upload = ResumableUpload(
        base_url=gemini_emulator.base_url,
        api_version="v1beta",
        api_key="test-api-key",
        retry=FAST,
        chunk_size=CHUNK,
    )
    reader = WatchedReader(bucket.get_blob("f.bin"), corrupt_at=2 * CHUNK, chunk_size=CHUNK)
    with reader, pytest.raises(OSError, match="CRC32C"):
        upload.upload(reader, size=reader.size, mime_type="text/plain")
    assert gemini_emulator.files() == []


def test_blob_without_a_media_link_reads_through_the_library(bucket: Any, data: bytes) -> None:
    bucket.blob("g.bin").upload_from_string(data)
    blob = bucket.get_blob("g.bin")
    blob._properties.pop("mediaLink")
    with GcsReadAhead(blob, chunk_size=CHUNK) as reader:
        assert reader.read() == data


def test_object_replaced_mid_read_fails_instead_of_mixing_versions(bucket: Any, data: bytes) -> None:
    bucket.blob("h.bin").upload_from_string(data)
    with GcsReadAhead(bucket.get_blob("h.bin"), chunk_size=CHUNK, depth=1) as reader:
        reader.read(CHUNK)
        bucket.blob("h.bin").upload_from_string(os.urandom(len(data)))  # a new generation
        with pytest.raises(Exception, match=r"h\.bin|404|No such|generation|CRC32C"):
            reader.read()
