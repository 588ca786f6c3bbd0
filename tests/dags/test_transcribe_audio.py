"""The transcribe-and-summarise example, with the sensor deferred to its trigger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from airflow_gemini_files.triggers.files import GeminiFileActiveTrigger


def test_audio_is_transcribed_summarised_and_deleted_after_a_deferred_wait(
    run_dag: Any, gemini_emulator: Any, gemini_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Processing takes an hour of emulator time, so the sensor's first check finds the file PROCESSING
    # and defers; once its trigger runs, the emulator's clock jumps ahead and the file is ACTIVE.
    gemini_emulator.configure(processing_delay=3600)
    triggered: list[list[str]] = []
    original_run = GeminiFileActiveTrigger.run

    async def recording_run(self: GeminiFileActiveTrigger) -> AsyncIterator[Any]:
        triggered.append(list(self.file_names))
        gemini_emulator.advance_clock(3600)
        async for event in original_run(self):
            yield event

    monkeypatch.setattr(GeminiFileActiveTrigger, "run", recording_run)

    run = run_dag("gemini_transcribe_audio")

    assert run.state == "success", run.tasks
    [names] = triggered  # the sensor deferred once, for the one uploaded file
    uploaded = run.xcom("upload_audio")
    assert names == [uploaded.name]
    assert uploaded.mime_type == "audio/wav"
    assert "WAV audio, 1.500 s" in run.xcom("transcribe")
    summary = run.xcom("summarise")
    assert set(summary) == {"summary", "speakers", "action_items"}
    assert run.xcom("summarise", key="usage")["total_token_count"] > 0
    assert gemini_emulator.files() == []


def test_a_recording_gemini_cannot_process_fails_the_run_and_is_still_deleted(
    run_dag: Any, gemini_emulator: Any, gemini_connection: str
) -> None:
    gemini_emulator.fail_processing("support_call_chime.wav", "Unsupported audio codec.")
    run = run_dag("gemini_transcribe_audio")

    assert run.state == "failed", run.tasks
    assert run.tasks["wait_active"] == "failed"
    assert run.tasks["delete_audio"] == "success"
    assert gemini_emulator.files() == []
