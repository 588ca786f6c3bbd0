"""Watching nightly DAG runs in a real deployment: states, workers, triggers and Gemini files over time.

Shared by the LocalExecutor/SQLite system test and the Celery/PostgreSQL one. Runs are polled in the
metadata DB (and the Gemini emulator) until they end; a ``step`` callback acts on each tick (trigger
another run, kill a worker, restart the triggerer, release parked files), so tests wait on states,
never on wall-clock guesses.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.demo import DAG_ID

from .airflow_services import TERMINAL_RUN_STATES, AirflowServices

if TYPE_CHECKING:
    from airflow_gemini_files.emulator import GeminiEmulator

SENSOR = "per_document.wait_active"
TRIGGER_CLASSPATH = "airflow_gemini_files.triggers.files.GeminiFileActiveTrigger"
PARKED = 3600.0
"""Processing delay that keeps files PROCESSING until a test advances the emulator's clock past it."""
RUN_TIMEOUT = 300.0


@dataclass(frozen=True)
class TaskRow:
    """One task instance as the metadata DB last showed it."""

    state: str | None
    hostname: str | None
    pid: int | None
    try_number: int
    pool: str | None


@dataclass
class RunRecord:
    """What a test saw of one DAG run while it ran."""

    run_id: str
    state: str | None = None
    tasks: dict[str, str | None] = field(default_factory=dict)
    instances: dict[str, TaskRow] = field(default_factory=dict)
    """``task_id[map_index]`` -> the latest row of that task instance."""
    seen: dict[str, set[str]] = field(default_factory=dict)
    """Every state each task instance was observed in."""
    triggers: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Trigger rows of the run's deferred tasks: classpath, decrypted kwargs, triggerer job ids seen."""

    def sensors(self) -> dict[str, str | None]:
        return {key: state for key, state in self.tasks.items() if key.startswith(f"{SENSOR}[")}

    def deferred_sensors_assigned(self, expected: int, triggerer_job: int | None = None) -> bool:
        """All ``expected`` sensors deferred and their triggers held by a (given) triggerer."""
        sensors = self.sensors()
        if len(sensors) != expected or any(state != "deferred" for state in sensors.values()):
            return False
        live = [t for t in self.triggers.values() if t["live"]]
        return len(live) == expected and all(
            t["triggerer"] is not None and (triggerer_job is None or t["triggerer"] == triggerer_job)
            for t in live
        )


@dataclass
class Watch:
    """Runs watched together, and every Gemini file the emulator held meanwhile."""

    run_ids: list[str]
    """The runs to follow; a step may append a run it triggered."""
    records: dict[str, RunRecord] = field(default_factory=dict)
    files_seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Gemini file name -> its resource when first seen (when an emulator is watched)."""
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def watch_run(
    airflow: AirflowServices,
    run_id: str,
    step: Callable[[RunRecord], None] | None = None,
    *,
    timeout: float = RUN_TIMEOUT,
    trigger_kwargs: list[str] | None = None,
) -> RunRecord:
    """Poll the metadata DB until the run ends, recording states, workers and triggers (decrypted kwargs
    appended to ``trigger_kwargs``); ``step`` acts on each tick."""

    def on_tick(watch: Watch) -> None:
        if step is not None:
            step(watch.records[run_id])

    return watch_runs(airflow, [run_id], on_tick, timeout=timeout, trigger_kwargs=trigger_kwargs).records[
        run_id
    ]


def watch_runs(
    airflow: AirflowServices,
    run_ids: list[str],
    step: Callable[[Watch], None] | None = None,
    *,
    timeout: float = RUN_TIMEOUT,
    trigger_kwargs: list[str] | None = None,
    gemini: GeminiEmulator | None = None,
) -> Watch:
    """:func:`watch_run` for several runs at once, until all of them (and runs a step adds) have ended;
    with ``gemini``, also the files the emulator holds on each tick."""
    watch = Watch(list(run_ids))
    while True:
        for run_id in watch.run_ids:
            record = watch.records.setdefault(run_id, RunRecord(run_id))
            if record.state in TERMINAL_RUN_STATES:
                continue
            record.state = airflow.run_state(DAG_ID, run_id)
            _snapshot(airflow, record, trigger_kwargs)
            if record.state in TERMINAL_RUN_STATES:
                print(f"{run_id}: {record.state} after {watch.elapsed():.0f}s")
        if gemini is not None:
            for file in gemini.files():
                watch.files_seen.setdefault(file["name"], file)
        if all(watch.records[run_id].state in TERMINAL_RUN_STATES for run_id in watch.run_ids):
            return watch
        if step is not None:
            step(watch)
        if watch.elapsed() > timeout:
            states = {run_id: (r.state, r.tasks) for run_id, r in watch.records.items()}
            raise AssertionError(f"runs not finished after {timeout:.0f}s: {states}\n{airflow.diagnostics()}")
        time.sleep(0.5)


def _key(task_id: str, map_index: int) -> str:
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


def _snapshot(airflow: AirflowServices, record: RunRecord, trigger_kwargs: list[str] | None) -> None:
    rows = airflow.query(
        "SELECT task_id, map_index, state, hostname, pid, try_number, pool FROM task_instance "
        "WHERE dag_id = ? AND run_id = ?",
        (DAG_ID, record.run_id),
    )
    record.instances = {_key(t, m): TaskRow(s, h or None, p, n, pool) for t, m, s, h, p, n, pool in rows}
    record.tasks = {key: row.state for key, row in record.instances.items()}
    for key, state in record.tasks.items():
        record.seen.setdefault(key, set()).add(str(state))
    triggers = airflow.query(
        "SELECT t.id, t.classpath, t.kwargs, t.triggerer_id FROM trigger t "
        "JOIN task_instance ti ON ti.trigger_id = t.id WHERE ti.dag_id = ? AND ti.run_id = ?",
        (DAG_ID, record.run_id),
    )
    for trigger in record.triggers.values():
        trigger["live"] = False
    for trigger_id, classpath, kwargs, triggerer in triggers:
        if trigger_id not in record.triggers:
            record.triggers[trigger_id] = {"classpath": classpath, "triggerers": set()}
            if trigger_kwargs is not None:
                trigger_kwargs.append(airflow.decrypt(kwargs))
        seen = record.triggers[trigger_id]
        seen.update(live=True, triggerer=triggerer)
        if triggerer is not None:
            seen["triggerers"].add(triggerer)


class TriggererRestart:
    """A ``watch_run`` step: once all ``expected`` sensors are deferred with their triggers held, SIGKILL
    the triggerer, start a new one 3 s later, and when it holds every trigger, release the parked files
    (advance the emulator's clock), so only the restarted triggerer can see them turn ACTIVE."""

    def __init__(self, airflow: AirflowServices, gemini: GeminiEmulator, expected: int) -> None:
        self.airflow, self.gemini, self.expected = airflow, gemini, expected
        self.old_triggerers: set[int] = set()
        self.killed: float | None = None
        self.sensors_while_dead: dict[str, str | None] = {}
        self.restarted = False
        self.new_job: int | None = None

    def __call__(self, record: RunRecord) -> None:
        if self.killed is None:
            if record.deferred_sensors_assigned(self.expected):
                self.old_triggerers = {j for t in record.triggers.values() for j in t["triggerers"]}
                self.airflow.kill("triggerer", signal.SIGKILL)
                self.killed = time.monotonic()
        elif not self.restarted:
            if time.monotonic() - self.killed > 3:
                self.sensors_while_dead = record.sensors()
                self.airflow.start("triggerer")
                self.restarted = True
        elif self.new_job is None:
            new_job = self.airflow.query("SELECT max(id) FROM job WHERE job_type = 'TriggererJob'")[0][0]
            if new_job not in self.old_triggerers and record.deferred_sensors_assigned(
                self.expected, triggerer_job=new_job
            ):
                self.new_job = new_job
                self.gemini.advance_clock(PARKED)  # only the restarted triggerer can notice this

    def check(self, record: RunRecord) -> None:
        """The restart went as intended: sensors stayed deferred; the new triggerer ended every wait."""
        assert self.killed is not None, f"the sensors never were all deferred: {record.seen}"
        assert set(self.sensors_while_dead.values()) == {"deferred"}, self.sensors_while_dead
        assert self.new_job is not None, f"the new triggerer never took the triggers over: {record.triggers}"
        for trigger_id, trigger in record.triggers.items():
            assert self.new_job in trigger["triggerers"], (trigger_id, trigger, self.new_job)
        # The files turned ACTIVE only after every trigger was held by the new triggerer (the old one was
        # dead), and every sensor succeeded: the new triggerer ended every wait. Its logs show it ran them.
        ran = triggers_run_by(self.airflow.home, record.run_id, self.new_job)
        missing = set(record.sensors()) - ran
        assert not missing, f"no log of the restarted triggerer for the triggers of {sorted(missing)}"


def task_log_folder(home: Path, run_id: str, key: str) -> Path:
    """Where the attempts of the task instance ``task_id`` or ``task_id[map_index]`` log."""
    task_id, _, index = key.rstrip("]").partition("[")
    folder = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return folder / f"map_index={index}" if index else folder


def fired_events(home: Path, run_id: str, triggerer_job: int | str = "*") -> list[dict[str, Any]]:
    """ "Trigger fired event" lines in the run's trigger logs (``<task log>.trigger.<triggerer job>.log``)."""
    run_logs = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    lines = [
        json.loads(line)
        for path in sorted(run_logs.rglob(f"*.trigger.{triggerer_job}.log"))
        for line in path.read_text().splitlines()
        if line.startswith("{")
    ]
    return [line for line in lines if line.get("event") == "Trigger fired event"]


def triggers_run_by(home: Path, run_id: str, triggerer_job: int) -> set[str]:
    """The sensors (``task_id[map_index]``) whose trigger ``triggerer_job`` ran: it wrote the trigger's log
    ``<attempt log>.trigger.<job>.log``. (Only its first lines are certain to be there: Airflow 3.3 drops
    the tail of trigger logs, "Trigger fired event" included, when many triggers end at once.)"""
    run_logs = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={SENSOR}"
    return {
        f"{SENSOR}[{path.parent.name.removeprefix('map_index=')}]"
        for path in run_logs.glob(f"map_index=*/attempt=*.log.trigger.{triggerer_job}.log")
        if "starting" in path.read_text(errors="replace")
    }


def failed_task_logs(home: Path, run_id: str, keys: list[str], lines: int = 30) -> str:
    """The last ``lines`` lines of the task logs of ``keys`` (``task_id`` or ``task_id[map_index]``)."""
    parts = []
    for key in keys:
        for path in sorted(task_log_folder(home, run_id, key).glob("attempt=*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path}\n" + "\n".join(line[:600] for line in tail))
    return "\n".join(parts)


def assert_succeeded(airflow: AirflowServices, record: RunRecord, documents: int) -> None:
    """The run and every task instance succeeded (or was skipped), with one sensor per document."""
    failed = {k: s for k, s in record.tasks.items() if s not in ("success", "skipped")}
    if record.state != "success" or failed:
        raise AssertionError(
            f"run {record.run_id} ended {record.state}; tasks not successful: {failed}\n"
            + failed_task_logs(airflow.home, record.run_id, list(failed))
            + "\n"
            + airflow.diagnostics()
        )
    assert len(record.sensors()) == documents, record.tasks
