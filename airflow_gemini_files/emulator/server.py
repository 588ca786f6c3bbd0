"""The HTTP layer: routes the Gemini API's REST paths (and ``/_emulator/*`` controls) onto the store.

Why the standard library's ``ThreadingHTTPServer`` (measured: ``bench/emulator_server_choice.py``): the
expensive request is an upload chunk, whose cost is the SHA-256 and the page-cache write, not HTTP
parsing. A thread per connection reads the socket with large ``readinto`` calls into two alternating
buffers while a disk worker hashes and writes the previous piece (a two-stage pipeline). Against a
uvicorn + httptools + uvloop ASGI app doing the same hash-and-write, fed by the same bare-socket
client with 8 MiB chunks on the (busy) 2-vCPU build machine, this server took 180-415 MiB/s (560-680
MiB per CPU-second) where uvicorn took 60-155 MiB/s (270-430 MiB per CPU-second): uvicorn hands the body over
in 64 KiB pieces and hashes and writes them on its event loop, which also blocks every other request
meanwhile. Threads also mean model latency (``time.sleep``) never serialises concurrent requests: a
500-document fan-out gets as many parallel answers as it opens connections. Memory is bounded by the
two 1 MiB buffers of each body in flight (allocated per request, returned afterwards): a 1 GiB upload
peaks at ~27 MiB RSS. The listen backlog is raised so fan-out bursts are not refused.

Nothing here logs headers: API keys and bearer tokens never reach a log; a ``key=`` query
parameter is redacted from the request line before it is logged.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import mmap
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.emulator.errors import FAULT_MESSAGES, ApiError
from airflow_gemini_files.emulator.generate import generate
from airflow_gemini_files.emulator.store import ChunkWriter, StoredFile, UploadSession

if TYPE_CHECKING:
    from airflow_gemini_files.emulator.control import GeminiEmulator

log = logging.getLogger(__name__)

_BUFFER = 1024 * 1024
_SOCKET_BUFFER = 4 * 1024 * 1024
_MMAP_MIN = 256 * 1024
_MAX_JSON_BODY = 64 * 1024 * 1024
_VERSION = r"(?P<ver>v1|v1beta|v1alpha)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(rf"^/upload/{_VERSION}/files$"), "upload"),
    ("GET", re.compile(rf"^/{_VERSION}/files$"), "list"),
    ("POST", re.compile(rf"^/{_VERSION}/files:register$"), "register"),
    ("GET", re.compile(rf"^/{_VERSION}/files/(?P<id>[^/:]+)$"), "get"),
    ("DELETE", re.compile(rf"^/{_VERSION}/files/(?P<id>[^/:]+)$"), "delete"),
    ("POST", re.compile(rf"^/{_VERSION}/models/(?P<model>[^/:]+):generateContent$"), "generate"),
]
_REDACT = re.compile(r"((?:^|[?&])(?:key|access_token)=)[^&]*", re.IGNORECASE)


@functools.cache
def _disk_pool() -> ThreadPoolExecutor:
    """Workers that hash and write upload pieces while request threads read the next ones."""
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="gemini-emulator-disk")


def redact(path: str) -> str:
    """A request path safe to log: credentials in the query string replaced by ``REDACTED``."""
    return _REDACT.sub(r"\1REDACTED", path)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Thread per connection, daemon threads, a deep backlog for fan-out bursts."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], emulator: GeminiEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with contextlib.suppress(OSError):  # fewer, larger reads for upload chunks
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        with contextlib.suppress(OSError):  # headers and body go out at once: no 40 ms delayed-ACK stall
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class Handler(BaseHTTPRequestHandler):
    """One request at a time per connection (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer
    server_version = "gemini-files-emulator"
    sys_version = ""

    # ---- plumbing ---------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), redact(format % args))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, redact(self.path), code)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(payload).encode(), headers)

    def _send_error(self, error: ApiError, headers: dict[str, str] | None = None) -> None:
        self._send(error.code, error.body(), headers)

    def _drain(self) -> None:
        """Consume what is left of the request body (keeps the keep-alive connection usable)."""
        for _ in self._body.pieces():
            pass

    def _json_body(self) -> dict[str, Any]:
        raw = bytearray()
        for piece in self._body.pieces():
            raw += piece
            if len(raw) > _MAX_JSON_BODY:
                self._drain()
                raise ApiError(413, f"Request payload size exceeds the limit: {_MAX_JSON_BODY} bytes.")
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "Invalid JSON payload received.") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received: expected an object.")
        return body

    # ---- routing ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        emu = self.server.emulator
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        path = parsed.path
        self._body = BodyReader(self.rfile, self.headers)
        try:
            if self._body.invalid:
                self.close_connection = True
                raise ApiError(400, "Invalid Content-Length.")
            if path.startswith("/_emulator/"):
                self._control(path.removeprefix("/_emulator/"))
                return
            for method, pattern, action in _ROUTES:
                match = pattern.match(path)
                if match is None or method != self.command:
                    continue
                if action == "upload" and "upload_id" in query:
                    with emu.store.serving("upload_chunk"):
                        self._upload_chunk(query["upload_id"])
                    return
                operation = "upload_start" if action == "upload" else action
                emu.store.count(operation)  # refused requests count too: stats must show retry storms
                with emu.store.serving(operation):  # peak concurrency per operation, for stats()
                    self._check_api_key(query)
                    if not self._apply_faults(operation):
                        getattr(self, f"_{action}")(match.groupdict(), query)
                return
            raise ApiError(404, f"Method or path not found: {self.command} {parsed.path}", "NOT_FOUND")
        except ApiError as error:
            self._reply_error(error)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("emulator error on %s %s", self.command, redact(self.path))
            self.close_connection = True
            self._reply_error(ApiError(500, "Internal error in the emulator."))
        finally:
            self._body.release()

    def _reply_error(self, error: ApiError, headers: dict[str, str] | None = None) -> None:
        """Answer an error after consuming the rest of the body; a vanished client is not an error."""
        try:
            if not self._body.done:
                self._drain()
            self._send_error(error, headers)
        except (ConnectionError, TimeoutError, ApiError):
            self.close_connection = True

    def _check_api_key(self, query: dict[str, str]) -> None:
        expected = self.server.emulator.api_key
        given = self.headers.get("x-goog-api-key") or query.get("key")
        if given is None:
            raise ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
                "PERMISSION_DENIED",
            )
        if expected is not None and given != expected:
            raise ApiError(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")

    def _apply_faults(self, operation: str) -> bool:
        """Sleep and/or answer an injected error; True when the request was answered here."""
        decision = self.server.emulator.faults.decide(operation)
        if decision.latency:
            time.sleep(decision.latency)
        if decision.status is None:
            return False
        self._drain()
        self._send_error(ApiError(decision.status, FAULT_MESSAGES[decision.status]))
        return True

    # ---- Files API --------------------------------------------------------------------------
    def _file_json(self, stored: StoredFile) -> dict[str, Any]:
        emu = self.server.emulator
        return stored.resource(emu.store.clock.now(), emu.base_url)

    def _upload(self, params: dict[str, str], query: dict[str, str]) -> None:
        emu = self.server.emulator
        if self.headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable":
            self._drain()
            raise ApiError(
                400, "Only the resumable upload protocol (X-Goog-Upload-Protocol: resumable) is supported."
            )
        if self.headers.get("X-Goog-Upload-Command", "").lower() != "start":
            self._drain()
            raise ApiError(
                400, "The first request of a resumable upload must carry X-Goog-Upload-Command: start."
            )
        body = self._json_body()
        meta = body.get("file") or {}
        declared_raw = self.headers.get("X-Goog-Upload-Header-Content-Length") or _get(
            meta, "sizeBytes", "size_bytes"
        )
        try:
            declared = int(declared_raw) if declared_raw is not None else None
        except ValueError as exc:
            raise ApiError(400, f"Invalid upload size {declared_raw!r}.") from exc
        session = emu.store.start_upload(
            name=meta.get("name"),
            display_name=_get(meta, "displayName", "display_name"),
            mime_type=_get(meta, "mimeType", "mime_type")
            or self.headers.get("X-Goog-Upload-Header-Content-Type"),
            declared_size=declared,
        )
        upload_url = (
            f"{emu.base_url}/upload/{params['ver']}/files"
            f"?upload_id={session.upload_id}&upload_protocol=resumable"
        )
        self._send(
            200,
            b"{}",
            {
                "x-goog-upload-url": upload_url,
                "x-goog-upload-status": "active",
                "x-goog-upload-chunk-granularity": str(256 * 1024),
            },
        )

    def _upload_chunk(self, upload_id: str) -> None:
        """``upload`` / ``upload, finalize`` / ``finalize`` / ``query`` on an upload session (no API key)."""
        emu = self.server.emulator
        store = emu.store
        commands = {c.strip().lower() for c in self.headers.get("X-Goog-Upload-Command", "").split(",")}
        if "query" in commands:
            store.count("upload_query")
            self._drain()
            if self._apply_faults("upload_query"):
                return
            session = store.session(upload_id)
            self._send(
                200,
                b"",
                {"x-goog-upload-status": "active", "x-goog-upload-size-received": str(session.offset)},
            )
            return
        store.count("upload_chunk")
        decision = emu.faults.decide("upload_chunk")
        if decision.latency:
            time.sleep(decision.latency)
        if decision.status is not None:
            raise ApiError(decision.status, FAULT_MESSAGES[decision.status])
        if not commands & {"upload", "finalize"}:
            raise ApiError(
                400, "X-Goog-Upload-Command must be upload, finalize, 'upload, finalize' or query."
            )
        try:
            session = store.session(upload_id)
        except ApiError as error:
            self._reply_error(error, {"x-goog-upload-status": "final"})
            return
        offset_raw = self.headers.get("X-Goog-Upload-Offset")
        with session.lock:
            try:
                offset = int(offset_raw) if offset_raw is not None else None
            except ValueError as exc:
                raise ApiError(400, f"Invalid X-Goog-Upload-Offset {offset_raw!r}.") from exc
            try:
                store.check_offset(session, offset)
            except ApiError as error:
                self._reply_error(
                    error,
                    {"x-goog-upload-status": "active", "x-goog-upload-size-received": str(session.offset)},
                )
                return
            try:
                received = self._receive(session, drop=decision.drop)
            except ApiError as error:  # more bytes than declared / allowed: the session is over
                store.abandon(session)
                self._reply_error(error, {"x-goog-upload-status": "final"})
                return
            if not received:
                return
            if "finalize" not in commands:
                self._send(
                    200,
                    b"",
                    {"x-goog-upload-status": "active", "x-goog-upload-size-received": str(session.offset)},
                )
                return
            try:
                stored = store.finalize(session)
            except ApiError as error:
                self._reply_error(error, {"x-goog-upload-status": "final"})
                return
        self._send_json({"file": self._file_json(stored)}, {"x-goog-upload-status": "final"})

    def _receive(self, session: UploadSession, *, drop: bool) -> bool:
        """Stream the body onto the session's file; commit it only when it arrived whole.

        Two-stage pipeline: this thread reads the socket into one buffer while a disk worker hashes
        and writes the previous piece from the other one. False when the connection went away (or a
        fault cut it): nothing of the chunk is committed.
        """
        store = self.server.emulator.store
        writer = ChunkWriter(session)
        limit = store.size_limit(session)
        cut_after = (self._body.length or 2 * _BUFFER) // 2 if drop else None
        received = 0
        pending: Future[None] | None = None
        try:
            try:
                for piece in self._body.pieces():
                    received += len(piece)
                    if session.offset + received > limit:
                        raise store.too_big(session, session.offset + received)
                    if pending is not None:
                        pending.result()
                    pending = _disk_pool().submit(writer.write, piece)
                    if cut_after is not None and received >= cut_after:
                        break
            finally:
                if pending is not None:
                    pending.result()
        except (ConnectionError, TimeoutError, OSError):
            writer.rollback()
            self.close_connection = True
            return False
        except ApiError:
            writer.rollback()
            raise
        if cut_after is not None:
            writer.rollback()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return False
        writer.commit()
        return True

    def _get(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        self._send_json(self._file_json(self.server.emulator.store.get(params["id"])))

    def _list(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        try:
            page_size = int(query["pageSize"]) if "pageSize" in query else None
        except ValueError as exc:
            raise ApiError(400, f"Invalid pageSize {query['pageSize']!r}.") from exc
        files, token = self.server.emulator.store.list_files(page_size, query.get("pageToken"))
        payload: dict[str, Any] = {"files": [self._file_json(f) for f in files]} if files else {}
        if token:
            payload["nextPageToken"] = token
        self._send_json(payload)

    def _delete(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        self.server.emulator.store.delete(params["id"])
        self._send_json({})

    def _register(self, params: dict[str, str], query: dict[str, str]) -> None:
        body = self._json_body()
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
                "UNAUTHENTICATED",
            )
        emu = self.server.emulator
        uris = body.get("uris")
        if not isinstance(uris, list):
            raise ApiError(400, "uris must be a list of gs:// URIs.")
        files = emu.store.register(uris, emu.gcs_metadata)
        self._send_json({"files": [self._file_json(f) for f in files]})

    def _generate(self, params: dict[str, str], query: dict[str, str]) -> None:
        emu = self.server.emulator
        body = self._json_body()
        model = params["model"]
        if not model.startswith("gemini-"):
            raise ApiError(
                404,
                f"models/{model} is not found for API version {params['ver']}, or is not supported for "
                "generateContent. Call ListModels to see the list of available models and their supported "
                "methods.",
                "NOT_FOUND",
            )
        started = time.monotonic()
        payload = generate(model, body, emu.store)
        if emu.model_latency:
            time.sleep(max(0.0, emu.model_latency - (time.monotonic() - started)))
        self._send_json(payload)

    # ---- /_emulator controls ----------------------------------------------------------------
    def _control(self, action: str) -> None:
        """The test controls over HTTP, for an emulator started from the CLI (no API key needed).

        ``GET stats`` | ``GET files`` | ``GET config`` | ``POST config`` {settings of ``configure``} |
        ``POST reset`` | ``POST clock`` {"seconds"} | ``POST fail_processing`` {"match", "message"} |
        ``POST faults`` {"operation", "rate", "statuses", "sequence", "latency", "drop_mid_chunk"}.
        """
        emu = self.server.emulator
        body = self._json_body() if self.command == "POST" else {}
        if self.command == "GET" and action == "stats":
            self._send_json(emu.stats())
        elif self.command == "GET" and action == "files":
            self._send_json({"files": emu.files()})
        elif self.command == "GET" and action == "config":
            self._send_json(emu.settings())
        elif self.command == "POST" and action == "config":
            try:
                emu.configure(**body)
            except TypeError as exc:
                raise ApiError(400, f"Invalid settings: {exc}") from exc
            self._send_json(emu.settings())
        elif self.command == "POST" and action == "reset":
            emu.reset()
            self._send_json({})
        elif self.command == "POST" and action == "clock":
            emu.advance_clock(float(body.get("seconds", 0)))
            self._send_json({"now": emu.store.clock.now()})
        elif self.command == "POST" and action == "fail_processing":
            emu.fail_processing(str(body["match"]), str(body.get("message", "Processing failed.")))
            self._send_json({})
        elif self.command == "POST" and action == "faults":
            try:
                operation = str(body.pop("operation"))
                emu.inject_faults(operation, **body)
            except (KeyError, TypeError, ValueError) as exc:
                raise ApiError(400, f"Invalid fault plan: {exc}") from exc
            self._send_json({})
        else:
            raise ApiError(404, f"Unknown emulator control {self.command} /_emulator/{action}", "NOT_FOUND")


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def fetch_gcs_metadata(gcs_host: str | None, uri: str) -> dict[str, Any]:
    """An object's metadata from the GCS JSON API at ``gcs_host`` (the GCS emulator)."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not gcs_host:
        raise ApiError(
            400,
            f"Cannot register {uri}: the emulator has no GCS to read it from (set STORAGE_EMULATOR_HOST).",
            "FAILED_PRECONDITION",
        )
    host = gcs_host if "://" in gcs_host else f"http://{gcs_host}"
    quote = urllib.parse.quote
    url = f"{host.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ApiError(404, f"The object {uri} does not exist or is not readable.", "NOT_FOUND") from exc
        raise ApiError(500, f"Reading the metadata of {uri} failed with HTTP {exc.code}.") from exc
    except OSError as exc:
        raise ApiError(503, f"The storage service for {uri} is unreachable: {exc}", "UNAVAILABLE") from exc


class BodyReader:
    """The request body as a stream of pieces read into one reused buffer (Content-Length or chunked).

    It remembers how much is left, so a caller may stop half-way and :meth:`pieces` resumes there.
    """

    def __init__(self, rfile: io.BufferedIOBase, headers: Message) -> None:
        self._rfile = rfile
        # Allocated on first use, freed with the reader: an idle keep-alive connection holds no
        # buffer, so a 500-request fan-out costs memory only for the bodies in flight.
        self._buffers: list[memoryview | None] = [None, None]
        self._turn = 0
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.length: int | None = None
        self.invalid = False
        self._left = 0  # bytes left in the body (Content-Length) or in the current chunk (chunked)
        if not self.chunked:
            try:
                self.length = int(headers.get("Content-Length", "0"))
            except ValueError:
                self.length, self.invalid = 0, True
            self._left = self.length
        self.done = not self.chunked and not self.length

    def _next_chunk_size(self) -> int:
        line = self._rfile.readline(1024)
        if not line:
            raise ConnectionError("client closed the connection mid-body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise ConnectionError("malformed chunked body") from exc
        if size == 0:
            while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
        return size

    def release(self) -> None:
        """Give the buffers back (the connection may now idle for a long time)."""
        self._buffers = [None, None]

    def _buffer(self) -> memoryview:
        turn, self._turn = self._turn, self._turn ^ 1
        buffer = self._buffers[turn]
        if buffer is None:
            size = _BUFFER if self.chunked else min(self._left, _BUFFER)
            # Anonymous mmap: pages come from and go back to the OS (malloc would keep freed MiBs).
            buffer = memoryview(mmap.mmap(-1, size) if size >= _MMAP_MIN else bytearray(size))
            self._buffers[turn] = buffer
        return buffer

    def pieces(self) -> Iterator[memoryview]:
        """Yield the rest of the body, alternating between two buffers: a piece stays valid while the
        next one is read, and is overwritten by the one after."""
        while not self.done:
            if self._left == 0:
                if not self.chunked:
                    self.done = True
                    return
                self._left = self._next_chunk_size()
                if self._left == 0:
                    self.done = True
                    return
            buffer = self._buffer()
            n = self._rfile.readinto(buffer[: min(self._left, len(buffer))])
            if not n:
                raise ConnectionError("client closed the connection mid-body")
            self._left -= n
            if self.chunked and self._left == 0:
                self._rfile.readline(8)  # the CRLF after each chunk
            elif not self.chunked and self._left == 0:
                self.done = True
            yield buffer[:n]
