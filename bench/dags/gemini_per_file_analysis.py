"""The nightly analysis in ONE generate task (``per_file=True``) instead of one mapped task per document.

Benchmark DAG for ``bench/celery_per_file.py``, the counterpart of the nightly example DAG's mapped task
group: register the day's objects, wait until all are ACTIVE (one deferred sensor), analyse every file in
one task (``max_concurrency`` calls at once), store all results and delete the files (``all_done``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiRegisterGcsFilesOperator
from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

BUCKET = os.environ.get("GEMINI_DOCUMENTS_BUCKET", "gemini-documents")
PREFIX = "incoming/{{ ds }}/"


@dag(schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False, tags=["bench"])
def gemini_per_file_analysis() -> None:
    files = GeminiRegisterGcsFilesOperator(task_id="register_documents", bucket=BUCKET, prefix=PREFIX)
    active = GeminiFileActiveSensor(
        task_id="wait_active", files=files.output, deferrable=True, poke_interval=5
    )
    analyses = GeminiGenerateContentOperator(
        task_id="analyse",
        model="gemini-2.5-flash",
        prompt="Summarise this document in two sentences.",
        files=active.output,
        per_file=True,
        max_concurrency=8,
    )

    @task
    def store_results(refs: Any, results: Any) -> int:
        """One JSON object per document under ``results/<ds>/``."""
        ds = get_current_context()["ds"]
        bucket = GeminiHook().storage_client.bucket(BUCKET)
        for ref, result in zip(GeminiFileRef.coerce_many(refs), results, strict=True):
            name = (ref.source_uri or ref.name).rsplit("/", 1)[-1]
            bucket.blob(f"results/{ds}/{name}.json").upload_from_string(json.dumps({"analysis": result}))
        return len(results)

    stored = store_results(active.output, analyses.output)
    stored >> GeminiDeleteFilesOperator(task_id="delete_gemini_files", files=files.output)


gemini_per_file_analysis()
