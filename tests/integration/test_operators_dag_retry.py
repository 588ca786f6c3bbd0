"""A real Airflow retry (dag.test) after a successful upload creates no duplicate files."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

SAMPLES = resources.files("airflow_gemini_files.samples")
DOCS = ("invoice_northwind_2026-11.pdf", "meeting_notes_de.md")

DAG_FILE = textwrap.dedent(
    '''
    from __future__ import annotations

    import os
    from datetime import timedelta

    import pendulum
    from airflow.sdk import dag

    from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiUploadFileOperator


    class UploadThenCrashOnce(GeminiUploadFileOperator):
        """Uploads, then fails its first try after the files exist (like a worker lost mid-task)."""

        def execute(self, context):
            refs = super().execute(context)
            if context["ti"].try_number == 1:
                raise RuntimeError("simulated crash after a successful upload")
            return refs


    @dag(dag_id="ops_upload_retry", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    def ops_upload_retry():
        upload = UploadThenCrashOnce(
            task_id="upload", source=os.environ["OPS_DOCS"].split(","), retries=1, retry_delay=timedelta(0)
        )
        GeminiDeleteFilesOperator(task_id="cleanup", files=upload.output)


    ops_upload_retry()
    '''
)


@pytest.fixture
def dags_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dag_bundle: Any) -> Path:
    folder = dag_bundle("ops-retry", "ops_upload_retry.py", DAG_FILE)
    paths = []
    for name in DOCS:
        path = tmp_path / name
        path.write_bytes(SAMPLES.joinpath(name).read_bytes())
        paths.append(str(path))
    monkeypatch.setenv("OPS_DOCS", ",".join(paths))
    return folder


def test_retry_after_successful_upload_reuses_the_files(
    gemini_connection, gemini_emulator, dags_folder, run_bundle_dag
):
    from airflow.utils import db

    db.upgradedb()
    date = datetime(2026, 3, 1, tzinfo=UTC)
    run, states, tries = run_bundle_dag(dags_folder, "ops-retry", "ops_upload_retry", date)
    assert str(run.state) == "success", states
    assert tries["upload"] == 2, "the upload task really failed once and was retried"
    stats = gemini_emulator.stats()["requests"]
    assert stats["upload_start"] == 2 * len(DOCS), "the retry asked for the same names (409: taken)"
    assert stats["upload_chunk"] == len(DOCS), "the retry sent no byte again: the files held the same bytes"
    assert stats["delete"] == len(DOCS), "cleanup found exactly the files of the one upload"
    assert gemini_emulator.files() == []
