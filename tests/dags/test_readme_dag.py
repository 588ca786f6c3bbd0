"""The minimal DAG printed in the README runs as printed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from airflow_gemini_files.samples import sample_path

from .conftest import REPO, next_logical_date


def readme_minimal_dag() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## A minimal DAG") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_readme_minimal_dag_summarises_and_cleans_up(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, tmp_path: Path
) -> None:
    folder = tmp_path / "readme_dags"
    folder.mkdir()
    (folder / "summarise_contracts.py").write_text(readme_minimal_dag(), encoding="utf-8")
    logical_date = next_logical_date()
    client = gcs_emulator.client()
    bucket = (
        client.bucket("my-bucket")
        if client.bucket("my-bucket").exists()
        else client.create_bucket("my-bucket")
    )
    for name in ("lease.pdf", "nda.pdf"):
        blob = bucket.blob(f"contracts/{logical_date.date().isoformat()}/{name}")
        blob.upload_from_filename(
            str(sample_path("invoice_northwind_2026-11.pdf")), content_type="application/pdf"
        )

    run = run_dag("summarise_contracts", dags_folder=folder, logical_date=logical_date)

    assert run.state == "success", run.tasks
    assert run.mapped("summarise") == {"lease.pdf": "success", "nda.pdf": "success"}
    assert "Summarise this contract" in run.xcom("summarise", map_index=0)
    assert gemini_emulator.files() == []
