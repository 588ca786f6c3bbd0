"""GeminiFileActiveSensor in poke, reschedule and deferrable modes (fake fake_hook)."""

from __future__ import annotations

import time

import pytest
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    TaskDeferred,
)
from doubles import context

from airflow_gemini_files.exceptions import (
    GeminiFileFailedError,
    GeminiFileGoneError,
    GeminiFilesError,
    GeminiInputError,
    GeminiWaitTimeoutError,
)
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor
from airflow_gemini_files.triggers.files import GeminiFileActiveTrigger


def sensor(**kwargs) -> GeminiFileActiveSensor:
    kwargs.setdefault("poke_interval", 0)
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("deferrable", False)
    return GeminiFileActiveSensor(task_id="wait", **kwargs)


def test_poke_mode_waits_until_all_active_and_returns_refreshed_refs(fake_hook, capsys):
    fake_hook.add("files/a", state="PROCESSING")
    fake_hook.add("files/b", state="PROCESSING")
    fake_hook.states = {
        "files/a": ["PROCESSING", "ACTIVE"],
        "files/b": ["PROCESSING", "PROCESSING", "ACTIVE"],
    }
    given = [GeminiFileRef(name="files/a", source_uri="gs://b/a.pdf"), "files/b"]
    result = sensor(files=given).execute(context())
    assert [ref.name for ref in result] == ["files/a", "files/b"]
    assert all(ref.state == "ACTIVE" for ref in result)
    assert result[0].source_uri == "gs://b/a.pdf", "what the input knew is kept"
    assert fake_hook.calls["get"] == 5, "an ACTIVE file is not fetched again"
    assert "1 of 2 file(s) ACTIVE, 1 still PROCESSING" in capsys.readouterr().out


def test_one_file_in_gives_one_ref_out(fake_hook):
    fake_hook.add("files/a")
    result = sensor(files="files/a").execute(context())
    assert isinstance(result, GeminiFileRef)
    assert result.is_active


def test_poke_returns_a_poke_return_value_with_the_refs(fake_hook):
    fake_hook.add("files/a")
    value = sensor(files=["files/a"]).poke(context())
    assert value.is_done
    assert [ref.name for ref in value.xcom_value] == ["files/a"]


def test_failed_file_fails_the_task_with_its_error_message(fake_hook):
    fake_hook.add("files/a", display_name="scan.pdf")
    fake_hook.states["files/a"] = ["PROCESSING", "FAILED"]
    with pytest.raises(
        GeminiFileFailedError, match=r"files/a \(scan\.pdf\) FAILED processing: unsupported PDF"
    ) as caught:
        sensor(files=["files/a"]).execute(context())
    assert caught.value.file_name == "files/a"


def test_file_deleted_while_waiting_fails_the_task_without_retries(fake_hook):
    with pytest.raises(GeminiFileGoneError, match=r"files/gone does not exist: it was deleted") as caught:
        sensor(files="files/gone").execute(context())
    assert isinstance(caught.value, AirflowFailException), "a deleted file does not come back"


def test_transient_errors_are_ridden_out_then_give_up(fake_hook):
    fake_hook.add("files/a")
    fake_hook.get_errors = [RuntimeError("503 unavailable")] * 2
    assert sensor(files="files/a").execute(context()).is_active
    fake_hook.get_errors = [RuntimeError("503 unavailable")] * 10
    with pytest.raises(GeminiFilesError, match=r"Gave up waiting for files/a after 5 polls in a row"):
        sensor(files="files/a").execute(context())


def test_reschedule_mode_repeats_a_failed_check_within_the_try(fake_hook):
    """Nothing survives a reschedule to count failures, so one try checks again until it knows."""
    fake_hook.add("files/a", state="PROCESSING")
    fake_hook.get_errors = [RuntimeError("503 unavailable")] * 2
    with pytest.raises(AirflowRescheduleException):
        sensor(files="files/a", mode="reschedule").execute(context())
    assert fake_hook.calls["get"] == 3
    fake_hook.get_errors = [RuntimeError("503 unavailable")] * 10
    with pytest.raises(GeminiFilesError, match="after 5 polls in a row could not check them"):
        sensor(files="files/a", mode="reschedule").execute(context())


def test_poke_mode_times_out_naming_the_files(fake_hook):
    fake_hook.add("files/a", state="PROCESSING")
    with pytest.raises(
        GeminiWaitTimeoutError,
        match=r"1 of 1 Gemini file\(s\) still not ACTIVE after the timeout of 0\.2 s: files/a \(a\.pdf\)",
    ) as caught:
        sensor(files="files/a", timeout=0.2, poke_interval=0.05).execute(context())
    assert isinstance(caught.value, AirflowSensorTimeout), "Airflow fails a sensor timeout without retries"
    assert caught.value.pending == ["files/a"]


def test_reschedule_mode_gives_back_the_slot_while_processing(fake_hook):
    fake_hook.add("files/a", state="PROCESSING")
    with pytest.raises(AirflowRescheduleException):
        sensor(files="files/a", mode="reschedule").execute(context())


def test_deferrable_checks_once_then_defers_with_only_names_and_a_deadline(fake_hook):
    fake_hook.add("files/a", state="PROCESSING")
    before = time.time()
    with pytest.raises(TaskDeferred) as caught:
        sensor(files=["files/a"], deferrable=True, timeout=600, poke_interval=7).execute(context())
    trigger = caught.value.trigger
    assert isinstance(trigger, GeminiFileActiveTrigger)
    path, kwargs = trigger.serialize()
    assert path == "airflow_gemini_files.triggers.files.GeminiFileActiveTrigger"
    assert set(kwargs) == {
        "file_names",
        "gemini_conn_id",
        "poll_interval",
        "end_time",
        "labels",
        "last_check",
    }
    assert kwargs["file_names"] == ["files/a"]
    assert kwargs["labels"] == {"files/a": "a.pdf"}
    assert kwargs["poll_interval"] == 7
    assert before + 600 <= kwargs["end_time"] <= time.time() + 600
    assert before <= kwargs["last_check"] <= time.time(), "the trigger waits out the rest of the interval"
    assert caught.value.method_name == "execute_complete"
    assert caught.value.timeout.total_seconds() > 600, "the trigger's own deadline fires first"


def test_deferrable_does_not_defer_when_already_active(fake_hook):
    fake_hook.add("files/a")
    assert sensor(files=["files/a"], deferrable=True).execute(context())[0].is_active


def test_execute_complete_rebuilds_refs_from_plain_dicts(fake_hook):
    active = fake_hook.add("files/a", display_name="a.pdf")
    event = {"status": "success", "message": "ok", "files": [active.to_dict()], "pending": []}
    given = [{"name": "files/a", "source_uri": "gs://b/a.pdf"}]
    result = sensor(files=given, deferrable=True).execute_complete(context(), event)
    assert result == [GeminiFileRef.coerce(active.to_dict() | {"source_uri": "gs://b/a.pdf"})]


def test_execute_complete_raises_the_events_error(fake_hook):
    op = sensor(files=["files/a"], deferrable=True, timeout=60)
    original = GeminiFileFailedError("files/a FAILED processing: bad", file_name="files/a", error="bad")
    failed = {"status": "error", "message": str(original), "error": policy.error_to_event(original)}
    with pytest.raises(GeminiFileFailedError, match="FAILED processing: bad") as caught:
        op.execute_complete(context(), failed)
    assert (caught.value.file_name, caught.value.error) == ("files/a", "bad")
    pending = [GeminiFileRef(name="files/a", display_name="a.pdf", state="PROCESSING").to_dict()]
    with pytest.raises(
        GeminiWaitTimeoutError, match=r"still not ACTIVE after the timeout of 60 s: files/a \(a\.pdf\)"
    ):
        op.execute_complete(context(), {"status": "timeout", "message": "deadline", "pending": pending})
    with pytest.raises(GeminiFilesError, match="unexpected event"):
        op.execute_complete(context(), None)


def test_mapped_sensor_is_labelled(fake_hook):
    fake_hook.add("files/a", display_name="contract.pdf")
    ctx = context(map_index=2)
    sensor(files="files/a").execute(ctx)
    assert ctx["gemini_file_label"] == "contract.pdf"


def test_an_empty_list_needs_no_wait_but_none_is_an_error(fake_hook):
    assert sensor(files=[]).execute(context()) == []
    assert sensor(files=[], deferrable=True).execute(context()) == []
    with pytest.raises(GeminiInputError, match=r"files=None names no Gemini file"):
        sensor(files=None).execute(context())
