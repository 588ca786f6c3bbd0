"""GeminiFileActiveSensor in poke, reschedule and deferrable modes (fake hook)."""

from __future__ import annotations

import time

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSensorTimeout, TaskDeferred
from fake_gemini_hook import FakeGeminiHook, context

from airflow_gemini_files.exceptions import (
    GeminiFileFailedError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
)
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.sensors import files as sensor_module
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor
from airflow_gemini_files.triggers.files import GeminiFileActiveTrigger


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> FakeGeminiHook:
    fake = FakeGeminiHook()
    monkeypatch.setattr(sensor_module, "GeminiHook", lambda **kwargs: fake)
    return fake


def sensor(**kwargs) -> GeminiFileActiveSensor:
    kwargs.setdefault("poke_interval", 0)
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("deferrable", False)
    return GeminiFileActiveSensor(task_id="wait", **kwargs)


def test_poke_mode_waits_until_all_active_and_returns_refreshed_refs(hook, capsys):
    hook.add("files/a", state="PROCESSING")
    hook.add("files/b", state="PROCESSING")
    hook.states = {"files/a": ["PROCESSING", "ACTIVE"], "files/b": ["PROCESSING", "PROCESSING", "ACTIVE"]}
    given = [GeminiFileRef(name="files/a", source_uri="gs://b/a.pdf"), "files/b"]
    result = sensor(files=given).execute(context())
    assert [ref.name for ref in result] == ["files/a", "files/b"]
    assert all(ref.state == "ACTIVE" for ref in result)
    assert result[0].source_uri == "gs://b/a.pdf", "what the input knew is kept"
    assert hook.calls["get"] == 5, "an ACTIVE file is not fetched again"
    assert "1 of 2 file(s) ACTIVE, 1 still PROCESSING" in capsys.readouterr().out


def test_one_file_in_gives_one_ref_out(hook):
    hook.add("files/a")
    result = sensor(files="files/a").execute(context())
    assert isinstance(result, GeminiFileRef)
    assert result.is_active


def test_poke_returns_a_poke_return_value_with_the_refs(hook):
    hook.add("files/a")
    value = sensor(files=["files/a"]).poke(context())
    assert value.is_done
    assert [ref.name for ref in value.xcom_value] == ["files/a"]


def test_failed_file_fails_the_task_with_its_error_message(hook):
    hook.add("files/a", display_name="scan.pdf")
    hook.states["files/a"] = ["PROCESSING", "FAILED"]
    with pytest.raises(GeminiFileFailedError, match=r"files/a \(scan\.pdf\): unsupported PDF") as caught:
        sensor(files=["files/a"]).execute(context())
    assert caught.value.file_name == "files/a"


def test_file_deleted_while_waiting_fails_the_task(hook):
    with pytest.raises(GeminiFileNotUsableError, match=r"files/gone .*gone"):
        sensor(files="files/gone").execute(context())


def test_transient_errors_are_ridden_out_then_give_up(hook):
    hook.add("files/a")
    hook.get_errors = [RuntimeError("503 unavailable")] * 2
    assert sensor(files="files/a").execute(context()).is_active
    hook.get_errors = [RuntimeError("503 unavailable")] * 10
    with pytest.raises(GeminiFilesError, match="Gave up after 5 consecutive failed checks: 503"):
        sensor(files="files/a").execute(context())


def test_poke_mode_times_out(hook):
    hook.add("files/a", state="PROCESSING")
    with pytest.raises(AirflowSensorTimeout):
        sensor(files="files/a", timeout=0.2, poke_interval=0.05).execute(context())


def test_reschedule_mode_gives_back_the_slot_while_processing(hook):
    hook.add("files/a", state="PROCESSING")
    with pytest.raises(AirflowRescheduleException):
        sensor(files="files/a", mode="reschedule").execute(context())


def test_deferrable_checks_once_then_defers_with_only_names_and_a_deadline(hook):
    hook.add("files/a", state="PROCESSING")
    before = time.time()
    with pytest.raises(TaskDeferred) as caught:
        sensor(files=["files/a"], deferrable=True, timeout=600, poke_interval=7).execute(context())
    trigger = caught.value.trigger
    assert isinstance(trigger, GeminiFileActiveTrigger)
    path, kwargs = trigger.serialize()
    assert path == "airflow_gemini_files.triggers.files.GeminiFileActiveTrigger"
    assert set(kwargs) == {"file_names", "gemini_conn_id", "poll_interval", "end_time"}
    assert kwargs["file_names"] == ["files/a"]
    assert kwargs["poll_interval"] == 7
    assert before + 600 <= kwargs["end_time"] <= time.time() + 600
    assert caught.value.method_name == "execute_complete"
    assert caught.value.timeout.total_seconds() > 600, "the trigger's own deadline fires first"


def test_deferrable_does_not_defer_when_already_active(hook):
    hook.add("files/a")
    assert sensor(files=["files/a"], deferrable=True).execute(context())[0].is_active


def test_execute_complete_rebuilds_refs_from_plain_dicts(hook):
    active = hook.add("files/a", display_name="a.pdf")
    event = {"status": "success", "message": "ok", "files": [active.to_dict()], "pending": []}
    given = [{"name": "files/a", "source_uri": "gs://b/a.pdf"}]
    result = sensor(files=given, deferrable=True).execute_complete(context(), event)
    assert result == [GeminiFileRef.coerce(active.to_dict() | {"source_uri": "gs://b/a.pdf"})]


def test_execute_complete_raises_the_events_error(hook):
    op = sensor(files=["files/a"], deferrable=True)
    failed = {"status": "failed", "message": "files/a FAILED processing: bad", "file_name": "files/a"}
    with pytest.raises(GeminiFileFailedError, match="FAILED processing: bad"):
        op.execute_complete(context(), failed)
    with pytest.raises(AirflowSensorTimeout, match="were not ACTIVE by the deadline"):
        op.execute_complete(
            context(), {"status": "timeout", "message": "1 of 1 file(s) were not ACTIVE by the deadline"}
        )
    with pytest.raises(GeminiFilesError, match="unexpected event"):
        op.execute_complete(context(), None)


def test_mapped_sensor_is_labelled(hook):
    hook.add("files/a", display_name="contract.pdf")
    ctx = context(map_index=2)
    sensor(files="files/a").execute(ctx)
    assert ctx["gemini_file_label"] == "contract.pdf"


def test_an_empty_list_needs_no_wait_but_none_is_an_error(hook):
    assert sensor(files=[]).execute(context()) == []
    assert sensor(files=[], deferrable=True).execute(context()) == []
    with pytest.raises(GeminiInputError, match=r"files=None names no Gemini file"):
        sensor(files=None).execute(context())
