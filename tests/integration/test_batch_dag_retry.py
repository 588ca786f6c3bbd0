"""A real Airflow retry (dag.test) of a batch task whose first try died after submitting: no second job."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

DAG_FILE = textwrap.dedent(
    '''
    from __future__ import annotations

    from datetime import timedelta

    import pendulum
    from airflow.sdk import dag, task
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_gemini_files.hooks.gemini import GeminiHook
    from airflow_gemini_files.operators.batch import GeminiBatchGenerateOperator
    from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator


    class SubmitThenCrashOnce(GeminiBatchGenerateOperator):
        """Its first try submits the job, then the worker is lost before it could defer."""

        def execute(self, context):
            if context["ti"].try_number == 1:
                try:
                    super().execute(context)
                except TaskDeferred:
                    raise RuntimeError("worker lost after submitting the batch job") from None
            return super().execute(context)


    @dag(dag_id="batch_retry", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    def batch_retry():
        @task
        def documents() -> list:
            """The two documents the test uploaded, ACTIVE."""
            return [GeminiHook().get_file(name) for name in ("files/doc-a", "files/doc-b")]

        files = documents()
        analyse = SubmitThenCrashOnce(
            task_id="analyse",
            model="gemini-2.5-flash",
            prompt="Summarise.",
            files=files,
            results_uri="gs://batch-retry/results/",
            poll_interval=1,
            retries=1,
            retry_delay=timedelta(0),
        )
        analyse >> GeminiDeleteFilesOperator(task_id="cleanup", files=files, delete_run_uploads=True)


    batch_retry()
    '''
)


@pytest.fixture
def dags_folder(dag_bundle: Any) -> Path:
    return dag_bundle("batch-retry", "batch_retry.py", DAG_FILE)


def test_a_retried_batch_task_re_attaches_to_its_job_and_creates_no_second_one(
    airflow_db: None,
    gemini_connection: str,
    gemini_emulator: Any,
    gcs_emulator: Any,
    dags_folder: Path,
    run_bundle_dag: Any,
) -> None:
    import io

    from airflow_gemini_files.hooks.gemini import GeminiHook

    gemini_emulator.configure(processing_delay=0)
    hook = GeminiHook(gemini_conn_id=gemini_connection)
    for name in ("doc-a", "doc-b"):
        hook.upload_file(io.BytesIO(f"Document {name}".encode()), mime_type="text/plain", name=name)
    if not gcs_emulator.client().bucket("batch-retry").exists():
        gcs_emulator.client().create_bucket("batch-retry")

    run, states, tries = run_bundle_dag(
        dags_folder, "batch-retry", "batch_retry", datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert str(run.state) == "success", states
    assert tries["analyse"] == 2, "the batch task really failed once and was retried"
    requests = gemini_emulator.stats()["requests"]
    assert requests["batch_create"] == 1, "the retry re-attached to the job the first try created"
    assert requests["batch_list"] >= 1
    results = {blob.name for blob in gcs_emulator.client().list_blobs("batch-retry", prefix="results/")}
    assert results == {"results/_manifest.json", "results/doc-a.json", "results/doc-b.json"}
    assert gemini_emulator.batches() == []
    assert gemini_emulator.files() == []
