"""The upload operator's storage-quota check against the Gemini emulator, through the real SDK.

The emulator's ``max_project_bytes`` shrinks the project's quota to a few kilobytes and the connection's
extra ``storage_quota_bytes`` tells the hook the same figure, so a would-be overflow takes a few small
files. What a user checks: an upload that would pass the quota fails before a byte is sent, naming the
usage, the quota, the biggest holders and the fix; a deferred wait ends as soon as another run's files are
deleted (or expire), and the upload then proceeds; a wait in vain ends with a clear error; the trigger's
serialized form holds no secret and resumes the same wait.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from doubles import context

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.naming import context_run_prefix, upload_file_id
from airflow_gemini_files.operators.files import GeminiStorageQuotaError, GeminiUploadFileOperator
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.triggers.quota import GeminiStorageQuotaTrigger

CONN = "gemini_quota"
QUOTA = 4000
OTHER_RUN = "scheduled__2026-11-28T00:00:00+00:00"
CTX = context(task_id="upload_docs")


@pytest.fixture
def hook(gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch) -> GeminiHook:
    """A hook through connection ``gemini_quota``: the emulator's quota shrunk to 4000 bytes, and said so."""
    gemini_emulator.configure(max_project_bytes=QUOTA)
    conn = {
        "conn_type": "gemini",
        "password": gemini_emulator.api_key,
        "extra": {"base_url": gemini_emulator.base_url, "storage_quota_bytes": QUOTA, "retry_attempts": 1},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))
    return GeminiHook(gemini_conn_id=CONN)


def plant_other_run(hook: GeminiHook, sizes: tuple[int, ...]) -> list[GeminiFileRef]:
    """Files another DAG run uploaded (named after that run, as the upload operator names them)."""
    ctx = context(run_id=OTHER_RUN, task_id="upload_scans")
    return [
        hook.upload_file(
            io.BytesIO(b"o" * size), mime_type="text/plain", name=upload_file_id(ctx, f"scan-{index}.txt")
        )
        for index, size in enumerate(sizes)
    ]


def document(tmp_path: Path, size: int, name: str = "contract.txt") -> str:
    path = tmp_path / name
    path.write_bytes(b"d" * size)
    return str(path)


def upload_operator(source: str | list[str], **kwargs: Any) -> GeminiUploadFileOperator:
    kwargs.setdefault("quota_check_min_bytes", 0)
    return GeminiUploadFileOperator(task_id="upload_docs", source=source, gemini_conn_id=CONN, **kwargs)


def upload_requests(emulator: GeminiEmulator) -> int:
    requests = emulator.stats()["requests"]
    return int(requests["upload_start"] + requests["upload_chunk"])


def defer_upload(tmp_path: Path, *, timeout: float = 60) -> tuple[GeminiUploadFileOperator, TaskDeferred]:
    """A deferrable upload of 1500 bytes that finds no room: the operator and its deferral."""
    operator = upload_operator(
        document(tmp_path, 1500), deferrable=True, quota_wait_timeout=timeout, quota_poll_interval=0.05
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(CTX)
    return operator, deferred.value


def run_trigger(trigger: GeminiStorageQuotaTrigger) -> dict[str, Any]:
    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first_event())


def test_an_upload_that_would_pass_the_quota_fails_before_any_byte_is_sent(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    theirs = plant_other_run(hook, (1500, 1000))
    hook.upload_file(io.BytesIO(b"s" * 700), mime_type="text/plain", display_name="someone-elses.txt")
    sources = [document(tmp_path, 600, "a.txt"), document(tmp_path, 600, "b.txt")]
    sent_before = upload_requests(gemini_emulator)

    with pytest.raises(GeminiStorageQuotaError) as error:
        upload_operator(sources).execute(context(task_id="upload_docs"))

    message = str(error.value)
    assert "upload of 2 file(s) by task 'upload_docs' (1.2 kB) would pass the Files API storage" in message
    assert "3.2 kB of 4.0 kB used (3 uploaded file(s)" in message  # usage and quota
    other_prefix = context_run_prefix(context(run_id=OTHER_RUN))
    holders = message.split("Biggest holders: ")[1]
    # biggest first: the other run's two files, then the one file nobody here created
    assert holders.index(f"run prefix {other_prefix} (2 file(s), 2.5 kB") < holders.index("someone-elses.txt")
    assert "GeminiSweepFilesOperator" in message
    assert "register the GCS objects instead" in message
    assert upload_requests(gemini_emulator) == sent_before  # not one byte of ours was sent
    assert {ref.name for ref in theirs} < {f["name"] for f in gemini_emulator.files()}
    assert len(gemini_emulator.files()) == 3


def test_an_upload_that_fits_proceeds_and_a_small_one_is_not_checked(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    plant_other_run(hook, (2000,))
    lists = gemini_emulator.stats()["requests"]["list"]
    ref = upload_operator(document(tmp_path, 900, "fits.txt")).execute(context(task_id="upload_docs"))
    assert isinstance(ref, GeminiFileRef)
    assert ref.size_bytes == 900
    assert gemini_emulator.stats()["requests"]["list"] == lists + 1  # the check read the storage first

    small = upload_operator(document(tmp_path, 900, "small.txt"), quota_check_min_bytes=1000)
    assert small.execute(context(task_id="upload_docs")).size_bytes == 900
    assert gemini_emulator.stats()["requests"]["list"] == lists + 1  # below the threshold: no listing


def test_a_retry_does_not_count_the_files_its_killed_attempt_left_against_itself(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """Try 1 uploaded its file and was killed before its XCom; try 2 reuses that file, so it needs no room."""
    source = document(tmp_path, 1500)
    first = context(task_id="upload_docs", try_number=1)
    left = hook.upload_file(source, name=upload_file_id(first, source))
    plant_other_run(hook, (2000,))  # 3500 of 4000 used: 1500 more would not fit, but they are there

    ref = upload_operator(source).execute(context(task_id="upload_docs", try_number=2))
    assert ref.name == left.name
    assert len(gemini_emulator.files()) == 2


def test_a_deferred_upload_proceeds_once_another_runs_files_are_deleted(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    theirs = plant_other_run(hook, (1500, 1500))
    source = document(tmp_path, 1500)
    operator = upload_operator(source, deferrable=True, quota_wait_timeout=60, quota_poll_interval=0.05)
    ctx = context(task_id="upload_docs")

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(ctx)
    assert deferred.value.method_name == "execute_complete"
    assert len(gemini_emulator.files()) == 2
    trigger = deferred.value.trigger
    assert isinstance(trigger, GeminiStorageQuotaTrigger)

    async def wait_while_the_other_run_cleans_up() -> dict[str, Any]:
        async def clean_up() -> None:
            await asyncio.sleep(0.2)  # the trigger has polled (and found no room) by now, or polls later
            await asyncio.to_thread(hook.delete_file, theirs[0])

        cleaner = asyncio.create_task(clean_up())
        async for event in trigger.run():
            await cleaner
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(wait_while_the_other_run_cleans_up())
    assert event["status"] == "fits"
    assert event["usage"]["used_bytes"] == 1500
    assert event["usage"]["free_bytes"] == QUOTA - 1500

    ref = operator.execute_complete(ctx, event)
    assert isinstance(ref, GeminiFileRef)
    assert ref.size_bytes == 1500
    assert ref.name == f"files/{upload_file_id(ctx, source)}"


def test_a_deferred_wait_ends_when_the_files_holding_the_quota_expire(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    plant_other_run(hook, (3000,))
    _, deferred = defer_upload(tmp_path)
    gemini_emulator.advance_clock(49 * 3600)  # uploads live 48 hours
    event = run_trigger(deferred.trigger)
    assert event["status"] == "fits"
    assert event["usage"]["used_bytes"] == 0


def test_a_wait_in_vain_times_out_with_the_usage_and_the_fix(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    plant_other_run(hook, (3000,))
    operator, deferred = defer_upload(tmp_path, timeout=0.3)
    event = run_trigger(deferred.trigger)
    assert event["status"] == "timeout"

    with pytest.raises(GeminiStorageQuotaError) as error:
        operator.execute_complete(CTX, event)
    message = str(error.value)
    assert message.startswith("Waited in vain for room: upload of 1 file(s) by task 'upload_docs'")
    assert "3.0 kB of 4.0 kB used" in message
    assert "Biggest holders: run prefix" in message
    assert "delete files that are no longer needed" in message
    assert len(gemini_emulator.files()) == 1  # nothing of ours was uploaded


def test_a_wait_in_the_worker_times_out_with_the_same_explanation(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    plant_other_run(hook, (3000,))
    operator = upload_operator(
        document(tmp_path, 1500), deferrable=False, quota_wait_timeout=0.3, quota_poll_interval=0.05
    )
    with pytest.raises(GeminiStorageQuotaError, match=r"^Waited 0 s in vain: upload of 1 file\(s\)") as error:
        operator.execute(context(task_id="upload_docs"))
    assert "3.0 kB of 4.0 kB used" in str(error.value)
    assert len(gemini_emulator.files()) == 1


def test_the_trigger_serializes_to_primitives_without_secrets_and_resumes_the_same_wait(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    plant_other_run(hook, (3000,))
    before = time.time()
    _, deferred = defer_upload(tmp_path)
    classpath, kwargs = deferred.trigger.serialize()

    assert classpath == "airflow_gemini_files.triggers.quota.GeminiStorageQuotaTrigger"
    assert kwargs["gemini_conn_id"] == CONN
    assert kwargs["needed_bytes"] == 1500
    assert before + 60 <= kwargs["end_time"] <= time.time() + 60
    assert all(isinstance(value, str | int | float) for value in kwargs.values())
    text = json.dumps(kwargs)
    assert gemini_emulator.api_key not in text
    assert "password" not in text
    assert deferred.timeout is not None
    assert deferred.timeout.total_seconds() >= 60

    # A restarted triggerer builds the trigger from these kwargs and resumes the same wait.
    resumed = GeminiStorageQuotaTrigger(**kwargs)
    assert resumed.serialize() == (classpath, kwargs)
    gemini_emulator.advance_clock(49 * 3600)
    assert run_trigger(resumed)["status"] == "fits"


def test_the_trigger_reports_an_error_when_the_storage_cannot_be_read(
    hook: GeminiHook, gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GeminiStorageQuotaTrigger, "MAX_FAILED_POLLS", 2)
    gemini_emulator.inject_faults("list", statuses=(503,), rate=1.0)
    trigger = GeminiStorageQuotaTrigger(CONN, 10, "upload of 1 file(s)", 0.01, time.time() + 60)
    event = run_trigger(trigger)
    assert event["status"] == "error"
    assert "Could not read the Gemini project's file storage 2 time(s) in a row" in event["message"]
    assert "upload of 1 file(s)" in event["message"]
    assert gemini_emulator.api_key not in event["message"]


DAG_FILE = """
from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiUploadFileOperator


@dag(dag_id="quota_wait", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def quota_wait():
    upload = GeminiUploadFileOperator(
        task_id="upload",
        source=os.environ["QUOTA_DOC"],
        gemini_conn_id="gemini_quota",
        quota_check_min_bytes=0,
        quota_wait_timeout=float(os.environ["QUOTA_WAIT"]),
        quota_poll_interval=0.1,
        deferrable=True,
    )
    GeminiDeleteFilesOperator(task_id="cleanup", files=upload.output, gemini_conn_id="gemini_quota")


quota_wait()
"""


@pytest.mark.parametrize("freed", [True, False], ids=["room-frees-up", "wait-in-vain"])
def test_a_dag_run_defers_the_upload_until_there_is_room_or_fails_when_none_comes(
    hook: GeminiHook,
    gemini_emulator: GeminiEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dag_bundle: Any,
    run_bundle_dag: Any,
    freed: bool,
) -> None:
    """A real dag.test(): the task defers, Airflow runs the serialized trigger, the task resumes."""
    import threading
    from datetime import UTC, datetime

    from airflow.utils import db

    db.upgradedb()
    [theirs] = plant_other_run(hook, (3000,))
    monkeypatch.setenv("QUOTA_DOC", document(tmp_path, 1500))
    monkeypatch.setenv("QUOTA_WAIT", "30" if freed else "0.5")
    folder = dag_bundle("quota-wait", "quota_wait.py", DAG_FILE)

    def free_room_once_the_trigger_has_looked() -> None:
        deadline = time.monotonic() + 30
        while gemini_emulator.stats()["requests"]["list"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        hook.delete_file(theirs)

    cleaner = threading.Thread(target=free_room_once_the_trigger_has_looked, daemon=True)
    if freed:
        cleaner.start()
    run, states, tries = run_bundle_dag(folder, "quota-wait", "quota_wait", datetime(2026, 4, 1, tzinfo=UTC))
    if freed:
        cleaner.join()
        assert str(run.state) == "success", states
        assert gemini_emulator.stats()["requests"]["upload_chunk"] >= 2  # theirs, then ours
        assert gemini_emulator.files() == []  # ours uploaded, then cleaned up; theirs deleted
    else:
        assert states == {"upload": "failed", "cleanup": "success"}  # the run's state is its leaf's
        assert [f["name"] for f in gemini_emulator.files()] == [theirs.name]  # nothing of ours
    assert tries["upload"] == 1
