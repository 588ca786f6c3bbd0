"""The nightly DAG in real Airflow: scheduler, dag-processor, triggerer, api-server, LocalExecutor.

The Gemini emulator keeps every file PROCESSING until the test advances its clock, so each run's sensors
are certainly deferred (and their triggers running in the triggerer) before anything can finish.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from airflow_gemini_files.demo import DAG_ID, seed_documents
from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS, sample_path

from .airflow_services import wait_until
from .conftest import BUCKET, Deployment
from .runs import (
    PARKED,
    TRIGGER_CLASSPATH,
    RunRecord,
    TriggererRestart,
    assert_succeeded,
    fired_events,
    watch_run,
)

# Generous limits: a quiet 2-core machine needs ~3 minutes for the module, a busy one much longer.
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

ENCRYPTED_COLUMNS = (
    ("connection", "password"),
    ("connection", "extra"),
    ("variable", "val"),
)
QUERY_SCHEDULED = "SELECT run_id, logical_date FROM dag_run WHERE dag_id = ? AND run_type = 'scheduled'"


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

    record = watch_run(airflow, run_id, release_when_deferred, trigger_kwargs=deployment.trigger_kwargs_seen)
    if not released:
        assert_succeeded(airflow, record, len(NIGHTLY_DOCUMENTS))  # a failed run explains itself
        raise AssertionError(f"the sensors never were all deferred at once: {record.seen}")
    return NightlyRun(ds=str(logical_date)[:10], record=record)


def test_scheduled_nightly_run_defers_to_the_triggerer_and_cleans_up(
    deployment: Deployment, nightly_run: NightlyRun
) -> None:
    documents, record = len(NIGHTLY_DOCUMENTS), nightly_run.record
    assert_succeeded(deployment.airflow, record, documents)
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
    restart = TriggererRestart(airflow, gemini, expected=len(documents))
    record = watch_run(airflow, run_id, restart, trigger_kwargs=deployment.trigger_kwargs_seen)
    assert_succeeded(airflow, record, len(documents))
    restart.check(record)
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
