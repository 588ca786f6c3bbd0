"""The Gemini Batch API: batch jobs, their clock-driven state machine, the request runner, the results file.

A job is a long-running operation named ``batches/<id>``. Its timeline is a pure function of the
emulator's clock and a few settings, fixed when the job is created::

    PENDING   createTime .. run start            (pending_seconds; forever while held)
    RUNNING   run start .. run start + running_seconds + n * seconds_per_request
    SUCCEEDED once that time has passed and every request has been answered
    EXPIRED   at createTime + 48 h if it has not succeeded by then
    FAILED / CANCELLED   when a control fails it, a failure rule matches it, or the client cancels it

Requests are answered by the emulator's own ``generateContent`` logic (:func:`generate`), one at a
time, in the order the results will have. Request k (1-based, in that order) is due at
``run start + k * seconds_per_request``; a background worker answers due requests as wall-clock time
passes, and :meth:`BatchStore.settle_all` answers everything due at once after the clock is advanced.
Inputs and outputs live on disk as JSONL (the input snapshot, the results written line by line), so a
job of any size costs memory only for the line being answered and an 8-byte offset per request.

A job that read its requests from a file (``inputConfig.fileName``) writes its results to a GENERATED
file ``files/batch-<id>`` (downloadable through ``files/<id>:download``), one line
``{"response": GenerateContentResponse, "key": ...}`` or ``{"error": Status, "key": ...}`` per request.
A job with inline requests returns ``output.inlinedResponses.inlinedResponses[]`` with each request's
``metadata`` echoed. By default the results come in a shuffled (deterministic) order, because the live
API has been seen to reorder them (googleapis/python-genai#1909): map them back by key.

The wire facts and where each comes from are in ``docs/emulator-fidelity.md`` (section "Batch API").
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import math
import os
import random
import secrets
import shutil
import string
import threading
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.emulator.errors import ApiError, not_found_file
from airflow_gemini_files.emulator.generate import generate
from airflow_gemini_files.emulator.store import FileStore, StoredFile, page_of, rfc3339

if TYPE_CHECKING:
    from airflow_gemini_files.emulator.control import GeminiEmulator
    from airflow_gemini_files.emulator.models import ModelCatalogue

log = logging.getLogger(__name__)

#: A job that has not succeeded this long after its creation ends EXPIRED (Batch API docs).
EXPIRY_SECONDS = 48 * 3600
#: The largest batchGenerateContent request with inline requests (Batch API docs: "under 20MB").
MAX_INLINE_BATCH_BYTES = 20 * 1024 * 1024
#: MIME type of a results file (not documented; see the ledger).
RESULTS_MIME_TYPE = "application/jsonl"

PENDING, RUNNING, SUCCEEDED = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"
FAILED, CANCELLED, EXPIRED = "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})

#: google.rpc.Code of the canonical statuses, for per-request errors in result lines.
GRPC_CODES = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}
RESULT_ORDERS = ("shuffled", "input")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 36  # live ids look like batches/o08hk76gv328ihxcssjsgwt3g6omtfysxi46
_THINKING_KEYS = ("thinkingConfig", "thinking_config")
_MAX_REPORTED_LINE_ERRORS = 20
_WORKER_CHUNK = 64  # requests answered per job-lock hold, so reads never wait long
_WORKER_TICK = 0.05  # seconds between worker passes while a job is active
_READ_BUDGET = 256  # due requests a get answers itself, so a small job is done the moment it is due


@dataclass
class BatchSettings:
    """Timing and ordering of new jobs (``GeminiEmulator.configure_batches``)."""

    pending_seconds: float = 1.0
    running_seconds: float = 1.0
    seconds_per_request: float = 0.0
    expire_after_seconds: float = float(EXPIRY_SECONDS)
    result_order: str = "shuffled"

    def validate(self) -> None:
        for name in ("pending_seconds", "running_seconds", "seconds_per_request", "expire_after_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or math.isnan(value):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.result_order not in RESULT_ORDERS:
            raise ValueError(f"result_order must be one of {RESULT_ORDERS}, got {self.result_order!r}")


@dataclass
class BatchJob:
    """One batch job: its inputs on disk, its timeline and its progress."""

    batch_id: str
    seq: int
    model: str  # "models/<id>"
    display_name: str | None
    create_time: float
    directory: Path
    source: str  # "file" or "inline"
    input_file: str | None  # the files/<id> the requests came from
    offsets: array[int]  # byte offset of each request line in input.jsonl
    order: array[int]  # the request index answered k-th (= result line k)
    running_seconds: float
    seconds_per_request: float
    expire_time: float
    run_start: float | None  # None while held in PENDING
    pending_seconds: float
    fail_message: str | None = None  # a failure rule: fails when it would start running
    terminal: tuple[str, float] | None = None  # forced end: (state, time)
    error: dict[str, Any] | None = None
    answered: int = 0
    succeeded: int = 0
    failed: int = 0
    results_file: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"batches/{self.batch_id}"

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def input_path(self) -> Path:
        return self.directory / "input.jsonl"

    @property
    def output_path(self) -> Path:
        return self.directory / "output.jsonl"

    @property
    def natural_end(self) -> float | None:
        if self.run_start is None:
            return None
        return self.run_start + self.running_seconds + self.count * self.seconds_per_request

    def matches(self, text: str) -> bool:
        return text in self.name or bool(self.display_name and text in self.display_name)

    def due(self, now: float) -> int:
        """How many requests should have been answered by ``now``."""
        if self.run_start is None or now < self.run_start or self.terminal is not None:
            return 0
        if self.seconds_per_request <= 0:
            return self.count
        return min(self.count, int((now - self.run_start) / self.seconds_per_request))

    def state(self, now: float) -> tuple[str, float | None]:
        """The state at ``now`` and, for a terminal one, when it was reached."""
        if self.terminal is not None and self.terminal[1] <= now:
            return self.terminal
        end = self.natural_end
        if end is not None and end < self.expire_time and end <= now and self.answered == self.count:
            return SUCCEEDED, end
        if now >= self.expire_time:
            return EXPIRED, self.expire_time
        if self.run_start is None or now < self.run_start:
            return PENDING, None
        return RUNNING, None

    def update_time(self, now: float) -> float:
        state, ended = self.state(now)
        if ended is not None:
            return ended
        if state == RUNNING and self.run_start is not None:
            return self.run_start
        return self.create_time


class BatchStore:
    """The batch jobs of one emulated project, on top of its :class:`FileStore`."""

    def __init__(self, files: FileStore, models: ModelCatalogue) -> None:
        self.files = files
        self.models = models
        self.settings = BatchSettings()
        self._lock = threading.Lock()
        self._jobs: dict[str, BatchJob] = {}
        self._seq = itertools.count(1)
        self._hold_rules: list[str] = []
        self._fail_rules: list[tuple[str, str]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def root(self) -> Path:
        return self.files.root / "batches"

    def now(self) -> float:
        return self.files.clock.now()

    # ---- lifecycle ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every job and rule; restore the default settings."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._hold_rules.clear()
            self._fail_rules.clear()
            self.settings = BatchSettings()
        for job in jobs:
            with job.lock:  # wait for a worker pass on it to finish
                job.terminal = job.terminal or (CANCELLED, self.now())
        shutil.rmtree(self.root, ignore_errors=True)

    def close(self) -> None:
        """Stop the background worker (the emulator is stopping)."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None
        self._stop.clear()

    def configure(self, **settings: Any) -> None:
        """Change the settings of jobs created from now on (see :class:`BatchSettings`)."""
        known = {f.name for f in fields(BatchSettings)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown batch setting(s) {unknown}; known: {sorted(known)}")
        candidate = BatchSettings(**{**asdict(self.settings), **settings})
        candidate.validate()
        self.settings = candidate

    # ---- create -------------------------------------------------------------------------------
    def create(self, model: str, version: str, body: dict[str, Any], body_bytes: int) -> dict[str, Any]:
        """``models/{model}:batchGenerateContent``: validate, snapshot the requests, answer the operation."""
        batch = body.get("batch")
        if not isinstance(batch, dict):
            raise ApiError(400, "* BatchGenerateContentRequest.batch: batch is required.")
        input_config = _get(batch, "inputConfig", "input_config")
        if not isinstance(input_config, dict):
            raise ApiError(400, "* batch.input_config: input_config is required (requests or file_name).")
        inline = input_config.get("requests")
        file_name = _get(input_config, "fileName", "file_name")
        if (inline is None) == (file_name is None):
            raise ApiError(400, "batch.input_config must set exactly one of requests or file_name.")
        if inline is not None and body_bytes > MAX_INLINE_BATCH_BYTES:
            raise ApiError(
                400,
                f"Request payload size exceeds the limit: {MAX_INLINE_BATCH_BYTES} bytes. Inline batch "
                f"requests must stay under 20 MB (this one has {body_bytes} bytes); upload the requests as a "
                "JSONL file and pass its name as input_config.file_name instead.",
            )
        display_name = _get(batch, "displayName", "display_name")
        batch_id = self._new_id()
        directory = self.root / batch_id
        directory.mkdir(parents=True)
        try:
            if inline is not None:
                offsets = _snapshot_inline(inline, directory / "input.jsonl")
                source, input_file = "inline", None
            else:
                stored = self._input_file(str(file_name))
                offsets = _snapshot_file(stored, directory / "input.jsonl")
                source, input_file = "file", stored.name
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        settings = self.settings
        order = array("q", range(len(offsets)))
        if settings.result_order == "shuffled":
            _shuffle(order, batch_id)
        now = self.now()
        with self._lock:
            job = BatchJob(
                batch_id=batch_id,
                seq=next(self._seq),
                model=f"models/{model}",
                display_name=str(display_name) if display_name is not None else None,
                create_time=now,
                directory=directory,
                source=source,
                input_file=input_file,
                offsets=offsets,
                order=order,
                running_seconds=settings.running_seconds,
                seconds_per_request=settings.seconds_per_request,
                expire_time=now + settings.expire_after_seconds,
                run_start=now + settings.pending_seconds,
                pending_seconds=settings.pending_seconds,
            )
            if any(job.matches(rule) for rule in self._hold_rules):
                job.run_start = None
            for rule, message in self._fail_rules:
                if job.matches(rule):
                    job.fail_message = message
                    break
            self._jobs[batch_id] = job
        log.info("batch %s created: %d %s request(s) for %s", job.name, job.count, source, job.model)
        self._ensure_worker()
        return self.operation(job, version)

    def _input_file(self, file_name: str) -> StoredFile:
        stored = self.files.get(file_name)
        state = stored.state(self.now())
        if state != "ACTIVE":
            raise ApiError(
                400,
                f"The File {stored.file_id} is not in an ACTIVE state and usage is not allowed "
                f"(state: {state}).",
                "FAILED_PRECONDITION",
            )
        if stored.path is None:
            raise ApiError(
                400,
                f"The input file {stored.name} was registered from {stored.source_uri}; a batch input file "
                "must be a JSONL file uploaded through the Files API.",
            )
        return stored

    def _new_id(self) -> str:
        while True:
            batch_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
            if batch_id not in self._jobs:
                return batch_id

    # ---- get / list / cancel / delete -----------------------------------------------------------
    def job(self, raw_name: str) -> BatchJob:
        batch_id = raw_name.removeprefix("batches/")
        with self._lock:
            job = self._jobs.get(batch_id)
        if job is None:
            raise ApiError(
                404, f"Batch batches/{batch_id} not found (it never existed or was deleted).", "NOT_FOUND"
            )
        return job

    def get(self, raw_name: str, version: str) -> dict[str, Any]:
        job = self.job(raw_name)
        self.settle(job, answer_limit=_READ_BUDGET)
        return self.operation(job, version)

    def list_page(self, page_size: int | None, page_token: str | None, version: str) -> dict[str, Any]:
        """Newest first. Without ``pageSize`` the live API answered an empty page (python-genai#1250)."""
        if page_size is not None and page_size < 0:
            raise ApiError(400, f"pageSize must not be negative (got {page_size}).")
        if not page_size:
            return {}
        with self._lock:
            ordered = sorted(self._jobs.values(), key=lambda j: j.seq, reverse=True)
        page, token = page_of(ordered, page_size, page_token)
        payload: dict[str, Any] = {}
        if page:
            for job in page:
                self.settle(job)
            payload["operations"] = [self.operation(job, version, listing=True) for job in page]
        if token:
            payload["nextPageToken"] = token
        return payload

    def cancel(self, raw_name: str) -> None:
        """PENDING or RUNNING -> CANCELLED at once (no CANCELLING state on the wire); partial results
        are discarded. A finished job cannot be cancelled (the SDK's cancel docstring)."""
        job = self.job(raw_name)
        self.settle(job)
        with job.lock:
            state, _ = self._resolve(job, self.now())
            if state in TERMINAL_STATES:
                raise ApiError(
                    400,
                    f"Batch {job.name} is already {state}; only a pending or running batch can be cancelled.",
                    "FAILED_PRECONDITION",
                )
            self._end(job, CANCELLED, self.now())
        log.info("batch %s cancelled", job.name)

    def delete(self, raw_name: str) -> None:
        """Forget a finished job (its results file stays, as it does on the live API)."""
        job = self.job(raw_name)
        self.settle(job)
        with job.lock:
            state, _ = self._resolve(job, self.now())
            if state not in TERMINAL_STATES:
                raise ApiError(
                    400,
                    f"Batch {job.name} is still {state}; cancel it (batches/{job.batch_id}:cancel) and "
                    "delete it once it is CANCELLED.",
                    "FAILED_PRECONDITION",
                )
            with self._lock:
                self._jobs.pop(job.batch_id, None)
            shutil.rmtree(job.directory, ignore_errors=True)

    # ---- the state machine ----------------------------------------------------------------------
    def settle(self, job: BatchJob, *, answer_limit: int = 0) -> bool:
        """Apply what the clock says happened to ``job``: failure rules, expiry, completion.

        Answers at most ``answer_limit`` due requests (``-1``: all of them). True when due requests
        remain unanswered.
        """
        now = self.now()
        with job.lock:
            self._resolve(job, now)
            if job.terminal is not None:
                return False
            horizon = min(now, job.expire_time)
            due = job.due(horizon)
            if answer_limit:
                target = due if answer_limit < 0 else min(due, job.answered + answer_limit)
                if target > job.answered:
                    self._answer(job, target)
            self._resolve(job, now)
            return job.terminal is None and job.answered < job.due(horizon)

    def _resolve(self, job: BatchJob, now: float) -> tuple[str, float | None]:
        """The state at ``now`` with its consequences applied: a failure rule fires, a finished job
        publishes its results, an overdue one expires (the caller holds the job's lock)."""
        if job.terminal is None:
            if job.fail_message is not None and job.run_start is not None and job.run_start <= now:
                error = {"code": GRPC_CODES["INTERNAL"], "message": job.fail_message}
                self._end(job, FAILED, job.run_start, error)
            else:
                state, ended = job.state(now)
                if state == SUCCEEDED:
                    self._finish(job, ended if ended is not None else now)
                elif state == EXPIRED:
                    self._end(job, EXPIRED, job.expire_time)
        return job.state(now)

    def settle_all(self) -> None:
        """Answer everything due now (after the clock was advanced): tests see the outcome at once."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self.settle(job, answer_limit=-1)

    def _answer(self, job: BatchJob, target: int) -> None:
        """Answer requests ``job.answered .. target`` (in result order), appending to the output."""
        with open(job.input_path, "rb") as source, open(job.output_path, "ab") as out:
            for k in range(job.answered, target):
                index = job.order[k]
                source.seek(job.offsets[index])
                line, ok = self._result_line(job, json.loads(source.readline()))
                out.write(line)
                job.answered += 1
                if ok:
                    job.succeeded += 1
                else:
                    job.failed += 1

    def _result_line(self, job: BatchJob, item: dict[str, Any]) -> tuple[bytes, bool]:
        """One result: ``{"response"|"error": ..., "key"|"metadata": ...}`` and whether it succeeded."""
        result: dict[str, Any] = {}
        try:
            model = self.models.require(job.model, "batchGenerateContent", "v1beta")
            result["response"] = generate(model, item["request"], self.files)
            ok = True
        except ApiError as error:
            result["error"] = {"code": GRPC_CODES.get(error.status, 2), "message": error.message}
            ok = False
        except Exception as exc:  # a bug in the emulated model must not stop the whole job
            log.exception("batch %s: a request failed inside the emulator", job.name)
            result["error"] = {"code": GRPC_CODES["INTERNAL"], "message": f"Internal error: {exc}"}
            ok = False
        if job.source == "file":
            if "key" in item:
                result["key"] = item["key"]
        elif item.get("metadata") is not None:
            result["metadata"] = item["metadata"]
        return json.dumps(result, separators=(",", ":")).encode() + b"\n", ok

    def _finish(self, job: BatchJob, when: float) -> None:
        """SUCCEEDED: a file job publishes its results as the GENERATED file ``files/batch-<id>``."""
        job.terminal = (SUCCEEDED, when)
        if job.source == "file":
            job.output_path.touch()
            sha = hashlib.sha256()
            with open(job.output_path, "rb") as fh:
                while piece := fh.read(1024 * 1024):
                    sha.update(piece)
            stored = self.files.add_generated(
                file_id=f"batch-{job.batch_id}",
                source=job.output_path,
                mime_type=RESULTS_MIME_TYPE,
                sha256=base64.b64encode(sha.hexdigest().encode()).decode(),
                create_time=when,
            )
            job.results_file = stored.name
        job.input_path.unlink(missing_ok=True)
        log.info("batch %s succeeded: %d ok, %d failed", job.name, job.succeeded, job.failed)

    def _end(self, job: BatchJob, state: str, when: float, error: dict[str, Any] | None = None) -> None:
        """FAILED / CANCELLED / EXPIRED: no output; what was answered is discarded (caller holds the lock)."""
        job.terminal = (state, when)
        job.error = error
        job.input_path.unlink(missing_ok=True)
        job.output_path.unlink(missing_ok=True)

    # ---- the wire shape -----------------------------------------------------------------------
    def operation(self, job: BatchJob, version: str, *, listing: bool = False) -> dict[str, Any]:
        """The job as a long-running operation, the way the live API serialises it."""
        now = self.now()
        with job.lock:
            state, ended = self._resolve(job, now)
            stats: dict[str, str] = {"requestCount": str(job.count)}
            pending = job.count - job.answered
            for key, value in (
                ("pendingRequestCount", pending),
                ("successfulRequestCount", job.succeeded),
                ("failedRequestCount", job.failed),
            ):
                if value:  # proto3 JSON leaves out zero counts: read a missing count as 0
                    stats[key] = str(value)
            metadata: dict[str, Any] = {
                "@type": f"type.googleapis.com/google.ai.generativelanguage.{version}.GenerateContentBatch",
                "model": job.model,
            }
            if job.display_name is not None:
                metadata["displayName"] = job.display_name
            metadata["createTime"] = rfc3339(job.create_time)
            if ended is not None:
                metadata["endTime"] = rfc3339(ended)
            metadata["updateTime"] = rfc3339(job.update_time(now))
            metadata["batchStats"] = stats
            metadata["state"] = state
            metadata["name"] = job.name
            payload: dict[str, Any] = {"name": job.name, "metadata": metadata}
            if state in TERMINAL_STATES:
                payload["done"] = True
            if state == SUCCEEDED:
                output = self._output(job, listing=listing)
                if output is not None:
                    metadata["output"] = output
                    payload["response"] = {
                        "@type": f"type.googleapis.com/google.ai.generativelanguage.{version}."
                        "GenerateContentBatchOutput",
                        **output,
                    }
            elif state == FAILED and job.error is not None:
                payload["error"] = dict(job.error)
            return payload

    def _output(self, job: BatchJob, *, listing: bool) -> dict[str, Any] | None:
        if job.source == "file":
            return {"responsesFile": job.results_file}
        if listing:  # the list call leaves inline responses out (Gemini cookbook, Batch_mode.ipynb)
            return None
        responses = []
        with open(job.output_path, "rb") as fh:
            for line in fh:
                responses.append(json.loads(line))
        return {"inlinedResponses": {"inlinedResponses": responses}}

    # ---- controls -----------------------------------------------------------------------------
    def jobs(self) -> list[BatchJob]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.seq)

    def hold(self, match: str = "") -> list[str]:
        """Keep matching jobs (PENDING now, or created later) in PENDING until :meth:`release`."""
        with self._lock:
            self._hold_rules.append(match)
        held = []
        for job in self.jobs():
            self.settle(job)
            with job.lock:
                if job.matches(match) and self._resolve(job, self.now())[0] == PENDING:
                    job.run_start = None
                    held.append(job.name)
        return held

    def release(self, match: str = "") -> list[str]:
        """Let held jobs that match run (they start once their pending time is over, now at the
        earliest) and drop the hold rule ``match``; other rules keep holding the jobs created later."""
        with self._lock:
            self._hold_rules = [rule for rule in self._hold_rules if rule != match]
        now = self.now()
        released = []
        for job in self.jobs():
            with job.lock:
                if job.run_start is None and job.terminal is None and job.matches(match):
                    job.run_start = max(now, job.create_time + job.pending_seconds)
                    released.append(job.name)
        self._wake.set()
        return released

    def fail(self, match: str = "", message: str = "Batch failed.") -> list[str]:
        """Unfinished matching jobs end FAILED now; jobs created later fail when they would start."""
        with self._lock:
            self._fail_rules.append((match, message))
        failed = []
        for job in self.jobs():
            self.settle(job)
            with job.lock:
                if job.terminal is None and job.matches(match):
                    self._end(job, FAILED, self.now(), {"code": GRPC_CODES["INTERNAL"], "message": message})
                    failed.append(job.name)
        return failed

    def expire(self, match: str = "") -> list[str]:
        """Unfinished matching jobs end EXPIRED now (as if their 48 h had passed)."""
        expired = []
        for job in self.jobs():
            self.settle(job)
            with job.lock:
                if job.terminal is None and job.matches(match):
                    job.expire_time = min(job.expire_time, self.now())
                    self._end(job, EXPIRED, job.expire_time)
                    expired.append(job.name)
        return expired

    # ---- the background worker ----------------------------------------------------------------
    def _ensure_worker(self) -> None:
        self._wake.set()
        if self._worker is not None and self._worker.is_alive():
            return
        self._worker = threading.Thread(target=self._work, name="gemini-emulator-batches", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        """Answer due requests as time passes, a chunk at a time, so reads never wait long."""
        while not self._stop.is_set():
            busy = False
            for job in self.jobs():
                if self._stop.is_set():
                    return
                try:
                    while self.settle(job, answer_limit=_WORKER_CHUNK):
                        pass
                except Exception:
                    log.exception("batch worker failed on %s", job.name)
                with job.lock:
                    busy = busy or job.terminal is None
            self._wake.wait(_WORKER_TICK if busy else None)
            self._wake.clear()


# ---- reading and checking the requests --------------------------------------------------------
def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def _thinking_outside_config(request: dict[str, Any]) -> str | None:
    """The name of a ``thinkingConfig`` put on the request itself instead of under ``generationConfig``."""
    return next((key for key in _THINKING_KEYS if key in request), None)


def _snapshot_inline(inline: Any, path: Path) -> array[int]:
    """Check inline requests (the whole batch is refused on a structural error) and write them as JSONL."""
    items = inline.get("requests") if isinstance(inline, dict) else None
    if not isinstance(items, list):
        raise ApiError(400, "* batch.input_config.requests.requests: a list of requests is required.")
    if not items:
        raise ApiError(400, "* batch.input_config.requests.requests: the batch has no requests.")
    errors = []
    for i, item in enumerate(items):
        where = f"batch.input_config.requests.requests[{i}]"
        request = item.get("request") if isinstance(item, dict) else None
        if not isinstance(request, dict):
            errors.append(f"* {where}.request: request is required and must be a GenerateContentRequest.")
        elif (name := _thinking_outside_config(request)) is not None:
            errors.append(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}.request': Cannot find "
                "field. (thinking_config belongs under generation_config.)"
            )
    if errors:
        raise ApiError(400, "\n".join(errors[:_MAX_REPORTED_LINE_ERRORS]))
    offsets = array("q")
    with open(path, "wb") as out:
        for item in items:
            offsets.append(out.tell())
            line = {"request": item["request"]}
            if item.get("metadata") is not None:
                line["metadata"] = item["metadata"]
            out.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return offsets


def _check_line(raw: bytes, number: int) -> str | None:
    """What is wrong with one JSONL input line, in the live API's words, or None."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    if not text.strip():
        return f"Error on line {number}: invalid JSON, near column 1: empty line"
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"Error on line {number}: invalid JSON, near column {exc.colno}: {exc.msg}"
    if not isinstance(item, dict):
        return f"Error on line {number}: invalid JSON, near column 1: expected an object with key and request"
    if "key" in item and not isinstance(item["key"], str):
        column = text.find('"key"') + 1
        return f"Error on line {number}: invalid JSON, near column {column}: key must be a string"
    request = item.get("request")
    if not isinstance(request, dict):
        return f"Error on line {number}: missing field 'request' (a GenerateContentRequest object)"
    if (name := _thinking_outside_config(request)) is not None:
        column = text.find(f'"{name}"') + 1
        return (
            f"Error on line {number}: invalid JSON, near column {column}: no such field: '{name}' "
            "(thinking_config belongs under generation_config)"
        )
    return None


def _lines(fh: Any) -> Iterator[tuple[int, bytes]]:
    offset = 0
    for line in fh:
        yield offset, line
        offset += len(line)


def _snapshot_file(stored: StoredFile, path: Path) -> array[int]:
    """Check every line of a JSONL input file (all or nothing) and keep a private copy of it.

    The copy is a hard link where the filesystem allows (no bytes copied): deleting the input File
    after the job was created does not affect the job.
    """
    assert stored.path is not None
    try:
        os.link(stored.path, path)
    except FileNotFoundError as exc:  # deleted meanwhile
        raise not_found_file(stored.file_id) from exc
    except OSError:
        shutil.copyfile(stored.path, path)
    offsets = array("q")
    errors: list[str] = []
    bad = 0
    with open(path, "rb") as fh:
        for number, (offset, raw) in enumerate(_lines(fh), 1):
            problem = _check_line(raw, number)
            if problem is None:
                offsets.append(offset)
                continue
            bad += 1
            if len(errors) < _MAX_REPORTED_LINE_ERRORS:
                errors.append(problem)
    if errors:
        more = f"\n... and {bad - len(errors)} more line(s) with errors" if bad > len(errors) else ""
        raise ApiError(400, f"Invalid input file {stored.name}:\n" + "\n".join(errors) + more)
    if not offsets:
        raise ApiError(400, f"The input file {stored.name} is empty: a batch needs at least one request.")
    return offsets


def _shuffle(order: array[int], seed: str) -> None:
    """A deterministic shuffle that always moves something (when there are two or more results)."""
    random.Random(seed).shuffle(order)
    if len(order) > 1 and all(index == value for index, value in enumerate(order)):
        order.append(order.pop(0))


# ---- downloads ----------------------------------------------------------------------------------
def downloadable(store: FileStore, raw_name: str) -> StoredFile:
    """The GENERATED file behind ``files/<id>:download``; other files refuse, as on the live API."""
    stored = store.get(raw_name)
    if stored.source != "GENERATED" or stored.path is None:
        raise ApiError(
            400,
            f"Only generated files can be downloaded; {stored.name} is {stored.source}. Uploaded and "
            "registered files cannot be downloaded.",
        )
    return stored


def read_pieces(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    """A file's bytes in bounded pieces (a download never holds the whole file)."""
    with open(path, "rb") as fh:
        while piece := fh.read(size):
            yield piece


# ---- the /_emulator/batches controls ------------------------------------------------------------
def http_control(emulator: GeminiEmulator, method: str, action: str, body: dict[str, Any]) -> Any:
    """``/_emulator/batches...``: the batch controls of :class:`GeminiEmulator` over HTTP.

    ``GET batches`` | ``GET batches/config`` | ``POST batches/config`` {settings} |
    ``POST batches/hold`` {"match"} | ``POST batches/release`` {"match"} |
    ``POST batches/fail`` {"match", "message"} | ``POST batches/expire`` {"match"}.
    """
    match = str(body.get("match", ""))
    if method == "GET" and action == "batches":
        return {"batches": emulator.batches()}
    if action == "batches/config":
        if method == "POST":
            try:
                emulator.configure_batches(**body)
            except (TypeError, ValueError) as exc:
                raise ApiError(400, f"Invalid batch settings: {exc}") from exc
        return emulator.batch_settings()
    if method == "POST" and action == "batches/hold":
        return {"batches": emulator.hold_batches(match)}
    if method == "POST" and action == "batches/release":
        return {"batches": emulator.release_batches(match)}
    if method == "POST" and action == "batches/fail":
        return {"batches": emulator.fail_batches(match, str(body.get("message", "Batch failed.")))}
    if method == "POST" and action == "batches/expire":
        return {"batches": emulator.expire_batches(match)}
    raise ApiError(404, f"Unknown emulator control {method} /_emulator/{action}", "NOT_FOUND")
