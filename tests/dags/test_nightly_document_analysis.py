"""The nightly document-analysis DAG, run in real Airflow against the Gemini and GCS emulators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.demo import seed_documents
from airflow_gemini_files.pricing import PRICES_AS_OF, TokenUsage, estimate_cost
from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS

from .conftest import read_json_objects

DAG_ID = "gemini_nightly_document_analysis"
DOCUMENTS = sorted(NIGHTLY_DOCUMENTS)


@pytest.fixture
def nightly(
    run_dag: Any, gcs_emulator: Any, gemini_emulator: Any, gemini_connection: str, bucket: str
) -> Any:
    """``nightly(mode)``: seed the day's partition, run the DAG, return (run, results, manifest)."""

    def run(
        mode: str = "register",
        seed: bool = True,
        tweak: Any = None,
        analysis: str = "online",
        **params: Any,
    ) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
        conf = {
            "bucket": bucket,
            "mode": mode,
            "analysis": analysis,
            "prefix": "incoming/today/",
            "results_prefix": "results/today/",
            **params,
        }
        if seed:
            seed_documents(gcs_emulator.client(), bucket, "incoming/today/")
        result = run_dag(DAG_ID, conf, tweak=tweak)
        stored = read_json_objects(gcs_emulator, bucket, "results/today/")
        manifest = stored.pop("_manifest.json", None)
        return result, stored, manifest

    return run


def asset_events(run: Any) -> list[str]:
    """URIs of the Asset events the run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetModel.uri)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id)
        )
        return list(session.scalars(query))


@pytest.mark.parametrize("mode", ["register", "upload"])
def test_every_document_is_analysed_stored_and_cleaned_up(
    nightly: Any, gemini_emulator: Any, mode: str
) -> None:
    run, results, manifest = nightly(mode)

    assert run.state == "success", run.tasks
    # Each mapped task instance is labelled with its document in the grid.
    assert run.mapped("per_document.analyse") == dict.fromkeys(DOCUMENTS, "success")
    assert run.mapped("per_document.wait_active") == dict.fromkeys(DOCUMENTS, "success")
    # One JSON result per document, with the structured analysis and its token usage.
    assert sorted(results) == [f"{name}.json" for name in DOCUMENTS]
    for name in DOCUMENTS:
        result = results[f"{name}.json"]
        assert result["document"] == name
        assert result["source_uri"].endswith(f"/incoming/today/{name}")
        assert result["mime_type"] == NIGHTLY_DOCUMENTS[name]
        assert set(result["analysis"]) >= {"document_type", "language", "summary", "key_entities"}
        assert result["usage"]["total_tokens"] > 0
    assert manifest is not None
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (5, 5, 0)
    assert manifest["mode"] == mode
    assert manifest["tokens"]["total"] == sum(r["usage"]["total_tokens"] for r in results.values())
    # Each result's price is its tokens at the shipped table's gemini-2.5-flash rates; the run's is the sum.
    for result in results.values():
        tokens = result["usage"]
        usage = TokenUsage(
            prompt=tokens["prompt_tokens"],
            audio_prompt=tokens["audio_prompt_tokens"],
            candidates=tokens["output_tokens"],
            thoughts=tokens["thoughts_tokens"] or 0,
        )
        assert result["usage"]["estimated_cost"] == pytest.approx(
            estimate_cost("gemini-2.5-flash", usage), abs=1e-6
        )
    assert manifest["cost"]["estimated"] == pytest.approx(
        sum(r["usage"]["estimated_cost"] for r in results.values()), abs=1e-6
    )
    assert manifest["cost"]["estimated"] > 0
    assert results["support_call_chime.wav.json"]["usage"]["audio_prompt_tokens"] > 0  # priced at audio rates
    assert (manifest["cost"]["prices_as_of"], manifest["cost"]["pricing"]) == (PRICES_AS_OF, "online")
    # The results prefix is announced as an Asset event through the alias, for downstream DAGs.
    assert asset_events(run) == [f"gs://{manifest['bucket']}/results/today"]
    # Cleanup: nothing left in Gemini.
    assert gemini_emulator.files() == []
    requests = gemini_emulator.stats()["requests"]
    if mode == "register":
        assert requests["register"] >= 1
        assert requests["upload_start"] == 0
    else:
        assert requests["register"] == 0
        assert requests["upload_start"] == 5


def test_a_document_gemini_cannot_process_fails_alone(nightly: Any, gemini_emulator: Any) -> None:
    gemini_emulator.fail_processing("orders_2026-11.csv", "Unsupported CSV dialect.")

    def manifest_may_retry(dag: Any) -> None:  # as in production: the manifest must still not retry
        dag.get_task("write_manifest").retries = 2

    run, results, manifest = nightly("register", tweak=manifest_may_retry)

    assert run.state == "failed"
    assert run.mapped("per_document.wait_active")["orders_2026-11.csv"] == "failed"
    assert run.tasks["write_manifest"] == "failed"  # it fails the run at once, after writing the manifest
    assert run.tries("write_manifest") == 1
    assert run.tasks["delete_gemini_files"] == "success"
    others = [name for name in DOCUMENTS if name != "orders_2026-11.csv"]
    assert sorted(results) == [f"{name}.json" for name in others]
    assert manifest is not None
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (5, 4, 1)
    [failure] = manifest["failures"]
    assert failure["document"] == "orders_2026-11.csv"
    assert failure["failed_at"] == "wait_active"
    assert failure["state"] == "failed"
    assert gemini_emulator.files() == []


def test_a_failed_analysis_keeps_the_other_results(
    nightly: Any, gemini_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first analysis keeps getting 500 until the hook's retries (3 attempts here) are spent.
    extra = {"base_url": gemini_emulator.base_url, "retry_attempts": 3, "retry_initial_delay": 0}
    conn = {"conn_type": "gemini", "password": gemini_emulator.api_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    gemini_emulator.inject_faults("generate", sequence=[500, 500, 500])

    run, results, manifest = nightly("register")

    assert run.state == "failed"
    analysed = run.mapped("per_document.analyse")
    assert sorted(analysed.values()) == ["failed"] + ["success"] * 4
    assert manifest is not None
    assert (manifest["succeeded"], manifest["failed"]) == (4, 1)
    [failure] = manifest["failures"]
    assert failure["failed_at"] == "analyse"
    assert analysed[failure["document"]] == "failed"
    assert len(results) == 4
    assert f"{failure['document']}.json" not in results
    assert gemini_emulator.files() == []


def test_an_empty_partition_is_a_successful_run_with_an_empty_manifest(nightly: Any) -> None:
    run, results, manifest = nightly("register", seed=False)

    assert run.state == "success", run.tasks
    assert results == {}
    assert manifest is not None
    assert (manifest["documents"], manifest["succeeded"], manifest["failures"]) == (0, 0, [])


# Batch analysis ------------------------------------------------------------------------------------------
BATCH_PATH = ("batch_documents", "analyse_batch")
ONLINE_PATH = ("online_documents",)


@pytest.mark.parametrize("mode", ["register", "upload"])
def test_batch_analysis_stores_every_document_from_one_job_and_cleans_up(
    nightly: Any, gemini_emulator: Any, mode: str
) -> None:
    run, results, manifest = nightly(mode, analysis="batch")

    assert run.state == "success", run.tasks
    assert all(run.tasks[task] == "success" for task in BATCH_PATH)
    assert run.tasks["online_documents"] == "skipped"
    assert run.mapped("wait_active") == dict.fromkeys(DOCUMENTS, "success")
    assert set(run.states("per_document.analyse")) <= {"skipped"}
    assert (run.tasks["delete_gemini_files"], run.tasks["write_manifest"]) == ("success", "success")
    # One JSON result per document, from the one batch job, with its structured analysis and usage.
    assert sorted(results) == [f"{name}.json" for name in DOCUMENTS]
    for name in DOCUMENTS:
        result = results[f"{name}.json"]
        assert result["document"] == name
        assert result["source_uri"].endswith(f"/incoming/today/{name}")
        assert set(result["result"]) >= {"document_type", "language", "summary", "key_entities"}
        assert result["usage"]["total"] > 0
    assert manifest is not None
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (5, 5, 0)
    assert manifest["state"] == "JOB_STATE_SUCCEEDED"
    assert manifest["usage"]["total"] == sum(r["usage"]["total"] for r in results.values())
    # Priced at the Batch API's rates: half what the same tokens cost online (these documents use no cache).
    for result in results.values():
        counts = {key: value for key, value in result["usage"].items() if key != "estimated_cost"}
        online = estimate_cost("gemini-2.5-flash", TokenUsage(**counts))
        assert result["usage"]["estimated_cost"] == pytest.approx(online / 2, abs=1e-6)
    assert results["support_call_chime.wav.json"]["usage"]["audio_prompt"] > 0  # priced at audio rates
    assert manifest["cost"]["estimated"] == pytest.approx(
        sum(r["usage"]["estimated_cost"] for r in results.values()), abs=1e-6
    )
    assert (manifest["cost"]["prices_as_of"], manifest["cost"]["pricing"]) == (PRICES_AS_OF, "batch")
    assert run.xcom("write_manifest")["cost"] == manifest["cost"]
    assert run.xcom("analyse_batch")["manifest_uri"].endswith("/results/today/_manifest.json")
    assert asset_events(run) == [f"gs://{manifest['results_uri'].split('/')[2]}/results/today"]
    requests = gemini_emulator.stats()["requests"]
    assert (requests["batch_create"], requests["generate"]) == (1, 0)
    assert gemini_emulator.files() == []
    assert gemini_emulator.batches() == []


def test_batch_analysis_a_document_gemini_cannot_process_fails_alone(
    nightly: Any, gemini_emulator: Any
) -> None:
    gemini_emulator.fail_processing("orders_2026-11.csv", "Unsupported CSV dialect.")

    run, results, manifest = nightly("register", analysis="batch")

    assert run.state == "failed"
    assert run.mapped("wait_active")["orders_2026-11.csv"] == "failed"
    assert run.tasks["analyse_batch"] == "success", "the other documents were analysed in the one job"
    assert run.tasks["write_manifest"] == "failed"
    assert run.tasks["delete_gemini_files"] == "success"
    others = [name for name in DOCUMENTS if name != "orders_2026-11.csv"]
    assert sorted(results) == [f"{name}.json" for name in others]
    assert manifest is not None
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (5, 4, 1)
    [failure] = manifest["failures"]
    assert failure["document"] == "orders_2026-11.csv"
    assert failure["stage"] == "not sent", failure
    assert "FAILED processing: Unsupported CSV dialect" in failure["reason"]
    assert gemini_emulator.files() == []
    assert gemini_emulator.batches() == []


def test_batch_analysis_of_an_empty_partition_is_a_successful_run_with_an_empty_manifest(
    nightly: Any,
) -> None:
    run, results, manifest = nightly("register", seed=False, analysis="batch")

    assert run.state == "success", run.tasks
    assert run.tasks["analyse_batch"] == "skipped"
    assert results == {}
    assert manifest is not None
    assert (manifest["documents"], manifest["succeeded"], manifest["failures"]) == (0, 0, [])
    assert manifest["analysis"] == "batch"


@pytest.fixture
def ledger(gemini_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The Gemini connection with a ledger (where a run's budget is recorded); the ledger's folder."""
    folder = tmp_path / "ledger"
    extra = {"base_url": gemini_emulator.base_url, "ledger": str(folder)}
    conn = {"conn_type": "gemini", "password": gemini_emulator.api_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    return folder


def test_a_run_budget_stops_the_analyses_at_its_limit_and_cleanup_still_runs(
    nightly: Any, gemini_emulator: Any, ledger: Path
) -> None:
    limit = 1200  # room for two or so of the five documents (about 300 to 600 tokens each)

    run, results, manifest = nightly("register", budget={"max_total_tokens": limit})

    assert run.state == "failed"  # documents the budget had no room for fail the run
    analysed = run.mapped("per_document.analyse")
    assert 1 <= list(analysed.values()).count("success") < len(DOCUMENTS)
    assert manifest is not None
    assert manifest["succeeded"] == len(results) == list(analysed.values()).count("success")
    assert {f["failed_at"] for f in manifest["failures"]} == {"analyse"}
    # Calls run one after another here: a call is admitted on its counted input plus the largest output
    # seen so far, so the run passes the limit by at most one call's output beyond that.
    largest_output = max(
        r["usage"]["output_tokens"] + (r["usage"]["thoughts_tokens"] or 0) for r in results.values()
    )
    assert manifest["tokens"]["total"] <= limit + largest_output
    budget_records = list((ledger / "budgets").rglob("*.json"))
    assert len(budget_records) == len(results)  # one record per call that ran; refused calls left none
    assert gemini_emulator.files() == []  # cleanup ran
    # the refused documents never reached the model: refused before the call, on their counted input
    requests = gemini_emulator.stats()["requests"]
    assert requests["generate"] == len(results)
    assert requests["count_tokens"] >= len(DOCUMENTS)


def test_a_batch_run_its_budget_cannot_hold_creates_no_job_fails_and_still_cleans_up(
    nightly: Any, gemini_emulator: Any, ledger: Path
) -> None:

    # The five documents' input alone is over a thousand tokens: the job is refused before it is made.
    run, results, manifest = nightly("register", analysis="batch", budget={"max_total_tokens": 200})

    assert run.state == "failed"
    assert run.tasks["analyse_batch"] == "failed"
    assert run.tasks["delete_gemini_files"] == "success"
    assert run.tasks["write_manifest"] == "failed"  # no result is presented as a complete run
    assert (results, manifest) == ({}, None)
    requests = gemini_emulator.stats()["requests"]
    assert requests["count_tokens"] >= len(DOCUMENTS)  # counted first...
    assert (requests["batch_create"], requests["generate"]) == (0, 0)  # ...and nothing was run
    assert list((ledger / "budgets").rglob("*.json")) == []  # no spend recorded
    assert gemini_emulator.files() == []  # cleanup ran
    assert gemini_emulator.batches() == []


def test_a_batch_run_whose_budget_skips_the_job_fails_instead_of_looking_done(
    nightly: Any, gemini_emulator: Any, ledger: Path
) -> None:

    budget = {"max_total_tokens": 200, "on_exceeded": "skip"}
    run, results, manifest = nightly("register", analysis="batch", budget=budget)

    assert run.tasks["analyse_batch"] == "skipped"
    assert run.state == "failed"  # five documents found, none analysed: not a successful night
    assert run.tasks["write_manifest"] == "failed"
    assert (results, manifest) == ({}, None)
    assert gemini_emulator.stats()["requests"]["batch_create"] == 0
    assert gemini_emulator.files() == []
