"""GeminiBatchGenerateOperator with the real hook and SDK against the Gemini and GCS emulators.

Deferrable runs raise TaskDeferred, run the trigger with asyncio (as the triggerer would) and resume with
``execute_complete`` and the deferral's kwargs, exactly as Airflow hands them over.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from doubles import context as ctx

from airflow_gemini_files import naming
from airflow_gemini_files.exceptions import (
    GeminiBatchJobError,
    GeminiFilesError,
    GeminiWaitTimeoutError,
)
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators import batch as batch_module
from airflow_gemini_files.operators.batch import GeminiBatchGenerateOperator
from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator
from airflow_gemini_files.pricing import TokenUsage, estimate_cost
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.triggers.batch import GeminiBatchJobTrigger

SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["invoice", "letter", "other"]},
        "summary": {"type": "string"},
    },
    "required": ["kind", "summary"],
}
_buckets = itertools.count()


@pytest.fixture
def results(gcs_emulator: Any) -> str:
    """A fresh bucket; the results prefix under it."""
    name = f"batch-results-{next(_buckets)}"
    gcs_emulator.client().create_bucket(name)
    return f"gs://{name}/results/day/"


@pytest.fixture
def hook(gemini_connection: str, gemini_emulator: Any) -> GeminiHook:
    gemini_emulator.configure(processing_delay=0)
    return GeminiHook(gemini_conn_id=gemini_connection)


def documents(hook: GeminiHook, names: list[str]) -> list[GeminiFileRef]:
    """One small ACTIVE text file per name (display name = the name)."""
    return [
        hook.upload_file(
            io.BytesIO(f"Document {name}: invoice 42, total 99 EUR.".encode()),
            mime_type="text/plain",
            display_name=name,
        )
        for name in names
    ]


def operator(files: Any, results_uri: str, **kwargs: Any) -> GeminiBatchGenerateOperator:
    kwargs.setdefault("poll_interval", 0.2)
    return GeminiBatchGenerateOperator(
        task_id=kwargs.pop("task_id", "analyse_batch"),
        model=kwargs.pop("model", "gemini-2.5-flash"),
        prompt="Classify this document and summarise it.",
        files=files,
        results_uri=results_uri,
        response_schema=kwargs.pop("response_schema", SCHEMA),
        **kwargs,
    )


def run_deferred(
    op: GeminiBatchGenerateOperator, context: dict[str, Any], between: Any = None
) -> dict[str, Any]:
    """execute -> TaskDeferred -> the trigger's one event -> execute_complete, as Airflow runs it;
    ``between(job_name)`` runs while the job waits in the triggerer."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    if between is not None:
        between(deferred.value.trigger.job_name)
    event = asyncio.run(_first_event(deferred.value.trigger))
    return getattr(op, deferred.value.method_name)(context, event, **(deferred.value.kwargs or {}))


def run_mode(op: GeminiBatchGenerateOperator, deferrable: bool, between: Any = None) -> Any:
    """The operator run deferred or in the worker; ``between(job_name)`` runs while it waits for the job."""
    if deferrable:
        return run_deferred(op, ctx(), between)
    if between is not None:
        real_get = op.hook.get_batch
        pending = [between]

        def get_batch(name: str) -> Any:
            while pending:
                pending.pop()(name)
            return real_get(name)

        op.hook.get_batch = get_batch  # type: ignore[method-assign]
    return op.execute(ctx())


async def _first_event(trigger: GeminiBatchJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def read_results(gcs_emulator: Any, uri: str) -> dict[str, Any]:
    bucket, prefix = uri.removeprefix("gs://").split("/", 1)
    return {
        blob.name[len(prefix) :]: json.loads(blob.download_as_bytes())
        for blob in gcs_emulator.client().list_blobs(bucket, prefix=prefix)
    }


def nothing_left(gemini_emulator: Any, docs: list[GeminiFileRef]) -> None:
    """Only the documents' own files are left in Gemini: no input, no results file, no job."""
    assert sorted(f["name"] for f in gemini_emulator.files()) == sorted(ref.name for ref in docs)
    assert gemini_emulator.batches() == []


def test_the_batch_price_comes_from_the_connections_price_table(
    hook, gemini_emulator, gcs_emulator, results, monkeypatch
):
    conn = json.loads(os.environ["AIRFLOW_CONN_GEMINI_DEFAULT"])
    conn["extra"]["prices"] = {
        "models": {"gemini-2.5-flash": {"input": 1.0, "cached_input": 0.1, "output": 10.0}},
        "batch_discount": 0.2,
        "as_of": "contract 2026-12",
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    docs = documents(hook, ["a.txt", "b.txt"])

    summary = run_deferred(operator(docs, results), ctx())

    usage = summary["usage"]
    expected = (usage["prompt"] * 1.0 + (usage["candidates"] + usage["thoughts"]) * 10.0) * 0.8 / 1e6
    assert summary["cost"]["estimated"] == pytest.approx(expected, abs=1e-6)
    assert (summary["cost"]["pricing"], summary["cost"]["prices_as_of"]) == ("batch", "contract 2026-12")
    assert read_results(gcs_emulator, results)["_manifest.json"]["cost"] == summary["cost"]


@pytest.mark.parametrize("route", ["inline", "file"])
def test_each_document_gets_its_validated_result_and_the_manifest_its_usage(
    hook, gemini_emulator, gcs_emulator, results, monkeypatch, route
):
    if route == "file":
        monkeypatch.setattr(batch_module, "INLINE_MAX_BYTES", 0)
    docs = documents(hook, ["a.txt", "b.txt", "c.txt"])

    op = operator(docs, results)
    summary = run_deferred(op, ctx())

    stored = read_results(gcs_emulator, results)
    manifest = stored.pop("_manifest.json")
    assert sorted(stored) == ["a.txt.json", "b.txt.json", "c.txt.json"]
    for ref in docs:
        result = stored[f"{ref.display_name}.json"]
        assert result["gemini_file"] == ref.name
        assert result["result"]["kind"] in ("invoice", "letter", "other")
        assert f"'{ref.display_name}'" in result["result"]["summary"]  # its own document's answer
        assert result["usage"]["total"] == (
            result["usage"]["prompt"] + result["usage"]["candidates"] + result["usage"].get("thoughts", 0)
        )
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (3, 3, 0)
    assert manifest["state"] == "JOB_STATE_SUCCEEDED"
    assert manifest["failures"] == []
    assert {entry["document"] for entry in manifest["results"]} == {"a.txt", "b.txt", "c.txt"}
    assert manifest["usage"]["total"] == sum(r["usage"]["total"] for r in stored.values())
    assert summary == {
        "batch": manifest["batch"],
        "state": "JOB_STATE_SUCCEEDED",
        "documents": 3,
        "succeeded": 3,
        "failed": 0,
        "results_uri": results,
        "manifest_uri": f"{results}_manifest.json",
        "usage": manifest["usage"],
        "cost": manifest["cost"],
        "unreadable_lines": 0,
    }
    # Priced at the Batch API's rates: half the online price of the same tokens (no cached input here).
    for result in stored.values():
        usage = TokenUsage(**{k: v for k, v in result["usage"].items() if k != "estimated_cost"}, calls=1)
        online = estimate_cost("gemini-2.5-flash", usage)
        assert result["usage"]["estimated_cost"] == pytest.approx(online / 2, abs=1e-6)
    assert manifest["usage"]["calls"] == 3
    assert manifest["cost"]["pricing"] == "batch"
    assert manifest["cost"]["estimated"] == pytest.approx(
        sum(r["usage"]["estimated_cost"] for r in stored.values()), abs=1e-6
    )
    assert manifest["cost"]["estimated"] == manifest["usage"]["estimated_cost"] > 0
    lineage = op.get_openlineage_facets_on_complete(None)  # what the OpenLineage listener reports
    bucket, prefix = results.removeprefix("gs://").split("/", 1)
    assert sorted(d.name for d in lineage.inputs) == sorted(ref.name for ref in docs)
    assert sorted((d.namespace, d.name) for d in lineage.outputs) == [
        (f"gs://{bucket}", f"{prefix}{name}")
        for name in ("_manifest.json", "a.txt.json", "b.txt.json", "c.txt.json")
    ]
    assert [d.facets["schema"].fields[0].name for d in lineage.outputs if d.name.endswith(".txt.json")] == [
        "kind"
    ] * 3
    assert lineage.job_facets["gemini"].method == "batchGenerateContent"
    assert lineage.run_facets["gemini_usage"].total_token_count == manifest["usage"]["total"]
    requests = gemini_emulator.stats()["requests"]
    assert requests["batch_create"] == 1
    assert requests["upload_start"] == 3 + (route == "file")
    assert requests["download"] == (route == "file")
    nothing_left(gemini_emulator, docs)


def test_without_deferral_the_worker_waits_with_the_same_rules_and_gets_the_same_results(
    hook, gemini_emulator, gcs_emulator, results
):
    docs = documents(hook, ["a.txt", "b.txt"])
    summary = operator(docs, results, deferrable=False).execute(ctx())
    assert (summary["state"], summary["succeeded"], summary["failed"]) == ("JOB_STATE_SUCCEEDED", 2, 0)
    assert sorted(read_results(gcs_emulator, results)) == ["_manifest.json", "a.txt.json", "b.txt.json"]
    nothing_left(gemini_emulator, docs)


@pytest.mark.parametrize("deferrable", [True, False])
@pytest.mark.parametrize(
    ("end", "state", "says"),
    [
        ("fail", "JOB_STATE_FAILED", "ended FAILED with no results"),
        ("expire", "JOB_STATE_EXPIRED", "ended EXPIRED with no results: Gemini did not finish it within 48"),
        ("cancel", "JOB_STATE_CANCELLED", "ended CANCELLED with no results: it was cancelled"),
    ],
)
def test_a_job_ending_without_results_fails_the_task_after_the_manifest_and_leaves_nothing(
    hook, gemini_emulator, gcs_emulator, results, deferrable, end, state, says
):
    docs = documents(hook, ["a.txt", "b.txt"])
    gemini_emulator.hold_batches()

    def end_the_job(name: str) -> None:  # the job ends while the task waits for it
        if end == "fail":
            gemini_emulator.fail_batches(message="Backend failure")
        elif end == "expire":
            gemini_emulator.expire_batches()
        else:
            hook.cancel_batch(name)

    with pytest.raises(GeminiBatchJobError) as raised:
        run_mode(operator(docs, results, deferrable=deferrable), deferrable, end_the_job)
    error = raised.value
    assert not isinstance(error, AirflowFailException), "a retry submits a new job"
    assert error.state == state
    assert str(error).startswith(f"Batch job {error.job_name} {says}")
    assert str(error).endswith(f"The manifest lists every document: {results}_manifest.json.")
    stored = read_results(gcs_emulator, results)
    assert list(stored) == ["_manifest.json"]
    manifest = stored["_manifest.json"]
    assert (manifest["state"], manifest["succeeded"], manifest["failed"]) == (state, 0, 2)
    assert {f["document"] for f in manifest["failures"]} == {"a.txt", "b.txt"}
    assert all(says in f["reason"] for f in manifest["failures"])
    nothing_left(gemini_emulator, docs)


@pytest.mark.parametrize("deferrable", [True, False])
def test_a_job_pending_past_the_timeout_is_cancelled_and_the_error_says_so(
    hook, gemini_emulator, gcs_emulator, results, deferrable
):
    docs = documents(hook, ["a.txt"])
    gemini_emulator.hold_batches()
    op = operator(docs, results, deferrable=deferrable, timeout=1.5)
    with pytest.raises(GeminiWaitTimeoutError) as raised:
        run_mode(op, deferrable)
    [job_name] = raised.value.pending
    assert str(raised.value).startswith(
        f"Batch job {job_name} was still PENDING 1.5 s after it was created (the task's timeout). Cancelled "
        "it: nothing was published."
    )
    assert gemini_emulator.stats()["requests"]["batch_cancel"] == 1
    manifest = read_results(gcs_emulator, results)["_manifest.json"]
    assert manifest["state"] == "JOB_STATE_CANCELLED"
    [failure] = manifest["failures"]
    assert failure["reason"] == f"batch job {job_name} was still PENDING after the timeout and was cancelled"
    nothing_left(gemini_emulator, docs)


def test_a_retried_task_re_attaches_to_its_running_job_instead_of_paying_for_a_second(
    hook, gemini_emulator, gcs_emulator, results
):
    docs = documents(hook, ["a.txt", "b.txt"])
    gemini_emulator.hold_batches()
    with pytest.raises(TaskDeferred) as first:  # try 1 submits, defers, then its worker is lost
        operator(docs, results).execute(ctx(try_number=1))
    job_name = first.value.trigger.job_name
    gemini_emulator.release_batches()

    summary = run_deferred(operator(docs, results), ctx(try_number=2))

    assert summary["batch"] == job_name
    assert summary["succeeded"] == 2
    requests = gemini_emulator.stats()["requests"]
    assert requests["batch_create"] == 1, "no second paid job"
    assert requests["batch_list"] == 1
    nothing_left(gemini_emulator, docs)


def test_a_retry_after_the_job_succeeded_only_collects_the_results(
    hook, gemini_emulator, gcs_emulator, results
):
    docs = documents(hook, ["a.txt"])
    with pytest.raises(TaskDeferred):
        operator(docs, results).execute(ctx(try_number=1))
    gemini_emulator.advance_clock(5)
    summary = operator(docs, results).execute(ctx(try_number=2))  # ended: no deferral needed
    assert (summary["state"], summary["succeeded"]) == ("JOB_STATE_SUCCEEDED", 1)
    assert gemini_emulator.stats()["requests"]["batch_create"] == 1
    nothing_left(gemini_emulator, docs)


def test_a_retry_after_the_job_failed_deletes_it_and_submits_again(
    hook, gemini_emulator, gcs_emulator, results, monkeypatch
):
    monkeypatch.setattr(batch_module, "INLINE_MAX_BYTES", 0)  # with an input file to clean up
    docs = documents(hook, ["a.txt"])
    gemini_emulator.hold_batches()
    with pytest.raises(TaskDeferred) as first:  # try 1 submits; its worker is lost, then the job fails
        operator(docs, results).execute(ctx(try_number=1))
    first_job = first.value.trigger.job_name
    gemini_emulator.fail_batches(first_job, "Backend failure")
    gemini_emulator.release_batches()

    summary = run_deferred(operator(docs, results), ctx(try_number=2))

    assert summary["batch"] != first_job
    assert summary["succeeded"] == 1
    requests = gemini_emulator.stats()["requests"]
    assert requests["batch_create"] == 2
    assert requests["upload_start"] == 1 + 2, "the first input was deleted and written again"
    nothing_left(gemini_emulator, docs)


@pytest.mark.parametrize("who", ["operator", "trigger"])
def test_killing_the_task_cancels_its_job(hook, gemini_emulator, gcs_emulator, results, who):
    docs = documents(hook, ["a.txt"])
    gemini_emulator.hold_batches()
    op = operator(docs, results)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx())
    if who == "operator":
        op.on_kill()
    else:
        asyncio.run(deferred.value.trigger.on_kill())
    [job] = gemini_emulator.batches()
    assert job["metadata"]["state"] == "BATCH_STATE_CANCELLED"


def test_a_killed_run_leaves_nothing_the_cleanup_cannot_find(
    hook, gemini_emulator, gcs_emulator, results, monkeypatch
):
    monkeypatch.setattr(batch_module, "INLINE_MAX_BYTES", 0)
    docs = documents(hook, ["a.txt", "b.txt"])
    stuck = ctx(task_id="stuck")
    gemini_emulator.hold_batches(naming.batch_display_name(stuck))
    with pytest.raises(TaskDeferred):  # a running job with its input file; its worker died unseen
        operator(docs, results, task_id="stuck").execute(stuck)
    with pytest.raises(TaskDeferred):  # a finished job with its results file, never collected
        operator(docs, results, task_id="finished").execute(ctx(task_id="finished"))
    gemini_emulator.advance_clock(5)
    states = sorted(job["metadata"]["state"] for job in gemini_emulator.batches())
    assert states == ["BATCH_STATE_PENDING", "BATCH_STATE_SUCCEEDED"]
    assert len(gemini_emulator.files()) == 2 + 2 + 1  # the documents, two inputs, one results file

    cleanup = GeminiDeleteFilesOperator(task_id="cleanup", files=docs, delete_run_uploads=True)
    real_delete = cleanup.hook.delete_file

    def delete_file(file: Any) -> bool:  # the documents go only once no job of the run is left
        assert gemini_emulator.batches() == []
        return real_delete(file)

    monkeypatch.setattr(cleanup.hook, "delete_file", delete_file)
    deleted = cleanup.execute(ctx(task_id="cleanup"))

    assert gemini_emulator.batches() == []
    assert gemini_emulator.files() == []
    assert len(deleted) == 2 + 2
    assert gemini_emulator.stats()["requests"]["batch_cancel"] == 1


def test_cleanup_deletes_no_file_while_a_job_of_the_run_cannot_be_ended(
    hook, gemini_emulator, gcs_emulator, results, monkeypatch
):
    docs = documents(hook, ["a.txt"])
    gemini_emulator.hold_batches()
    with pytest.raises(TaskDeferred) as deferred:
        operator(docs, results).execute(ctx())
    cleanup = GeminiDeleteFilesOperator(task_id="cleanup", files=docs, delete_run_uploads=True)
    monkeypatch.setattr(cleanup.hook, "cancel_batch", lambda name: True)  # a cancel the service ignores
    monkeypatch.setattr(policy, "JOB_END_WAIT", 1.0)
    with pytest.raises(GeminiFilesError) as raised:
        cleanup.execute(ctx(task_id="cleanup"))
    job = deferred.value.trigger.job_name
    assert f"{job}: Batch job {job} is still JOB_STATE_PENDING 1 s after it was cancelled" in str(
        raised.value
    )
    assert str(raised.value).endswith(
        "No file was deleted, since a job of this run may still read it; rerun the task."
    )
    assert [f["name"] for f in gemini_emulator.files()] == [docs[0].name]


def test_a_budgeted_job_records_its_real_spend_and_a_later_job_that_cannot_fit_creates_nothing(
    hook, gemini_emulator, gcs_emulator, results, monkeypatch, tmp_path
):
    from airflow_gemini_files.budget import GeminiBudgetExceededError, summarize
    from airflow_gemini_files.ledger import LocalLedger

    ledger = tmp_path / "ledger"
    extra = {"base_url": gemini_emulator.base_url, "ledger": str(ledger)}
    conn = {"conn_type": "gemini", "password": gemini_emulator.api_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_BUDGETED", json.dumps(conn))
    docs = documents(hook, ["a.txt", "b.txt"])
    budget = {"max_total_tokens": 100_000}

    first = operator(docs, results, gemini_conn_id="gemini_budgeted", budget=budget)
    summary = run_deferred(first, ctx(task_id="analyse_batch"))

    records = list(LocalLedger(str(ledger)).scan("budgets/"))
    [(_, record)] = records
    assert record["state"] == "spent"
    assert record["pricing"] == "batch"
    assert record["tokens"] == summary["usage"]["total"] > 0  # the job's real usage, not the estimate
    assert record["cost"] == pytest.approx(summary["usage"]["estimated_cost"], abs=1e-6)  # batch price
    spent = summarize(records, now=0).spent_tokens

    creates = gemini_emulator.stats()["requests"].get("batch_create", 0)
    second = operator(
        docs,
        results,
        task_id="analyse_again",
        gemini_conn_id="gemini_budgeted",
        budget={"max_total_tokens": spent + 1},
    )
    with pytest.raises(GeminiBudgetExceededError, match=rf"{spent} tokens \(~\$[0-9.]+\) spent in 2 call"):
        second.execute(ctx(task_id="analyse_again"))
    assert gemini_emulator.stats()["requests"].get("batch_create", 0) == creates
    nothing_left(gemini_emulator, docs)
