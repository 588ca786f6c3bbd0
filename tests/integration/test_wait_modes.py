"""The same situation ends the same way in every way of waiting: hook, poke, reschedule and deferrable.

Each situation (a file turning ACTIVE, FAILED, deleted or expired while waiting, transient 503s, too many
failed polls in a row, a rejected API key, the timeout) is played four times against the Gemini emulator
through the real SDK: ``GeminiHook.wait_for_active``, the sensor in ``poke`` mode, in ``reschedule`` mode
(a fresh sensor per try, as Airflow runs it) and ``deferrable`` (check, defer, run the trigger, resume a
fresh sensor with its event). The outcomes (the result, or the exception's type and message) must be
identical, and each must be the one the policy (``hooks/policy.py``) decides.

Changes of state happen right after the first check of the file, whichever mode made it, so every mode
sees the file PROCESSING first and the change on a later poll.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred
from doubles import context

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.exceptions import (
    GeminiFileFailedError,
    GeminiFileGoneError,
    GeminiFilesError,
    GeminiInputError,
    GeminiWaitTimeoutError,
)
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

NAME = "files/wait-modes-doc"
POLL = 0.05
LONG = 120.0
MODES = ("hook", "poke", "reschedule", "deferrable")


@dataclass
class Situation:
    """How the emulator behaves, what happens after the first check, and the outcome every mode must reach."""

    expected: str  # "ok" or the exception class name
    processing_delay: float = 3600.0
    after_first_check: Callable[[GeminiEmulator], None] = lambda emulator: None
    faults: list[int] = field(default_factory=list)
    bad_key: bool = False
    timeout: float = LONG
    fail: bool = False


SITUATIONS = {
    "active": Situation("ok", processing_delay=5, after_first_check=lambda e: e.advance_clock(6)),
    "failed": Situation(
        "GeminiFileFailedError", processing_delay=5, fail=True, after_first_check=lambda e: e.advance_clock(6)
    ),
    "deleted": Situation(
        "GeminiFileGoneError",
        after_first_check=lambda e: GeminiHook(gemini_conn_id="wait_modes").delete_file(NAME),
    ),
    "expired": Situation("GeminiFileGoneError", after_first_check=lambda e: e.advance_clock(49 * 3600)),
    "transient_503s": Situation("ok", processing_delay=0, faults=[503, 503]),
    "too_many_failed_polls": Situation("GeminiFilesError", processing_delay=0, faults=[503] * 40),
    "bad_key": Situation("GeminiInputError", bad_key=True),
    "timeout": Situation("GeminiWaitTimeoutError", timeout=0.3),
}
EXPECTED_TYPES = {
    "GeminiFileFailedError": GeminiFileFailedError,
    "GeminiFileGoneError": GeminiFileGoneError,
    "GeminiFilesError": GeminiFilesError,
    "GeminiInputError": GeminiInputError,
    "GeminiWaitTimeoutError": GeminiWaitTimeoutError,
}


def _connect(monkeypatch: pytest.MonkeyPatch, emulator: GeminiEmulator, key: str | None = None) -> None:
    """Connection ``wait_modes``: no SDK retries, so every 503 reaches the poll that made the request."""
    conn = {
        "conn_type": "gemini",
        "password": key or emulator.api_key,
        "extra": {"base_url": emulator.base_url, "retry_attempts": 1},
    }
    monkeypatch.setenv("AIRFLOW_CONN_WAIT_MODES", json.dumps(conn))


class _AfterFirstCheck:
    """Runs the situation's change once, right after the first successful check of the file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, emulator: GeminiEmulator) -> None:
        self.emulator = emulator
        self.action: Callable[[GeminiEmulator], None] = lambda emulator: None
        self.fired = True
        get_file, aget_file = GeminiHook.get_file, GeminiHook.aget_file
        owner = self

        def checked_get(hook: GeminiHook, file: Any) -> GeminiFileRef:
            fresh = get_file(hook, file)
            owner.fire()
            return fresh

        async def checked_aget(hook: GeminiHook, file: Any) -> GeminiFileRef:
            fresh = await aget_file(hook, file)
            owner.fire()
            return fresh

        monkeypatch.setattr(GeminiHook, "get_file", checked_get)
        monkeypatch.setattr(GeminiHook, "aget_file", checked_aget)

    def arm(self, action: Callable[[GeminiEmulator], None]) -> None:
        self.action, self.fired = action, False

    def fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.action(self.emulator)


def _sensor(mode: str, situation: Situation) -> GeminiFileActiveSensor:
    return GeminiFileActiveSensor(
        task_id="wait_active",
        files=GeminiFileRef(name=NAME, display_name="scan-2026-11.txt"),
        gemini_conn_id="wait_modes",
        mode="reschedule" if mode == "reschedule" else "poke",
        deferrable=mode == "deferrable",
        poke_interval=POLL,
        timeout=situation.timeout,
    )


def _wait(mode: str, situation: Situation) -> Any:
    if mode == "hook":
        ref = GeminiFileRef(name=NAME, display_name="scan-2026-11.txt")
        hook = GeminiHook(gemini_conn_id="wait_modes")
        return hook.wait_for_active(ref, timeout=situation.timeout, poll_interval=POLL)
    if mode == "poke":
        return _sensor(mode, situation).execute(context(task_id="wait_active"))
    if mode == "reschedule":
        first_try = datetime.now(UTC)
        while True:  # each try is a fresh sensor, as when Airflow runs a rescheduled task again
            try:
                return _sensor(mode, situation).execute(
                    context(task_id="wait_active", first_reschedule=first_try)
                )
            except AirflowRescheduleException:
                time.sleep(POLL)
    try:
        return _sensor(mode, situation).execute(context(task_id="wait_active"))
    except TaskDeferred as deferred:
        event = asyncio.run(_first_event(deferred.trigger))
        resumed = _sensor(mode, situation)  # execute_complete runs in a new process, on a new instance
        return getattr(resumed, deferred.method_name)(context(task_id="wait_active"), event)


async def _first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        payload: dict[str, Any] = event.payload
        return payload
    raise AssertionError("the trigger ended without an event")


def _outcome(mode: str, situation: Situation) -> tuple[str, str]:
    try:
        result = _wait(mode, situation)
    except Exception as error:
        return type(error).__name__, str(error)
    [ref] = result if isinstance(result, list) else [result]
    return "ok", f"{ref.name} {ref.state} {ref.display_name}"


def _play(
    situation: Situation,
    mode: str,
    emulator: GeminiEmulator,
    monkeypatch: pytest.MonkeyPatch,
    after_first_check: _AfterFirstCheck,
) -> tuple[str, str]:
    """Set the situation up from scratch (a fresh emulator, the file just uploaded) and wait in ``mode``."""
    emulator.reset()
    emulator.configure(processing_delay=situation.processing_delay)
    if situation.fail:
        emulator.fail_processing("scan-2026-11", "The scan is unreadable.")
    _connect(monkeypatch, emulator)
    document = io.BytesIO(b"a scanned page\n" * 20)
    GeminiHook(gemini_conn_id="wait_modes").upload_file(
        document, mime_type="text/plain", display_name="scan-2026-11.txt", name=NAME
    )
    if situation.faults:
        emulator.inject_faults("get", sequence=situation.faults)
    if situation.bad_key:
        _connect(monkeypatch, emulator, key="AIza-revoked-key")
    after_first_check.arm(situation.after_first_check)
    return _outcome(mode, situation)


@pytest.mark.parametrize("name", list(SITUATIONS))
def test_every_mode_ends_the_same_way(
    name: str, gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    situation = SITUATIONS[name]
    after_first_check = _AfterFirstCheck(monkeypatch, gemini_emulator)
    outcomes = {
        mode: _play(situation, mode, gemini_emulator, monkeypatch, after_first_check) for mode in MODES
    }
    assert len(set(outcomes.values())) == 1, "the modes disagree:\n" + "\n".join(
        f"  {mode:10s} {kind}: {message}" for mode, (kind, message) in outcomes.items()
    )
    kind, message = outcomes["hook"]
    assert kind == situation.expected, message
    if kind != "ok":
        assert issubclass(EXPECTED_TYPES[kind], GeminiFilesError)
    assert "AIza-revoked-key" not in message


FILE = f"{NAME} (scan-2026-11.txt)"
MESSAGES = {
    "failed": f"{FILE} FAILED processing: The scan is unreadable. Check that it is a valid text/plain, then "
    "upload a valid copy of the document.",
    "deleted": f"{FILE} does not exist: it was deleted, expired (uploads live 48 hours, registrations up to "
    "30 days) or belongs to another project. Upload or register the source again.",
    "timeout": f"1 of 1 Gemini file(s) still not ACTIVE after the timeout of 0.3 s: {FILE}. Raise the "
    "timeout",
    "too_many_failed_polls": f"Gave up waiting for {FILE} after 5 polls in a row could not check them",
    "bad_key": "Gemini rejected the API key of connection 'wait_modes'",
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_the_messages_name_the_file_and_the_fix(
    name: str, gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One readable message per situation (checked once here; the test above shows every mode gives it)."""
    after_first_check = _AfterFirstCheck(monkeypatch, gemini_emulator)
    _, message = _play(SITUATIONS[name], "poke", gemini_emulator, monkeypatch, after_first_check)
    assert MESSAGES[name] in message
