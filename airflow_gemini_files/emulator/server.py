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

Nothing here logs headers: API keys and bearer tokens never reach a log; ``key=``, ``access_token=``
and ``upload_id=`` (an upload session URL is a credential) are redacted from the request line.

Hardening, since the emulator listens on a real port: requests whose ``Host`` is not the bound address,
or that carry a foreign ``Origin``, are refused (no DNS rebinding, no cross-site requests from a web
page); with an API key set, the ``/_emulator/*`` controls need it too; keys are compared in constant
time; every socket has a timeout; JSON bodies over 1 MiB are read by a bounded number of requests at
once, controls take at most 1 MiB.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import io
import json
import logging
import mmap
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.emulator import batches, errors
from airflow_gemini_files.emulator.errors import FAULT_MESSAGES, ApiError, not_found_file
from airflow_gemini_files.emulator.faults import Decision
from airflow_gemini_files.emulator.generate import count_tokens, generate
from airflow_gemini_files.emulator.store import ChunkWriter, StoredFile, UploadSession

if TYPE_CHECKING:
    from airflow_gemini_files.emulator.control import GeminiEmulator

log = logging.getLogger(__name__)

_BUFFER = 1024 * 1024
_SOCKET_BUFFER = 4 * 1024 * 1024
_MMAP_MIN = 256 * 1024
_SMALL_BODY = 1024 * 1024  # JSON bodies above this share a bounded number of slots
_MAX_CONTROL_BODY = 1024 * 1024
#: Chunk granularity the upload protocol advertises: every chunk but the last is a multiple of it.
CHUNK_GRANULARITY = 256 * 1024
_VERSION = r"(?P<ver>v1|v1beta|v1alpha)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(rf"^/upload/{_VERSION}/files$"), "upload"),
    ("GET", re.compile(rf"^/{_VERSION}/files$"), "list"),
    ("POST", re.compile(rf"^/{_VERSION}/files:register$"), "register"),
    ("GET", re.compile(rf"^/{_VERSION}/files/(?P<id>[^/:]+)$"), "get"),
    ("DELETE", re.compile(rf"^/{_VERSION}/files/(?P<id>[^/:]+)$"), "delete"),
    ("GET", re.compile(rf"^/{_VERSION}/models$"), "list_models"),
    ("GET", re.compile(rf"^/{_VERSION}/models/(?P<model>[^/:]+)$"), "get_model"),
    ("POST", re.compile(rf"^/{_VERSION}/models/(?P<model>[^/:]+):generateContent$"), "generate"),
    ("POST", re.compile(rf"^/{_VERSION}/models/(?P<model>[^/:]+):countTokens$"), "count_tokens"),
    ("GET", re.compile(rf"^/{_VERSION}/files/(?P<id>[^/:]+):download$"), "download"),
    ("POST", re.compile(rf"^/{_VERSION}/models/(?P<model>[^/:]+):batchGenerateContent$"), "batch_create"),
    ("GET", re.compile(rf"^/{_VERSION}/batches$"), "batch_list"),
    ("GET", re.compile(rf"^/{_VERSION}/batches/(?P<id>[^/:]+)$"), "batch_get"),
    ("POST", re.compile(rf"^/{_VERSION}/batches/(?P<id>[^/:]+):cancel$"), "batch_cancel"),
    ("DELETE", re.compile(rf"^/{_VERSION}/batches/(?P<id>[^/:]+)$"), "batch_delete"),
]
#: Route action -> the operation it counts as (stats, fault injection) where the names differ.
_OPERATION_OF = {"upload": "upload_start", "list_models": "models", "get_model": "models"}
_REDACT = re.compile(r"((?:^|[?&])(?:key|access_token|upload_id)=)[^&]*", re.IGNORECASE)


@functools.cache
def _disk_pool() -> ThreadPoolExecutor:
    """Workers that hash and write upload pieces while request threads read the next ones."""
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="gemini-emulator-disk")


def redact(path: str) -> str:
    """A request path safe to log: credentials in the query string replaced by ``REDACTED``."""
    return _REDACT.sub(r"\1REDACTED", path)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Thread per connection, daemon threads, a deep backlog for fan-out bursts.

    ``socket_timeout``: seconds a connection may stay silent (idle keep-alive, stalled body) before it
    is closed. ``max_large_bodies``: JSON bodies over 1 MiB read at once; more wait for a slot.
    ``allowed_hosts``: the ``Host`` values accepted (None: any, for a wildcard bind).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        emulator: GeminiEmulator,
        *,
        socket_timeout: float = 60.0,
        max_large_bodies: int = 2,
        extra_hosts: tuple[str, ...] = (),
    ) -> None:
        self.emulator = emulator
        self.socket_timeout = socket_timeout
        self.large_bodies = threading.BoundedSemaphore(max_large_bodies)
        super().__init__(address, Handler)
        self.allowed_hosts = _allowed_hosts(address[0], self.server_address[1], extra_hosts)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with contextlib.suppress(OSError):  # fewer, larger reads for upload chunks
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        with contextlib.suppress(OSError):  # headers and body go out at once: no 40 ms delayed-ACK stall
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


def _allowed_hosts(host: str, port: int, extra: tuple[str, ...]) -> frozenset[str] | None:
    """``Host`` header values this server answers: its own address (and the loopback names for it)."""
    names = {host.lower()}
    if host in ("127.0.0.1", "localhost", "::1"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    elif host in ("", "0.0.0.0", "::"):  # a wildcard bind: only the names the user allowed, if any
        if not extra:
            return None
        names = set()
    hosts = {f"{name}:{port}" for name in names} | {h.lower() for h in extra}
    return frozenset(hosts | {f"{h}:{port}" for h in extra if ":" not in h})


class ChunkRefused(ApiError):
    """A chunk the session does not take (wrong offset, misaligned); the session itself lives on."""


class Handler(BaseHTTPRequestHandler):
    """One request at a time per connection (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer
    server_version = "gemini-files-emulator"
    sys_version = ""

    # ---- plumbing ---------------------------------------------------------------------------
    _holds_large_body = False

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.socket_timeout)  # silent peers cannot hold a thread

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
        self._send(error.code, error.body(), {**error.headers, **(headers or {})})

    def _drain(self) -> None:
        """Consume what is left of the request body (keeps the keep-alive connection usable)."""
        for _ in self._body.pieces():
            pass

    def _json_body(self, limit: int | None = None) -> dict[str, Any]:
        """The body as a JSON object; bodies over 1 MiB wait for one of the server's large-body slots."""
        limit = limit or self.server.emulator.max_json_body
        if (self._body.length or 0) > _SMALL_BODY:
            self._hold_large_body_slot()
        raw = bytearray()
        for piece in self._body.pieces():
            raw += piece
            if len(raw) > _SMALL_BODY:
                self._hold_large_body_slot()
            if len(raw) > limit:
                raise ApiError(413, f"Request payload size exceeds the limit: {limit} bytes.")
        self._json_size = len(raw)
        if not raw:
            return {}
        try:
            body = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ApiError(400, f"Invalid JSON payload received: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received: expected an object.")
        return body

    def _hold_large_body_slot(self) -> None:
        if self._holds_large_body:
            return
        if not self.server.large_bodies.acquire(timeout=self.server.socket_timeout):
            raise ApiError(503, "Too many large requests at once; retry later.", "UNAVAILABLE")
        self._holds_large_body = True

    def _check_host(self) -> None:
        """Refuse requests for another host name (DNS rebinding) or from a web page (``Origin``)."""
        allowed = self.server.allowed_hosts
        host = (self.headers.get("Host") or "").strip().lower()
        origin = self.headers.get("Origin")
        if allowed is not None and host not in allowed:
            reason = f"the Host header {host!r} is not this emulator's address"
        elif origin is not None and (
            allowed is None or origin.strip().lower() not in {f"http://{h}" for h in allowed}
        ):
            reason = f"requests from web pages (Origin {origin!r}) are not served"
        else:
            return
        self.close_connection = True
        raise ApiError(
            403,
            f"Refused: {reason} ({self.server.emulator.base_url}); the emulator only answers local clients "
            "that address it by its own host and port.",
            "PERMISSION_DENIED",
        )

    # ---- routing ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        emu = self.server.emulator
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        path = parsed.path
        self._body = BodyReader(self.rfile, self.headers)
        self._holds_large_body = False
        try:
            self._check_host()
            if self._body.invalid:
                self.close_connection = True
                raise ApiError(400, "Invalid Content-Length.")
            if path.startswith("/_emulator/"):
                self._control(path.removeprefix("/_emulator/"), query)
                return
            for method, pattern, action in _ROUTES:
                match = pattern.match(path)
                if match is None or method != self.command:
                    continue
                if action == "upload" and "upload_id" in query:
                    with emu.store.serving("upload_chunk"):
                        self._upload_chunk(query["upload_id"])
                    return
                params = match.groupdict()
                operation = _OPERATION_OF.get(action, action)
                emu.store.count(operation)  # refused requests count too: stats must show retry storms
                with emu.store.serving(operation):  # peak concurrency per operation, for stats()
                    if action == "register":
                        self._check_register_auth(query)
                    else:
                        self._check_api_key(query)
                    if not self._apply_faults(operation, params.get("model")):
                        getattr(self, f"_{action}")(params, query)
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
            if self._holds_large_body:
                self.server.large_bodies.release()

    def _reply_error(self, error: ApiError, headers: dict[str, str] | None = None) -> None:
        """Answer an error after consuming the rest of the body; a vanished client is not an error."""
        try:
            if not self._body.done and not self.close_connection:
                self._drain()
            self._send_error(error, headers)
        except (ConnectionError, TimeoutError, ApiError):
            self.close_connection = True

    def _given_key(self, query: dict[str, str]) -> str | None:
        return self.headers.get("x-goog-api-key") or query.get("key") or None

    def _check_api_key(self, query: dict[str, str]) -> None:
        given = self._given_key(query)
        if given is None:
            raise errors.missing_api_key()
        self._check_key_value(given)

    def _check_key_value(self, given: str) -> None:
        expected = self.server.emulator.api_key
        if expected is not None and not hmac.compare_digest(given.encode(), expected.encode()):
            raise errors.invalid_api_key()

    def _check_register_auth(self, query: dict[str, str]) -> None:
        """Authentication of ``files:register`` as the emulated server's ``register_auth`` mode wants it.

        ``key_and_bearer`` (the seed notebook): API key plus OAuth token. ``key_only``: the key alone (its
        service agent reads the bucket); a token with it is OVERLOADED_CREDENTIALS, a token alone is
        refused by identity. ``credentials_only``: an OAuth token alone.
        """
        emu = self.server.emulator
        key = self._given_key(query)
        if key is not None:
            self._check_key_value(key)
        auth = self.headers.get("Authorization", "")
        bearer = auth.lower().startswith("bearer ") and bool(auth[7:].strip())
        mode = emu.register_auth
        if key is not None and bearer:
            if mode != "key_and_bearer":
                raise errors.overloaded_credentials()
        elif key is not None:
            if mode != "key_only":
                raise errors.oauth_required()
        elif bearer:
            if mode == "key_only":
                is_service_account = emu.register_identity == "service_account"
                raise errors.service_accounts_refused() if is_service_account else errors.scope_insufficient()
            if mode != "credentials_only":
                raise errors.missing_api_key()
        else:
            raise errors.missing_api_key()

    def _apply_faults(self, operation: str, model: str | None = None) -> bool:
        """Sleep and/or answer an injected error; True when the request was answered here."""
        decision = self.server.emulator.faults.decide(operation)
        if decision.latency:
            time.sleep(decision.latency)
        if decision.status is None:
            return False
        self._drain()
        self._send_error(_fault_error(operation, decision, model))
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
                "x-goog-upload-chunk-granularity": str(CHUNK_GRANULARITY),
            },
        )

    def _upload_chunk(self, upload_id: str) -> None:
        """``upload`` / ``upload, finalize`` / ``finalize`` / ``query`` / ``cancel`` on an upload session.

        Chunks carry no API key: the session URL is the credential. Every chunk but the last must be a
        multiple of the advertised granularity. After ``finalize``, ``query`` answers ``final`` with the
        File again; ``cancel`` drops the session and its bytes.
        """
        emu = self.server.emulator
        store = emu.store
        commands = {c.strip().lower() for c in self.headers.get("X-Goog-Upload-Command", "").split(",")}
        if "query" in commands:
            store.count("upload_query")
            self._drain()
            if not self._apply_faults("upload_query"):
                self._answer_query(upload_id)
            return
        if "cancel" in commands:
            store.count("upload_cancel")
            self._drain()
            if not self._apply_faults("upload_cancel"):
                self._cancel(upload_id)
            return
        store.count("upload_chunk")
        decision = emu.faults.decide("upload_chunk")
        if decision.latency:
            time.sleep(decision.latency)
        if decision.status is not None:
            raise _fault_error("upload_chunk", decision)
        if not commands & {"upload", "finalize"}:
            raise ApiError(
                400,
                "X-Goog-Upload-Command must be upload, finalize, 'upload, finalize', query or cancel.",
            )
        try:
            session = store.session(upload_id)
        except ApiError as error:
            self._reply_error(error, {"x-goog-upload-status": self._ended_status(upload_id)})
            return
        offset_raw = self.headers.get("X-Goog-Upload-Offset")
        with session.lock:
            try:
                offset = int(offset_raw) if offset_raw is not None else None
            except ValueError as exc:
                raise ApiError(400, f"Invalid X-Goog-Upload-Offset {offset_raw!r}.") from exc
            active = {"x-goog-upload-status": "active"}
            try:
                store.check_offset(session, offset)
            except ApiError as error:
                self._reply_error(error, {**active, "x-goog-upload-size-received": str(session.offset)})
                return
            try:
                received = self._receive(session, drop=decision.drop, final="finalize" in commands)
            except ChunkRefused as error:
                self._reply_error(error, {**active, "x-goog-upload-size-received": str(session.offset)})
                return
            except ApiError as error:  # more bytes than declared / allowed: the session is over
                store.abandon(session)
                self._reply_error(error, {"x-goog-upload-status": "final"})
                return
            if not received:
                return
            if "finalize" not in commands:
                self._send(200, b"", {**active, "x-goog-upload-size-received": str(session.offset)})
                return
            try:
                stored = store.finalize(session)
            except ApiError as error:
                self._reply_error(error, {"x-goog-upload-status": "final"})
                return
        self._send_json({"file": self._file_json(stored)}, {"x-goog-upload-status": "final"})

    def _ended_status(self, upload_id: str) -> str:
        ended = self.server.emulator.store.ended(upload_id)
        return ended[0] if ended else "final"

    def _answer_query(self, upload_id: str) -> None:
        store = self.server.emulator.store
        ended = store.ended(upload_id)
        if ended is not None and ended[0] == "final":
            _, stored, size = ended
            body = json.dumps({"file": self._file_json(stored)}).encode() if stored is not None else b""
            self._send(200, body, {"x-goog-upload-status": "final", "x-goog-upload-size-received": str(size)})
            return
        if ended is not None:
            raise ApiError(
                404,
                "The upload session was cancelled.",
                "NOT_FOUND",
                headers={"x-goog-upload-status": "cancelled"},
            )
        session = store.session(upload_id)
        self._send(
            200, b"", {"x-goog-upload-status": "active", "x-goog-upload-size-received": str(session.offset)}
        )

    def _cancel(self, upload_id: str) -> None:
        store = self.server.emulator.store
        ended = store.ended(upload_id)
        if ended is not None and ended[0] == "final":
            raise ApiError(
                400,
                "The upload is already final; delete the file instead.",
                headers={"x-goog-upload-status": "final"},
            )
        if ended is None:
            store.cancel(store.session(upload_id))
        self._send(200, b"", {"x-goog-upload-status": "cancelled"})

    def _receive(self, session: UploadSession, *, drop: bool, final: bool) -> bool:
        """Stream the body onto the session's file; commit it only when it arrived whole.

        Two-stage pipeline: this thread reads the socket into one buffer while a disk worker hashes
        and writes the previous piece from the other one. False when the connection went away (or a
        fault cut it): nothing of the chunk is committed. A non-final chunk that is not a multiple of
        the granularity is refused whole (:class:`ChunkRefused`).
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
        if not final and received % CHUNK_GRANULARITY:
            writer.rollback()
            raise ChunkRefused(
                400,
                f"Invalid chunk of {received} bytes: every chunk but the last must be a multiple of "
                f"{CHUNK_GRANULARITY} bytes (x-goog-upload-chunk-granularity).",
            )
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
        emu = self.server.emulator
        uris = body.get("uris")
        if not isinstance(uris, list):
            raise ApiError(400, "uris must be a list of gs:// URIs.")
        files = emu.store.register(uris, emu.gcs_metadata)
        self._send_json({"files": [self._file_json(f) for f in files]})

    # ---- models -------------------------------------------------------------------------------
    def _list_models(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        self._send_json(self.server.emulator.models.page(query))

    def _get_model(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        self._send_json(self.server.emulator.models.get(params["model"]))

    def _generate(self, params: dict[str, str], query: dict[str, str]) -> None:
        emu = self.server.emulator
        model = emu.models.require(params["model"], "generateContent", params["ver"])
        body = self._json_body()
        started = time.monotonic()
        payload = generate(model, body, emu.store)
        if emu.model_latency:
            time.sleep(max(0.0, emu.model_latency - (time.monotonic() - started)))
        self._send_json(payload)

    def _count_tokens(self, params: dict[str, str], query: dict[str, str]) -> None:
        emu = self.server.emulator
        emu.models.require(params["model"], "countTokens", params["ver"])
        self._send_json(count_tokens(self._json_body(), emu.store))

    def _download(self, params: dict[str, str], query: dict[str, str]) -> None:
        """``files/{id}:download?alt=media``: a GENERATED file's bytes, streamed in 1 MiB pieces."""
        self._drain()
        if query.get("alt") != "media":
            raise ApiError(400, "files.download needs the query parameter alt=media.")
        stored = batches.downloadable(self.server.emulator.store, params["id"])
        assert stored.path is not None
        pieces = batches.read_pieces(stored.path)  # opened before the 200 goes out: a vanished file is a 403
        try:
            first = next(pieces, b"")
        except FileNotFoundError as exc:  # deleted while we were looking
            raise not_found_file(stored.file_id) from exc
        self.send_response(200)
        self.send_header("Content-Type", stored.mime_type)
        self.send_header("Content-Length", str(stored.size))
        self.end_headers()
        self.wfile.write(first)
        for piece in pieces:
            self.wfile.write(piece)

    # ---- Batch API --------------------------------------------------------------------------
    def _batch_create(self, params: dict[str, str], query: dict[str, str]) -> None:
        emu = self.server.emulator
        body = self._json_body()
        emu.models.require(params["model"], "batchGenerateContent", params["ver"])
        self._send_json(emu.batch_store.create(params["model"], params["ver"], body, self._json_size))

    def _batch_get(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        self._send_json(self.server.emulator.batch_store.get(params["id"], params["ver"]))

    def _batch_list(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        try:
            page_size = int(query["pageSize"]) if "pageSize" in query else None
        except ValueError as exc:
            raise ApiError(400, f"Invalid pageSize {query['pageSize']!r}.") from exc
        store = self.server.emulator.batch_store
        self._send_json(store.list_page(page_size, query.get("pageToken"), params["ver"]))

    def _batch_cancel(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        self.server.emulator.batch_store.cancel(params["id"])
        self._send_json({})

    def _batch_delete(self, params: dict[str, str], query: dict[str, str]) -> None:
        self._drain()
        self.server.emulator.batch_store.delete(params["id"])
        self._send_json({})

    # ---- /_emulator controls ----------------------------------------------------------------
    def _control(self, action: str, query: dict[str, str]) -> None:
        """The test controls over HTTP, for an emulator started from the CLI (the API key, if set, too).

        ``GET stats`` | ``GET files`` | ``GET config`` | ``POST config`` {settings of ``configure``} |
        ``POST reset`` | ``POST clock`` {"seconds"} | ``POST fail_processing`` {"match", "message"} |
        ``POST faults`` {"operation", "rate", "statuses", "sequence", "latency", "drop_mid_chunk",
        "retry_delay", "retry_after"} | ``batches...`` (see :func:`batches.http_control`).
        """
        emu = self.server.emulator
        if emu.api_key is not None:
            self._check_api_key(query)
        body = self._json_body(limit=_MAX_CONTROL_BODY) if self.command == "POST" else {}
        if self.command == "GET":
            self._drain()
        if action == "batches" or action.startswith("batches/"):
            self._send_json(batches.http_control(emu, self.command, action, body))
        elif self.command == "GET" and action == "stats":
            self._send_json(emu.stats())
        elif self.command == "GET" and action == "files":
            self._send_json({"files": emu.files()})
        elif self.command == "GET" and action == "config":
            self._send_json(emu.settings())
        elif self.command == "POST" and action == "config":
            try:
                emu.configure(**body)
            except (TypeError, ValueError) as exc:
                raise ApiError(400, f"Invalid settings: {exc}") from exc
            self._send_json(emu.settings())
        elif self.command == "POST" and action == "reset":
            emu.reset()
            self._send_json({})
        elif self.command == "POST" and action == "clock":
            seconds = body.get("seconds", 0)
            try:
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise ValueError(f"seconds must be a number, not {seconds!r}")
                emu.advance_clock(float(seconds))
            except ValueError as exc:
                raise ApiError(400, f"Invalid clock move: {exc}") from exc
            self._send_json({"now": emu.store.clock.now()})
        elif self.command == "POST" and action == "fail_processing":
            match, message = body.get("match"), body.get("message", "Processing failed.")
            if not isinstance(match, str) or not match or not isinstance(message, str):
                raise ApiError(
                    400, "fail_processing needs {'match': <non-empty text>, 'message': <text, optional>}."
                )
            emu.fail_processing(match, message)
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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _fault_error(operation: str, decision: Decision, model: str | None = None) -> ApiError:
    """The error an injected fault answers with; a 429 carries the details a real rate limit has."""
    status = decision.status
    assert status is not None
    if status == 429:
        error = errors.rate_limited(operation, decision.retry_delay, model)
    else:
        error = ApiError(status, FAULT_MESSAGES[status])
    if decision.retry_after is not None:
        error.headers = {**error.headers, "Retry-After": f"{decision.retry_after:g}"}
    return error


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
            if self.length < 0:  # e.g. "-1": there is no body to read and no way to find its end
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
