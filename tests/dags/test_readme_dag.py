"""Every Python block of the README runs as printed: the minimal DAG, the DAG-test files, the controls."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.samples import sample_path

from .conftest import REPO, next_logical_date

PDF = sample_path("invoice_northwind_2026-11.pdf")
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def readme_python_block(after: str) -> str:
    """The first ```python block after the text ``after`` in the README."""
    match = BLOCK.search(README[README.index(after) :])
    assert match is not None, after
    return match.group(1)


MINIMAL_DAG = readme_python_block("## A minimal DAG")
BATCH_DAG = readme_python_block("## Batch mode")
CONFTEST = readme_python_block("A ready `tests/conftest.py`")
DAG_TESTS = readme_python_block("Then a DAG test parses your DAG file")
CONTROLS = readme_python_block("Controls for the unhappy paths")
LINEAGE = readme_python_block("## Lineage (OpenLineage)")  # run by tests/unit/test_lineage.py
# Run by the Celery cluster test (tests/system/test_celery_cluster.py): the pool policy and the preload.
POOL_POLICY = readme_python_block("### One pool for every Gemini call of the cluster")
CELERY_PRELOAD = readme_python_block("### Celery workers: import the provider once")


def test_every_python_block_of_the_readme_is_one_these_tests_run() -> None:
    assert BLOCK.findall(README) == [
        MINIMAL_DAG, BATCH_DAG, LINEAGE, CELERY_PRELOAD, POOL_POLICY, CONFTEST, DAG_TESTS, CONTROLS
    ]  # fmt: skip


@pytest.fixture
def readme_dags(tmp_path: Path) -> Path:
    folder = tmp_path / "readme_dags"
    folder.mkdir()
    (folder / "summarise_contracts.py").write_text(MINIMAL_DAG, encoding="utf-8")
    return folder


def contracts_bucket(gcs_emulator: Any, day: str, names: tuple[str, ...]) -> None:
    """``my-bucket`` (the README's bucket) holding ``contracts/<day>/<name>`` for each name."""
    client = gcs_emulator.client()
    bucket = client.bucket("my-bucket")
    if not bucket.exists():
        bucket = client.create_bucket("my-bucket")
    for name in names:
        bucket.blob(f"contracts/{day}/{name}").upload_from_filename(str(PDF), content_type="application/pdf")


def test_the_readme_minimal_dag_summarises_each_document_and_cleans_up(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, readme_dags: Path
) -> None:
    logical_date = next_logical_date()
    contracts_bucket(gcs_emulator, logical_date.date().isoformat(), ("lease.pdf", "nda.pdf"))

    run = run_dag("summarise_contracts", dags_folder=readme_dags, logical_date=logical_date)

    assert run.state == "success", run.tasks
    assert run.mapped("per_document.summarise") == {"lease.pdf": "success", "nda.pdf": "success"}
    assert "Summarise this contract" in run.xcom("per_document.summarise", map_index=0)
    assert run.xcom("report") == 2  # the mapped .output reached it: one summary per document
    assert run.tasks["cleanup"] == "success"
    assert gemini_emulator.files() == []


def test_the_readme_minimal_dag_fails_its_run_when_a_document_fails_and_still_cleans_up(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, readme_dags: Path
) -> None:
    logical_date = next_logical_date()
    contracts_bucket(gcs_emulator, logical_date.date().isoformat(), ("lease.pdf", "scan.pdf"))
    gemini_emulator.fail_processing("scan.pdf", "Corrupt")

    run = run_dag("summarise_contracts", dags_folder=readme_dags, logical_date=logical_date)

    assert run.state == "failed", run.tasks
    assert run.mapped("per_document.wait_active") == {"lease.pdf": "success", "scan.pdf": "failed"}
    assert run.mapped("per_document.summarise")["lease.pdf"] == "success"  # the other document went on
    assert run.tasks["report"] == "upstream_failed"
    assert run.tasks["cleanup"] == "success"
    assert gemini_emulator.files() == []


@pytest.fixture
def batch_dags(tmp_path: Path) -> Path:
    folder = tmp_path / "readme_batch_dags"
    folder.mkdir()
    (folder / "classify_contracts_in_batch.py").write_text(BATCH_DAG, encoding="utf-8")
    return folder


def classified(gcs_emulator: Any, day: str) -> dict[str, Any]:
    prefix = f"classified/{day}/"
    return {
        blob.name[len(prefix) :]: json.loads(blob.download_as_bytes())
        for blob in gcs_emulator.client().list_blobs("my-bucket", prefix=prefix)
    }


def test_the_readme_batch_dag_classifies_every_document_in_one_job_and_cleans_up(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, batch_dags: Path
) -> None:
    logical_date = next_logical_date()
    day = logical_date.date().isoformat()
    contracts_bucket(gcs_emulator, day, ("lease.pdf", "nda.pdf"))

    run = run_dag("classify_contracts_in_batch", dags_folder=batch_dags, logical_date=logical_date)

    assert run.state == "success", run.tasks
    results = classified(gcs_emulator, day)
    manifest = results.pop("_manifest.json")
    assert sorted(results) == ["lease.pdf.json", "nda.pdf.json"]
    assert all(set(r["result"]) == {"kind", "parties", "summary"} for r in results.values())
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (2, 2, 0)
    assert run.xcom("classify")["state"] == "JOB_STATE_SUCCEEDED"
    assert gemini_emulator.stats()["requests"]["batch_create"] == 1
    assert run.tasks["cleanup"] == "success"
    assert gemini_emulator.files() == []
    assert gemini_emulator.batches() == []


def test_the_readme_batch_dag_fails_its_run_when_the_batch_fails_and_still_cleans_up(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, batch_dags: Path
) -> None:
    logical_date = next_logical_date()
    day = logical_date.date().isoformat()
    contracts_bucket(gcs_emulator, day, ("lease.pdf", "nda.pdf"))
    gemini_emulator.fail_batches(message="Backend failure")

    run = run_dag("classify_contracts_in_batch", dags_folder=batch_dags, logical_date=logical_date)

    assert run.state == "failed", run.tasks
    assert run.tasks["classify"] == "failed"
    assert run.tasks["cleanup"] == "success"
    manifest = classified(gcs_emulator, day)["_manifest.json"]
    assert (manifest["state"], manifest["failed"]) == ("JOB_STATE_FAILED", 2)
    assert gemini_emulator.files() == []
    assert gemini_emulator.batches() == []


@pytest.mark.timeout(600)
def test_the_readme_conftest_and_dag_tests_pass_in_a_fresh_project(tmp_path: Path) -> None:
    """The README's conftest.py and DAG tests, with its minimal DAG, in a project of their own."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "summarise_contracts.py").write_text(MINIMAL_DAG, encoding="utf-8")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (tmp_path / "tests" / "test_summarise_contracts.py").write_text(DAG_TESTS, encoding="utf-8")
    shutil.copy(PDF, tmp_path / "lease.pdf")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STORAGE_EMULATOR"))}

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout


def test_the_readme_emulator_controls_do_what_their_comments_say(
    gemini_emulator: Any, gemini_connection: str, tmp_path: Path
) -> None:
    exec(compile(CONTROLS, "README.md", "exec"), {"gemini_emulator": gemini_emulator})
    scan = tmp_path / "scan.pdf"
    shutil.copy(PDF, scan)
    hook = GeminiHook(gemini_conn_id=gemini_connection)
    waits: list[float] = []
    hook.sleep = waits.append  # record the waits between tries instead of sleeping through them

    ref = hook.upload_file(str(scan))

    assert ref.state == "PROCESSING"  # processing_delay=2.0
    gemini_emulator.advance_clock(3)
    failed = hook.get_file(ref)
    assert waits == [30.0]  # the injected 429 on "get" asked for 30 s (RetryInfo), and the hook waited 30 s
    assert (failed.state, failed.error) == ("FAILED", "Corrupt")
    assert gemini_emulator.stats()["requests"]["upload_start"] == 1
