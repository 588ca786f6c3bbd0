"""GeminiBatchGenerateOperator with a run budget: counted before anything is created, refused or reserved."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred
from doubles import context as ctx

from airflow_gemini_files.budget import GeminiBudgetExceededError, summarize
from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.ledger import LocalLedger
from airflow_gemini_files.operators.batch import GeminiBatchGenerateOperator


@pytest.fixture
def docs(fake_hook: Any, tmp_path: Any) -> list[Any]:
    """Three ACTIVE documents of 100 counted input tokens each; the hook has a ledger."""
    fake_hook.ledger = LocalLedger(str(tmp_path / "ledger"))
    fake_hook.input_tokens = 100
    return [fake_hook.add(f"files/doc{i}") for i in range(3)]


def operator(files: Any, **kwargs: Any) -> GeminiBatchGenerateOperator:
    return GeminiBatchGenerateOperator(
        task_id="analyse_batch",
        model="gemini-2.5-flash",
        prompt="Summarise.",
        files=files,
        results_uri="gs://results/day/",
        **kwargs,
    )


def budget_records(fake_hook: Any) -> list[tuple[str, dict[str, Any]]]:
    return list(fake_hook.ledger.scan("budgets/"))


def test_a_job_whose_counted_input_passes_the_budget_is_refused_and_nothing_is_created(
    fake_hook: Any, docs: list[Any]
) -> None:
    with pytest.raises(GeminiBudgetExceededError) as caught:
        operator(docs, budget={"max_total_tokens": 299}).execute(ctx(task_id="analyse_batch"))
    message = str(caught.value)
    assert "Budget 'run' (max_total_tokens=299)" in message
    assert "the batch job of 3 document(s) (300 input token(s) counted" in message
    assert "would need 300 tokens" in message
    assert "0 tokens (~$0.0000) spent in 0 call(s)" in message
    assert "analyse_batch (try 1)" in message
    assert "Records: " in message
    assert fake_hook.calls["count_tokens"] == 3
    assert "create_batch" not in fake_hook.calls
    assert "upload" not in fake_hook.calls
    assert budget_records(fake_hook) == []  # the refused job left no reservation


def test_the_output_ceiling_counts_when_max_output_tokens_is_set(fake_hook: Any, docs: list[Any]) -> None:
    capped = operator(docs, budget={"max_total_tokens": 400}, generation_config={"max_output_tokens": 50})
    with pytest.raises(
        GeminiBudgetExceededError, match=r"plus max_output_tokens=50 per document.*450 tokens"
    ):
        capped.execute(ctx(task_id="analyse_batch"))
    assert "create_batch" not in fake_hook.calls
    with pytest.raises(TaskDeferred):  # the same job with the output left uncapped: its input fits
        operator(docs, budget={"max_total_tokens": 400}).execute(ctx(task_id="analyse_batch"))
    assert fake_hook.calls["create_batch"] == 1


def test_an_admitted_job_stays_reserved_at_the_batch_price_while_it_runs(
    fake_hook: Any, docs: list[Any]
) -> None:
    op = operator(docs, budget={"max_total_tokens": 1000, "max_cost": 1.0}, timeout=7200)
    with pytest.raises(TaskDeferred):
        op.execute(ctx(task_id="analyse_batch"))
    [(key, record)] = budget_records(fake_hook)
    assert key.endswith(".json")
    assert "/run/job~" in key
    assert (record["state"], record["tokens"], record["pricing"]) == ("reserved", 300, "batch")
    online = fake_hook.prices.cost("gemini-2.5-flash", _usage(300))
    assert record["cost"] == pytest.approx(online / 2)
    assert record["lease_until"] > time.time() + 7200  # held as long as the job may run
    state = summarize(budget_records(fake_hook), now=time.time())
    assert (state.reserved_tokens, state.spent_tokens) == (300, 0)  # other tasks see it in flight


def test_a_retry_that_re_attaches_to_its_job_counts_nothing_again(fake_hook: Any, docs: list[Any]) -> None:
    with pytest.raises(TaskDeferred):
        operator(docs, budget={"max_total_tokens": 300}).execute(ctx(task_id="analyse_batch"))
    fake_hook.batch_jobs[0].state = "JOB_STATE_RUNNING"  # type: ignore[assignment]
    with pytest.raises(TaskDeferred):  # the budget is full, but the job is already paid for
        operator(docs, budget={"max_total_tokens": 300}).execute(ctx(task_id="analyse_batch", try_number=2))
    assert fake_hook.calls["count_tokens"] == 3
    assert fake_hook.calls["create_batch"] == 1
    assert len(budget_records(fake_hook)) == 1


def test_a_budget_may_skip_the_batch_instead_of_failing(fake_hook: Any, docs: list[Any]) -> None:
    op = operator(docs, budget={"max_total_tokens": 10, "on_exceeded": "skip"})
    with pytest.raises(AirflowSkipException, match="Budget 'run'"):
        op.execute(ctx(task_id="analyse_batch"))
    assert "create_batch" not in fake_hook.calls


def test_a_budget_needs_the_ledger(fake_hook: Any, docs: list[Any]) -> None:
    fake_hook.ledger = None
    with pytest.raises(GeminiInputError, match="the budget 'run' needs a ledger"):
        operator(docs, budget={"max_cost": 1}).execute(ctx(task_id="analyse_batch"))
    assert "count_tokens" not in fake_hook.calls
    assert "create_batch" not in fake_hook.calls


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"max_total_tokens": -5}, r"max_total_tokens=-5 must be a positive number"),
        ({"max_cost": "lots"}, r"max_cost='lots' is not a number"),
        ({"max_tokens": 5}, r"unknown key\(s\) \['max_tokens'\]"),
        ("5", r"budget=5 is not a budget"),
    ],
)
def test_a_bad_budget_fails_when_the_dag_is_parsed(budget: Any, message: str) -> None:
    with pytest.raises(GeminiInputError, match=message):
        operator(["files/a"], budget=budget)


def test_a_templated_budget_is_checked_once_rendered(fake_hook: Any, docs: list[Any]) -> None:
    op = operator(docs, budget="{{ params.budget }}")
    op.budget = '{"max_total_tokens": 0}'  # what the template rendered
    with pytest.raises(GeminiInputError, match=r"max_total_tokens=0 must be a positive number"):
        op.execute(ctx(task_id="analyse_batch"))
    assert "create_batch" not in fake_hook.calls


def _usage(tokens: int) -> Any:
    from airflow_gemini_files.pricing import TokenUsage

    return TokenUsage(prompt=tokens, total=tokens, calls=3)
