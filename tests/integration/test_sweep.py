"""GeminiSweepFilesOperator against the emulators: planted orphans (uploaded and registered) are found and
deleted, and no file of a running DAG run or of someone else is touched."""

from __future__ import annotations

import io
import json
from importlib import resources
from typing import Any

import pytest
from doubles import FakeTI, context

from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.ledger import FileRecords, LocalLedger, TaskKey
from airflow_gemini_files.naming import upload_file_id
from airflow_gemini_files.operators.sweep import GeminiSweepFilesOperator

SAMPLES = resources.files("airflow_gemini_files.samples")
BUCKET = "sweep-tests"
FINISHED, RUNNING = "scheduled__2026-11-28", "scheduled__2026-11-29"


class SweeperTI(FakeTI):
    """The sweep task's instance: answers the Task SDK's DAG-run counts from ``states``."""

    def __init__(self, states: dict[str, str]) -> None:
        super().__init__(task_id="sweep", run_id="manual__sweep")
        self.states = states

    def get_dr_count(self, dag_id: str, run_ids: list[str], states: list[str] | None = None) -> int:
        state = self.states.get(run_ids[0])
        return int(state is not None and (states is None or state in states))


@pytest.fixture
def planted(gemini_emulator: Any, gcs_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """Files of a finished run (orphans), of a running run, and of someone else; returns their names."""
    ledger_dir = tmp_path / "ledger"
    conn = {
        "conn_type": "gemini",
        "password": gemini_emulator.api_key,
        "extra": {"base_url": gemini_emulator.base_url, "ledger": str(ledger_dir)},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    bucket = gcs_emulator.client().create_bucket(BUCKET)
    for name in ("a.pdf", "b.pdf"):
        bucket.blob(f"in/{name}").upload_from_string(
            SAMPLES.joinpath("invoice_northwind_2026-11.pdf").read_bytes(), content_type="application/pdf"
        )
    hook = GeminiHook()
    ledger = LocalLedger(str(ledger_dir))
    names: dict[str, str] = {}
    for run_id, label in ((FINISHED, "finished"), (RUNNING, "running")):
        ctx = context(run_id=run_id, task_id="upload")
        ref = hook.upload_file(
            io.BytesIO(b"%PDF-1.4 x"), mime_type="application/pdf", name=upload_file_id(ctx, "doc.pdf")
        )
        names[f"{label} upload"] = ref.name
    # The finished run's register task was killed between the call and its answer: only the URIs it was
    # about to register are in the ledger.
    killed = FileRecords(ledger, TaskKey.from_context(context(run_id=FINISHED, task_id="register")))
    killed.begin_registration([f"gs://{BUCKET}/in/a.pdf"])
    [ref] = hook.register_gcs_files([f"gs://{BUCKET}/in/a.pdf"])
    names["finished registered"] = ref.name
    records = FileRecords(ledger, TaskKey.from_context(context(run_id=RUNNING, task_id="register")))
    key = records.begin_registration([f"gs://{BUCKET}/in/b.pdf"])
    [ref] = hook.register_gcs_files([f"gs://{BUCKET}/in/b.pdf"])
    records.end_registration(key, [f"gs://{BUCKET}/in/b.pdf"], [ref.name])
    names["running registered"] = ref.name
    names["someone else's"] = hook.upload_file(io.BytesIO(b"theirs"), mime_type="text/plain").name
    yield names
    for blob in bucket.list_blobs():
        blob.delete()
    bucket.delete()


def sweep_context() -> dict[str, Any]:
    ti = SweeperTI({FINISHED: "success", RUNNING: "running"})
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id}


def test_the_sweeper_finds_every_planted_orphan_and_deletes_none_a_live_run_uses(
    planted: dict[str, str], gemini_emulator: Any
) -> None:
    orphans = {planted["finished upload"], planted["finished registered"]}

    dry = GeminiSweepFilesOperator(task_id="sweep", max_age_hours=48, dry_run=True).execute(sweep_context())
    assert {entry["file"] for entry in dry["would_delete"]} == orphans
    assert {entry["traced_by"] for entry in dry["would_delete"]} == {"name", "matched"}
    assert all(entry["run_id"] == FINISHED for entry in dry["would_delete"])
    assert len(gemini_emulator.files()) == 5  # a dry run deletes nothing

    report = GeminiSweepFilesOperator(task_id="sweep", max_age_hours=48).execute(sweep_context())
    assert {entry["file"] for entry in report["deleted"]} == orphans
    assert report["errors"] == []
    assert report["freed_bytes"] > 0
    left = {f["name"] for f in gemini_emulator.files()}
    assert left == {planted["running upload"], planted["running registered"], planted["someone else's"]}
