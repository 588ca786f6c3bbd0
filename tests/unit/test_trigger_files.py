"""GeminiFileActiveTrigger: serialization, backoff, transient errors, deadline (fake fake_hook and clock)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from doubles import TRIGGER_START as START
from doubles import TriggerClock, use_trigger_clock

from airflow_gemini_files.exceptions import GeminiFileFailedError, GeminiFileGoneError, GeminiInputError
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.triggers import files as trigger_module
from airflow_gemini_files.triggers.files import GeminiFileActiveTrigger


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> TriggerClock:
    return use_trigger_clock(monkeypatch, trigger_module)


def run(trigger: GeminiFileActiveTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def make(names: list[str], poll_interval: float = 2.0, timeout: float = 3600.0) -> GeminiFileActiveTrigger:
    return GeminiFileActiveTrigger(
        file_names=names,
        gemini_conn_id="gemini_default",
        poll_interval=poll_interval,
        end_time=START + timeout,
    )


def test_serializes_only_names_conn_id_interval_and_deadline():
    trigger = make(["files/a", "files/b"], poll_interval=5)
    path, kwargs = trigger.serialize()
    assert kwargs == {
        "file_names": ["files/a", "files/b"],
        "gemini_conn_id": "gemini_default",
        "poll_interval": 5.0,
        "end_time": START + 3600,
        "labels": {},
        "last_check": None,
    }
    module, _, name = path.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs), "a restarted triggerer rebuilds the same wait"


def test_success_event_carries_the_refreshed_files_as_plain_dicts(fake_hook, clock):
    fake_hook.add("files/a", display_name="a.pdf")
    fake_hook.add("files/b", display_name="b.pdf")
    fake_hook.states = {"files/a": ["PROCESSING", "ACTIVE"], "files/b": ["PROCESSING"] * 3 + ["ACTIVE"]}
    (event,) = run(make(["files/a", "files/b"]))
    assert event["status"] == "success"
    assert [f["name"] for f in event["files"]] == ["files/a", "files/b"]
    assert all(f["state"] == "ACTIVE" for f in event["files"])
    assert isinstance(event["files"][0]["expiration_time"], str), "times travel as ISO strings"


def test_backs_off_while_nothing_changes_and_resets_on_progress(fake_hook, clock):
    fake_hook.add("files/a")
    fake_hook.add("files/b")
    fake_hook.states = {
        "files/a": ["PROCESSING"] * 3 + ["ACTIVE"],
        "files/b": ["PROCESSING"] * 6 + ["ACTIVE"],
    }
    (event,) = run(make(["files/a", "files/b"], poll_interval=2))
    assert event["status"] == "success"
    assert clock.sleeps == [2.0, 3.0, 4.5, 2.0, 3.0, 4.5]


def test_backoff_is_capped(fake_hook, clock):
    fake_hook.add("files/a")
    fake_hook.states = {"files/a": ["PROCESSING"] * 30 + ["ACTIVE"]}
    run(make(["files/a"], poll_interval=10))
    assert max(clock.sleeps) == GeminiFileActiveTrigger.MAX_POLL_INTERVAL


def test_polls_only_files_not_yet_active(fake_hook, clock):
    fake_hook.add("files/a")
    fake_hook.add("files/b")
    fake_hook.states = {"files/b": ["PROCESSING"] * 4 + ["ACTIVE"]}
    run(make(["files/a", "files/b"]))
    assert fake_hook.calls["get"] == 1 + 5


def test_failed_file_ends_the_wait_with_its_message(fake_hook, clock):
    fake_hook.add("files/a", display_name="scan.pdf")
    fake_hook.states = {"files/a": ["PROCESSING", "FAILED"]}
    (event,) = run(make(["files/a"]))
    assert event["status"] == "error"
    error = policy.error_from_event(event["error"])
    assert isinstance(error, GeminiFileFailedError)
    assert (error.file_name, error.error) == ("files/a", "unsupported PDF")
    assert "files/a (scan.pdf) FAILED processing: unsupported PDF" in str(error)


def test_deleted_file_ends_the_wait_naming_it_with_its_label(fake_hook, clock):
    trigger = GeminiFileActiveTrigger(
        file_names=["files/nope"],
        gemini_conn_id="gemini_default",
        poll_interval=2,
        end_time=START + 60,
        labels={"files/nope": "scan.pdf"},
    )
    (event,) = run(trigger)
    error = policy.error_from_event(event["error"])
    assert isinstance(error, GeminiFileGoneError)
    assert str(error).startswith("files/nope (scan.pdf) does not exist: it was deleted")


def test_transient_errors_are_ridden_out(fake_hook, clock):
    fake_hook.add("files/a")
    fake_hook.get_errors = [ConnectionError("reset by peer"), RuntimeError("503 unavailable")]
    (event,) = run(make(["files/a"]))
    assert event["status"] == "success"
    assert fake_hook.calls["get"] == 3


def test_gives_up_after_consecutive_errors(fake_hook, clock):
    fake_hook.add("files/a")
    fake_hook.get_errors = [RuntimeError("503 unavailable")] * 10
    (event,) = run(make(["files/a"]))
    assert event["status"] == "error"
    assert "Gave up waiting for files/a after 5 polls in a row" in event["message"]
    assert [ref["name"] for ref in event["pending"]] == ["files/a"]


def test_permanent_error_ends_the_wait_at_once(fake_hook, clock):
    fake_hook.add("files/a")
    fake_hook.get_errors = [GeminiInputError("Gemini rejected the API key of connection 'gemini_default'")]
    (event,) = run(make(["files/a"]))
    assert event["status"] == "error"
    assert "rejected the API key" in event["message"]
    assert fake_hook.calls["get"] == 1


def test_deadline_ends_the_wait_with_timeout_naming_pending_files(fake_hook, clock):
    fake_hook.add("files/a")
    fake_hook.add("files/slow", state="PROCESSING")
    (event,) = run(make(["files/a", "files/slow"], poll_interval=10, timeout=100))
    assert event["status"] == "timeout"
    assert [(ref["name"], ref["state"]) for ref in event["pending"]] == [("files/slow", "PROCESSING")]
    assert clock.now == START + 100, "the last sleep is cut to the deadline"


def test_deadline_already_passed_after_restart_polls_once_then_times_out(fake_hook, clock):
    fake_hook.add("files/slow", state="PROCESSING")
    clock.now = START + 5000
    (event,) = run(make(["files/slow"], timeout=100))
    assert event["status"] == "timeout"
    assert fake_hook.calls["get"] == 1


@pytest.mark.parametrize(
    ("checked_ago", "sleeps"),
    [(3, [7.0]), (60, []), (None, [])],
    ids=["just-checked", "long-ago", "no-check"],
)
def test_the_first_poll_waits_out_the_interval_after_the_sensors_check(fake_hook, clock, checked_ago, sleeps):
    """The sensor checked 3 s before deferring: the trigger's first poll comes 10 s after that check."""
    fake_hook.add("files/a")
    trigger = GeminiFileActiveTrigger(
        file_names=["files/a"],
        gemini_conn_id="gemini_default",
        poll_interval=10,
        end_time=START + 600,
        last_check=None if checked_ago is None else START - checked_ago,
    )
    (event,) = run(trigger)
    assert event["status"] == "success"
    assert clock.sleeps == sleeps
    assert fake_hook.calls["get"] == 1
