"""The emulator's state: stored files, upload sessions, the File state machine, limits and the clock.

Bytes go straight from the socket to a file under the data directory (never held whole in memory);
only metadata lives in memory. All times come from an injectable :class:`Clock`, so tests can jump
past processing delays and the 48 h retention without sleeping.

The data directory is scratch space, not storage: files do not survive a restart (nor do they on the
real service's side of a fresh emulator). With ``data_dir`` given, the emulator works in its own
``gemini-files-emulator/`` subdirectory, marked as its own; it removes what an earlier run left there
when it starts, and what it created when it stops or resets. Nothing else in ``data_dir`` is touched.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import math
import os
import random
import re
import secrets
import shutil
import string
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from airflow_gemini_files.emulator.content import mp4_duration
from airflow_gemini_files.emulator.errors import ApiError, not_found_file, storage_full, unsupported_mime_type
from airflow_gemini_files.mime import BATCH_INPUT_MIME_TYPES, SUPPORTED_MIME_TYPES, base_type

RETENTION_SECONDS = 48 * 3600
REGISTERED_RETENTION_SECONDS = 30 * 24 * 3600
WORKDIR_NAME = "gemini-files-emulator"
MARKER_NAME = ".gemini-files-emulator"
MiB = 1024 * 1024
#: Seconds of processing per MiB, by kind, in the realistic model (video also has a fixed start-up cost).
REALISTIC_SECONDS_PER_MIB = {"video": 1.0, "audio": 0.5, "document": 0.25}
REALISTIC_VIDEO_BASE = 5.0
REALISTIC_MAX_DELAY = 600.0
_UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")
MAX_DISPLAY_NAME = 512
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 10
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")

OPERATIONS = (
    "upload_start",
    "upload_chunk",
    "upload_query",
    "upload_cancel",
    "get",
    "list",
    "delete",
    "register",
    "generate",
    "count_tokens",
    "models",
    "download",
    "batch_create",
    "batch_get",
    "batch_list",
    "batch_cancel",
    "batch_delete",
)


def realistic_delay(mime_type: str, size: int, video_seconds: float | None = None) -> float:
    """Seconds a file stays PROCESSING on the real service, roughly: text, images and audio or PDFs up to
    1 MiB are ACTIVE at once, larger audio and PDFs take longer with size, and video always takes a
    start-up cost plus time per MiB (or per second of footage, when the file says how long it is)."""
    kind = SUPPORTED_MIME_TYPES.get(base_type(mime_type)) or base_type(mime_type).partition("/")[0]
    per_mib = REALISTIC_SECONDS_PER_MIB.get(kind)
    if per_mib is None:
        return 0.0
    if kind == "video":
        delay = REALISTIC_VIDEO_BASE + max(per_mib * size / MiB, 0.5 * (video_seconds or 0.0))
    else:
        delay = per_mib * max(0, size - MiB) / MiB
    return round(min(delay, REALISTIC_MAX_DELAY), 3)


def check_upload_mime_type(mime_type: str) -> None:
    """Refuse what the Files API refuses: types Gemini cannot read (Batch request files aside)."""
    base = base_type(mime_type)
    if base not in SUPPORTED_MIME_TYPES and base not in BATCH_INPUT_MIME_TYPES:
        raise unsupported_mime_type(mime_type)


def _video_seconds(path: Path, mime_type: str) -> float | None:
    if mime_type not in ("video/mp4", "video/quicktime"):
        return None
    with open(path, "rb") as fh:
        return mp4_duration(fh)


class Clock:
    """Wall-clock time plus an offset that tests move forward with :meth:`advance`."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(
                f"the emulator clock only moves forward by a finite number of seconds, not {seconds}"
            )
        self._offset += seconds

    def reset(self) -> None:
        self._offset = 0.0


def rfc3339(ts: float) -> str:
    """A timestamp the way the API writes it: UTC, microseconds, trailing Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_nanos(nanos: int) -> str:
    """A nanosecond timestamp as protobuf JSON writes it: 0, 3, 6 or 9 fractional digits, trailing Z."""
    seconds, frac = divmod(nanos, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac % 1_000_000 == 0:
        digits = f".{frac // 1_000_000:03d}" if frac else ""
    elif frac % 1_000 == 0:
        digits = f".{frac // 1_000:06d}"
    else:
        digits = f".{frac:09d}"
    return f"{text}{digits}Z"


def expiry_shortfall_nanos() -> int:
    """How much earlier than create + retention a file expires: the live API's expirationTime is a few
    milliseconds short, written with 9 fractional digits or, now and then, 6."""
    nanos = random.randint(2_000_000, 40_000_000)
    return nanos - nanos % 1_000 if random.random() < 0.25 else nanos


def validate_file_id(raw: str) -> str:
    """Accept ``files/<id>`` or ``<id>`` as the seeds describe it, return the bare id."""
    file_id = raw.removeprefix("files/")
    if not _ID_RE.match(file_id):
        raise ApiError(
            400,
            f"Invalid file name {raw!r}: the id (after 'files/') must be 1-40 characters of lowercase "
            "letters, digits or '-', and may not start or end with '-'.",
        )
    return file_id


class Sequenced(Protocol):
    seq: int


S = TypeVar("S", bound=Sequenced)


def page_of(newest_first: list[S], page_size: int, page_token: str | None) -> tuple[list[S], str | None]:
    """One page of a list (files, batch jobs) after ``page_token``, and the token of the next page.

    The token is an opaque encoding of the last sequence number seen, so a page never repeats or
    skips an item when newer ones are added meanwhile. ``page_size`` is capped at ``MAX_PAGE_SIZE``.
    """
    page_size = min(page_size, MAX_PAGE_SIZE)
    if page_token:
        try:
            after = int(base64.urlsafe_b64decode(page_token.encode()).decode().removeprefix("seq:"))
        except ValueError as exc:
            raise ApiError(400, f"Invalid page token {page_token!r}.") from exc
        newest_first = [item for item in newest_first if item.seq < after]
    page = newest_first[:page_size]
    token = None
    if len(newest_first) > page_size:
        token = base64.urlsafe_b64encode(f"seq:{page[-1].seq}".encode()).decode()
    return page, token


@dataclass
class StoredFile:
    """One File resource; its state is derived from the clock (PROCESSING until ``ready_at``)."""

    file_id: str
    seq: int
    mime_type: str
    size: int
    create_time: float
    ready_at: float
    source: str
    display_name: str | None = None
    sha256: str | None = None
    path: Path | None = None
    source_uri: str | None = None
    fail_message: str | None = None
    md5_hash: str | None = None
    crc32c: str | None = None
    video_seconds: float | None = None
    retention: int = RETENTION_SECONDS
    expiry_shortfall: int = field(default_factory=expiry_shortfall_nanos)

    @property
    def name(self) -> str:
        return f"files/{self.file_id}"

    @property
    def expire_nanos(self) -> int:
        """create + retention, a few milliseconds short (as the live API reports it)."""
        return round(self.create_time * 1e6) * 1_000 + self.retention * 1_000_000_000 - self.expiry_shortfall

    @property
    def expire_time(self) -> float:
        return self.expire_nanos / 1e9

    def state(self, now: float) -> str:
        if now < self.ready_at:
            return "PROCESSING"
        return "FAILED" if self.fail_message is not None else "ACTIVE"

    def resource(self, now: float, base_url: str) -> dict[str, Any]:
        """The File as the API serialises it (camelCase, int64 as string)."""
        state = self.state(now)
        data: dict[str, Any] = {"name": self.name}
        if self.display_name:
            data["displayName"] = self.display_name
        data.update(
            {
                "mimeType": self.mime_type,
                "sizeBytes": str(self.size),
                "createTime": rfc3339(self.create_time),
                "updateTime": rfc3339(self.create_time if state == "PROCESSING" else self.ready_at),
                "expirationTime": rfc3339_nanos(self.expire_nanos),
            }
        )
        if self.sha256:
            data["sha256Hash"] = self.sha256
        data["uri"] = f"{base_url}/v1beta/files/{self.file_id}"
        if self.source == "GENERATED":  # the SDK downloads only files that carry a downloadUri
            data["downloadUri"] = f"{base_url}/v1beta/files/{self.file_id}:download?alt=media"
        data["state"] = state
        data["source"] = self.source
        if state == "FAILED":
            data["error"] = {"code": 3, "message": self.fail_message}
        elif state == "ACTIVE" and self.video_seconds is not None:
            data["videoMetadata"] = {"videoDuration": f"{self.video_seconds:g}s"}
        return data


@dataclass
class UploadSession:
    """A resumable upload in progress; ``offset`` is the number of bytes committed to ``path``."""

    upload_id: str
    file_id: str
    mime_type: str
    declared_size: int | None
    display_name: str | None
    path: Path
    hasher: Any = field(default_factory=hashlib.sha256)
    offset: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


class ChunkWriter:
    """Appends one chunk to a session; :meth:`commit` keeps it, :meth:`rollback` forgets it."""

    def __init__(self, session: UploadSession) -> None:
        self.session = session
        self._hasher_before = session.hasher.copy()
        self._fd = os.open(session.path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.lseek(self._fd, session.offset, os.SEEK_SET)
        self.written = 0

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.session.hasher.update(data)
        self.written += len(data)

    def commit(self) -> None:
        os.close(self._fd)
        self.session.offset += self.written

    def rollback(self) -> None:
        os.ftruncate(self._fd, self.session.offset)
        os.close(self._fd)
        self.session.hasher = self._hasher_before


class FileStore:
    """Files, upload sessions, limits, request counters and the clock of one emulated project."""

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        processing_delay: float | None = None,
        video_processing_delay: float | None = None,
        max_file_bytes: int = 2 * 1024**3,
        max_project_bytes: int = 20 * 1024**3,
        max_inline_bytes: int = 100 * MiB,
        max_inline_pdf_bytes: int = 50 * MiB,
    ) -> None:
        self._own_dir = data_dir is None
        self.root = (
            Path(data_dir) / WORKDIR_NAME if data_dir else Path(tempfile.mkdtemp(prefix="gemini-emulator-"))
        )
        self.processing_delay = processing_delay
        self.video_delay_setting = video_processing_delay
        self.max_file_bytes = max_file_bytes
        self.max_project_bytes = max_project_bytes
        self.max_inline_bytes = max_inline_bytes
        self.max_inline_pdf_bytes = max_inline_pdf_bytes
        self.clock = Clock()
        self.base_url = ""
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._files: dict[str, StoredFile] = {}
        self._sessions: dict[str, UploadSession] = {}
        self._ended: dict[str, tuple[str, str, int]] = {}  # upload_id -> (final|cancelled, file id, size)
        self._reserved_ids: set[str] = set()
        self._fail_rules: list[tuple[str, str]] = []
        self.counters: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._in_flight: dict[str, int] = {}
        self.peak_in_flight: dict[str, int] = {}
        self.prepare()

    @property
    def video_processing_delay(self) -> float | None:
        """The delay for video/* files: as set, else three times ``processing_delay``; None: realistic."""
        if self.video_delay_setting is not None:
            return self.video_delay_setting
        return None if self.processing_delay is None else 3 * self.processing_delay

    # ---- housekeeping -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make the working directory, removing what an earlier run of the emulator left in it."""
        marker = self.root / MARKER_NAME
        if not self._own_dir and self.root.exists() and not marker.exists() and any(self.root.iterdir()):
            raise RuntimeError(
                f"{self.root} exists and was not created by the Gemini emulator; it leaves it alone. "
                "Pass another --data-dir (the emulator works in its gemini-files-emulator/ subdirectory)."
            )
        for sub, pattern in (("uploads", _UPLOAD_ID_RE), ("files", _ID_RE)):
            folder = self.root / sub
            if marker.exists() and folder.is_dir():
                for leftover in folder.iterdir():
                    if leftover.is_file() and pattern.match(leftover.name):
                        leftover.unlink(missing_ok=True)
            folder.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def count(self, operation: str) -> None:
        with self._lock:
            self.counters[operation] = self.counters.get(operation, 0) + 1

    @contextlib.contextmanager
    def serving(self, operation: str) -> Iterator[None]:
        """Count a request of ``operation`` as in flight while it is served; remember the most at once."""
        with self._lock:
            now = self._in_flight[operation] = self._in_flight.get(operation, 0) + 1
            self.peak_in_flight[operation] = max(now, self.peak_in_flight.get(operation, 0))
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[operation] -= 1

    def reset(self) -> None:
        """Forget every file, session, counter, failure rule; rewind the clock. Deletes the bytes of the
        files and sessions the emulator created, nothing else."""
        with self._lock:
            self._forget_all()
            self._fail_rules.clear()
            self.counters = dict.fromkeys(OPERATIONS, 0)
            self.peak_in_flight = {op: n for op, n in self._in_flight.items() if n}
            self.clock.reset()

    def _forget_all(self) -> None:
        """Drop every file and session and delete their bytes (caller holds the lock)."""
        for stored in self._files.values():
            if stored.path is not None:
                stored.path.unlink(missing_ok=True)
        for session in self._sessions.values():
            session.closed = True
            session.path.unlink(missing_ok=True)
        self._files.clear()
        self._sessions.clear()
        self._ended.clear()
        self._reserved_ids.clear()

    def close(self) -> None:
        """Forget everything and clean the working directory (the emulator's own files only)."""
        with self._lock:
            self._forget_all()
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for leftover in (self.root / "uploads", self.root / "files", self.root / MARKER_NAME, self.root):
            with contextlib.suppress(OSError):  # not empty: someone put files there; they stay
                leftover.unlink() if leftover.name == MARKER_NAME else leftover.rmdir()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._purge_expired()
            return {
                "requests": dict(self.counters),
                "peak_in_flight": dict(self.peak_in_flight),
                "in_flight": {op: n for op, n in self._in_flight.items() if n},
                "files": len(self._files),
                "bytes": sum(f.size for f in self._files.values() if f.source == "UPLOADED"),
            }

    def _purge_expired(self) -> None:
        """Expired files disappear, as on the live service (caller holds the lock)."""
        now = self.clock.now()
        for file_id in [i for i, f in self._files.items() if f.expire_time <= now]:
            self._drop(file_id)

    def _drop(self, file_id: str) -> None:
        stored = self._files.pop(file_id)
        if stored.path is not None:
            stored.path.unlink(missing_ok=True)

    def _new_id(self) -> str:
        while True:
            file_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
            if file_id not in self._files and file_id not in self._reserved_ids:
                return file_id

    def _used_bytes(self) -> int:
        return sum(f.size for f in self._files.values() if f.source == "UPLOADED")

    def _check_project_quota(self, extra: int) -> None:
        used = self._used_bytes()
        if used + extra > self.max_project_bytes:
            raise storage_full(self.max_project_bytes, used, extra)

    def _check_file_size(self, size: int) -> None:
        if size > self.max_file_bytes:
            raise ApiError(
                400,
                f"File size {size} bytes exceeds the maximum of {self.max_file_bytes} bytes per file.",
            )

    def _delay_for(self, mime_type: str, size: int, video_seconds: float | None = None) -> float:
        """PROCESSING time: the configured delays, or the realistic model where none is set."""
        is_video = base_type(mime_type).startswith("video/")
        configured = self.video_processing_delay if is_video else self.processing_delay
        return realistic_delay(mime_type, size, video_seconds) if configured is None else configured

    def _fail_message_for(self, *texts: str | None) -> str | None:
        for match, message in self._fail_rules:
            if any(t and match in t for t in texts):
                return message
        return None

    def fail_processing(self, match: str, message: str) -> None:
        """Files (existing and still PROCESSING, or future) whose name/display name/source contain
        ``match`` end FAILED with ``message`` instead of ACTIVE."""
        with self._lock:
            self._fail_rules.append((match, message))
            now = self.clock.now()
            for f in self._files.values():
                if f.state(now) == "PROCESSING" and self._fail_message_for(
                    f.name, f.display_name, f.source_uri
                ):
                    f.fail_message = message

    # ---- upload -------------------------------------------------------------------------------
    def start_upload(
        self, *, name: str | None, display_name: str | None, mime_type: str | None, declared_size: int | None
    ) -> UploadSession:
        if display_name is not None and len(display_name) > MAX_DISPLAY_NAME:
            raise ApiError(
                400,
                f"display_name is {len(display_name)} characters long; "
                f"it must be at most {MAX_DISPLAY_NAME} characters.",
            )
        if not mime_type:
            raise ApiError(400, "The MIME type of the file is missing; set mime_type.")
        check_upload_mime_type(mime_type)
        if declared_size is not None:
            if declared_size < 0:
                raise ApiError(400, f"Invalid upload size {declared_size}.")
            self._check_file_size(declared_size)
        with self._lock:
            self._purge_expired()
            if name:
                file_id = validate_file_id(name)
                if file_id in self._files:
                    raise ApiError(409, f"File files/{file_id} already exists.", "ALREADY_EXISTS")
                # An unfinished upload is not a file: a new start for its name (a retry after the
                # uploader died) supersedes it, and the old session's chunks get 404 from now on.
                for stale in [s for s in self._sessions.values() if s.file_id == file_id]:
                    self._sessions.pop(stale.upload_id)
                    stale.closed = True
                    stale.path.unlink(missing_ok=True)
            else:
                file_id = self._new_id()
            if declared_size is not None:
                self._check_project_quota(declared_size)
            self._reserved_ids.add(file_id)
            upload_id = secrets.token_urlsafe(24)
            session = UploadSession(
                upload_id=upload_id,
                file_id=file_id,
                mime_type=mime_type,
                declared_size=declared_size,
                display_name=display_name,
                path=self.root / "uploads" / upload_id,
            )
            self._sessions[upload_id] = session
        return session

    def session(self, upload_id: str) -> UploadSession:
        with self._lock:
            session = self._sessions.get(upload_id)
        if session is None or session.closed:
            raise ApiError(404, "No active upload session with this upload_id.", "NOT_FOUND")
        return session

    def ended(self, upload_id: str) -> tuple[str, StoredFile | None, int] | None:
        """How a finished session ended: ("final" or "cancelled", its File if it still exists, size)."""
        with self._lock:
            ended = self._ended.get(upload_id)
            if ended is None:
                return None
            how, file_id, size = ended
            return how, self._files.get(file_id), size

    def _remember_end(self, session: UploadSession, how: str) -> None:
        """Keep how a session ended, for later ``query`` commands (caller holds the lock; bounded)."""
        if len(self._ended) >= 10_000:
            self._ended.pop(next(iter(self._ended)))
        self._ended[session.upload_id] = (how, session.file_id, session.offset)

    def cancel(self, session: UploadSession) -> None:
        """``X-Goog-Upload-Command: cancel``: drop the session and its bytes, free a chosen name."""
        with self._lock:
            if not session.closed:
                self._reserved_ids.discard(session.file_id)
                self._remember_end(session, "cancelled")
            self._sessions.pop(session.upload_id, None)
            session.closed = True
        session.path.unlink(missing_ok=True)

    def check_offset(self, session: UploadSession, offset: int | None) -> None:
        """Refuse a chunk at the wrong offset, reporting the committed one."""
        if offset is not None and offset != session.offset:
            raise ApiError(
                400,
                f"Invalid X-Goog-Upload-Offset {offset}: the server has committed {session.offset} bytes; "
                "send the query command and resume from there.",
            )

    def size_limit(self, session: UploadSession) -> int:
        """How many bytes the session may hold: the declared size, else the per-file maximum."""
        return session.declared_size if session.declared_size is not None else self.max_file_bytes

    def too_big(self, session: UploadSession, size: int) -> ApiError:
        what = "declared size" if session.declared_size is not None else "maximum file size"
        return ApiError(
            400, f"Upload of {size} bytes exceeds the {what} of {self.size_limit(session)} bytes."
        )

    def finalize(self, session: UploadSession) -> StoredFile:
        """Turn a complete session into a stored File (size and quota checked again here)."""
        if session.declared_size is not None and session.offset != session.declared_size:
            self.abandon(session)
            raise ApiError(
                400,
                f"Upload finalized after {session.offset} bytes, but {session.declared_size} bytes were "
                "declared in X-Goog-Upload-Header-Content-Length.",
            )
        sha = base64.b64encode(session.hasher.hexdigest().encode()).decode()  # as the live API: b64 of hex
        with self._lock:
            if session.closed:  # superseded by a newer start for the same name
                raise ApiError(404, "No active upload session with this upload_id.", "NOT_FOUND")
            self._sessions.pop(session.upload_id, None)
            session.closed = True
            try:
                self._check_file_size(session.offset)
                self._check_project_quota(session.offset)
            except ApiError:
                self._reserved_ids.discard(session.file_id)
                session.path.unlink(missing_ok=True)
                raise
            now = self.clock.now()
            final_path = self.root / "files" / session.file_id
            os.replace(session.path, final_path) if session.path.exists() else final_path.touch()
            video_seconds = _video_seconds(final_path, session.mime_type)
            stored = StoredFile(
                file_id=session.file_id,
                seq=next(self._seq),
                mime_type=session.mime_type,
                size=session.offset,
                create_time=now,
                ready_at=now + self._delay_for(session.mime_type, session.offset, video_seconds),
                source="UPLOADED",
                display_name=session.display_name,
                sha256=sha,
                path=final_path,
                fail_message=self._fail_message_for(f"files/{session.file_id}", session.display_name),
                video_seconds=video_seconds,
            )
            self._files[stored.file_id] = stored
            self._reserved_ids.discard(session.file_id)
            self._remember_end(session, "final")
            return stored

    def abandon(self, session: UploadSession) -> None:
        with self._lock:
            if not session.closed:  # a superseded session's name belongs to its successor
                self._reserved_ids.discard(session.file_id)
            self._sessions.pop(session.upload_id, None)
            session.closed = True
        session.path.unlink(missing_ok=True)

    # ---- files --------------------------------------------------------------------------------
    def get(self, raw_name: str) -> StoredFile:
        file_id = raw_name.removeprefix("files/")
        with self._lock:
            self._purge_expired()
            stored = self._files.get(file_id)
        if stored is None:
            raise not_found_file(file_id)
        return stored

    def list_files(
        self, page_size: int | None, page_token: str | None
    ) -> tuple[list[StoredFile], str | None]:
        """Newest first; the page token is an opaque encoding of the last sequence number seen."""
        if page_size is None or page_size == 0:
            page_size = DEFAULT_PAGE_SIZE
        if page_size < 0:
            raise ApiError(400, f"pageSize must not be negative (got {page_size}).")
        with self._lock:
            self._purge_expired()
            ordered = sorted(self._files.values(), key=lambda f: f.seq, reverse=True)
        return page_of(ordered, page_size, page_token)

    def delete(self, raw_name: str) -> None:
        file_id = raw_name.removeprefix("files/")
        with self._lock:
            self._purge_expired()
            if file_id not in self._files:
                raise not_found_file(file_id)
            self._drop(file_id)

    def all_files(self) -> list[StoredFile]:
        with self._lock:
            self._purge_expired()
            return sorted(self._files.values(), key=lambda f: f.seq)

    def add_generated(
        self, *, file_id: str, source: Path, mime_type: str, sha256: str, create_time: float
    ) -> StoredFile:
        """Publish ``source`` (moved into the store) as a GENERATED file, ACTIVE at once (batch results)."""
        with self._lock:
            path = self.root / "files" / file_id
            os.replace(source, path)
            stored = StoredFile(
                file_id=file_id,
                seq=next(self._seq),
                mime_type=mime_type,
                size=path.stat().st_size,
                create_time=create_time,
                ready_at=create_time,
                source="GENERATED",
                sha256=sha256,
                path=path,
            )
            self._files[file_id] = stored
            return stored

    def register(self, uris: list[str], metadata: Callable[[str], dict[str, Any]]) -> list[StoredFile]:
        """Register gs:// objects: all or nothing, metadata read through ``metadata(uri)``."""
        if not uris:
            raise ApiError(400, "uris must contain at least one gs:// URI.")
        found = []
        for uri in uris:
            if not isinstance(uri, str) or not re.match(r"^gs://[^/]+/.+", uri):
                raise ApiError(400, f"Invalid URI {uri!r}: expected gs://BUCKET/OBJECT.")
            found.append((uri, metadata(uri)))
        created = []
        with self._lock:
            now = self.clock.now()
            for uri, meta in found:
                file_id = self._new_id()
                mime_type = meta.get("contentType") or "application/octet-stream"
                size = int(meta.get("size", 0))
                stored = StoredFile(
                    file_id=file_id,
                    seq=next(self._seq),
                    mime_type=mime_type,
                    size=size,
                    create_time=now,
                    ready_at=now + self._delay_for(mime_type, size),
                    source="REGISTERED",
                    retention=REGISTERED_RETENTION_SECONDS,
                    display_name=uri.rsplit("/", 1)[-1][:MAX_DISPLAY_NAME],
                    source_uri=uri,
                    md5_hash=meta.get("md5Hash"),
                    crc32c=meta.get("crc32c"),
                    fail_message=self._fail_message_for(f"files/{file_id}", uri),
                )
                self._files[file_id] = stored
                created.append(stored)
        return created
