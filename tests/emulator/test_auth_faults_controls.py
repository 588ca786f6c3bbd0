"""API-key checks, fault injection, the /_emulator control endpoints and what the emulator logs."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time

import httpx
import pytest
from google import genai
from google.genai import errors, types

from airflow_gemini_files.emulator import GeminiEmulator
from tests.emulator.conftest import make_client

http = httpx.Client(timeout=30)


def _upload(client: genai.Client) -> types.File:
    return client.files.upload(file=io.BytesIO(b"abc"), config={"mime_type": "text/plain"})


def test_wrong_api_key_is_invalid_argument(gemini_emulator: GeminiEmulator) -> None:
    client = make_client(gemini_emulator, api_key="wrong-key")
    with pytest.raises(errors.ClientError) as info:
        list(client.files.list())
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert "API key not valid" in (info.value.message or "")
    with pytest.raises(errors.ClientError):
        _upload(client)


def test_missing_api_key_is_permission_denied(gemini_emulator: GeminiEmulator) -> None:
    reply = http.get(f"{gemini_emulator.base_url}/v1beta/files")
    assert reply.status_code == 403
    assert reply.json()["error"]["status"] == "PERMISSION_DENIED"


def test_key_in_query_string_works_and_is_redacted_from_logs(
    gemini_emulator: GeminiEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="airflow_gemini_files.emulator"):
        reply = http.get(f"{gemini_emulator.base_url}/v1beta/files?key=test-api-key&pageSize=5")
        client = make_client(gemini_emulator)
        _upload(client)
    assert reply.status_code == 200
    assert "key=REDACTED" in caplog.text
    assert "test-api-key" not in caplog.text


def test_scripted_faults_are_retried_by_the_sdk(gemini_emulator: GeminiEmulator) -> None:
    client = genai.Client(
        api_key="test-api-key",
        http_options=types.HttpOptions(
            base_url=gemini_emulator.base_url,
            retry_options=types.HttpRetryOptions(attempts=4, initial_delay=0.01, max_delay=0.05),
        ),
    )
    gemini_emulator.inject_faults("list", sequence=[503, 429, 500])
    assert list(client.files.list()) == []
    assert gemini_emulator.stats()["requests"]["list"] == 4


def test_fault_statuses_reach_the_caller(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject_faults("generate", sequence=[429, 0, 503])
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert (info.value.code, info.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert client.models.generate_content(model="gemini-2.5-flash", contents="hi").text
    with pytest.raises(errors.ServerError) as server_info:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert (server_info.value.code, server_info.value.status) == (503, "UNAVAILABLE")


def test_fault_rate_is_repeatable(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    def outcomes() -> list[int]:
        gemini_emulator.inject_faults("get", rate=0.5, statuses=(500, 503))
        file = _upload(client)
        seen = []
        for _ in range(20):
            try:
                client.files.get(name=file.name or "")
                seen.append(200)
            except errors.APIError as exc:
                seen.append(exc.code)
        return seen

    first = outcomes()
    gemini_emulator.reset()
    assert outcomes() == first
    assert {200, 500, 503} <= set(first)


def test_all_operations_wildcard_and_latency(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject_faults("*", latency=0.2)
    started = time.monotonic()
    list(client.files.list())
    assert time.monotonic() - started >= 0.2


def test_upload_chunk_fault_fails_the_sdk_upload(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.inject_faults("upload_start", sequence=[503])
    with pytest.raises(errors.ServerError):
        _upload(client)
    assert gemini_emulator.files() == []


def test_invalid_fault_plans_are_refused(gemini_emulator: GeminiEmulator) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        gemini_emulator.inject_faults("upload")
    with pytest.raises(ValueError, match="cannot be injected"):
        gemini_emulator.inject_faults("get", sequence=[404])
    with pytest.raises(ValueError, match="drop_mid_chunk"):
        gemini_emulator.inject_faults("get", drop_mid_chunk=1)


def test_http_control_endpoints(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    base = f"{gemini_emulator.base_url}/_emulator"
    file = _upload(client)
    stats = http.get(f"{base}/stats").json()
    assert stats == {
        "requests": {
            "upload_start": 1, "upload_chunk": 1, "upload_query": 0, "get": 0, "list": 0,
            "delete": 0, "register": 0, "generate": 0,
        },
        "peak_in_flight": {"upload_start": 1, "upload_chunk": 1},
        "files": 1,
        "bytes": 3,
    }  # fmt: skip
    assert [f["name"] for f in http.get(f"{base}/files").json()["files"]] == [file.name]

    assert http.post(f"{base}/config", json={"processing_delay": 5}).json()["processing_delay"] == 5
    assert http.post(f"{base}/fail_processing", json={"match": "slow", "message": "nope"}).status_code == 200
    slow = client.files.upload(
        file=io.BytesIO(b"x"), config={"mime_type": "text/plain", "display_name": "slow"}
    )
    assert slow.state is not None
    assert slow.state.name == "PROCESSING"
    assert http.post(f"{base}/clock", json={"seconds": 6}).status_code == 200
    failed = client.files.get(name=slow.name or "")
    assert failed.state is not None
    assert failed.state.name == "FAILED"

    assert http.post(f"{base}/faults", json={"operation": "get", "sequence": [503]}).status_code == 200
    with pytest.raises(errors.ServerError):
        client.files.get(name=file.name or "")
    bad = http.post(f"{base}/faults", json={"operation": "nope"})
    assert bad.status_code == 400

    assert http.post(f"{base}/reset").status_code == 200
    assert http.get(f"{base}/stats").json()["files"] == 0
    assert http.get(f"{base}/config").json()["processing_delay"] == 0
    assert http.get(f"{base}/unknown").status_code == 404


def test_unknown_path_is_not_found(gemini_emulator: GeminiEmulator) -> None:
    reply = http.get(
        f"{gemini_emulator.base_url}/v1beta/cachedContents", headers={"x-goog-api-key": "test-api-key"}
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["status"] == "NOT_FOUND"


def test_cli_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_gemini_files.emulator.cli", "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        client = genai.Client(api_key="cli-key", http_options=types.HttpOptions(base_url=base_url))
        file = _upload(client)
        assert [f.name for f in client.files.list()] == [file.name]
        assert http.get(f"{base_url}/_emulator/stats").json()["files"] == 1
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
