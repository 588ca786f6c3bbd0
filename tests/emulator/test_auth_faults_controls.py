"""API-key checks, fault injection, the /_emulator control endpoints and what the emulator logs.

Emulator only: these steer the emulator (faults, controls) or read its logs.
"""

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

from .conftest import make_client

pytestmark = pytest.mark.emulator_only
# No keep-alive: a connection left idle past the emulator's socket_timeout (60 s; slow tests run between
# uses) can be closed by the server just as the next test sends on it.
http = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
KEY = {"x-goog-api-key": "test-api-key"}


def _upload(client: genai.Client) -> types.File:
    return client.files.upload(file=io.BytesIO(b"abc"), config={"mime_type": "text/plain"})


def test_key_is_compared_in_constant_time(gemini_emulator: GeminiEmulator, monkeypatch) -> None:
    import hmac

    from airflow_gemini_files.emulator import server

    seen: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        seen.append((given, expected))
        return compare(given, expected)

    monkeypatch.setattr(server.hmac, "compare_digest", spy)
    wrong, right = make_client(gemini_emulator, api_key="test-api-kez"), make_client(gemini_emulator)
    with pytest.raises(errors.ClientError):
        list(wrong.files.list())
    assert list(right.files.list()) == []
    assert seen == [(b"test-api-kez", b"test-api-key"), (b"test-api-key", b"test-api-key")]


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
    assert "exceeded your current quota" in (info.value.message or "")
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


def test_injected_429_carries_quota_failure_retry_info_and_retry_after(
    gemini_emulator: GeminiEmulator,
) -> None:
    gemini_emulator.inject_faults("generate", sequence=[429], retry_delay=37)
    reply = http.post(
        f"{gemini_emulator.base_url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers=KEY,
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "37"
    details = {d["@type"].rsplit(".", 1)[1]: d for d in reply.json()["error"]["details"]}
    assert details["RetryInfo"]["retryDelay"] == "37s"
    violation = details["QuotaFailure"]["violations"][0]
    assert violation["quotaMetric"] == "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    assert violation["quotaDimensions"] == {"location": "global", "model": "gemini-2.5-flash"}
    assert details["Help"]["links"][0]["url"] == "https://ai.google.dev/gemini-api/docs/rate-limits"

    gemini_emulator.inject_faults("get", sequence=[503])
    unavailable = http.get(f"{gemini_emulator.base_url}/v1beta/files/abc", headers=KEY)
    assert unavailable.status_code == 503
    assert "details" not in unavailable.json()["error"]
    assert "retry-after" not in unavailable.headers


def test_a_retry_after_header_on_any_injected_error(gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject_faults("get", sequence=[503, 429], retry_after=4.5, retry_delay=2)
    unavailable = http.get(f"{gemini_emulator.base_url}/v1beta/files/abc", headers=KEY)
    assert (unavailable.status_code, unavailable.headers["retry-after"]) == (503, "4.5")
    assert "details" not in unavailable.json()["error"]
    limited = http.get(f"{gemini_emulator.base_url}/v1beta/files/abc", headers=KEY)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "4.5")  # the header as told
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in limited.json()[
        "error"
    ]["details"]
    with pytest.raises(ValueError, match="retry_after"):
        gemini_emulator.inject_faults("get", retry_after=-1)


def test_sdk_parses_the_429_details(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.inject_faults("list", sequence=[429], retry_delay=1.5)
    with pytest.raises(errors.ClientError) as info:
        list(client.files.list())
    details = info.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.500s"} in details


def test_invalid_fault_plans_are_refused(gemini_emulator: GeminiEmulator) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        gemini_emulator.inject_faults("upload")
    with pytest.raises(ValueError, match="cannot be injected"):
        gemini_emulator.inject_faults("get", sequence=[404])
    with pytest.raises(ValueError, match="drop_mid_chunk"):
        gemini_emulator.inject_faults("get", drop_mid_chunk=1)
    with pytest.raises(ValueError, match="retry_delay"):
        gemini_emulator.inject_faults("get", retry_delay=float("nan"))


def test_http_control_endpoints(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    base = f"{gemini_emulator.base_url}/_emulator"
    file = _upload(client)
    stats = http.get(f"{base}/stats", headers=KEY).json()
    assert isinstance(stats.pop("in_flight"), dict)  # a handler may still be finishing its answer
    assert stats == {
        "requests": {
            "upload_start": 1, "upload_chunk": 1, "upload_query": 0, "upload_cancel": 0, "get": 0, "list": 0,
            "delete": 0, "register": 0, "generate": 0, "count_tokens": 0, "models": 0, "download": 0,
            "batch_create": 0, "batch_get": 0, "batch_list": 0, "batch_cancel": 0, "batch_delete": 0,
        },
        "peak_in_flight": {"upload_start": 1, "upload_chunk": 1},
        "files": 1,
        "bytes": 3,
        "batches": 0,
    }  # fmt: skip
    assert [f["name"] for f in http.get(f"{base}/files?key=test-api-key").json()["files"]] == [file.name]

    http.headers.update(KEY)
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
    assert http.get(f"{base}/config").json()["processing_delay"] is None  # realistic
    assert http.get(f"{base}/unknown").status_code == 404
    del http.headers["x-goog-api-key"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "stats", None),
        ("POST", "reset", {}),
        ("POST", "clock", {"seconds": 60}),
        ("POST", "faults", {"operation": "*", "rate": 1}),
        ("POST", "config", {"processing_delay": 9}),
    ],
)
def test_controls_need_the_api_key_when_one_is_set(
    client: genai.Client, gemini_emulator: GeminiEmulator, method: str, path: str, body: dict | None
) -> None:
    file = _upload(client)
    url = f"{gemini_emulator.base_url}/_emulator/{path}"
    missing = http.request(method, url, json=body)
    wrong = http.request(method, url, json=body, headers={"x-goog-api-key": "guess"})
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (wrong.status_code, wrong.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert client.files.get(name=file.name or "").name == file.name  # nothing was reset or faulted
    assert gemini_emulator.settings()["processing_delay"] is None
    assert http.request(method, url, json=body, headers=KEY).status_code == 200


def test_controls_need_no_key_when_the_emulator_has_none() -> None:
    with GeminiEmulator() as open_emu:
        assert http.get(f"{open_emu.base_url}/_emulator/stats").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("clock", b'{"seconds": NaN}', "NaN is not a JSON number"),
        ("clock", b'{"seconds": Infinity}', "Infinity is not a JSON number"),
        ("clock", b'{"seconds": "1e999"}', "seconds must be a number"),
        ("clock", b'{"seconds": 1e999}', "finite number of seconds"),
        ("clock", b'{"seconds": -5}', "finite number of seconds"),
        ("fail_processing", b'{"message": "no match"}', "needs {'match'"),
        ("fail_processing", b'{"match": ""}', "needs {'match'"),
        ("config", b'{"processing_delay": -1}', "finite number of seconds"),
        ("config", b'{"register_auth": "cookies"}', "register_auth must be one of"),
        ("config", b'{"colour": "blue"}', "unexpected keyword argument"),
        ("faults", b'{"operation": "get", "latency": "slow"}', "latency must be"),
    ],
)
def test_bad_control_bodies_get_a_clear_400(
    gemini_emulator: GeminiEmulator, path: str, body: bytes, message: str
) -> None:
    reply = http.post(f"{gemini_emulator.base_url}/_emulator/{path}", content=body, headers=KEY)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]["message"]
    assert gemini_emulator.store.clock.now() == pytest.approx(time.time(), abs=5)


def test_control_bodies_are_capped_at_one_mib(gemini_emulator: GeminiEmulator) -> None:
    body = b'{"match": "' + b"x" * (1024 * 1024) + b'"}'
    reply = http.post(f"{gemini_emulator.base_url}/_emulator/fail_processing", content=body, headers=KEY)
    assert reply.status_code == 413


def test_unknown_path_is_not_found(gemini_emulator: GeminiEmulator) -> None:
    reply = http.get(
        f"{gemini_emulator.base_url}/v1beta/cachedContents", headers={"x-goog-api-key": "test-api-key"}
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["status"] == "NOT_FOUND"


def test_cli_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_gemini_files.emulator.cli",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--processing-delay",
            "realistic",
            "--register-auth",
            "key_only",
            "--model",
            "gemini-2.5-flash",
            "--model",
            "gemini-9-test",
            "--max-inline-bytes",
            "1000",
        ],
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
        stats = http.get(f"{base_url}/_emulator/stats", headers={"x-goog-api-key": "cli-key"})
        assert stats.json()["files"] == 1
        config = http.get(f"{base_url}/_emulator/config", headers={"x-goog-api-key": "cli-key"}).json()
        assert config["processing_delay"] is None
        assert config["register_auth"] == "key_only"
        assert config["models"] == ["gemini-2.5-flash", "gemini-9-test"]
        assert config["max_inline_bytes"] == 1000
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
