"""``gemini-files-demo``: the README's first command, run exactly as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_gemini_files.demo import airflow_env, demo_succeeded, manifest_summary, results_table
from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS


@pytest.mark.timeout(600)  # a whole Airflow run in a subprocess: give a loaded machine room
def test_demo_runs_the_nightly_dag_offline_and_prints_results_and_cleanup() -> None:
    demo = Path(sys.executable).with_name("gemini-files-demo")  # the console script, as installed
    done = subprocess.run(
        [str(demo)],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "per_document.analyse[invoice_northwind_2026-11.pdf]" in out
    assert "DAG run success (airflow exit code 0)" in out
    table = out[out.index("Results in gs://demo-documents/results/") :]
    for name in NIGHTLY_DOCUMENTS:
        assert name in table
    assert "documents 5, analysed 5, failed 0" in out
    assert "estimated cost $0.00" in out  # the run's price from the shipped table (a few cents at most)
    assert "online prices as of 2026-11-30" in out
    assert "Cleanup check: files left in the Gemini emulator: 0, batch jobs left: 0" in out
    log = Path(out.rsplit("full Airflow log: ", 1)[1].strip())
    assert "DagRun Finished" in log.read_text(encoding="utf-8")


@pytest.mark.timeout(600)
def test_demo_with_batch_analysis_runs_one_batch_job_offline() -> None:
    demo = Path(sys.executable).with_name("gemini-files-demo")
    done = subprocess.run(
        [str(demo), "--analysis", "batch"], capture_output=True, text=True, timeout=540, check=False
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "(mode register, analysis batch)" in out
    assert "analyse_batch" in out
    assert "per_document.analyse[" not in out
    table = out[out.index("Results in gs://demo-documents/results/") :]
    for name in NIGHTLY_DOCUMENTS:
        assert name in table
    assert "documents 5, analysed 5, failed 0" in out
    assert "ended JOB_STATE_SUCCEEDED (batch price: half)" in out
    assert "estimated cost $0.00" in out  # the run's price at the Batch API's rates
    assert "batch prices as of 2026-11-30" in out
    assert "Cleanup check: files left in the Gemini emulator: 0, batch jobs left: 0" in out


@pytest.mark.parametrize(
    ("exit_code", "run_state", "manifest", "left"),
    [
        (1, "failed", {"documents": 5}, 0),  # the DAG run failed
        (0, "success", None, 0),  # no manifest was written
        (0, "success", {"documents": 5}, 2),  # files were left in Gemini
        (0, None, {"documents": 5}, 0),  # the run never started
    ],
)
def test_demo_fails_unless_the_run_succeeded_and_cleaned_up(
    exit_code: int, run_state: str | None, manifest: dict[str, int] | None, left: int
) -> None:
    assert demo_succeeded(0, "success", {"documents": 5}, 0)
    assert not demo_succeeded(exit_code, run_state, manifest, left)


def test_demo_without_the_dag_file_says_where_to_run_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow_gemini_files.demo", "--dags-folder", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{tmp_path}/gemini_nightly_document_analysis.py not found" in done.stderr
    assert "leave it out to run the shipped example" in done.stderr


def test_demo_environment_never_inherits_airflow_settings_or_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://prod/airflow")
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", '{"conn_type": "gemini", "password": "real-key"}')
    monkeypatch.setenv("GEMINI_API_KEY", "real-key")

    env = airflow_env(tmp_path, tmp_path, gemini_base_url="http://127.0.0.1:1", gcs_host="http://127.0.0.1:2")

    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow.db'}"
    assert "real-key" not in env["AIRFLOW_CONN_GEMINI_DEFAULT"]
    assert "http://127.0.0.1:1" in env["AIRFLOW_CONN_GEMINI_DEFAULT"]
    assert "GEMINI_API_KEY" not in env
    assert env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:2"


def test_results_table_and_manifest_summary_are_readable() -> None:
    results = [
        {
            "document": "a_very_long_document_name_that_does_not_fit.pdf",
            "analysis": {"document_type": "invoice", "language": "en", "summary": "Line one\nline two"},
            "usage": {"total_tokens": 42},
        }
    ]
    table = results_table(results).splitlines()
    assert table[0].split() == ["document", "type", "language", "summary", "tokens"]
    assert table[2].startswith("a_very_long_document_name_tha~  invoice")
    assert "Line one line two" in table[2]
    assert table[2].endswith("42")
    manifest = {
        "documents": 2,
        "succeeded": 1,
        "failed": 1,
        "tokens": {"prompt": 10, "output": 5, "thoughts": 3, "total": 18},
        "cost": {
            "estimated": 0.0000205,
            "currency": "USD",
            "pricing": "online",
            "prices_as_of": "2026-11-30",
            "prices_source": "https://ai.google.dev/gemini-api/docs/pricing",
        },
        "failures": [{"document": "b.csv", "failed_at": "wait_active", "state": "failed"}],
    }
    summary = manifest_summary(manifest)
    assert "documents 2, analysed 1, failed 1; tokens: prompt 10, output 5, thinking 3, total 18" in summary
    assert "estimated cost $0.000021 USD (online prices as of 2026-11-30, https://ai.google.dev/" in summary
    manifest["cost"]["estimated"] = None
    assert "estimated cost unknown (a model without a price)" in manifest_summary(manifest)
    assert "failed: b.csv at wait_active (failed)" in summary


def test_results_table_and_manifest_summary_read_a_batch_run_too() -> None:
    results = [
        {"document": "a.pdf", "result": {"document_type": "invoice", "summary": "S"}, "usage": {"total": 7}}
    ]
    row = results_table(results).splitlines()[2]
    assert row.startswith("a.pdf")
    assert "invoice" in row
    assert row.endswith("7")
    manifest = {
        "batch": "batches/x",
        "state": "JOB_STATE_SUCCEEDED",
        "documents": 2,
        "succeeded": 1,
        "failed": 1,
        "usage": {"prompt": 10, "candidates": 4, "thoughts": 2, "cached": 0, "total": 16},
        "failures": [{"document": "b.csv", "stage": "not sent", "reason": "FAILED processing"}],
    }
    summary = manifest_summary(manifest)
    assert "documents 2, analysed 1, failed 1; tokens: prompt 10, output 6, total 16" in summary
    assert "batch job batches/x ended JOB_STATE_SUCCEEDED (batch price: half)" in summary
    assert "failed: b.csv at not sent (FAILED processing)" in summary
