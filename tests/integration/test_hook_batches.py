"""GeminiHook's Batch API methods against the Gemini (and GCS) emulator through the real google-genai SDK."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import re
from typing import Any

import pytest

from airflow_gemini_files.exceptions import (
    GeminiBatchJobError,
    GeminiBatchJobGoneError,
    GeminiFileGoneError,
    GeminiInputError,
)
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.hooks.retry import RetryPolicy
from airflow_gemini_files.refs import GeminiFileRef

MODEL = "gemini-2.5-flash"


@pytest.fixture
def hook(gemini_connection: str, gemini_emulator: Any) -> GeminiHook:
    gemini_emulator.configure(processing_delay=0)
    return GeminiHook(gemini_conn_id=gemini_connection)


def text_file(hook: GeminiHook, text: str, name: str = "doc.txt") -> GeminiFileRef:
    return hook.upload_file(io.BytesIO(text.encode()), mime_type="text/plain", display_name=name)


def jsonl_job(hook: GeminiHook, docs: dict[str, GeminiFileRef], display_name: str = "job") -> Any:
    """A file-input job, one keyed line per document, each line built by ``batch_request``."""
    lines = [
        json.dumps({"key": key, "request": hook.batch_request(contents=["Summarise.", ref])}) + "\n"
        for key, ref in docs.items()
    ]
    source = hook.upload_file(io.BytesIO("".join(lines).encode()), mime_type="application/jsonl")
    return hook.create_batch(model=MODEL, src=source.name, display_name=display_name)


def camel_case(value: Any) -> Any:
    """``value`` with every dict key in lowerCamelCase (proto3 JSON's own spelling)."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): camel_case(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_case(item) for item in value]
    return value


def test_batch_request_is_what_the_sdk_sends_inline(hook, gemini_emulator):
    doc = text_file(hook, "Invoice 42")
    config = {"system_instruction": "Be brief.", "temperature": 0.2, "response_mime_type": "application/json"}
    request = hook.batch_request(contents=["Summarise.", doc], config=config)
    # The SDK spells the fields inside fileData as field names (google-genai >= 2) or in lowerCamelCase
    # (1.x); proto3 JSON, which the API reads, accepts both.
    assert camel_case(request) == {
        "contents": [
            {
                "parts": [
                    {"text": "Summarise."},
                    {"fileData": {"fileUri": doc.uri, "mimeType": "text/plain"}},
                ],
                "role": "user",
            }
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}], "role": "user"},
        "generationConfig": {"temperature": 0.2, "responseMimeType": "application/json"},
    }
    json.dumps(request)  # plain JSON, ready for a JSONL line


def test_a_file_job_runs_to_its_end_and_its_results_stream_to_a_stream_and_to_gcs(
    hook, gemini_emulator, gcs_emulator
):
    docs = {"a": text_file(hook, "alpha", "a.txt"), "b": text_file(hook, "beta", "b.txt")}
    job = jsonl_job(hook, docs, "nightly-job")
    assert (job.display_name, policy.job_state_name(job.state)) == ("nightly-job", "JOB_STATE_PENDING")
    gemini_emulator.advance_clock(5)
    done = hook.get_batch(job.name)
    assert policy.job_verdict(done.state) is policy.JobVerdict.SUCCEEDED
    results = done.dest.file_name
    assert results == f"files/batch-{job.name.removeprefix('batches/')}"

    into = io.BytesIO()
    written = hook.download_file(results, into)
    lines = [json.loads(line) for line in into.getvalue().splitlines()]
    assert written == len(into.getvalue())
    assert sorted(line["key"] for line in lines) == ["a", "b"]
    for line in lines:
        assert (
            f"'{docs[line['key']].display_name}'"
            in line["response"]["candidates"][0]["content"]["parts"][0]["text"]
        )

    gcs_emulator.client().create_bucket("hook-downloads")
    assert hook.download_file(results, "gs://hook-downloads/raw/results.jsonl") == written
    blob = gcs_emulator.client().bucket("hook-downloads").blob("raw/results.jsonl")
    assert blob.download_as_bytes() == into.getvalue()
    assert hook.read_gcs_object("gs://hook-downloads/raw/results.jsonl") == into.getvalue()
    assert hook.read_gcs_object("gs://hook-downloads/raw/none.jsonl") is None

    assert [j.name for j in hook.list_batches(page_size=1)] == [job.name]
    assert hook.delete_batch(job.name) is True
    assert gemini_emulator.batches() == []
    assert results not in {f["name"] for f in gemini_emulator.files()}, "the results file went with the job"
    assert hook.delete_batch(job.name) is False


def test_old_sdks_without_a_streaming_download_are_streamed_by_the_hook(hook, gemini_emulator, monkeypatch):
    """google-genai < 2.21 has no ``destination``: the hook then streams ``:download`` itself."""
    job = jsonl_job(hook, {"a": text_file(hook, "alpha")})
    gemini_emulator.advance_clock(5)
    results = hook.get_batch(job.name).dest.file_name
    whole = hook.client.files.download(file=results)
    sdk_download = hook.client.files.download

    def download_without_destination(*, file: Any, config: Any = None) -> bytes:
        raise AssertionError("the whole file would be read into memory")

    monkeypatch.setattr(hook.client.files, "download", download_without_destination)
    assert "destination" not in inspect.signature(hook.client.files.download).parameters
    before = gemini_emulator.stats()["requests"]["download"]
    into = io.BytesIO()
    assert hook.download_file(results, into) == len(whole)
    assert into.getvalue() == whole
    assert gemini_emulator.stats()["requests"]["download"] == before + 1
    del sdk_download


@pytest.mark.parametrize("streamed_by", ["sdk", "hook"])
def test_a_download_failing_before_its_first_byte_is_tried_again(
    hook, gemini_emulator, monkeypatch, streamed_by
):
    job = jsonl_job(hook, {"a": text_file(hook, "alpha")})
    gemini_emulator.advance_clock(5)
    results = hook.get_batch(job.name).dest.file_name
    if streamed_by == "hook":
        monkeypatch.setattr(hook.client.files, "download", lambda *, file, config=None: b"")
    monkeypatch.setattr(RetryPolicy, "delays", lambda self, rng=None: iter([0.0, 0.0]))
    gemini_emulator.inject_faults("download", sequence=[503])
    into = io.BytesIO()
    assert hook.download_file(results, into) > 0
    assert json.loads(into.getvalue())["key"] == "a"
    assert gemini_emulator.stats()["requests"]["download"] == 2


@pytest.mark.parametrize("streamed_by", ["sdk", "hook"])
def test_an_uploaded_file_cannot_be_downloaded_and_the_error_says_so(hook, monkeypatch, streamed_by):
    if streamed_by == "hook":
        monkeypatch.setattr(hook.client.files, "download", lambda *, file, config=None: b"")
    doc = text_file(hook, "alpha")
    with pytest.raises(GeminiInputError) as raised:
        hook.download_file(doc, io.BytesIO())
    assert f"Could not download {doc.name}: only GENERATED files (a batch's results) can be." in str(
        raised.value
    )
    assert "test-api-key" not in str(raised.value)


@pytest.mark.parametrize("name", ["files/batch-gone", "files/batch-" + "x" * 36])
def test_a_gone_results_file_is_an_error_naming_it(hook, name):
    with pytest.raises(GeminiFileGoneError) as raised:
        hook.download_file(name, io.BytesIO())
    assert str(raised.value) == (
        f"{name} does not exist: a batch's results file is deleted 48 hours after its job ended (or by a "
        "cleanup), or it belongs to another API key's project."
    )
    assert raised.value.file_name == name
    assert hook.delete_generated_file(name) is False


def test_a_rejected_key_is_not_taken_for_a_gone_results_file(gemini_emulator, monkeypatch):
    conn = {"conn_type": "gemini", "password": "wrong-key", "extra": {"base_url": gemini_emulator.base_url}}
    monkeypatch.setenv("AIRFLOW_CONN_WRONG_KEY", json.dumps(conn))
    hook = GeminiHook(gemini_conn_id="wrong_key")
    with pytest.raises(GeminiInputError, match="rejected the API key"):
        hook.download_file("files/batch-x", io.BytesIO())
    with pytest.raises(GeminiInputError, match="rejected the API key"):
        hook.delete_generated_file("files/batch-x")


@pytest.mark.parametrize("bad", ["files/", "batch results", 42, None, "files/UPPER"])
def test_a_download_needs_a_file_name(hook, bad):
    with pytest.raises(GeminiInputError, match="is not a Gemini file name"):
        hook.download_file(bad, io.BytesIO())


def test_a_download_needs_a_stream_or_a_gcs_uri(hook, gemini_emulator):
    job = jsonl_job(hook, {"a": text_file(hook, "alpha")})
    gemini_emulator.advance_clock(5)
    results = hook.get_batch(job.name).dest.file_name
    with pytest.raises(GeminiInputError, match="is not a GCS URI"):
        hook.download_file(results, "/tmp/results.jsonl")
    with pytest.raises(
        GeminiInputError, match="neither a 'gs://bucket/object' URI nor a writable binary stream"
    ):
        hook.download_file(results, 42)  # type: ignore[arg-type]


def test_cancel_ends_a_running_job_and_says_when_there_was_nothing_to_cancel(hook, gemini_emulator):
    gemini_emulator.hold_batches()
    job = hook.create_batch(model=MODEL, src=[{"contents": ["Hello"]}], display_name="held")
    assert hook.cancel_batch(job.name) is True
    assert policy.job_state_name(hook.get_batch(job.name).state) == "JOB_STATE_CANCELLED"
    assert hook.cancel_batch(job.name) is False  # ended already: not an error
    assert hook.delete_batch(job.name) is True
    assert hook.cancel_batch(job.name) is False  # gone: not an error either
    with pytest.raises(GeminiBatchJobGoneError) as gone:
        hook.get_batch(job.name)
    assert str(gone.value).startswith(f"Batch job {job.name} does not exist (404 NOT_FOUND: ")
    assert "created with another API key" in str(gone.value)
    assert gone.value.job_name == job.name


def test_deleting_a_running_job_cancels_it_first(hook, gemini_emulator):
    gemini_emulator.hold_batches()
    job = hook.create_batch(model=MODEL, src=[{"contents": ["Hello"]}], display_name="held")
    assert hook.delete_batch(job.name) is True
    assert gemini_emulator.batches() == []
    requests = gemini_emulator.stats()["requests"]
    assert (requests["batch_cancel"], requests["batch_delete"]) == (1, 1)


def test_a_job_that_will_not_end_after_cancel_is_not_deleted(hook, gemini_emulator, monkeypatch):
    gemini_emulator.hold_batches()
    job = hook.create_batch(model=MODEL, src=[{"contents": ["Hello"]}], display_name="stuck")
    monkeypatch.setattr(hook, "cancel_batch", lambda name: True)  # a cancel the service ignores
    monkeypatch.setattr(policy, "JOB_END_WAIT", 1.5)
    with pytest.raises(GeminiBatchJobError) as raised:
        hook.delete_batch(job.name)
    assert str(raised.value).startswith(f"Batch job {job.name} is still JOB_STATE_PENDING 1.5 s after it")
    assert "it may still read its documents' files" in str(raised.value)
    assert len(gemini_emulator.batches()) == 1


def test_the_async_calls_of_a_trigger(hook, gemini_emulator):
    gemini_emulator.hold_batches()
    job = hook.create_batch(model=MODEL, src=[{"contents": ["Hello"]}], display_name="held")
    fresh = GeminiHook(gemini_conn_id=hook.gemini_conn_id)
    assert policy.job_state_name(asyncio.run(fresh.aget_batch(job.name)).state) == "JOB_STATE_PENDING"
    assert asyncio.run(GeminiHook(gemini_conn_id=hook.gemini_conn_id).acancel_batch(job.name)) is True
    assert asyncio.run(GeminiHook(gemini_conn_id=hook.gemini_conn_id).acancel_batch(job.name)) is False
    with pytest.raises(GeminiBatchJobGoneError):
        asyncio.run(GeminiHook(gemini_conn_id=hook.gemini_conn_id).aget_batch("batches/nope"))


@pytest.mark.parametrize("bad", ["jobs/x", "batches/", "batches/UPPER", "", None])
def test_a_job_name_must_be_one(hook, bad):
    with pytest.raises(GeminiInputError, match="is not a batch job name"):
        hook.get_batch(bad)


def test_a_refused_batch_create_names_the_requests(hook):
    bad = hook.upload_file(io.BytesIO(b'{"key": "a"}\nnot json\n'), mime_type="application/jsonl")
    with pytest.raises(GeminiInputError) as raised:
        hook.create_batch(model=MODEL, src=bad.name, display_name="bad")
    message = str(raised.value)
    assert "Error on line 1" in message
    assert "Error on line 2" in message
    assert message.endswith(f"Check the batch's requests (input file {bad.name}) for model '{MODEL}'.")


def test_a_display_name_with_control_characters_is_refused(hook):
    with pytest.raises(GeminiInputError, match="contains the control character"):
        hook.create_batch(model=MODEL, src=[{"contents": ["x"]}], display_name="job\nforged")
