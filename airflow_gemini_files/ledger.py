"""The ledger: small JSON records every worker of a deployment can reach, that outlive tasks and retries.

Two things need state that neither XCom nor Variables can hold: a per-run budget (Airflow clears a task
instance's XComs when it retries, and the Task SDK cannot list Variables) and the names of files a task
created but never reported (a register task killed between ``files:register`` and its XCom). Both live
here, in the place the Gemini connection's extra ``ledger`` names:

- ``gs://bucket/prefix``: objects in GCS, written with the hook's GCP identity (it needs
  ``storage.objects.create``, ``get``, ``list`` and ``delete`` on the prefix). A record's JSON is also
  kept in the object's custom metadata when it is small, so one listing returns every record under a
  prefix without a read per object.
- ``/an/absolute/path``: files on a disk every worker shares (one machine, or a shared volume); a
  record is written to a temporary file and renamed, so a reader never sees half of one.

**Why one record per writer and no read-modify-write.** Every record has exactly one writer (a budget
record is one call of one task attempt; a file record is one task attempt's registration), so records
are written without contention and without a lock or a compare-and-swap: a reader lists a prefix and sums.
GCS gives read-after-write and list-after-write consistency, which is what the budget's admission
protocol (:mod:`airflow_gemini_files.budget`) relies on. Same-object writes are rate-limited by GCS
(about one per second), so no record is rewritten in a hurry.

Layout (``<run>`` is the run prefix of :func:`airflow_gemini_files.naming.context_run_prefix`):

- ``runs/<run>.json``: which DAG run a run prefix stands for (``dag_id``, ``run_id``): the sweeper asks
  Airflow for that run's state.
- ``budgets/<run>/<budget>/<task>~<map index>~<try>~<call>.json``: one call's reservation or spend.
- ``files/<run>/<kind>~<task>~<map index>~<try>~<seq>.json``: files a task is about to create
  (``register``: the URIs, written before the call, then the names Gemini gave) or created under names
  Gemini chose (``claim``: e.g. a batch job's results file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.exceptions import GeminiFilesError, GeminiInputError
from airflow_gemini_files.naming import context_run_prefix, printable

if TYPE_CHECKING:
    from airflow.sdk import Context
    from google.cloud import storage

log = logging.getLogger(__name__)

METADATA_KEY = "gemini-ledger-record"
"""The custom-metadata key holding a GCS record's JSON (when it fits)."""

MAX_METADATA_RECORD = 6000
"""Records longer than this (characters of JSON) are read from the object's content instead (GCS allows
8 KiB of custom metadata per object)."""

RUNS = "runs/"
BUDGETS = "budgets/"
FILES = "files/"


class LedgerError(GeminiFilesError):
    """The ledger could not be read or written; the message names it and the cause."""


# Where the ledger is ----------------------------------------------------------------------------------
class Ledger:
    """Records under one root: :meth:`put`, :meth:`get`, :meth:`scan` a key prefix, :meth:`delete`."""

    uri: str

    def put(self, key: str, record: Mapping[str, Any], *, only_if_absent: bool = False) -> None:
        """Write ``record`` (JSON) under ``key``; ``only_if_absent`` leaves an existing record alone."""
        raise NotImplementedError

    def get(self, key: str) -> dict[str, Any] | None:
        """The record under ``key``, or None."""
        raise NotImplementedError

    def scan(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        """Every ``(key, record)`` whose key starts with ``prefix``, sorted by key."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the record under ``key`` (nothing if there is none)."""
        raise NotImplementedError

    def where(self, key: str = "") -> str:
        """The printable location of ``key`` (for messages)."""
        return f"{self.uri.rstrip('/')}/{key}"


def _dump(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def _load(text: str | bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise LedgerError(f"Ledger record {where} is not JSON ({err}); delete it.") from None
    if not isinstance(value, dict):
        raise LedgerError(f"Ledger record {where} is not a JSON object; delete it.")
    return value


class LocalLedger(Ledger):
    """Records as files under a directory every worker shares."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, record: Mapping[str, Any], *, only_if_absent: bool = False) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if only_if_absent and path.exists():
                return
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(_dump(record))
            os.replace(tmp, path)
        except OSError as err:
            raise LedgerError(f"Cannot write the ledger record {path}: {err}.") from err

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return _load(path.read_text(encoding="utf-8"), str(path))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise LedgerError(f"Cannot read the ledger record {path}: {err}.") from err

    def scan(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        folder = prefix.rpartition("/")[0]
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return []
        found: list[tuple[str, dict[str, Any]]] = []
        for path in sorted(base.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if not path.is_file() or path.name.startswith(".tmp-") or not key.startswith(prefix):
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted while we listed
                found.append((key, _load(path.read_text(encoding="utf-8"), str(path))))
        return found

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


class GcsLedger(Ledger):
    """Records as objects under ``gs://bucket/prefix``; small ones also in the object's metadata."""

    def __init__(self, bucket: str, prefix: str, client: Callable[[], storage.Client]) -> None:
        self.bucket_name = bucket
        self.prefix = prefix
        self._client = client
        self.uri = f"gs://{bucket}/{prefix}"

    @property
    def bucket(self) -> storage.Bucket:
        return self._client().bucket(self.bucket_name)

    @contextlib.contextmanager
    def _errors(self, what: str, key: str) -> Iterator[None]:
        from google.api_core import exceptions as api_exceptions

        try:
            yield
        except api_exceptions.Forbidden as err:
            raise LedgerError(
                f"Permission denied to {what} the ledger record {self.where(key)}: grant the GCP identity "
                "of the Gemini tasks 'Storage Object User' (create, get, list, delete) on that prefix."
            ) from err
        except api_exceptions.NotFound as err:
            raise LedgerError(
                f"The ledger bucket of {self.where(key)} does not exist: create it, or change the Gemini "
                "connection's extra 'ledger'."
            ) from err
        except api_exceptions.GoogleAPICallError as err:
            raise LedgerError(f"Could not {what} the ledger record {self.where(key)}: {err}.") from err

    def put(self, key: str, record: Mapping[str, Any], *, only_if_absent: bool = False) -> None:
        from google.api_core import exceptions as api_exceptions

        text = _dump(record)
        blob = self.bucket.blob(self.prefix + key)
        if len(text) <= MAX_METADATA_RECORD:
            blob.metadata = {METADATA_KEY: text}
        with self._errors("write", key):
            try:
                blob.upload_from_string(
                    text,
                    content_type="application/json",
                    if_generation_match=0 if only_if_absent else None,
                )
            except api_exceptions.PreconditionFailed:
                return  # only_if_absent, and it exists

    def get(self, key: str) -> dict[str, Any] | None:
        from google.api_core import exceptions as api_exceptions

        with self._errors("read", key):
            try:
                data = self.bucket.blob(self.prefix + key).download_as_bytes()
            except api_exceptions.NotFound:
                return None
        return _load(data, self.where(key))

    def scan(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        from google.api_core import exceptions as api_exceptions

        found: list[tuple[str, dict[str, Any]]] = []
        with self._errors("list", prefix):
            for blob in self._client().list_blobs(self.bucket_name, prefix=self.prefix + prefix):
                key = blob.name[len(self.prefix) :]
                text = (blob.metadata or {}).get(METADATA_KEY)
                if text is None:
                    try:
                        text = blob.download_as_bytes()
                    except api_exceptions.NotFound:  # deleted while we listed
                        continue
                found.append((key, _load(text, self.where(key))))
        return sorted(found, key=lambda item: item[0])

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as api_exceptions

        with self._errors("delete", key), contextlib.suppress(api_exceptions.NotFound):
            self.bucket.blob(self.prefix + key).delete()


def check_ledger_uri(value: Any, *, conn_id: str) -> str | None:
    """The connection's extra ``ledger``, checked: ``gs://bucket[/prefix]`` or an absolute path."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = value.strip() if isinstance(value, str) else ""
    if text.startswith("gs://"):
        bucket = text[len("gs://") :].split("/", 1)[0]
        if bucket:
            return text if text.endswith("/") else text + "/"
    elif text and os.path.isabs(text):
        return text
    raise GeminiInputError(
        f"Gemini connection {conn_id!r}: extra ledger={value!r} is neither a 'gs://bucket/prefix' nor an "
        "absolute directory path. Use e.g. 'gs://my-bucket/gemini-ledger/' (shared by every worker), or "
        "remove it (budgets and the tracing of registered files need it)."
    )


def open_ledger(uri: str, storage_client: Callable[[], storage.Client]) -> Ledger:
    """The ledger at ``uri`` (checked by :func:`check_ledger_uri`)."""
    if uri.startswith("gs://"):
        bucket, _, prefix = uri[len("gs://") :].partition("/")
        return GcsLedger(bucket, prefix, storage_client)
    return LocalLedger(uri)


# What a task writes --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TaskKey:
    """Which DAG run, task, map index and try a record comes from."""

    dag_id: str
    run_id: str
    run_prefix: str
    task_id: str
    map_index: int
    try_number: int

    @classmethod
    def from_context(cls, context: Context | dict[str, Any]) -> TaskKey:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        return cls(
            dag_id=str(ti.dag_id),
            run_id=str(ti.run_id),
            run_prefix=context_run_prefix(context),
            task_id=str(ti.task_id),
            map_index=-1 if map_index is None else int(map_index),
            try_number=int(getattr(ti, "try_number", None) or 1),
        )

    @property
    def attempt(self) -> str:
        """``task~map index~try``: unique per task attempt, safe in object names."""
        return f"{self.task_id}~{self.map_index}~{self.try_number}"

    def where(self) -> str:
        """``task[map index] (try n)`` for messages."""
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.task_id}{index} (try {self.try_number})"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_recorded_runs: set[tuple[str, str]] = set()
_recorded_lock = threading.Lock()


def record_run(ledger: Ledger, task: TaskKey) -> None:
    """Write ``runs/<run prefix>.json`` once (the sweeper maps a run prefix back to its DAG run)."""
    marker = (ledger.uri, task.run_prefix)
    with _recorded_lock:
        if marker in _recorded_runs:
            return
    ledger.put(
        f"{RUNS}{task.run_prefix}.json",
        {"dag_id": task.dag_id, "run_id": task.run_id, "run_prefix": task.run_prefix, "since": time.time()},
        only_if_absent=True,
    )
    with _recorded_lock:
        _recorded_runs.add(marker)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run prefix and the DAG run it stands for."""

    run_prefix: str
    dag_id: str
    run_id: str


def read_runs(ledger: Ledger) -> dict[str, RunRecord]:
    """Every run the ledger knows, by run prefix."""
    runs: dict[str, RunRecord] = {}
    for _, record in ledger.scan(RUNS):
        try:
            run = RunRecord(str(record["run_prefix"]), str(record["dag_id"]), str(record["run_id"]))
        except KeyError:
            log.warning("Ignoring a run record without run_prefix/dag_id/run_id: %s", printable(record))
            continue
        runs[run.run_prefix] = run
    return runs


class FileRecords:
    """One task attempt's records of files it creates: a registration before and after, or a claim."""

    def __init__(self, ledger: Ledger, task: TaskKey) -> None:
        self.ledger = ledger
        self.task = task
        self._seq = 0
        self._lock = threading.Lock()

    def _key(self, kind: str) -> str:
        with self._lock:
            self._seq += 1
            seq = self._seq
        return f"{FILES}{self.task.run_prefix}/{kind}~{self.task.attempt}~{seq}.json"

    def begin_registration(self, uris: Sequence[str]) -> str:
        """Record the URIs about to be registered (before ``files:register``); the record's key."""
        record_run(self.ledger, self.task)
        key = self._key("register")
        self.ledger.put(
            key, {**self.task.as_dict(), "kind": "register", "uris": list(uris), "started": time.time()}
        )
        return key

    def end_registration(self, key: str, uris: Sequence[str], names: Sequence[str]) -> None:
        """Record the names Gemini gave the registered files (right after the call answered)."""
        record = self.ledger.get(key) or {**self.task.as_dict(), "kind": "register", "uris": list(uris)}
        record.update({"files": list(names), "ended": time.time()})
        self.ledger.put(key, record)

    def claim(self, names: Sequence[str], *, what: str) -> str:
        """Record files this task created under names Gemini chose (``what``: e.g. 'batch results')."""
        record_run(self.ledger, self.task)
        key = self._key("claim")
        self.ledger.put(
            key,
            {
                **self.task.as_dict(),
                "kind": "claim",
                "what": what,
                "files": list(names),
                "ended": time.time(),
            },
        )
        return key


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """What the ledger says a task attempt created or was about to create."""

    key: str
    run_prefix: str
    kind: str
    task: str
    uris: tuple[str, ...]
    files: tuple[str, ...] | None
    """The names Gemini gave; None while a registration's answer was never recorded."""
    started: float | None
    ended: float | None


def read_file_records(ledger: Ledger) -> list[FileRecord]:
    """Every file record of every run."""
    found: list[FileRecord] = []
    for key, record in ledger.scan(FILES):
        files = record.get("files")
        found.append(
            FileRecord(
                key=key,
                run_prefix=str(record.get("run_prefix") or key[len(FILES) :].split("/", 1)[0]),
                kind=str(record.get("kind") or "register"),
                task=f"{record.get('task_id')}[{record.get('map_index')}] (try {record.get('try_number')})",
                uris=tuple(str(uri) for uri in record.get("uris") or ()),
                files=tuple(str(name) for name in files) if isinstance(files, list) else None,
                started=_seconds(record.get("started")),
                ended=_seconds(record.get("ended")),
            )
        )
    return found


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
