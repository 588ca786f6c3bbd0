"""The nightly DAG in real Airflow: scheduler, dag-processor, triggerer, api-server, LocalExecutor.

The Gemini emulator keeps every file PROCESSING until the test advances its clock, so each run's sensors
are certainly deferred (and their triggers running in the triggerer) before anything can finish.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.demo import DAG_ID, seed_documents
from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS, sample_path

from .airflow_services import TERMINAL_RUN_STATES, wait_until
from .conftest import BUCKET, PARKED, Deployment

# Generous limits: a quiet 2-core machine needs ~3 minutes for the module, a busy one much longer.
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

SENSOR = "per_document.wait_active"
TRIGGER_CLASSPATH = "airflow_gemini_files.triggers.files.GeminiFileActiveTrigger"
RUN_TIMEOUT = 300.0
ENCRYPTED_COLUMNS = (
    ("connection", "password"),
    ("connection", "extra"),
    ("variable", "val"),
)
QUERY_SCHEDULED = "SELECT run_id, logical_date FROM dag_run WHERE dag_id = ? AND run_type = 'scheduled'"


@dataclass
class RunRecord:
    """What a test saw of one DAG run while it ran."""

    run_id: str
    state: str | None = None
    tasks: dict[str, str | None] = field(default_factory=dict)
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


def watch_run(
    deployment: Deployment, run_id: str, step: Callable[[RunRecord], None] | None = None
) -> RunRecord:
    """Poll the metadata DB until the run ends, recording states and triggers; ``step`` acts on each tick."""
    airflow = deployment.airflow
    record = RunRecord(run_id)
    start = time.monotonic()
    while True:
        record.tasks = airflow.task_states(DAG_ID, run_id)
        for key, state in record.tasks.items():
            record.seen.setdefault(key, set()).add(str(state))
        rows = airflow.query(
            "SELECT t.id, t.classpath, t.kwargs, t.triggerer_id FROM trigger t "
            "JOIN task_instance ti ON ti.trigger_id = t.id WHERE ti.dag_id = ? AND ti.run_id = ?",
            (DAG_ID, run_id),
        )
        for trigger in record.triggers.values():
            trigger["live"] = False
        for trigger_id, classpath, kwargs, triggerer in rows:
            if trigger_id not in record.triggers:
                record.triggers[trigger_id] = {"classpath": classpath, "triggerers": set()}
                deployment.trigger_kwargs_seen.append(airflow.decrypt(kwargs))
            seen = record.triggers[trigger_id]
            seen.update(live=True, triggerer=triggerer)
            if triggerer is not None:
                seen["triggerers"].add(triggerer)
        if step is not None:
            step(record)
        record.state = airflow.run_state(DAG_ID, run_id)
        if record.state in TERMINAL_RUN_STATES:
            record.tasks = airflow.task_states(DAG_ID, run_id)
            print(f"{run_id}: {record.state} after {time.monotonic() - start:.0f}s")
            return record
        if time.monotonic() - start > RUN_TIMEOUT:
            raise AssertionError(
                f"run {run_id} still {record.state} after {RUN_TIMEOUT:.0f}s; tasks {record.tasks}\n"
                + airflow.diagnostics()
            )
        time.sleep(0.5)


def seed(deployment: Deployment, ds: str, names: list[str]) -> None:
    """Put the named sample documents under ``incoming/<ds>/`` in the bucket."""
    client = deployment.gcs.client()
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(BUCKET)
    for name in names:
        bucket.blob(f"incoming/{ds}/{name}").upload_from_filename(
            str(sample_path(name)), content_type=NIGHTLY_DOCUMENTS[name]
        )


def manifest(deployment: Deployment, ds: str) -> dict[str, Any]:
    blob = deployment.gcs.client().bucket(BUCKET).blob(f"results/{ds}/_manifest.json")
    data: dict[str, Any] = json.loads(blob.download_as_bytes())
    return data


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


def failed_task_logs(home: Path, run_id: str, keys: list[str], lines: int = 30) -> str:
    """The last ``lines`` lines of the task logs of ``keys`` (``task_id`` or ``task_id[map_index]``)."""
    parts = []
    for key in keys:
        task_id, _, index = key.rstrip("]").partition("[")
        folder = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        if index:
            folder = folder / f"map_index={index}"
        for path in sorted(folder.glob("attempt=*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path}\n" + "\n".join(line[:600] for line in tail))
    return "\n".join(parts)


def assert_succeeded(deployment: Deployment, record: RunRecord, documents: int) -> None:
    failed = {k: s for k, s in record.tasks.items() if s not in ("success", "skipped")}
    if record.state != "success" or failed:
        home = deployment.airflow.home
        raise AssertionError(
            f"run {record.run_id} ended {record.state}; tasks not successful: {failed}\n"
            + failed_task_logs(home, record.run_id, list(failed))
            + "\n"
            + deployment.airflow.diagnostics()
        )
    assert len(record.sensors()) == documents, record.tasks


@dataclass
class NightlyRun:
    """The scheduled run the scheduler created when the DAG was unpaused, as watched by the test."""

    ds: str
    record: RunRecord


@pytest.fixture(scope="module")
def nightly_run(deployment: Deployment) -> NightlyRun:
    """Unpause the DAG: the scheduler starts the nightly run over yesterday's five documents (register)."""
    airflow = deployment.airflow
    today = datetime.now(UTC).date()
    for day in (today - timedelta(days=1), today):  # the run covers yesterday, or today past midnight
        seed_documents(deployment.gcs.client(), BUCKET, f"incoming/{day.isoformat()}/")
    airflow.unpause(DAG_ID)

    def scheduled() -> bool:
        return bool(airflow.query(QUERY_SCHEDULED, (DAG_ID,)))

    wait_until(scheduled, 60, lambda: f"no scheduled run was created\n{airflow.diagnostics()}")
    run_id, logical_date = airflow.query(QUERY_SCHEDULED, (DAG_ID,))[0]
    released: list[float] = []

    def release_when_deferred(record: RunRecord) -> None:
        if not released and record.deferred_sensors_assigned(len(NIGHTLY_DOCUMENTS)):
            deployment.gemini.advance_clock(PARKED)  # every file turns ACTIVE now
            released.append(time.monotonic())

    record = watch_run(deployment, run_id, release_when_deferred)
    if not released:
        assert_succeeded(deployment, record, len(NIGHTLY_DOCUMENTS))  # a failed run explains itself
        raise AssertionError(f"the sensors never were all deferred at once: {record.seen}")
    return NightlyRun(ds=str(logical_date)[:10], record=record)


def test_scheduled_nightly_run_defers_to_the_triggerer_and_cleans_up(
    deployment: Deployment, nightly_run: NightlyRun
) -> None:
    documents, record = len(NIGHTLY_DOCUMENTS), nightly_run.record
    assert_succeeded(deployment, record, documents)
    # Every sensor was seen deferred, its trigger was our trigger and a triggerer held it.
    for key in record.sensors():
        assert "deferred" in record.seen[key], f"{key} never deferred: {record.seen[key]}"
    assert len(record.triggers) == documents
    for trigger in record.triggers.values():
        assert trigger["classpath"] == TRIGGER_CLASSPATH
        assert trigger["triggerers"], f"trigger never picked up by a triggerer: {trigger}"
    # ... and the triggerer ran it: each trigger's log shows it firing its event.
    fired = fired_events(deployment.airflow.home, record.run_id)
    assert len(fired) == documents, fired
    # The results are stored, and Gemini is left with nothing.
    result = manifest(deployment, nightly_run.ds)
    assert (result["documents"], result["succeeded"], result["failed"]) == (documents, documents, 0)
    assert deployment.gemini.files() == []
    assert deployment.gemini.stats()["requests"]["register"] >= 1


def test_run_completes_after_the_triggerer_is_killed_while_sensors_are_deferred(
    deployment: Deployment, nightly_run: NightlyRun
) -> None:
    """A manual run (upload mode, two documents): SIGKILL the triggerer mid-wait, restart it: success."""
    airflow, gemini = deployment.airflow, deployment.gemini
    ds = (date.fromisoformat(nightly_run.ds) - timedelta(days=3)).isoformat()  # any day but the nightly's
    documents = ["meeting_notes_de.md", "revenue_chart_q3.png"]
    seed(deployment, ds, documents)
    run_id = airflow.trigger(DAG_ID, "system_triggerer_kill", f"{ds}T00:00:00Z", {"mode": "upload"})
    events: dict[str, Any] = {}

    def kill_and_restart(record: RunRecord) -> None:
        if "killed" not in events and record.deferred_sensors_assigned(len(documents)):
            events["old_triggers"] = {i: set(t["triggerers"]) for i, t in record.triggers.items()}
            airflow.kill("triggerer", signal.SIGKILL)
            events["killed"] = time.monotonic()
        elif "restarted" not in events and "killed" in events and time.monotonic() - events["killed"] > 3:
            events["sensors_while_dead"] = record.sensors()
            airflow.start("triggerer")
            events["restarted"] = time.monotonic()
        elif "restarted" in events and "released" not in events:
            new_job = airflow.query("SELECT max(id) FROM job WHERE job_type = 'TriggererJob'")[0][0]
            if new_job not in {j for old in events["old_triggers"].values() for j in old} and (
                record.deferred_sensors_assigned(len(documents), triggerer_job=new_job)
            ):
                events["new_job"] = new_job
                gemini.advance_clock(PARKED)  # only the restarted triggerer can notice this
                events["released"] = time.monotonic()

    record = watch_run(deployment, run_id, kill_and_restart)
    assert_succeeded(deployment, record, len(documents))
    assert "killed" in events, f"the sensors never were all deferred: {record.seen}"
    assert set(events["sensors_while_dead"].values()) == {"deferred"}, events["sensors_while_dead"]
    assert "released" in events, f"the restarted triggerer never took the triggers over: {record.triggers}"
    for trigger_id, trigger in record.triggers.items():
        assert events["new_job"] in trigger["triggerers"], (trigger_id, trigger, events)
    fired = fired_events(airflow.home, run_id, triggerer_job=events["new_job"])
    assert len(fired) == len(documents), f"the restarted triggerer did not fire every trigger: {fired}"
    result = manifest(deployment, ds)
    assert (result["documents"], result["succeeded"]) == (len(documents), len(documents))
    assert result["mode"] == "upload"
    assert gemini.files() == []


def _rows(deployment: Deployment, label: str, sql: str) -> list[tuple[str, str]]:
    """``(label with the row's leading columns, last column as text)`` for each row of ``sql``."""
    rows = deployment.airflow.query(sql)
    return [(f"{label} {row[:-1]}", str(row[-1])) for row in rows]


def test_no_secret_in_logs_xcom_rendered_fields_trigger_kwargs_or_emulator_log(
    deployment: Deployment, nightly_run: NightlyRun
) -> None:
    airflow = deployment.airflow
    # The secrets were really in play: the workers fetched GCP tokens and called Gemini with the key.
    assert deployment.token_endpoint.issued >= 1
    assert deployment.gemini.stats()["requests"]["register"] >= 1
    log_files = [p for p in (airflow.home / "logs").rglob("*") if p.is_file()]
    log_files += sorted((airflow.home / "services").glob("*.log"))  # services, CLI and the Gemini emulator
    assert any(".trigger." in p.name for p in log_files), "no trigger log to scan"
    assert deployment.emulator_log.stat().st_size > 0, "the emulator logged nothing to scan"
    live_kwargs = [airflow.decrypt(value) for (value,) in airflow.query("SELECT kwargs FROM trigger")]
    sources = {
        "task, trigger and service logs": [(str(p), p.read_text(errors="replace")) for p in log_files],
        "metadata DB file (every table, deleted rows too)": [
            (str(path), path.read_bytes().decode("latin-1")) for path in airflow.home.glob("airflow.db*")
        ],
        "XCom values": _rows(deployment, "xcom", "SELECT task_id, map_index, key, value FROM xcom"),
        "rendered template fields": _rows(
            deployment,
            "rendered_task_instance_fields",
            "SELECT task_id, map_index, rendered_fields FROM rendered_task_instance_fields",
        ),
        "trigger kwargs (decrypted)": [
            ("trigger.kwargs", kwargs) for kwargs in deployment.trigger_kwargs_seen + live_kwargs
        ],
        "results in GCS": [
            (f"gs://{BUCKET}/{blob.name}", blob.download_as_bytes().decode())
            for blob in deployment.gcs.client().list_blobs(BUCKET, prefix="results/")
        ],
    }
    # Control: a Gemini file name (not a secret) is found in every source, so the scan reads real content.
    assert deployment.trigger_kwargs_seen, "no trigger kwargs were captured while the sensors were deferred"
    file_name = re.search(r"files/[a-z0-9-]+", deployment.trigger_kwargs_seen[0])
    assert file_name is not None
    for source, texts in sources.items():
        assert any(file_name[0] in text for _, text in texts), f"{file_name[0]} not found in {source}"
    for table, column in ENCRYPTED_COLUMNS:  # empty here (connections come from the environment)
        rows = airflow.query(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
        sources[f"{table}.{column} (decrypted)"] = [(table, airflow.decrypt(value)) for (value,) in rows]
    hits = [
        f"{secret} in {label}"
        for texts in sources.values()
        for label, text in texts
        for secret, value in deployment.secrets.items()
        if value in text
    ]
    assert hits == [], f"secrets leaked: {hits}\n(set GEMINI_SYSTEM_KEEP=1 to keep the files)"
