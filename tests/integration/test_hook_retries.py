"""The hook's retries on the wire: the real SDK against the emulator's 429s (RetryInfo) and Retry-After.

Every call waits what the server asks for (``RetryInfo.retryDelay``, else ``Retry-After``) when that is
longer than the backoff, and gives up once its waits would pass ``retry_max_total_wait``. The hook's
``sleep`` records the waits instead of sleeping: nothing here depends on the wall clock.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import pytest
from google.genai import errors

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.exceptions import GeminiFilesError
from airflow_gemini_files.hooks.gemini import GeminiHook

SAMPLE = str(resources.files("airflow_gemini_files.samples").joinpath("orders_2026-11.csv"))


def retrying_hook(
    monkeypatch: pytest.MonkeyPatch, emulator: GeminiEmulator, **extra: object
) -> tuple[GeminiHook, list[float]]:
    """A hook whose own backoff is tiny (so the server's delays show), and the list of its waits."""
    settings = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05, **extra}
    conn = {
        "conn_type": "gemini",
        "password": emulator.api_key,
        "extra": {"base_url": emulator.base_url, **settings},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_RETRIES", json.dumps(conn))
    hook = GeminiHook(gemini_conn_id="gemini_retries")
    waits: list[float] = []
    hook.sleep = waits.append
    return hook, waits


def test_an_sdk_call_waits_what_retry_info_asks(monkeypatch, gemini_emulator):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    ref = hook.upload_file(SAMPLE)
    gemini_emulator.inject_faults("get", sequence=[429, 429], retry_delay=2.5)  # Retry-After says 3
    assert hook.get_file(ref).name == ref.name
    assert waits == [2.5, 2.5]  # the precise RetryInfo, not the rounded header nor the 0.01 s backoff
    assert gemini_emulator.stats()["requests"]["get"] == 3


def test_an_sdk_call_waits_what_retry_after_asks(monkeypatch, gemini_emulator):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    gemini_emulator.inject_faults("generate", sequence=[503, 503], retry_after=4)
    response = hook.generate_content(model="gemini-2.5-flash", contents="Say hello.")
    assert response.text
    assert waits == [4, 4]
    assert gemini_emulator.stats()["requests"]["generate"] == 3


def test_without_a_server_delay_the_backoff_applies(monkeypatch, gemini_emulator):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    gemini_emulator.inject_faults("list", sequence=[503])
    assert list(hook.list_files()) == []
    assert len(waits) == 1
    assert 0.01 <= waits[0] <= 0.05  # the connection's backoff: 0.01 s, jitter up to the 0.05 s cap


def test_a_call_gives_up_before_its_waits_pass_the_total_cap(monkeypatch, gemini_emulator, caplog):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator, retry_max_total_wait=120)
    ref = hook.upload_file(SAMPLE)
    gemini_emulator.inject_faults("delete", sequence=[429, 429, 429, 429], retry_delay=50)
    with pytest.raises(errors.ClientError) as info:
        hook.delete_file(ref)
    assert info.value.code == 429  # transient: left for Airflow's task retries
    assert waits == [50, 50]  # a third 50 s wait would make 150 s > 120 s
    assert gemini_emulator.stats()["requests"]["delete"] == 3
    assert "the server asks to wait 50.0 s would pass retry_max_total_wait=120 s" in caplog.text


def test_the_attempts_cap_the_retries_too(monkeypatch, gemini_emulator):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator, retry_attempts=3)
    gemini_emulator.inject_faults("models", sequence=[429, 429, 429], retry_delay=1)
    hook.check_model("gemini-2.5-pro")  # the check cannot be made: the task goes on without it
    assert waits == [1, 1]
    assert gemini_emulator.stats()["requests"]["models"] == 3


def test_a_full_storage_quota_is_never_retried(monkeypatch, gemini_emulator):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    gemini_emulator.configure(max_project_bytes=10)
    with pytest.raises(GeminiFilesError, match="storage quota is full"):
        hook.upload_file(SAMPLE)
    assert waits == []
    assert gemini_emulator.stats()["requests"]["upload_start"] == 1


def test_upload_chunks_honour_retry_info_through_the_same_rule(monkeypatch, gemini_emulator):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    gemini_emulator.inject_faults("upload_chunk", sequence=[429], retry_delay=1.5)
    ref = hook.upload_file(SAMPLE)
    assert ref.state in ("ACTIVE", "PROCESSING")
    assert waits == [1.5]


def test_a_registration_is_repeated_only_after_a_failure_that_proves_nothing_happened(
    monkeypatch, gemini_emulator, gcs_emulator
):
    bucket = gcs_emulator.client().create_bucket("hook-retries")
    bucket.blob("a.pdf").upload_from_string(b"%PDF-1.4 a", content_type="application/pdf")
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    gemini_emulator.inject_faults("register", sequence=[429], retry_delay=2)  # refused before any work
    refs = hook.register_gcs_files(["gs://hook-retries/a.pdf"])
    assert [ref.source for ref in refs] == ["REGISTERED"]
    assert waits == [2]
    assert gemini_emulator.stats()["requests"]["register"] == 2

    gemini_emulator.inject_faults("register", sequence=[503])  # may have come after the registration
    with pytest.raises(errors.ServerError):
        hook.register_gcs_files(["gs://hook-retries/a.pdf"])
    assert waits == [2]
    assert gemini_emulator.stats()["requests"]["register"] == 3


def test_the_async_client_waits_through_the_async_sleep(monkeypatch, gemini_emulator):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    ref = hook.upload_file(SAMPLE)
    async_waits: list[float] = []

    async def record(seconds: float) -> None:
        async_waits.append(seconds)

    hook.async_sleep = record
    gemini_emulator.inject_faults("get", sequence=[429], retry_delay=3)
    assert asyncio.run(hook.aget_file(ref)).name == ref.name
    assert async_waits == [3]
    assert waits == []


def test_a_batch_job_is_created_again_only_after_a_failure_that_proves_nothing_happened(
    monkeypatch, gemini_emulator
):
    hook, waits = retrying_hook(monkeypatch, gemini_emulator)
    gemini_emulator.inject_faults("batch_create", sequence=[429], retry_delay=2)  # refused before any work
    job = hook.create_batch(model="gemini-2.5-flash", src=[{"contents": ["Hello"]}], display_name="once")
    assert waits == [2]
    assert [j["name"] for j in gemini_emulator.batches()] == [job.name]

    gemini_emulator.inject_faults("batch_create", sequence=[503])  # may have come after the job was made
    with pytest.raises(errors.ServerError):
        hook.create_batch(model="gemini-2.5-flash", src=[{"contents": ["Hello"]}], display_name="twice")
    assert waits == [2]
    assert gemini_emulator.stats()["requests"]["batch_create"] == 3

    gemini_emulator.inject_faults("batch_get", sequence=[503], retry_delay=0)  # reading a job is retried
    assert hook.get_batch(job.name).name == job.name
    assert len(waits) == 2
