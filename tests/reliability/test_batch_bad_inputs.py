"""Bad input and faults of batch mode (issue 11): each fails with an error naming the value and the fix,
writes what succeeded and the manifest, and leaves no batch job, input file or results file behind.

The autouse fixture :func:`nothing_left_behind` checks, after every case, that the emulator holds only
the documents' own files (which the DAG's cleanup deletes) and no batch job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from doubles import context
from pydantic import BaseModel, field_validator

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.exceptions import GeminiBatchDocumentsError, GeminiInputError
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators import batch as batch_module
from airflow_gemini_files.operators.batch import GeminiBatchGenerateOperator
from airflow_gemini_files.refs import GeminiFileRef

SCHEMA = {
    "type": "object",
    "properties": {"kind": {"type": "string"}, "summary": {"type": "string"}},
    "required": ["kind", "summary"],
}
_buckets = itertools.count()


@pytest.fixture(autouse=True)
def nothing_left_behind(gemini_emulator: GeminiEmulator, fast_connection: str) -> Iterator[list[str]]:
    """The documents' files are all the emulator may hold after a case: no input, results file or job."""
    gemini_emulator.configure(processing_delay=0)
    documents: list[str] = []
    yield documents
    assert sorted(f["name"] for f in gemini_emulator.files()) == sorted(documents)
    assert gemini_emulator.batches() == []


@pytest.fixture
def results(gcs_emulator: Any) -> str:
    name = f"batch-bad-input-{next(_buckets)}"
    gcs_emulator.client().create_bucket(name)
    return f"gs://{name}/out/"


@pytest.fixture
def docs(nothing_left_behind: list[str]) -> Any:
    """``docs(*names)``: one ACTIVE text file per name, recorded as the documents allowed to stay."""

    def make(*names: str) -> list[GeminiFileRef]:
        hook = GeminiHook()
        refs = [
            hook.upload_file(
                io.BytesIO(f"Invoice INV-{i} for {name}".encode()), mime_type="text/plain", display_name=name
            )
            for i, name in enumerate(names)
        ]
        nothing_left_behind.extend(ref.name for ref in refs)
        return refs

    return make


def batch(files: Any, results_uri: str, **kwargs: Any) -> GeminiBatchGenerateOperator:
    kwargs.setdefault("response_schema", SCHEMA)
    return GeminiBatchGenerateOperator(
        task_id="analyse_batch",
        model=kwargs.pop("model", "gemini-2.5-flash"),
        prompt=kwargs.pop("prompt", "Classify and summarise this document."),
        files=files,
        results_uri=results_uri,
        poll_interval=kwargs.pop("poll_interval", 0.2),
        **kwargs,
    )


def run(op: GeminiBatchGenerateOperator, between: Any = None) -> Any:
    """The operator as Airflow runs it deferred; ``between()`` runs while the job is in the triggerer."""
    ctx = context()  # one task instance: what execute pushes to XCom, execute_complete reads
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    if between is not None:
        between(deferred.value.trigger.job_name)
    event = asyncio.run(_first(deferred.value.trigger))
    return op.execute_complete(ctx, event, **(deferred.value.kwargs or {}))


async def _first(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def manifest(gcs_emulator: Any, results_uri: str) -> dict[str, Any]:
    bucket, prefix = results_uri.removeprefix("gs://").split("/", 1)
    blob = gcs_emulator.client().bucket(bucket).blob(f"{prefix}_manifest.json")
    return dict(json.loads(blob.download_as_bytes()))


def stored(gcs_emulator: Any, results_uri: str) -> list[str]:
    bucket, prefix = results_uri.removeprefix("gs://").split("/", 1)
    return sorted(
        blob.name[len(prefix) :] for blob in gcs_emulator.client().list_blobs(bucket, prefix=prefix)
    )


def requests(emulator: GeminiEmulator) -> dict[str, int]:
    return dict(emulator.stats()["requests"])


# Arguments ------------------------------------------------------------------------------------------------
def test_an_unknown_model_fails_before_anything_is_uploaded(gemini_emulator, docs, results):
    [doc] = docs("a.txt")
    with pytest.raises(GeminiInputError) as error:
        run(batch([doc], results, model="gemini-9-ultra"))
    assert str(error.value).startswith("Gemini model 'gemini-9-ultra' was not found")
    assert "Use a model id such as 'gemini-2.5-flash'" in str(error.value)
    # models.get, then models.list for the close names it suggests; no job
    assert (requests(gemini_emulator)["models"], requests(gemini_emulator)["batch_create"]) == (2, 0)


@pytest.mark.parametrize(
    "uri",
    ["gs://bucket/results", "s3://bucket/results/", "results/", "gs://Bad_Bucket/results/", None, "gs:///x/"],
)
def test_a_results_uri_that_is_not_gs_bucket_prefix_slash(gemini_emulator, docs, uri):
    [doc] = docs("a.txt")
    with pytest.raises(GeminiInputError) as error:
        batch([doc], uri).execute(context())
    message = str(error.value)
    assert repr(uri) in message or str(uri) in message
    assert "gs://" in message
    assert requests(gemini_emulator)["models"] == 0, "refused before any call"


def test_a_schema_that_is_not_a_json_schema_is_refused_when_the_dag_is_parsed():
    with pytest.raises(GeminiInputError) as error:
        batch("files/a", "gs://b/r/", response_schema={"type": "object", "properties": {"n": {"type": 5}}})
    message = str(error.value)
    assert message.startswith(
        "Task 'analyse_batch': response_schema is not a valid JSON schema: 5 is not valid"
    )
    assert "(at properties/n/type)" in message


def test_a_schema_the_api_refuses_fails_every_document_for_that_one_reason(
    gemini_emulator, gcs_emulator, docs, results
):
    refs = docs("a.txt", "b.txt")
    schema = {"type": "object", "properties": {"total": {"$ref": "https://example.com/money.json"}}}
    with pytest.raises(GeminiBatchDocumentsError) as error:
        run(batch(refs, results, response_schema=schema))
    message = str(error.value)
    assert message.startswith(
        "2 of 2 document(s) failed, more than max_failed_fraction=0 allows: all 2 for the same reason: "
        "INVALID_ARGUMENT (3): Unsupported $ref 'https://example.com/money.json' in response_json_schema. "
        "(Gemini refused the request: check the prompt, generation_config and response_schema)."
    )
    assert isinstance(error.value, AirflowFailException), "a retry would pay for the same refusals"
    assert stored(gcs_emulator, results) == ["_manifest.json"]


@pytest.mark.parametrize("files", [[], None])
def test_no_documents_at_all_is_refused(gemini_emulator, results, files):
    with pytest.raises(GeminiInputError) as error:
        batch(files, results).execute(context())
    assert f"files={files!r} names no document, so there is nothing to submit" in str(error.value)
    assert requests(gemini_emulator)["models"] == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_failed_fraction": 1.5}, "max_failed_fraction=1.5 must be a number from 0"),
        ({"max_failed_fraction": True}, "max_failed_fraction=True must be a number from 0"),
        (
            {"timeout": 49 * 3600},
            "timeout=176400 must be a positive number of seconds (or a timedelta) and at",
        ),
        ({"timeout": 0}, "timeout=0 must be a positive number"),
        ({"poll_interval": -1}, "poll_interval=-1 must be a positive number"),
        ({"response_schema": "{}"}, "response_schema='{}' is neither a JSON schema dict nor a pydantic"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_parsed(kwargs, fragment):
    with pytest.raises(GeminiInputError, match=re.escape(fragment)):
        batch("files/a", "gs://b/r/", **kwargs)


def test_an_empty_prompt(gemini_emulator, docs, results):
    [doc] = docs("a.txt")
    with pytest.raises(GeminiInputError, match="the prompt is empty"):
        batch([doc], results, prompt=" ").execute(context())


# Documents ------------------------------------------------------------------------------------------------
def test_a_gone_file_is_not_sent_and_with_the_default_nothing_is_submitted(
    gemini_emulator, gcs_emulator, docs, results
):
    [doc] = docs("a.txt")
    with pytest.raises(GeminiBatchDocumentsError) as error:
        batch([doc, "files/deleted-yesterday"], results).execute(context())
    message = str(error.value)
    assert message.startswith(
        "Did not submit a batch: 1 of 2 document(s) cannot be sent, more than max_failed_fraction=0 allows: "
        "deleted-yesterday (files/deleted-yesterday): files/deleted-yesterday does not exist: it was "
        "deleted, expired (uploads live 48 hours, registrations up to 30 days) or belongs to another "
        "project. Upload or register the source again; a.txt (files/"
    )
    assert message.endswith(f"Manifest: {results}_manifest.json.")
    assert requests(gemini_emulator)["batch_create"] == 0
    failures = manifest(gcs_emulator, results)["failures"]
    assert [(f["document"], f["stage"]) for f in failures] == [
        ("deleted-yesterday", "not sent"),
        ("a.txt", "not sent"),
    ]
    assert failures[1]["reason"] == (
        "not sent: no batch was submitted, since too many other documents cannot be sent"
    )


def test_documents_that_cannot_be_sent_are_named_while_the_others_are_analysed(
    gemini_emulator, gcs_emulator, docs, results
):
    good, processing = docs("good.txt", "processing.txt")
    gemini_emulator.configure(processing_delay=3600)
    [late] = docs("late.txt")  # still PROCESSING
    gemini_emulator.configure(processing_delay=0)
    gemini_emulator.fail_processing("broken")
    [broken] = docs("broken.txt")  # FAILED
    refs = [good, late, broken, "files/deleted-yesterday"]

    summary = run(batch(refs, results, max_failed_fraction=0.75))

    assert (summary["documents"], summary["succeeded"], summary["failed"]) == (4, 1, 3)
    assert stored(gcs_emulator, results) == ["_manifest.json", "good.txt.json"]
    reasons = {f["document"]: f["reason"] for f in manifest(gcs_emulator, results)["failures"]}
    assert "is PROCESSING, not ACTIVE" in reasons["late.txt"]
    assert "FAILED processing" in reasons["broken.txt"]
    assert "does not exist" in reasons["deleted-yesterday"]
    del processing


def test_a_file_expiring_before_the_jobs_deadline_is_not_sent(gemini_emulator, gcs_emulator, docs, results):
    old, new = docs("old.txt", "new.txt")
    soon = datetime.now(UTC) + timedelta(hours=18)  # uploaded 30 hours ago, as a sensor's ref says
    refs = [dataclasses.replace(old, expiration_time=soon), new]

    summary = run(batch(refs, results, max_failed_fraction=0.5, timeout=timedelta(hours=24)))

    assert (summary["succeeded"], summary["failed"]) == (1, 1)
    [failure] = manifest(gcs_emulator, results)["failures"]
    assert failure["document"] == "old.txt"
    assert failure["reason"].startswith(
        f"{old.name} (old.txt) expires at {soon.isoformat()}, before the batch"
    )
    assert (
        "Upload or register it again just before the batch, or lower the task's timeout." in failure["reason"]
    )
    assert requests(gemini_emulator)["get"] == 0, "a sensor's ACTIVE refs are judged without a call each"


def test_a_file_deleted_after_submitting_fails_only_its_document_with_gemini_s_reason(
    gemini_emulator, gcs_emulator, docs, results, nothing_left_behind
):
    keep, lose = docs("keep.txt", "lose.txt")
    gemini_emulator.hold_batches()

    def delete_then_release(job_name: str) -> None:
        GeminiHook().delete_file(lose)
        nothing_left_behind.remove(lose.name)
        gemini_emulator.release_batches()

    with pytest.raises(GeminiBatchDocumentsError) as error:
        run(batch([keep, lose], results), between=delete_then_release)
    assert "1 of 2 document(s) failed" in str(error.value)
    assert (
        f"lose.txt ({lose.name}): PERMISSION_DENIED (7): You do not have permission to access the File "
        f"{lose.file_id} or it may not exist." in str(error.value)
    )
    assert stored(gcs_emulator, results) == ["_manifest.json", "keep.txt.json"]


def test_files_from_another_api_key_are_named(gemini_emulator, gcs_emulator, docs, results):
    [mine] = docs("mine.txt")
    theirs = GeminiFileRef.from_dict(
        {
            **mine.to_dict(),
            "name": "files/of-another-project",
            "display_name": "theirs.txt",
            "uri": mine.uri.replace(mine.file_id, "of-another-project"),
        }
    )
    with pytest.raises(GeminiBatchDocumentsError) as error:
        run(batch([mine, theirs], results))
    message = str(error.value)
    assert "theirs.txt (files/of-another-project): PERMISSION_DENIED (7)" in message
    assert "(a file of the request is gone (deleted, expired, or another API key's))" in message


class Invoice(BaseModel):
    """A schema with a rule the model cannot see: the reply is checked against it."""

    kind: str
    summary: str

    @field_validator("summary")
    @classmethod
    def names_an_invoice_number(cls, value: str) -> str:
        if "INV-1" not in value:
            raise ValueError("the summary names no invoice number INV-<n>")
        return value


def test_a_reply_that_breaks_the_schema_fails_its_document_with_the_reply(
    gemini_emulator, gcs_emulator, docs, results
):
    refs = docs("zero.txt", "one.txt")  # "Invoice INV-0 ..." and "Invoice INV-1 ..."
    with pytest.raises(GeminiBatchDocumentsError) as error:
        run(batch(refs, results, response_schema=Invoice))
    message = str(error.value)
    assert "1 of 2 document(s) failed" in message
    assert "zero.txt" in message
    assert "replied with JSON that does not match response_schema" in message
    assert "the summary names no invoice number" in message
    assert stored(gcs_emulator, results) == ["_manifest.json", "one.txt.json"]
    [failure] = manifest(gcs_emulator, results)["failures"]
    assert failure["usage"]["total"] > 0, "a reply that was paid for shows its tokens"


# Results ------------------------------------------------------------------------------------------------
def test_result_lines_that_do_not_parse_are_named_and_the_rest_is_stored(
    gemini_emulator, gcs_emulator, docs, results, monkeypatch
):
    monkeypatch.setattr(batch_module, "INLINE_MAX_BYTES", 0)
    refs = docs("a.txt", "b.txt", "c.txt")

    def corrupt(job_name: str) -> None:  # the same number of bytes, so the download's length still holds
        gemini_emulator.advance_clock(5)
        path = Path(gemini_emulator.store.get(f"files/batch-{job_name.removeprefix('batches/')}").path)
        lines = path.read_bytes().splitlines(keepends=True)
        lines[1] = lines[1][:40] + b" " * (len(lines[1]) - 41) + b"\n"  # cut short
        lines[2] = b"[" + b" " * (len(lines[2]) - 3) + b"]\n"  # JSON, but not an object
        path.write_bytes(b"".join(lines))

    with pytest.raises(GeminiBatchDocumentsError) as error:
        run(batch(refs, results), between=corrupt)
    message = str(error.value)
    assert re.match(
        r"2 line\(s\) of batch job batches/\w+'s results could not be read \(line 2: not valid JSON; line 3: "
        r"not a JSON object\); their documents count as failed\. Every readable result is stored; the",
        message,
    )
    written = manifest(gcs_emulator, results)
    assert (written["succeeded"], written["failed"], written["unreadable_line_count"]) == (1, 2, 2)
    assert [line["line"] for line in written["unreadable_lines"]] == [2, 3]
    assert written["unreadable_lines"][1]["text"] == "[]"
    assert len(stored(gcs_emulator, results)) == 1 + 1
    assert {f["reason"] for f in written["failures"]} == {"Gemini returned no result for it"}


def test_a_retry_whose_results_are_already_in_gcs_finishes_without_the_results_file(
    gemini_emulator, gcs_emulator, docs, results, monkeypatch
):
    """Try 1 wrote every result and the manifest, deleted the results file, then died before the job."""
    monkeypatch.setattr(batch_module, "INLINE_MAX_BYTES", 0)
    refs = docs("a.txt", "b.txt")
    first = batch(refs, results)

    def die_after_the_results_file(name: str, *, with_results: bool = True) -> bool:
        job = first.hook.get_batch(name)
        first.hook.delete_generated_file(job.dest.file_name)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(first.hook, "delete_batch", die_after_the_results_file)
    with pytest.raises(RuntimeError, match="worker lost"):
        run(first)
    assert len(gemini_emulator.batches()) == 1

    summary = batch(refs, results).execute(context(try_number=2))

    assert (summary["state"], summary["succeeded"], summary["failed"]) == ("JOB_STATE_SUCCEEDED", 2, 0)
    assert requests(gemini_emulator)["batch_create"] == 1
