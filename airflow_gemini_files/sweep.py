"""Which Gemini files are orphans: created by this provider, and needed by no DAG run still running.

The sweeper (:class:`~airflow_gemini_files.operators.sweep.GeminiSweepFilesOperator`) lists the project's
files, reads the :mod:`ledger <airflow_gemini_files.ledger>` and asks Airflow for the state of each run
it finds; this module decides, file by file (:func:`plan`).

**Whose file is it?** (:func:`attribute`)

1. A file named by :func:`~airflow_gemini_files.naming.upload_file_id` (uploads, and a batch job's input
   file, :func:`~airflow_gemini_files.naming.batch_input_file_id`) carries its run prefix in its name.
2. A file the ledger names: a registration whose answer was recorded, or a claim (e.g. a batch job's
   results file).
3. A registered file matched to a registration whose answer was never recorded (the task was killed
   between ``files:register`` and the ledger): a ``REGISTERED`` file created within
   :data:`MATCH_WINDOW` after the record was written (:data:`CLOCK_SKEW` before it too), whose display
   name, when it has one, is the name of one of the recorded objects, and that no other record names.
   When more files match than the record has URIs, or a file matches records of different runs, the
   match is ambiguous and nothing is attributed.
4. Anything else is not ours: never deleted.

**Does a running DAG run still need it?** (:func:`decide`)

- its run is queued or running: kept, whatever its age;
- its run has finished (success or failed): deleted;
- its run is unknown (no ledger record for the prefix, or Airflow no longer knows the run): deleted once
  older than ``max_age`` (required: there is no sweep without an age limit), else kept. Without a ledger
  the sweeper knows runs only by age: set ``max_age`` above your longest DAG run.

A file whose creation time Gemini did not state is kept when its age would decide.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.ledger import FileRecord, RunRecord
from airflow_gemini_files.naming import run_prefix_of
from airflow_gemini_files.refs import REGISTERED, GeminiFileRef

MATCH_WINDOW = timedelta(minutes=15)
"""How long after a registration record was written its files can have been created (a register call
with its retries: the connection's ``retry_max_total_wait`` is 3 minutes by default)."""

CLOCK_SKEW = timedelta(minutes=1)
"""How far the worker's clock and Gemini's may disagree."""

LIVE = "live"
FINISHED = "finished"
UNKNOWN = "unknown"

LIVE_STATES = frozenset({"queued", "running"})
FINISHED_STATES = frozenset({"success", "failed"})

NOT_OURS = "not created by this provider"
RUN_LIVE = "its run is still running"
RUN_FINISHED = "its run has finished"
UNKNOWN_OLD = "its run is unknown and it is older than the max age"
UNKNOWN_YOUNG = "its run is unknown and it is younger than the max age"
UNKNOWN_NO_TIME = "its run is unknown and Gemini states no creation time"

HOW_NAME = "name"
HOW_LEDGER = "ledger"
HOW_MATCHED = "matched"


def check_max_age(value: object) -> timedelta:
    """The sweep's age limit (hours, or a timedelta), checked: a sweep without one is refused."""
    if isinstance(value, timedelta):
        hours = value.total_seconds() / 3600
    elif isinstance(value, int | float) and not isinstance(value, bool):
        hours = float(value)
    else:
        raise GeminiInputError(
            f"max_age_hours={value!r} is not a number of hours: a sweep needs an age limit (e.g. "
            "max_age_hours=24) so that it never deletes files a run without a ledger record still uses."
        )
    if not math.isfinite(hours) or hours <= 0:
        raise GeminiInputError(
            f"max_age_hours={value!r} must be a positive number of hours (e.g. 24); files of runs the "
            "sweeper cannot identify are deleted only once older than that."
        )
    return timedelta(hours=hours)


@dataclasses.dataclass(frozen=True)
class Owner:
    """The run a file belongs to, and how that is known."""

    run_prefix: str
    how: str
    record: str | None = None
    """The ledger record that named or matched it."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to do with one file, and why."""

    file: GeminiFileRef
    delete: bool
    rule: str
    """Which rule decided: :data:`NOT_OURS`, :data:`RUN_LIVE`, :data:`RUN_FINISHED`, :data:`UNKNOWN_OLD`,
    :data:`UNKNOWN_YOUNG` or :data:`UNKNOWN_NO_TIME`."""
    reason: str
    owner: Owner | None = None
    run: RunRecord | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file.name,
            "display_name": self.file.display_name,
            "source": self.file.source,
            "bytes": self.file.size_bytes or 0,
            "created": self.file.create_time.isoformat() if self.file.create_time else None,
            "run_prefix": self.owner.run_prefix if self.owner else None,
            "dag_id": self.run.dag_id if self.run else None,
            "run_id": self.run.run_id if self.run else None,
            "traced_by": self.owner.how if self.owner else None,
            "rule": self.rule,
            "reason": self.reason,
        }


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def attribute(files: Sequence[GeminiFileRef], records: Sequence[FileRecord]) -> dict[str, Owner]:
    """The run each file of ours belongs to, by file name (files that are not ours are left out)."""
    owners: dict[str, Owner] = {}
    for ref in files:
        prefix = run_prefix_of(ref.name)
        if prefix is not None:
            owners[ref.name] = Owner(prefix, HOW_NAME)
    named = {name for record in records for name in record.files or ()}
    for record in records:
        for name in record.files or ():
            owners.setdefault(name, Owner(record.run_prefix, HOW_LEDGER, record.key))
    candidates: dict[str, list[FileRecord]] = {}
    by_record: dict[str, list[GeminiFileRef]] = {}
    for record in records:
        if record.files is not None or record.kind != "register" or record.started is None:
            continue
        written = datetime.fromtimestamp(record.started, tz=UTC)
        start, end = written - CLOCK_SKEW, written + MATCH_WINDOW
        names = {_basename(uri) for uri in record.uris} | set(record.uris)
        for ref in files:
            if ref.source != REGISTERED or ref.name in named or ref.create_time is None:
                continue
            if not start <= ref.create_time <= end:
                continue
            if ref.display_name and ref.display_name not in names:
                continue
            candidates.setdefault(ref.name, []).append(record)
            by_record.setdefault(record.key, []).append(ref)
    for name, matched in candidates.items():
        runs = {record.run_prefix for record in matched}
        if len(runs) != 1:
            continue  # matches records of different runs: ambiguous
        if any(len(by_record[record.key]) > len(record.uris) for record in matched):
            continue  # more files than the record registered: someone else's are among them
        owners.setdefault(name, Owner(matched[0].run_prefix, HOW_MATCHED, matched[0].key))
    return owners


def decide(
    ref: GeminiFileRef,
    owner: Owner | None,
    run: RunRecord | None,
    state: str,
    *,
    now: datetime,
    max_age: timedelta,
) -> Verdict:
    """Keep or delete one file (see the module docstring); ``state`` is the run's :data:`LIVE`,
    :data:`FINISHED` or :data:`UNKNOWN`."""
    if owner is None:
        return Verdict(ref, False, NOT_OURS, "not created by this provider (or not traceable to a run)")
    shown = f"{run.dag_id} / {run.run_id}" if run else f"run prefix {owner.run_prefix}"
    if state == LIVE:
        return Verdict(ref, False, RUN_LIVE, f"its DAG run {shown} is still running", owner, run)
    if state == FINISHED:
        return Verdict(ref, True, RUN_FINISHED, f"its DAG run {shown} has finished", owner, run)
    if ref.create_time is None:
        reason = f"its run ({shown}) is unknown and Gemini states no creation time"
        return Verdict(ref, False, UNKNOWN_NO_TIME, reason, owner, run)
    age = now - ref.create_time
    hours = age.total_seconds() / 3600
    limit = max_age.total_seconds() / 3600
    if age >= max_age:
        reason = f"its run ({shown}) is unknown to Airflow and it is {hours:.1f} h old (max age {limit:g} h)"
        return Verdict(ref, True, UNKNOWN_OLD, reason, owner, run)
    reason = f"its run ({shown}) is unknown and it is only {hours:.1f} h old (max age {limit:g} h)"
    return Verdict(ref, False, UNKNOWN_YOUNG, reason, owner, run)


def plan(
    files: Iterable[GeminiFileRef],
    *,
    runs: Mapping[str, RunRecord],
    records: Sequence[FileRecord],
    run_state: Callable[[RunRecord], str],
    now: datetime,
    max_age: timedelta,
) -> list[Verdict]:
    """A verdict for every file; ``run_state`` answers :data:`LIVE`, :data:`FINISHED` or :data:`UNKNOWN`
    for a run (asked once per run)."""
    listed = list(files)
    owners = attribute(listed, records)
    states: dict[str, str] = {}
    verdicts = []
    for ref in listed:
        owner = owners.get(ref.name)
        run = runs.get(owner.run_prefix) if owner else None
        state = UNKNOWN
        if run is not None:
            if run.run_prefix not in states:
                states[run.run_prefix] = run_state(run)
            state = states[run.run_prefix]
        verdicts.append(decide(ref, owner, run, state, now=now, max_age=max_age))
    return verdicts


def run_state_from_counts(live: int, known: int) -> str:
    """A run's state from Airflow's counts: runs with this id that are queued/running, and in any state."""
    if live > 0:
        return LIVE
    return FINISHED if known > 0 else UNKNOWN
