"""The Batch API through the real SDK: create (inline and file), the job states, results, paging, controls."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.testing import TEST_API_KEY

from .conftest import make_client

MODEL = "gemini-2.5-flash"
HOURS = 3600.0


def _request(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"parts": [{"text": text}], "role": "user"}], **extra}


def _upload_jsonl(client: genai.Client, lines: list[Any]) -> str:
    """Upload JSONL input (dicts are serialised, strings are written as they are)."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    file = client.files.upload(file=io.BytesIO(text.encode()), config={"mime_type": "text/plain"})
    assert file.name is not None
    return file.name


def _keyed(n: int, prefix: str = "doc") -> list[dict[str, Any]]:
    return [{"key": f"{prefix}-{i}", "request": _request(f"document number {i}")} for i in range(n)]


def _state(job: types.BatchJob) -> str:
    assert job.state is not None
    return job.state.name


def _raw(emu: GeminiEmulator, path: str) -> dict[str, Any]:
    """A GET on the REST API itself, to check what the SDK does not surface (stats, done, @type)."""
    reply = httpx.get(f"{emu.base_url}/v1beta/{path}", headers={"x-goog-api-key": TEST_API_KEY}, timeout=30)
    assert reply.status_code == 200, reply.text
    payload: dict[str, Any] = reply.json()
    return payload


def _result_lines(client: genai.Client, file_name: str) -> list[dict[str, Any]]:
    # Bytes back rather than destination=: google-genai < 2.21 (still supported) has no destination.
    return [json.loads(line) for line in client.files.download(file=file_name).splitlines()]


def _file_job(
    client: genai.Client, emu: GeminiEmulator, lines: list[Any], name: str = "job"
) -> types.BatchJob:
    job = client.batches.create(model=MODEL, src=_upload_jsonl(client, lines), config={"display_name": name})
    assert job.name is not None
    return job


# ---- inline requests ----------------------------------------------------------------------------
def test_inline_job_goes_pending_running_succeeded_and_answers_every_request(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    requests = [{**_request(f"question {i}"), "metadata": {"key": f"q{i}"}} for i in range(5)]
    job = client.batches.create(model=MODEL, src=requests, config={"display_name": "nightly-inline"})
    assert job.name is not None
    assert job.name.startswith("batches/")
    assert (_state(job), job.display_name, job.model) == (
        "JOB_STATE_PENDING",
        "nightly-inline",
        f"models/{MODEL}",
    )
    assert job.end_time is None

    gemini_emulator.advance_clock(1.5)  # pending 1 s by default, then running 1 s
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_RUNNING"
    gemini_emulator.advance_clock(1)
    done = client.batches.get(name=job.name)
    assert _state(done) == "JOB_STATE_SUCCEEDED"
    assert done.create_time is not None
    assert done.end_time is not None
    assert done.update_time is not None
    assert (done.end_time - done.create_time).total_seconds() == pytest.approx(2.0, abs=0.01)
    assert done.dest is not None
    assert done.dest.inlined_responses is not None
    answers: dict[str, str] = {}
    for inlined in done.dest.inlined_responses:
        assert inlined.error is None
        assert inlined.response is not None
        assert inlined.metadata is not None
        assert inlined.response.usage_metadata is not None
        assert inlined.response.usage_metadata.total_token_count
        answers[inlined.metadata["key"]] = inlined.response.text or ""
    assert sorted(answers) == [f"q{i}" for i in range(5)]
    for key, text in answers.items():  # each answer belongs to its own request, whatever the order
        assert f"question {key[1:]}" in text


def test_inline_results_come_out_of_order_but_map_back_by_metadata(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    requests = [{**_request(f"item {i}"), "metadata": {"key": str(i)}} for i in range(8)]
    job = client.batches.create(model=MODEL, src=requests, config={"display_name": "order"})
    assert job.name is not None
    gemini_emulator.advance_clock(5)
    responses = client.batches.get(name=job.name).dest.inlined_responses  # type: ignore[union-attr]
    assert responses is not None
    keys = [r.metadata["key"] for r in responses if r.metadata]
    assert keys != [str(i) for i in range(8)]  # reordered, as python-genai#1909 reports of the live API
    assert sorted(keys, key=int) == [str(i) for i in range(8)]
    for response in responses:
        assert response.metadata is not None
        assert response.response is not None
        assert f"item {response.metadata['key']}'" in (response.response.text or "")


def test_inline_generation_config_and_system_instruction_reach_the_model(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    schema = {"type": "OBJECT", "properties": {"kind": {"type": "STRING", "enum": ["invoice", "letter"]}}}
    config = {
        "response_mime_type": "application/json",
        "response_schema": schema,
        "thinking_config": {"thinking_budget": 0},  # the SDK nests it under generationConfig: accepted
        "system_instruction": "Classify documents.",
    }
    job = client.batches.create(
        model=MODEL, src=[{**_request("an invoice"), "config": config}], config={"display_name": "schema"}
    )
    assert job.name is not None
    gemini_emulator.advance_clock(5)
    responses = client.batches.get(name=job.name).dest.inlined_responses  # type: ignore[union-attr]
    assert responses is not None
    assert responses[0].response is not None
    assert json.loads(responses[0].response.text or "") in ({"kind": "invoice"}, {"kind": "letter"})


def test_inline_batch_over_20_mb_is_refused_with_the_files_api_as_the_way_out(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    big = "x" * (21 * 1024 * 1024)
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model=MODEL, src=[_request(big)], config={"display_name": "too-big"})
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert "20971520 bytes" in (info.value.message or "")
    assert "file_name" in (info.value.message or "")
    assert gemini_emulator.batches() == []


# ---- an input file and a results file ----------------------------------------------------------
def test_file_job_writes_a_generated_results_file_keyed_by_request(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    job = _file_job(client, gemini_emulator, _keyed(6), name="nightly-file")
    gemini_emulator.advance_clock(5)
    done = client.batches.get(name=job.name)  # type: ignore[arg-type]
    assert _state(done) == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None
    assert done.dest.inlined_responses is None
    assert done.dest.file_name == f"files/batch-{job.name.removeprefix('batches/')}"  # type: ignore[union-attr]

    results = client.files.get(name=done.dest.file_name)
    assert results.source is not None
    assert results.source.name == "GENERATED"
    assert results.download_uri is not None
    assert results.download_uri.endswith(":download?alt=media")
    assert results.state is not None
    assert results.state.name == "ACTIVE"

    lines = _result_lines(client, done.dest.file_name)
    assert [line["key"] for line in lines] != [f"doc-{i}" for i in range(6)]  # shuffled by default
    by_key = {line["key"]: line for line in lines}
    assert sorted(by_key) == sorted(f"doc-{i}" for i in range(6))
    for key, line in by_key.items():
        response = types.GenerateContentResponse.model_validate(line["response"])
        assert f"document number {key.removeprefix('doc-')}'" in (response.text or "")
        assert response.usage_metadata is not None
        assert response.usage_metadata.prompt_token_count
    as_bytes = client.files.download(file=results)  # the File object (it carries download_uri) works too
    assert len(as_bytes) == int(results.size_bytes or 0)
    without_alt = httpx.get(
        results.download_uri.removesuffix("?alt=media"), headers={"x-goog-api-key": TEST_API_KEY}, timeout=30
    )
    assert without_alt.status_code == 400
    assert "alt=media" in without_alt.json()["error"]["message"]


def test_results_in_input_order_when_configured(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure_batches(result_order="input")
    job = _file_job(client, gemini_emulator, _keyed(5))
    gemini_emulator.advance_clock(5)
    file_name = client.batches.get(name=job.name).dest.file_name  # type: ignore[arg-type, union-attr]
    assert file_name is not None
    assert [line["key"] for line in _result_lines(client, file_name)] == [f"doc-{i}" for i in range(5)]


def test_the_operation_on_the_wire(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    job = _file_job(client, gemini_emulator, _keyed(3), name="wire")
    name = job.name or ""
    pending = _raw(gemini_emulator, name)
    meta = pending["metadata"]
    assert meta["@type"] == "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
    assert (meta["name"], meta["state"], meta["displayName"], meta["model"]) == (
        name,
        "BATCH_STATE_PENDING",
        "wire",
        f"models/{MODEL}",
    )
    assert meta["batchStats"] == {"requestCount": "3", "pendingRequestCount": "3"}  # int64 as strings
    assert "done" not in pending
    assert "endTime" not in meta
    assert "output" not in meta

    gemini_emulator.advance_clock(5)
    done = _raw(gemini_emulator, name)
    assert done["done"] is True
    assert done["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert done["metadata"]["batchStats"] == {"requestCount": "3", "successfulRequestCount": "3"}
    assert done["metadata"]["output"] == {"responsesFile": f"files/batch-{name.removeprefix('batches/')}"}
    assert done["response"]["@type"].endswith(".GenerateContentBatchOutput")
    assert done["response"]["responsesFile"] == done["metadata"]["output"]["responsesFile"]
    assert done["metadata"]["endTime"] >= done["metadata"]["createTime"]


def test_deleting_the_input_file_after_create_does_not_affect_the_job(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    source = _upload_jsonl(client, _keyed(2))
    job = client.batches.create(model=MODEL, src=source, config={"display_name": "snapshot"})
    client.files.delete(name=source)
    gemini_emulator.advance_clock(5)
    done = client.batches.get(name=job.name)  # type: ignore[arg-type]
    assert _state(done) == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None
    assert done.dest.file_name is not None
    assert len(_result_lines(client, done.dest.file_name)) == 2


# ---- per-request errors --------------------------------------------------------------------------
def test_per_request_errors_land_in_result_lines_and_the_job_still_succeeds(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    doc = client.files.upload(file=io.BytesIO(b"hello world"), config={"mime_type": "text/plain"})
    gone = client.files.upload(file=io.BytesIO(b"soon gone"), config={"mime_type": "text/plain"})
    assert doc.uri
    assert gone.uri
    assert gone.name

    def parts(*items: dict[str, Any]) -> dict[str, Any]:
        return {"contents": [{"parts": list(items)}]}

    gemini_emulator.configure(processing_delay=3600)  # this one is still PROCESSING when the job runs
    processing = client.files.upload(file=io.BytesIO(b"still processing"), config={"mime_type": "text/plain"})
    gemini_emulator.configure(processing_delay=0)
    lines = [
        {"key": "ok", "request": parts({"text": "read"}, {"fileData": {"fileUri": doc.uri}})},
        {"key": "gone", "request": parts({"fileData": {"fileUri": gone.uri}})},
        {"key": "no-contents", "request": {"generationConfig": {"temperature": 0}}},
        {"key": "bad-inline", "request": parts({"inlineData": {"mimeType": "text/plain", "data": "%%"}})},
    ]
    source = _upload_jsonl(client, lines)
    source_processing = _upload_jsonl(
        client, [{"key": "processing", "request": parts({"fileData": {"fileUri": processing.uri}})}]
    )
    jobs = [
        client.batches.create(model=MODEL, src=source, config={"display_name": "errors"}),
        client.batches.create(model=MODEL, src=source_processing, config={"display_name": "processing"}),
    ]
    client.files.delete(name=gone.name)  # after create, before the job runs
    gemini_emulator.advance_clock(5)

    by_key: dict[str, dict[str, Any]] = {}
    for job in jobs:
        done = client.batches.get(name=job.name)  # type: ignore[arg-type]
        assert (
            _state(done) == "JOB_STATE_SUCCEEDED"
        )  # failed requests do not fail the job (python-genai#2693)
        assert done.dest is not None
        assert done.dest.file_name is not None
        by_key.update({line["key"]: line for line in _result_lines(client, done.dest.file_name)})
    assert "response" in by_key["ok"]
    assert "error" not in by_key["ok"]
    assert by_key["gone"]["error"]["code"] == 7  # PERMISSION_DENIED: the file no longer exists
    assert gone.name.removeprefix("files/") in by_key["gone"]["error"]["message"]
    assert by_key["no-contents"]["error"]["code"] == 3  # INVALID_ARGUMENT
    assert "contents" in by_key["no-contents"]["error"]["message"]
    assert by_key["bad-inline"]["error"]["code"] == 3
    assert by_key["processing"]["error"]["code"] == 9  # FAILED_PRECONDITION: not ACTIVE when the job ran
    assert "not in an ACTIVE state" in by_key["processing"]["error"]["message"]
    stats = _raw(gemini_emulator, jobs[0].name or "")["metadata"]["batchStats"]
    assert stats == {"requestCount": "4", "successfulRequestCount": "1", "failedRequestCount": "3"}


# ---- refused at create ------------------------------------------------------------------------------
def test_unknown_model_is_not_found(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model="gpt-4o", src=[_request("hi")], config={"display_name": "x"})
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    assert "models/gpt-4o is not found" in (info.value.message or "")
    assert "batchGenerateContent" in (info.value.message or "")


def test_malformed_jsonl_lines_refuse_the_whole_job_naming_each_line(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    lines: list[Any] = [
        _keyed(1)[0],
        '{"key": "broken", "request": {',
        ["not", "an", "object"],
        {"key": 7, "request": _request("numeric key")},
        {"key": "no-request"},
        "",
    ]
    with pytest.raises(errors.ClientError) as info:
        _file_job(client, gemini_emulator, lines)
    message = info.value.message or ""
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    for number in (2, 3, 4, 5, 6):
        assert f"Error on line {number}:" in message
    assert "Error on line 1:" not in message
    assert "invalid JSON, near column" in message
    assert gemini_emulator.batches() == []


def test_thinking_config_outside_generation_config_is_refused(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    misplaced = {"key": "a", "request": {**_request("think"), "thinking_config": {"thinking_budget": 0}}}
    with pytest.raises(errors.ClientError) as info:
        _file_job(client, gemini_emulator, [misplaced])
    assert info.value.code == 400
    assert "no such field: 'thinking_config'" in (info.value.message or "")

    nested = {
        "key": "b",
        "request": {**_request("think"), "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
    }
    job = _file_job(client, gemini_emulator, [nested])
    gemini_emulator.advance_clock(5)
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_SUCCEEDED"  # type: ignore[arg-type]


def test_missing_empty_or_unready_input_files_are_refused(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    with pytest.raises(errors.ClientError) as missing:
        client.batches.create(model=MODEL, src="files/doesnotexist", config={"display_name": "x"})
    assert (missing.value.code, missing.value.status) == (403, "PERMISSION_DENIED")

    empty = client.files.upload(file=io.BytesIO(b""), config={"mime_type": "text/plain"})
    with pytest.raises(errors.ClientError) as no_lines:
        client.batches.create(model=MODEL, src=empty.name or "", config={"display_name": "x"})
    assert no_lines.value.code == 400
    assert "empty" in (no_lines.value.message or "")

    gemini_emulator.configure(processing_delay=60)
    unready = _upload_jsonl(client, _keyed(1))
    with pytest.raises(errors.ClientError) as processing:
        client.batches.create(model=MODEL, src=unready, config={"display_name": "x"})
    assert (processing.value.code, processing.value.status) == (400, "FAILED_PRECONDITION")
    assert gemini_emulator.batches() == []


# ---- the other terminal states ------------------------------------------------------------------------
def test_cancel_a_running_job(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure_batches(seconds_per_request=10)
    job = _file_job(client, gemini_emulator, _keyed(6))
    gemini_emulator.advance_clock(1 + 25)  # running; two of six answered
    name = job.name or ""
    running = _raw(gemini_emulator, name)["metadata"]
    assert running["state"] == "BATCH_STATE_RUNNING"
    assert running["batchStats"] == {
        "requestCount": "6",
        "pendingRequestCount": "4",
        "successfulRequestCount": "2",
    }

    client.batches.cancel(name=name)
    cancelled = client.batches.get(name=name)
    assert _state(cancelled) == "JOB_STATE_CANCELLED"  # at once: the wire has no CANCELLING state
    assert cancelled.end_time is not None
    assert cancelled.dest is None
    assert not [f for f in gemini_emulator.files() if f["name"].startswith("files/batch-")]
    gemini_emulator.advance_clock(3600)
    assert _state(client.batches.get(name=name)) == "JOB_STATE_CANCELLED"
    with pytest.raises(errors.ClientError) as again:
        client.batches.cancel(name=name)
    assert (again.value.code, again.value.status) == (400, "FAILED_PRECONDITION")
    assert gemini_emulator.stats()["requests"]["batch_cancel"] == 2


def test_fail_batches_fails_running_jobs_now_and_future_jobs_when_they_start(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure_batches(running_seconds=60)
    first = _file_job(client, gemini_emulator, _keyed(2), name="nightly-a")
    gemini_emulator.advance_clock(2)
    assert gemini_emulator.fail_batches("nightly", "Internal error while processing the batch.") == [
        first.name
    ]
    failed = client.batches.get(name=first.name)  # type: ignore[arg-type]
    assert _state(failed) == "JOB_STATE_FAILED"
    assert failed.dest is None
    raw = _raw(gemini_emulator, first.name or "")
    assert raw["done"] is True
    assert raw["error"] == {"code": 13, "message": "Internal error while processing the batch."}

    later = _file_job(client, gemini_emulator, _keyed(1), name="nightly-b")
    other = _file_job(client, gemini_emulator, _keyed(1), name="weekly")
    assert _state(client.batches.get(name=later.name)) == "JOB_STATE_PENDING"  # type: ignore[arg-type]
    gemini_emulator.advance_clock(120)
    assert _state(client.batches.get(name=later.name)) == "JOB_STATE_FAILED"  # type: ignore[arg-type]
    assert _state(client.batches.get(name=other.name)) == "JOB_STATE_SUCCEEDED"  # type: ignore[arg-type]


def test_a_held_job_stays_pending_until_released_or_expires_after_48_hours(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.hold_batches("stuck")
    stuck = _file_job(client, gemini_emulator, _keyed(1), name="stuck-job")
    released = _file_job(client, gemini_emulator, _keyed(1), name="stuck-but-released")
    free = _file_job(client, gemini_emulator, _keyed(1), name="free")
    gemini_emulator.advance_clock(24 * HOURS)
    assert _state(client.batches.get(name=stuck.name)) == "JOB_STATE_PENDING"  # type: ignore[arg-type]
    assert _state(client.batches.get(name=free.name)) == "JOB_STATE_SUCCEEDED"  # type: ignore[arg-type]

    assert gemini_emulator.release_batches("released") == [released.name]
    gemini_emulator.advance_clock(5)
    assert _state(client.batches.get(name=released.name)) == "JOB_STATE_SUCCEEDED"  # type: ignore[arg-type]
    assert _state(client.batches.get(name=stuck.name)) == "JOB_STATE_PENDING"  # type: ignore[arg-type]

    gemini_emulator.advance_clock(24 * HOURS)
    expired = client.batches.get(name=stuck.name)  # type: ignore[arg-type]
    assert _state(expired) == "JOB_STATE_EXPIRED"
    assert expired.dest is None
    assert expired.create_time is not None
    assert expired.end_time is not None
    assert (expired.end_time - expired.create_time).total_seconds() == pytest.approx(48 * HOURS, abs=1)
    later = _file_job(client, gemini_emulator, _keyed(1), name="stuck-later")  # the rule still holds
    gemini_emulator.advance_clock(5)
    assert _state(client.batches.get(name=later.name)) == "JOB_STATE_PENDING"  # type: ignore[arg-type]
    assert gemini_emulator.release_batches("stuck") == [later.name]


def test_a_job_too_slow_for_48_hours_expires_and_publishes_nothing(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure_batches(seconds_per_request=20 * HOURS)
    job = _file_job(client, gemini_emulator, _keyed(3))
    gemini_emulator.advance_clock(47 * HOURS)
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_RUNNING"  # type: ignore[arg-type]
    gemini_emulator.advance_clock(2 * HOURS)
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_EXPIRED"  # type: ignore[arg-type]
    assert not [f for f in gemini_emulator.files() if f["name"].startswith("files/batch-")]


def test_expire_batches_ends_matching_jobs_now(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    job = _file_job(client, gemini_emulator, _keyed(1), name="to-expire")
    assert gemini_emulator.expire_batches("to-expire") == [job.name]
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_EXPIRED"  # type: ignore[arg-type]
    assert gemini_emulator.expire_batches("to-expire") == []


def test_a_small_job_finishes_within_seconds_on_the_wall_clock(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    job = _file_job(client, gemini_emulator, _keyed(3))
    deadline = time.monotonic() + 60  # a bound for a stuck job, not a speed requirement
    while _state(state := client.batches.get(name=job.name)) != "JOB_STATE_SUCCEEDED":  # type: ignore[arg-type]
        assert _state(state) in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")
        assert time.monotonic() < deadline, "the default timing should finish a small job in seconds"
        time.sleep(0.2)


# ---- list / delete --------------------------------------------------------------------------------------
def test_list_pages_newest_first_and_leaves_inline_results_out(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    names = [_file_job(client, gemini_emulator, _keyed(1), name=f"job-{i}").name for i in range(4)]
    inline = client.batches.create(model=MODEL, src=[_request("hi")], config={"display_name": "inline"})
    names.append(inline.name)
    gemini_emulator.advance_clock(5)

    first = client.batches.list(config={"page_size": 2})
    assert [j.name for j in first.page] == names[::-1][:2]
    assert first.page[0].dest is None  # the inline job: list omits inlined responses (cookbook)
    assert first.page[1].dest is not None
    assert first.page[1].dest.file_name
    assert [j.name for j in client.batches.list(config={"page_size": 2})] == names[::-1]
    assert list(client.batches.list()) == []  # no page_size: an empty page, as python-genai#1250 reports
    with pytest.raises(errors.ClientError):
        client.batches.list(config={"page_size": 2, "page_token": "not-a-token"})
    full = client.batches.get(name=inline.name)  # type: ignore[arg-type]
    assert full.dest is not None
    assert full.dest.inlined_responses


def test_delete_a_finished_job_keeps_its_results_file(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    job = _file_job(client, gemini_emulator, _keyed(2))
    name = job.name or ""
    with pytest.raises(errors.ClientError) as running:
        client.batches.delete(name=name)
    assert (running.value.code, running.value.status) == (400, "FAILED_PRECONDITION")
    assert "cancel" in (running.value.message or "")

    gemini_emulator.advance_clock(5)
    results = client.batches.get(name=name).dest.file_name  # type: ignore[union-attr]
    assert results is not None
    client.batches.delete(name=name)
    with pytest.raises(errors.ClientError) as gone:
        client.batches.get(name=name)
    assert (gone.value.code, gone.value.status) == (404, "NOT_FOUND")
    with pytest.raises(errors.ClientError):
        client.batches.delete(name=name)
    assert len(_result_lines(client, results)) == 2  # the results file is not deleted with the job
    client.files.delete(name=results)
    assert gemini_emulator.batches() == []
    assert [f["source"] for f in gemini_emulator.files()] == ["UPLOADED"]  # only the input JSONL is left


def test_cancel_then_delete_leaves_nothing_behind(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    source = _upload_jsonl(client, _keyed(3))
    job = client.batches.create(model=MODEL, src=source, config={"display_name": "cleanup"})
    client.batches.cancel(name=job.name)  # type: ignore[arg-type]
    client.batches.delete(name=job.name)  # type: ignore[arg-type]
    client.files.delete(name=source)
    assert gemini_emulator.batches() == []
    assert gemini_emulator.files() == []
    assert gemini_emulator.stats()["batches"] == 0


# ---- downloads ----------------------------------------------------------------------------------------
def test_uploaded_files_refuse_download(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    uploaded = client.files.upload(file=io.BytesIO(b"secret"), config={"mime_type": "text/plain"})
    assert uploaded.name
    assert uploaded.download_uri is None
    with pytest.raises(errors.ClientError) as info:
        client.files.download(file=uploaded.name)
    assert info.value.code == 400
    assert "Only generated files" in (info.value.message or "")
    with pytest.raises(ValueError, match="Only generated files"):
        client.files.download(file=uploaded)  # the SDK refuses a File without download_uri itself
    with pytest.raises(errors.ClientError) as missing:
        client.files.download(file="files/nosuchfile")
    assert missing.value.code == 403


# ---- faults, stats, controls, other clients -------------------------------------------------------
def test_faults_target_batch_operations_and_stats_count_them(gemini_emulator: GeminiEmulator) -> None:
    retrying = genai.Client(
        api_key=TEST_API_KEY,
        http_options=types.HttpOptions(
            base_url=gemini_emulator.base_url,
            retry_options=types.HttpRetryOptions(attempts=3, initial_delay=0.01, max_delay=0.05),
        ),
    )
    gemini_emulator.inject_faults("batch_create", sequence=[503])
    gemini_emulator.inject_faults("batch_get", sequence=[429, 500])
    job = retrying.batches.create(model=MODEL, src=[_request("hi")], config={"display_name": "faults"})
    assert _state(retrying.batches.get(name=job.name)) == "JOB_STATE_PENDING"  # type: ignore[arg-type]
    gemini_emulator.inject_faults("batch_list", sequence=[429])
    plain = make_client(gemini_emulator)  # no retries: the 429 reaches the caller
    with pytest.raises(errors.ClientError):
        plain.batches.list(config={"page_size": 5})
    requests = gemini_emulator.stats()["requests"]
    assert (requests["batch_create"], requests["batch_get"], requests["batch_list"]) == (2, 3, 1)
    assert gemini_emulator.stats()["batches"] == 1
    assert len(gemini_emulator.batches()) == 1  # only one job although create was sent twice


def test_http_controls(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    http = httpx.Client(
        base_url=f"{gemini_emulator.base_url}/_emulator",
        headers={"x-goog-api-key": gemini_emulator.api_key},
        timeout=30,
    )
    assert (
        http.post("/batches/config", json={"pending_seconds": 0, "running_seconds": 5}).json()[
            "running_seconds"
        ]
        == 5
    )
    assert http.post("/batches/config", json={"result_order": "random"}).status_code == 400
    assert http.post("/batches/hold", json={"match": "held"}).json() == {"batches": []}
    job = _file_job(client, gemini_emulator, _keyed(1), name="held")
    listed = http.get("/batches").json()["batches"]
    assert [b["name"] for b in listed] == [job.name]
    assert listed[0]["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert http.post("/batches/release", json={"match": "held"}).json() == {"batches": [job.name]}
    http.post("/clock", json={"seconds": 10})
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_SUCCEEDED"  # type: ignore[arg-type]
    second = _file_job(client, gemini_emulator, _keyed(1), name="second")
    assert http.post("/batches/expire", json={"match": "second"}).json() == {"batches": [second.name]}
    third = _file_job(client, gemini_emulator, _keyed(1), name="third")
    assert http.post("/batches/fail", json={"match": "third", "message": "boom"}).json() == {
        "batches": [third.name]
    }
    assert _state(client.batches.get(name=third.name)) == "JOB_STATE_FAILED"  # type: ignore[arg-type]
    assert http.get("/batches/nope").status_code == 404
    http.post("/reset")
    assert gemini_emulator.batches() == []
    assert gemini_emulator.batch_settings()["running_seconds"] == 1.0


def test_v1_and_the_async_client(gemini_emulator: GeminiEmulator) -> None:
    client = make_client(gemini_emulator, api_version="v1")

    async def run() -> tuple[str, str]:
        job = await client.aio.batches.create(
            model=MODEL, src=[_request("async")], config={"display_name": "aio"}
        )
        assert job.name is not None
        gemini_emulator.advance_clock(5)
        done = await client.aio.batches.get(name=job.name)
        return _state(done), _raw(gemini_emulator, job.name)["metadata"]["state"]

    assert asyncio.run(run()) == ("JOB_STATE_SUCCEEDED", "BATCH_STATE_SUCCEEDED")


def test_configure_batches_refuses_nonsense(gemini_emulator: GeminiEmulator) -> None:
    with pytest.raises(ValueError, match="result_order"):
        gemini_emulator.configure_batches(result_order="random")
    with pytest.raises(ValueError, match="pending_seconds"):
        gemini_emulator.configure_batches(pending_seconds=-1)
    assert gemini_emulator.batch_settings()["pending_seconds"] == 1.0


def test_inline_data_in_a_batch_request_is_described(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    data = base64.b64encode(b"alpha beta gamma").decode()
    request = {
        "contents": [
            {"parts": [{"text": "describe"}, {"inline_data": {"mime_type": "text/plain", "data": data}}]}
        ]
    }
    job = client.batches.create(model=MODEL, src=[request], config={"display_name": "inline-data"})
    gemini_emulator.advance_clock(5)
    responses = client.batches.get(name=job.name).dest.inlined_responses  # type: ignore[arg-type, union-attr]
    assert responses is not None
    assert responses[0].response is not None
    assert "3 words" in (responses[0].response.text or "")


def test_a_job_read_the_moment_it_finishes_already_carries_its_results(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    """The operation is built from the clock at reply time: a job that finished between the
    bookkeeping and the reply is published first, never shown SUCCEEDED without its output."""
    job = _file_job(client, gemini_emulator, _keyed(2))
    gemini_emulator.advance_clock(1.5)  # running: both requests answered, 0.5 s left to run
    gemini_emulator.store.clock.advance(1)  # no catch-up pass: the reply itself must publish the results
    store = gemini_emulator.batch_store
    operation = store.operation(store.job(job.name or ""), "v1beta")
    assert operation["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert operation["metadata"]["output"]["responsesFile"].startswith("files/batch-")
