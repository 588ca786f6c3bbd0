"""Read a GCS object ahead in a background thread, so its download overlaps the Gemini upload."""

from __future__ import annotations

import base64
import io
import logging
import queue
import threading
import time
from typing import Any

import google_crc32c
import requests
from google.api_core import exceptions as api_exceptions

from airflow_gemini_files.hooks.retry import RetryPolicy

log = logging.getLogger(__name__)

_POLL = 0.1  # seconds between checks of the stop flag while blocked
_EOF = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def is_transient_gcs_error(exc: BaseException, policy: RetryPolicy) -> bool:
    """True for GCS errors worth another ranged read: 408/429/5xx answers and broken connections."""
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return exc.code is not None and policy.is_retryable_status(int(exc.code))
    status = getattr(getattr(exc, "response", None), "status_code", None)  # google.resumable_media
    if isinstance(status, int) and exc.__class__.__name__ == "InvalidResponse":
        return policy.is_retryable_status(status)
    return isinstance(
        exc,
        requests.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | requests.Timeout
        | ConnectionError
        | TimeoutError,
    )


class GcsReadAhead(io.RawIOBase):
    """A read-only, forward-only file over a GCS blob, fetched in ranged chunks by a background thread.

    At most `depth` chunks are fetched ahead of the reader, so memory stays near
    `(depth + 1) x chunk_size` whatever the object's size. Every ranged read is pinned to the
    blob's generation (known after `reload()`), so an object overwritten mid-read fails instead of
    mixing two versions; the CRC32C of all bytes read is checked against the object's before the
    last chunk is handed over (`verify`), so a corrupted read fails before an upload is finalized.
    Transient errors (408/429/5xx, dropped connections) are retried per
    `retry`; other errors (404, 403) surface from `read()`. Use as a context manager, or `close()`.
    """

    def __init__(
        self,
        blob: Any,
        chunk_size: int = 8 * 1024 * 1024,
        depth: int = 2,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        verify: bool = True,
    ) -> None:
        super().__init__()
        if chunk_size < 1 or depth < 1:
            raise ValueError(f"chunk_size and depth must be >= 1, got {chunk_size} and {depth}")
        if blob.size is None or blob.generation is None:
            blob.reload()
        self.blob = blob
        self.size: int = int(blob.size)
        self.chunk_size = chunk_size
        self.depth = depth
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.retries = 0  # ranged reads tried again after a transient error
        self.wait_seconds = 0.0  # time the reader spent waiting for the fetcher
        # End-to-end check against the object's stored CRC32C (ranged reads carry no checksum).
        self._crc = google_crc32c.Checksum() if verify and blob.crc32c else None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._chunk = b""  # the chunk being read, and the read position in it
        self._at = 0
        self._position = 0
        self._done = False
        self._thread = threading.Thread(
            target=self._fetch_all, name=f"gcs-read-ahead-{blob.name}", daemon=True
        )
        self._thread.start()

    # -- io.RawIOBase --------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (one chunk at most per call; all the rest when size < 0); b"" at the end."""
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        if self._at >= len(self._chunk) and not self._next_chunk():
            return b""
        if self._at == 0 and size >= len(self._chunk):
            out = self._chunk  # the fetched chunk itself, no copy
        else:
            out = self._chunk[self._at : self._at + size]
        self._at += len(out)
        if self._at >= len(self._chunk):
            self._chunk, self._at = b"", 0
        self._position += len(out)
        return out

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(self.chunk_size):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Stop the fetcher and drop buffered chunks (safe to call twice, and from `__exit__`)."""
        if not self.closed and hasattr(self, "_thread"):  # __init__ may have failed (e.g. no such object)
            self._stop.set()
            self._thread.join(timeout=self.timeout + 5)
            self._chunk = b""
            while not self._queue.empty():
                self._queue.get_nowait()
        super().close()

    # -- the reader side -----------------------------------------------------------------------

    def _next_chunk(self) -> bool:
        if self._done:
            return False
        if self.closed:
            raise ValueError("I/O operation on closed GcsReadAhead")
        started = time.monotonic()
        item = self._queue.get()
        self.wait_seconds += time.monotonic() - started
        if item is _EOF:
            self._done = True
            return False
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        self._slots.release()
        self._chunk, self._at = item, 0
        return True

    # -- the fetcher thread --------------------------------------------------------------------

    def _fetch_all(self) -> None:
        try:
            for start in range(0, self.size, self.chunk_size):
                while not self._slots.acquire(timeout=_POLL):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                end = min(start + self.chunk_size, self.size)
                data = self._fetch(start, end)
                if self._crc is not None:
                    self._crc.update(data)
                    if end == self.size:
                        self._check_crc32c()  # before the last chunk is handed over, so before finalize
                self._queue.put(data)
            self._queue.put(_EOF)
        except BaseException as exc:  # handed to the reader, which raises it
            self._queue.put(_Failure(exc))

    def _check_crc32c(self) -> None:
        assert self._crc is not None
        got = base64.b64encode(self._crc.digest()).decode()
        if got != self.blob.crc32c:
            raise OSError(
                f"gs://{self.blob.bucket.name}/{self.blob.name}: the bytes read have CRC32C {got} but GCS "
                f"stores {self.blob.crc32c}; the read was corrupted or the object changed. Try again."
            )

    def _read_range(self, start: int, end: int) -> bytes:
        """Bytes `start` to `end - 1` of the stored object (no decompressive transcoding).

        One GET of the object's media link (which pins the generation) through the client's
        authorized session, read in a single call: `Blob.download_as_bytes` feeds the body through
        Python in 8 KiB pieces, about three times the CPU per GiB. Falls back to it when the blob's
        media link is not loaded.
        """
        session = getattr(self.blob.client, "_http", None)
        link = self.blob.media_link
        if not link or session is None:
            data: bytes = self.blob.download_as_bytes(
                start=start, end=end - 1, raw_download=True, checksum=None, retry=None, timeout=self.timeout
            )
            return data
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "gzip"}  # gzip: stored bytes as is
        with session.get(link, headers=headers, stream=True, timeout=self.timeout) as response:
            whole = start == 0 and end == self.size
            if response.status_code != 206 and not (response.status_code == 200 and whole):
                raise api_exceptions.from_http_response(response)
            parts = []
            wanted = end - start
            while wanted > 0:
                part = response.raw.read(wanted, decode_content=False)
                if not part:
                    break
                parts.append(part)
                wanted -= len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)

    def _fetch(self, start: int, end: int) -> bytes:
        failures = 0
        while True:
            try:
                data = self._read_range(start, end)
            except Exception as exc:
                failures += 1
                if failures >= self.retry.attempts or not is_transient_gcs_error(exc, self.retry):
                    raise
                wait = self.retry.delay(failures)
                self.retries += 1
                log.warning(
                    "Reading gs://%s/%s bytes %d-%d failed (%s); retry %d of %d in %.1f s.",
                    self.blob.bucket.name,
                    self.blob.name,
                    start,
                    end - 1,
                    type(exc).__name__,
                    failures,
                    self.retry.attempts - 1,
                    wait,
                )
                if self._stop.wait(wait):
                    raise
                continue
            if len(data) != end - start:
                raise OSError(
                    f"gs://{self.blob.bucket.name}/{self.blob.name}: asked for bytes {start}-{end - 1}, "
                    f"got {len(data)} bytes; was the object changed while it was read?"
                )
            return data
