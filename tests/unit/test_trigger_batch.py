"""GeminiBatchJobTrigger: what it stores, how often it checks, every ending, on_kill (fake hook, clock)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from doubles import TRIGGER_START as START
from doubles import TriggerClock, use_trigger_clock

from airflow_gemini_files.exceptions import GeminiBatchJobGoneError, GeminiInputError
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.triggers import batch as trigger_module
from airflow_gemini_files.triggers.batch import GeminiBatchJobTrigger

JOB = "batches/job1"


class JobHook:
    """``aget_batch`` answers from a script of states (or exceptions); ``acancel_batch`` is recorded."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.gets = 0
        self.cancelled: list[str] = []

    async def aget_batch(self, name: str) -> Any:
        self.gets += 1
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, BaseException):
            raise answer
        return SimpleNamespace(name=name, state=answer)

    async def acancel_batch(self, name: str) -> bool:
        self.cancelled.append(name)
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> TriggerClock:
    return use_trigger_clock(monkeypatch, trigger_module)


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(script: list[Any]) -> JobHook:
        fake = JobHook(script)
        monkeypatch.setattr(trigger_module, "GeminiHook", lambda **kwargs: fake)
        return fake

    return use


def make(poll_interval: float = 60.0, timeout: float = 24 * 3600) -> GeminiBatchJobTrigger:
    return GeminiBatchJobTrigger(
        job_name=JOB, gemini_conn_id="gemini_default", poll_interval=poll_interval, end_time=START + timeout
    )


def run(trigger: GeminiBatchJobTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_serializes_only_the_job_the_connection_the_interval_and_the_deadline():
    path, kwargs = make(poll_interval=30).serialize()
    assert path == "airflow_gemini_files.triggers.batch.GeminiBatchJobTrigger"
    assert kwargs == {
        "job_name": JOB,
        "gemini_conn_id": "gemini_default",
        "poll_interval": 30.0,
        "end_time": START + 24 * 3600,
    }
    module, _, name = path.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs), "a restarted triggerer rebuilds the same wait"


@pytest.mark.parametrize(
    "end",
    [
        "BATCH_STATE_SUCCEEDED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
        "BATCH_STATE_FAILED",
        "BATCH_STATE_EXPIRED",
        "BATCH_STATE_CANCELLED",
    ],
)
def test_every_ending_is_one_done_event_and_the_operator_decides_what_it_means(hook, clock, end):
    hook(
        [
            "BATCH_STATE_PENDING",
            "JOB_STATE_QUEUED",
            "BATCH_STATE_RUNNING",
            "JOB_STATE_PAUSED",
            "JOB_STATE_UPDATING",
            "JOB_STATE_CANCELLING",
            end,
        ]
    )
    (event,) = run(make())
    name = policy.job_state_name(end)
    assert event == {
        "status": "done",
        "job": JOB,
        "state": name,
        "message": f"Batch job {JOB} is {name.removeprefix('JOB_STATE_')}.",
    }


def test_checks_come_after_5_seconds_then_back_off_to_the_poll_interval(hook, clock):
    fake = hook(["BATCH_STATE_PENDING"] * 9 + ["BATCH_STATE_SUCCEEDED"])
    run(make(poll_interval=30))
    assert clock.sleeps == [5.0, 7.5, 11.25, 16.875, 25.312, 30.0, 30.0, 30.0, 30.0, 30.0]
    assert fake.gets == 10


def test_the_deadline_ends_the_wait_with_a_timeout_event_naming_the_last_state(hook, clock):
    hook(["BATCH_STATE_PENDING"])
    (event,) = run(make(poll_interval=60, timeout=100))
    assert event == {
        "status": "timeout",
        "job": JOB,
        "state": "JOB_STATE_PENDING",
        "message": f"The deadline passed while batch job {JOB} was PENDING.",
    }
    assert sum(clock.sleeps) == pytest.approx(100, abs=0.01)
    assert clock.sleeps[-1] < 60, "the last wait is cut at the deadline"


def test_transient_check_failures_are_ridden_out(hook, clock):
    fake = hook([ConnectionError("reset"), RuntimeError("503"), "BATCH_STATE_SUCCEEDED"])
    (event,) = run(make())
    assert event["status"] == "done"
    assert fake.gets == 3


@pytest.mark.parametrize(
    "error",
    [GeminiBatchJobGoneError(f"Batch job {JOB} does not exist", job_name=JOB), GeminiInputError("bad key")],
)
def test_an_error_no_check_can_fix_ends_the_wait_with_the_same_error(hook, clock, error):
    hook([error])
    (event,) = run(make())
    assert event["status"] == "error"
    rebuilt = policy.error_from_event(event["error"])
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)


def test_too_many_failed_checks_in_a_row_end_the_wait(hook, clock):
    hook([ConnectionError("reset")])
    (event,) = run(make())
    assert event["status"] == "error"
    assert event["message"].startswith(f"Gave up waiting for batch job {JOB} after 5 checks in a row failed")


def test_killing_the_deferred_task_cancels_its_job(hook):
    fake = hook(["BATCH_STATE_RUNNING"])
    asyncio.run(make().on_kill())
    assert fake.cancelled == [JOB]
