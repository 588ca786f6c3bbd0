"""The DAG and the DAG test printed in the README run as printed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.samples import sample_path

from .conftest import REPO, next_logical_date

PDF = sample_path("invoice_northwind_2026-11.pdf")


def readme_python_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", readme[readme.index(heading) :], re.DOTALL)
    assert match is not None, heading
    return match.group(1)


def fresh_bucket(gcs_emulator: Any, name: str) -> Any:
    """``name`` as a new, empty bucket (the README examples both use ``my-bucket``)."""
    client = gcs_emulator.client()
    old = client.bucket(name)
    if old.exists():
        for blob in client.list_blobs(name):
            blob.delete()
        old.delete()
    return client.create_bucket(name)


def test_the_readme_minimal_dag_summarises_and_cleans_up(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, tmp_path: Path
) -> None:
    folder = tmp_path / "readme_dags"
    folder.mkdir()
    (folder / "summarise_contracts.py").write_text(readme_python_block("## A minimal DAG"), encoding="utf-8")
    logical_date = next_logical_date()
    bucket = fresh_bucket(gcs_emulator, "my-bucket")
    for name in ("lease.pdf", "nda.pdf"):
        blob = bucket.blob(f"contracts/{logical_date.date().isoformat()}/{name}")
        blob.upload_from_filename(str(PDF), content_type="application/pdf")

    run = run_dag("summarise_contracts", dags_folder=folder, logical_date=logical_date)

    assert run.state == "success", run.tasks
    assert run.mapped("summarise") == {"lease.pdf": "success", "nda.pdf": "success"}
    assert "Summarise this contract" in run.xcom("summarise", map_index=0)
    assert gemini_emulator.files() == []


def test_the_readme_minimal_dag_fails_the_run_for_one_bad_contract_and_still_cleans_up(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, tmp_path: Path
) -> None:
    folder = tmp_path / "readme_dags"
    folder.mkdir()
    (folder / "summarise_contracts.py").write_text(readme_python_block("## A minimal DAG"), encoding="utf-8")
    logical_date = next_logical_date()
    bucket = fresh_bucket(gcs_emulator, "my-bucket")
    for name in ("lease.pdf", "scan.pdf"):
        blob = bucket.blob(f"contracts/{logical_date.date().isoformat()}/{name}")
        blob.upload_from_filename(str(PDF), content_type="application/pdf")
    gemini_emulator.fail_processing("scan.pdf", "The PDF is damaged.")

    run = run_dag("summarise_contracts", dags_folder=folder, logical_date=logical_date)

    assert run.state == "failed", run.tasks
    assert run.tasks["wait_active"] == "failed"  # one sensor for all files: a FAILED file ends it
    assert run.tasks["cleanup"] == "success"
    assert gemini_emulator.files() == []


def test_the_readme_dag_test_example_passes(
    airflow_db: None,
    gcs_emulator: Any,
    gemini_emulator: Any,
    gemini_connection: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "summarise_contracts.py").write_text(
        readme_python_block("## A minimal DAG"), encoding="utf-8"
    )
    shutil.copy(PDF, tmp_path / "a.pdf")
    monkeypatch.chdir(tmp_path)
    # What AIRFLOW__CORE__DAGS_FOLDER=dags does before Airflow is imported (here it already is).
    bundle = {
        "name": "dags-folder",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(tmp_path / "dags"), "refresh_interval": 0},
    }
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    fresh_bucket(gcs_emulator, "my-bucket").delete()  # the example creates it

    namespace: dict[str, Any] = {}
    exec(compile(readme_python_block("A DAG test in the style"), "README.md", "exec"), namespace)
    namespace["test_my_dag"](gcs_emulator, gemini_emulator, gemini_connection)


def test_the_readme_emulator_controls_run_as_printed(gemini_emulator: Any) -> None:
    exec(
        compile(readme_python_block("Controls for the unhappy paths"), "README.md", "exec"),
        {"gemini_emulator": gemini_emulator},
    )
    assert gemini_emulator.settings()["processing_delay"] == 2.0
