"""The orphan-sweeping maintenance DAG, run in real Airflow against the Gemini emulator: a finished run's
leftover file is deleted (after a dry run that only names it); a running run's file and a file this
provider did not create stay."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from doubles import context

from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.ledger import LocalLedger, TaskKey, record_run
from airflow_gemini_files.naming import upload_file_id
from airflow_gemini_files.sweep import NOT_OURS, RUN_LIVE

DAG_ID = "gemini_sweep_orphans"
STILL_RUNNING = "manual__nightly_still_running"


@pytest.fixture
def ledger(gemini_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> LocalLedger:
    """The Gemini connection, with a ledger (where uploads record their run); the ledger."""
    folder = tmp_path / "ledger"
    conn = {
        "conn_type": "gemini",
        "password": gemini_emulator.api_key,
        "extra": {"base_url": gemini_emulator.base_url, "ledger": str(folder)},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    return LocalLedger(str(folder))


@pytest.fixture
def running_run(airflow_db: None) -> Iterator[str]:
    """A DAG run Airflow knows as running (a long nightly run, say); removed afterwards."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    with create_session() as session:
        session.add(
            DagRun(
                dag_id=DAG_ID,
                run_id=STILL_RUNNING,
                run_type=DagRunType.MANUAL,
                state=DagRunState.RUNNING,
                run_after=datetime.now(UTC),
                start_date=datetime.now(UTC),
            )
        )
    yield STILL_RUNNING
    with create_session() as session:
        session.query(DagRun).filter(DagRun.dag_id == DAG_ID, DagRun.run_id == STILL_RUNNING).delete()


def plant_upload(ledger: LocalLedger, run_id: str) -> str:
    """A file uploaded by a task of ``run_id`` (named and recorded as the upload operator does)."""
    ctx = context(dag_id=DAG_ID, run_id=run_id, task_id="upload_documents")
    record_run(ledger, TaskKey.from_context(ctx))
    ref = GeminiHook().upload_file(
        io.BytesIO(b"%PDF-1.4 x"), mime_type="application/pdf", name=upload_file_id(ctx, "doc.pdf")
    )
    return ref.name


def test_the_sweep_deletes_a_finished_runs_orphan_and_keeps_live_and_foreign_files(
    run_dag: Any, gemini_emulator: Any, ledger: LocalLedger, running_run: str
) -> None:
    finished = run_dag(DAG_ID, {"dry_run": True})  # nothing to sweep yet; now a finished run
    assert finished.state == "success", finished.tasks
    orphan = plant_upload(ledger, finished.run_id)
    live = plant_upload(ledger, running_run)
    foreign = GeminiHook().upload_file(io.BytesIO(b"theirs"), mime_type="text/plain").name

    dry = run_dag(DAG_ID, {"dry_run": True})
    assert dry.state == "success", dry.tasks
    report = dry.xcom("sweep_orphans")
    assert report["dry_run"] is True
    assert [entry["file"] for entry in report["would_delete"]] == [orphan]
    assert report["would_delete"][0]["run_id"] == finished.run_id
    assert {f["name"] for f in gemini_emulator.files()} == {orphan, live, foreign}  # nothing deleted

    swept = run_dag(DAG_ID)  # the scheduled run: the param's default deletes
    assert swept.state == "success", swept.tasks
    report = swept.xcom("sweep_orphans")
    assert report["dry_run"] is False
    assert [entry["file"] for entry in report["deleted"]] == [orphan]
    assert report["errors"] == []
    assert report["freed_bytes"] > 0
    assert report["kept"] == {RUN_LIVE: 1, NOT_OURS: 1}  # kept because its run runs, not for its youth
    assert {f["name"] for f in gemini_emulator.files()} == {live, foreign}
