"""Resumable upload to the Gemini Files API that retries chunks and resumes where it was cut.

Speaks the same wire protocol as `google.genai`'s `client.files.upload` (Google's resumable
"X-Goog-Upload" protocol): a `start` request to `{base}/upload/{version}/files` carrying the API key
and the file's metadata returns a session URL; chunks are POSTed to it with `X-Goog-Upload-Command:
upload` (the last `upload, finalize`) and `X-Goog-Upload-Offset`, carrying no key; the final reply
holds `{"file": {...}}`. Beyond the SDK, a failed or cut chunk is retried with backoff and jitter
after asking the server how much it has (`X-Goog-Upload-Command: query`, answered by
`X-Goog-Upload-Size-Received`), so only the missing bytes are sent again; streams need not be
seekable (the current chunk stays in memory so it can be re-sent), and progress is logged.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

import httpx
from google.genai import errors, types

from airflow_gemini_files.exceptions import GeminiFilesError, GeminiInputError
from airflow_gemini_files.hooks.policy import is_quota_full
from airflow_gemini_files.hooks.retry import RetryBudget, RetryPolicy, server_delay

log = logging.getLogger(__name__)

#: What `upload()` reads from: a binary file, a pipe, a socket file, a GcsReadAhead...
BinaryStream: TypeAlias = IO[bytes] | io.RawIOBase | io.BufferedIOBase

MiB = 1024 * 1024
DEFAULT_CHUNK_SIZE = 8 * MiB
SEND_PIECE = MiB
"""A chunk is read, kept and sent as pieces of at most this size, never joined into one buffer: httpx's
transport copies whatever a socket send leaves over before the next send, so one 8 MiB write was copied
again and again (about half the chunk per chunk on loopback)."""
#: Used when the caller gives no timeout: never hang forever on a dead peer.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=30.0)
_PROGRESS_STEP = 0.10  # log every 10 % ...
_PROGRESS_SECONDS = 5.0  # ... or every 5 s, whichever comes first
_USER_AGENT = "airflow-gemini-files"


class ResumableUploadError(GeminiFilesError):
    """The upload could not be completed: retries exhausted, session lost, or a protocol violation."""


@dataclass
class UploadStats:
    """What one upload cost on the wire (for logs, tests and benchmarks)."""

    requests: int = 0  # every HTTP request: start, chunks (re-sends included), queries
    chunks: int = 0  # chunk requests, re-sends included
    retries: int = 0  # failed requests (status or connection) that were tried again
    queries: int = 0  # `query` requests made to learn the committed offset
    bytes_sent: int = 0  # chunk body bytes put on the wire, re-sends included
    bytes_resent: int = 0  # bytes sent more than once
    seconds: float = 0.0  # wall time of the whole upload


class _Rewind(Exception):
    """The server has less than the current chunk's start: the stream must go back to `offset`."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class ResumableUpload:
    """Uploads one stream per `upload()` call through Gemini's resumable protocol, with retries.

    `base_url` and `api_version` are those of the `genai.Client` (e.g.
    `https://generativelanguage.googleapis.com`, `v1beta`). `timeout` is per request, in
    seconds (None: 30 s to connect, 300 s per read/write). An `http` client given by the caller
    is used as is and not closed; it must not carry the API key as a default header. `sleep` waits
    between tries (see :mod:`airflow_gemini_files.hooks.retry` for how long).
    One upload at a time per instance (`stats` describes the latest); use one instance per thread.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_version: str,
        api_key: str,
        retry: RetryPolicy,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if not api_key:
            raise GeminiInputError(
                "No Gemini API key: set it as the password of the Gemini connection (gemini_default)."
            )
        if chunk_size < 1:
            raise GeminiInputError(f"chunk_size must be a positive number of bytes, got {chunk_size!r}.")
        self._start_url = f"{base_url.rstrip('/')}/upload/{api_version.strip('/')}/files"
        self._api_key = api_key
        self._retry = retry
        self._chunk_size = chunk_size
        self._timeout = httpx.Timeout(timeout) if timeout is not None else DEFAULT_TIMEOUT
        self._server_timeout = str(math.ceil(timeout)) if timeout else None
        self._http = http
        self._sleep = sleep
        self.stats = UploadStats()

    def upload(
        self,
        stream: BinaryStream,
        *,
        size: int,
        mime_type: str,
        display_name: str | None = None,
        name: str | None = None,
        source_name: str | None = None,
    ) -> types.File:
        """Send `size` bytes read from `stream` (from its current position) and return the File.

        `source_name` names the upload in logs and errors (e.g. the source path); `name` is the
        optional `files/<id>` to create. The stream is read sequentially; it is rewound only
        when the server lost bytes before the current chunk, which needs `seek()`.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise GeminiInputError(f"size must be the stream's length in bytes (>= 0), got {size!r}.")
        if isinstance(stream, io.TextIOBase):
            raise GeminiInputError("The stream was opened in text mode; open it in binary mode ('rb').")
        if not mime_type:
            raise GeminiInputError("mime_type is required for an upload, e.g. 'application/pdf'.")
        if name is not None and not name.startswith("files/"):
            name = f"files/{name}"
        source_name = source_name or display_name or name or "stream"
        self.stats = UploadStats()
        started = time.monotonic()
        own_http = self._http is None
        http = self._http or httpx.Client(timeout=self._timeout, headers={"user-agent": _USER_AGENT})
        try:
            session = _Session(self, http, source_name, size)
            file = session.run(stream, mime_type=mime_type, display_name=display_name, name=name)
        finally:
            self.stats.seconds = time.monotonic() - started
            if own_http:
                http.close()
        stats = self.stats
        log.info(
            "Uploaded %s as %s: %.1f MiB in %.1f s (%.1f MiB/s); %d retries, %.1f MiB re-sent.",
            source_name,
            file.name,
            size / MiB,
            stats.seconds,
            size / MiB / max(stats.seconds, 1e-9),
            stats.retries,
            stats.bytes_resent / MiB,
        )
        return file


class _Session:
    """One upload session: the start request, the chunk loop and its recovery."""

    def __init__(self, owner: ResumableUpload, http: httpx.Client, source_name: str, size: int) -> None:
        self.owner = owner
        self.retry = owner._retry
        self.stats = owner.stats
        self.http = http
        self.source_name = source_name
        self.size = size
        self.url = ""
        self.high_water = 0  # end of the furthest byte range ever sent
        self.progress = _Progress(source_name, size)

    # -- protocol ---------------------------------------------------------------------------

    def run(
        self, stream: BinaryStream, *, mime_type: str, display_name: str | None, name: str | None
    ) -> types.File:
        granularity = self.start(mime_type=mime_type, display_name=display_name, name=name)
        chunk_size = self.owner._chunk_size
        if granularity and chunk_size % granularity:
            chunk_size = max(granularity, chunk_size - chunk_size % granularity)
        log.info(
            "Uploading %s (%.1f MiB, %s) in chunks of %.1f MiB.",
            self.source_name,
            self.size / MiB,
            mime_type,
            chunk_size / MiB,
        )
        try:
            return self.transfer(stream, chunk_size)
        except BaseException:
            self.cancel()  # frees the session (and a chosen name) server-side; nothing half-made stays
            raise

    def transfer(self, stream: BinaryStream, chunk_size: int) -> types.File:
        """Read, send and (when needed) resend chunks until the server answers `final`."""
        origin = _tell(stream)
        offset = rewinds = 0
        while True:
            want = min(chunk_size, self.size - offset)
            chunk = _read_chunk(stream, want)
            if len(chunk) < want:
                raise GeminiInputError(
                    f"{self.source_name}: the stream ended after {offset + len(chunk)} bytes but "
                    f"size={self.size} was announced; pass the stream's real size."
                )
            last = offset + want >= self.size
            if last and len(_read_chunk(stream, 1)):
                raise GeminiInputError(
                    f"{self.source_name}: the stream holds more than the announced size={self.size} bytes; "
                    "pass the stream's real size."
                )
            try:
                file = self.send_chunk(chunk, offset, last=last)
            except _Rewind as rewind:
                rewinds += 1
                if origin is None or rewinds >= self.retry.attempts:
                    raise ResumableUploadError(
                        f"{self.source_name}: the server lost bytes before offset {offset} (it has "
                        f"{rewind.offset}) and the stream cannot seek back (or it happened {rewinds} times); "
                        "upload again."
                    ) from None
                stream.seek(origin + rewind.offset)
                offset = rewind.offset
                continue
            offset += len(chunk)
            self.progress.update(offset)
            if file is not None:
                return file

    def start(self, *, mime_type: str, display_name: str | None, name: str | None) -> int | None:
        """Open the session; returns the server's chunk granularity, if it states one."""
        metadata: dict[str, Any] = {"mime_type": mime_type, "size_bytes": self.size}
        if display_name is not None:
            metadata["display_name"] = display_name
        if name is not None:
            metadata["name"] = name
        headers = {
            "x-goog-api-key": self.owner._api_key,
            "Content-Type": "application/json",
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(self.size),
            "X-Goog-Upload-Header-Content-Type": mime_type,
        }
        body = json.dumps({"file": metadata}).encode()
        budget = RetryBudget(self.retry)
        while True:
            try:
                response = self.post(self.owner._start_url, headers, body)
            except Exception as exc:
                if not self.retry.is_transient_error(exc):
                    raise
                self.backoff(budget, f"starting the upload failed ({type(exc).__name__})", exc)
                continue
            if response.status_code == 200:
                break
            if not self.retry.is_retryable_status(response.status_code) or _storage_quota_full(response):
                self.raise_api_error(response)
            self.backoff(budget, f"starting the upload got HTTP {response.status_code}", response)
        url = response.headers.get("x-goog-upload-url")
        if not url:
            raise ResumableUploadError(
                f"{self.source_name}: the upload start reply has no x-goog-upload-url header; is base_url a "
                "Gemini API endpoint?"
            )
        self.url = url
        granularity = response.headers.get("x-goog-upload-chunk-granularity")
        return int(granularity) if granularity and granularity.isdigit() and int(granularity) > 0 else None

    def send_chunk(self, chunk: _Chunk, chunk_offset: int, *, last: bool) -> types.File | None:
        """Send one chunk until the server has all of it; the File when the upload is final."""
        end = chunk_offset + len(chunk)
        command = "upload, finalize" if last else "upload"
        pos = chunk_offset
        budget = RetryBudget(self.retry)
        while True:
            body = chunk.after(pos - chunk_offset)
            headers = {"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(pos)}
            self.count_sent(pos, end - pos)
            problem: Exception | httpx.Response
            try:
                response = self.post(self.url, headers, body, chunk=True)
            except Exception as exc:
                if not self.retry.is_transient_error(exc):
                    raise
                problem, reason = exc, f"chunk at offset {pos} failed ({type(exc).__name__})"
            else:
                status = response.headers.get("x-goog-upload-status", "").lower()
                if response.status_code == 200 and status == "final":
                    return self.final_file(response, pos_ok=last)
                if response.status_code == 200 and status == "active":
                    received = _int_header(response, "x-goog-upload-size-received")
                    if last:
                        raise ResumableUploadError(
                            f"{self.source_name}: all {self.size} bytes were sent but the server did not "
                            "finalize the upload."
                        )
                    if received is None or received == end:
                        return None
                    problem, reason = response, f"server has {received} bytes after a chunk ending at {end}"
                elif status == "active" and _int_header(response, "x-goog-upload-size-received") is not None:
                    # Refused (e.g. a wrong offset) but the session lives: resync from what it has.
                    problem, reason = (
                        response,
                        f"chunk at offset {pos} refused with HTTP {response.status_code}",
                    )
                elif response.status_code != 200 and (
                    not self.retry.is_retryable_status(response.status_code) or _storage_quota_full(response)
                ):
                    self.raise_api_error(response)
                else:
                    problem = response
                    reason = f"chunk at offset {pos} got HTTP {response.status_code}"
                    if response.status_code == 200:
                        reason += " without x-goog-upload-status"
            self.backoff(budget, reason, problem)
            committed, file = self.query()
            if file is not None:
                return self.final_file(file, pos_ok=last, via_query=True)
            if committed < chunk_offset:
                raise _Rewind(committed)
            if committed > end:
                raise ResumableUploadError(
                    f"{self.source_name}: the server reports {committed} bytes received, beyond the {end} "
                    "sent."
                )
            if committed > pos:
                budget = RetryBudget(self.retry)  # progress was made: the failure budget starts again
            pos = committed
            if pos == end and not last:
                return None

    def query(self) -> tuple[int, httpx.Response | None]:
        """Ask the server how many bytes it has: (committed offset, final reply or None)."""
        budget = RetryBudget(self.retry)
        while True:
            self.stats.queries += 1
            try:
                response = self.post(self.url, {"X-Goog-Upload-Command": "query"}, b"", chunk=True)
            except Exception as exc:
                if not self.retry.is_transient_error(exc):
                    raise
                self.backoff(budget, f"query failed ({type(exc).__name__})", exc)
                continue
            status = response.headers.get("x-goog-upload-status", "").lower()
            if response.status_code == 200 and status == "final":
                return self.size, response
            received = _int_header(response, "x-goog-upload-size-received")
            if response.status_code == 200 and status == "active" and received is not None:
                return received, None
            if response.status_code != 200 and not self.retry.is_retryable_status(response.status_code):
                raise ResumableUploadError(
                    f"{self.source_name}: the upload session is gone (query answered HTTP "
                    f"{response.status_code}, status {status or 'none'}); upload the file again."
                )
            self.backoff(budget, f"query got HTTP {response.status_code}", response)

    def cancel(self) -> None:
        """Best effort: tell the server to drop the session so nothing is left half-uploaded."""
        try:
            self.post(self.url, {"X-Goog-Upload-Command": "cancel"}, b"", chunk=True, timeout=5.0)
        except Exception as exc:  # the caller is already raising the real error
            log.debug("Cancelling the upload session of %s failed: %s", self.source_name, type(exc).__name__)

    # -- helpers ----------------------------------------------------------------------------

    def post(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes | Sequence[bytes],
        *,
        chunk: bool = False,
        timeout: float | None = None,
    ) -> httpx.Response:
        if self.owner._server_timeout:
            headers = {**headers, "X-Server-Timeout": self.owner._server_timeout}
        pieces = [body] if isinstance(body, bytes) else body
        # The body goes in as a one-shot iterator: httpx keeps a Request (and bytes content) inside a
        # Request/Response reference cycle that only the garbage collector frees, which held every
        # sent chunk alive until a collection; an exhausted generator holds nothing. Each piece is
        # written to the socket on its own (see SEND_PIECE).
        headers = {**headers, "Content-Length": str(sum(len(piece) for piece in pieces))}
        request = self.http.build_request(
            "POST", url, headers=headers, content=_each(pieces), timeout=timeout or self.owner._timeout
        )
        if chunk:
            request.headers.pop("x-goog-api-key", None)  # session URLs are the credential; never send the key
        self.stats.requests += 1
        response = self.http.send(request)
        response.read()
        return response

    def count_sent(self, pos: int, length: int) -> None:
        self.stats.chunks += 1
        self.stats.bytes_sent += length
        end = pos + length
        self.stats.bytes_resent += max(0, min(end, self.high_water) - pos)
        self.high_water = max(self.high_water, end)

    def backoff(self, budget: RetryBudget, reason: str, problem: Exception | httpx.Response) -> None:
        """Count a failure and sleep before the next try, or give up when the budget is spent.

        The wait is the one every call of the provider uses (:class:`~..retry.RetryBudget`): the backoff,
        or longer when the server asked (``RetryInfo.retryDelay``, ``Retry-After``).
        """
        asked = server_delay(problem) if isinstance(problem, httpx.Response) else None
        wait = budget.next_wait(asked)
        if wait is None:
            message = (
                f"{self.source_name}: giving up after {budget.retries + 1} attempts ({budget.refusal}): "
                f"{reason}."
            )
            if isinstance(problem, httpx.Response) and problem.status_code != 200:
                self.raise_api_error(problem, prefix=message)
            raise ResumableUploadError(message) from (problem if isinstance(problem, Exception) else None)
        self.stats.retries += 1
        log.warning(
            "Upload of %s: %s; retry %d of %d in %.1f s.",
            self.source_name,
            reason,
            budget.retries,
            self.retry.attempts - 1,
            wait,
        )
        self.owner._sleep(wait)

    def final_file(self, response: httpx.Response, *, pos_ok: bool, via_query: bool = False) -> types.File:
        if not pos_ok:
            raise ResumableUploadError(
                f"{self.source_name}: the server finalized the upload before all {self.size} bytes were sent."
            )
        try:
            payload = response.json()["file"]
            return types.File.model_validate(payload)
        except (ValueError, KeyError, TypeError) as err:
            if via_query:  # the finalize reply was lost and the server does not repeat it
                raise ResumableUploadError(
                    f"{self.source_name}: the server completed the upload but its reply was lost; look the "
                    "file up by its name or display name before uploading it again."
                ) from None
            raise ResumableUploadError(
                f"{self.source_name}: the final upload reply is not a {{'file': {{...}}}} resource ({err})."
            ) from None

    def raise_api_error(self, response: httpx.Response, prefix: str | None = None) -> None:
        """Raise the SDK's ClientError/ServerError, as `client.files.upload` would, without the key."""
        try:
            payload: Any = response.json()
        except ValueError:
            payload = {"error": {"code": response.status_code, "message": response.text[:500]}}
        text = json.dumps(payload).replace(self.owner._api_key, "***")
        payload = json.loads(text)
        if prefix and isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            payload["error"]["message"] = f"{prefix} {payload['error'].get('message', '')}".strip()
        # No response object: it holds the request, whose headers hold the API key.
        errors.APIError.raise_error(response.status_code, payload, None)


class _Progress:
    """Logs percent, MiB and MiB/s every ~10 % or ~5 s."""

    def __init__(self, source_name: str, size: int) -> None:
        self.source_name = source_name
        self.size = size
        self.started = self.last_time = time.monotonic()
        self.last_fraction = 0.0

    def update(self, done: int) -> None:
        if not self.size:
            return
        now = time.monotonic()
        fraction = done / self.size
        if fraction >= 1 or (
            fraction - self.last_fraction < _PROGRESS_STEP and now - self.last_time < _PROGRESS_SECONDS
        ):
            return
        self.last_fraction, self.last_time = fraction, now
        log.info(
            "Uploading %s: %3.0f%% (%.1f of %.1f MiB) at %.1f MiB/s.",
            self.source_name,
            fraction * 100,
            done / MiB,
            self.size / MiB,
            done / MiB / max(now - self.started, 1e-9),
        )


def _each(pieces: Sequence[bytes]) -> Iterator[bytes]:
    yield from pieces


class _Chunk:
    """One chunk's bytes, as the pieces they were read in (joining or slicing them would copy them)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.length = sum(len(piece) for piece in pieces)

    def __len__(self) -> int:
        return self.length

    def after(self, skip: int) -> list[bytes]:
        """The pieces from byte `skip` on; only the piece `skip` falls into is sliced."""
        if skip <= 0:
            return self.pieces
        out = []
        for piece in self.pieces:
            if skip >= len(piece):
                skip -= len(piece)
                continue
            out.append(piece[skip:] if skip else piece)
            skip = 0
        return out


def _read_chunk(stream: BinaryStream, n: int) -> _Chunk:
    """Read `n` bytes in pieces of at most SEND_PIECE, looping over short reads (pipes, sockets); fewer
    only at end of stream."""
    pieces: list[bytes] = []
    got = 0
    while got < n:
        piece = stream.read(min(SEND_PIECE, n - got))
        if isinstance(piece, str):
            raise GeminiInputError("The stream was opened in text mode; open it in binary mode ('rb').")
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return _Chunk(pieces)


def _tell(stream: BinaryStream) -> int | None:
    """The stream's position if it can seek back to it, else None."""
    try:
        return stream.tell() if stream.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _storage_quota_full(response: httpx.Response) -> bool:
    """A 429 for the project's file storage quota: waiting seconds frees no space, so it is not retried."""
    return is_quota_full(response.status_code, response.text)


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None
