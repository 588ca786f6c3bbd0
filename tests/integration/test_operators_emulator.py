"""Operators and sensor with the real hook and SDK against the Gemini and GCS emulators."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from doubles import context as ctx
from google.cloud import storage

from airflow_gemini_files.exceptions import (
    GeminiFileFailedError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
)
from airflow_gemini_files.operators.files import (
    GeminiDeleteFilesOperator,
    GeminiRegisterGcsFilesOperator,
    GeminiUploadFileOperator,
)
from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

SAMPLES = resources.files("airflow_gemini_files.samples")
DOCS = ("invoice_northwind_2026-11.pdf", "revenue_chart_q3.png", "meeting_notes_de.md")
BUCKET = "ops-docs"


@pytest.fixture
def paths(tmp_path) -> list[str]:
    out = []
    for name in DOCS:
        path = tmp_path / name
        path.write_bytes(SAMPLES.joinpath(name).read_bytes())
        out.append(str(path))
    return out


@pytest.fixture
def bucket(gcs_emulator) -> storage.Bucket:
    gcs_emulator.reset()
    bkt = gcs_emulator.client().create_bucket(BUCKET)
    for name, content_type in zip(DOCS, ("application/pdf", "image/png", "text/markdown"), strict=True):
        bkt.blob(f"incoming/{name}").upload_from_string(
            SAMPLES.joinpath(name).read_bytes(), content_type=content_type
        )
    return bkt


def run_trigger(trigger) -> dict[str, Any]:
    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


def test_local_upload_wait_generate_per_file_then_delete_leaves_nothing(
    gemini_connection, gemini_emulator, paths
):
    gemini_emulator.configure(processing_delay=0.3)
    refs = GeminiUploadFileOperator(task_id="upload", source=paths, max_concurrency=2).execute(ctx())
    assert [ref.display_name for ref in refs] == list(DOCS)
    assert [ref.mime_type for ref in refs] == ["application/pdf", "image/png", "text/markdown"]
    assert {ref.state for ref in refs} == {"PROCESSING"}

    active = GeminiFileActiveSensor(
        task_id="wait", files=refs, poke_interval=0.1, timeout=30, deferrable=False
    ).execute(ctx())
    assert [ref.state for ref in active] == ["ACTIVE"] * 3
    assert [ref.source_uri for ref in active] == paths

    generate_ctx = ctx(task_id="generate")
    answers = GeminiGenerateContentOperator(
        task_id="generate", model="gemini-2.5-flash", prompt="Summarise.", files=active, per_file=True
    ).execute(generate_ctx)
    assert len(answers) == 3
    for answer, doc in zip(answers, DOCS, strict=True):
        assert doc in answer, "each answer is about its own file, in order"
    assert generate_ctx["ti"].xcom["usage"]["calls"] == 3
    assert generate_ctx["ti"].xcom["usage"]["total_token_count"] > 0
    assert gemini_emulator.stats()["requests"]["generate"] == 3

    deleted = GeminiDeleteFilesOperator(task_id="cleanup", files=active).execute(ctx())
    assert sorted(deleted) == sorted(ref.name for ref in refs)
    assert gemini_emulator.files() == []


def test_one_call_over_all_files_names_each_file_for_the_model(gemini_connection, gemini_emulator, paths):
    refs = GeminiUploadFileOperator(task_id="upload", source=paths).execute(ctx())
    answer = GeminiGenerateContentOperator(
        task_id="generate", model="gemini-2.5-flash", prompt="Compare these.", files=refs
    ).execute(ctx())
    positions = [answer.index(doc) for doc in DOCS]
    assert positions == sorted(positions), "the model saw the files in the order given"


def test_upload_from_gcs_and_register_from_a_bucket_listing(gemini_connection, gemini_emulator, bucket):
    uploaded = GeminiUploadFileOperator(task_id="upload", source=f"gs://{BUCKET}/incoming/{DOCS[0]}").execute(
        ctx()
    )
    assert uploaded.source_uri == f"gs://{BUCKET}/incoming/{DOCS[0]}"
    assert uploaded.mime_type == "application/pdf"

    registered = GeminiRegisterGcsFilesOperator(
        task_id="register", bucket=BUCKET, prefix="incoming/", match_glob="**/*.p*", batch_size=1
    ).execute(ctx())
    assert [ref.source_uri for ref in registered] == [
        f"gs://{BUCKET}/incoming/invoice_northwind_2026-11.pdf",
        f"gs://{BUCKET}/incoming/revenue_chart_q3.png",
    ]
    assert {ref.source for ref in registered} == {"REGISTERED"}
    assert gemini_emulator.stats()["requests"]["register"] == 2
    GeminiDeleteFilesOperator(task_id="cleanup", files=[uploaded, registered]).execute(ctx())
    assert gemini_emulator.files() == []


def test_register_missing_object_leaves_nothing_behind(gemini_connection, gemini_emulator, bucket):
    uris = [f"gs://{BUCKET}/incoming/{DOCS[0]}", f"gs://{BUCKET}/incoming/missing.pdf"]
    with pytest.raises(GeminiFilesError, match=r"missing\.pdf"):
        GeminiRegisterGcsFilesOperator(
            task_id="register", uris=uris, batch_size=1, max_concurrency=1
        ).execute(ctx())
    assert gemini_emulator.files() == []


def test_deferrable_sensor_runs_through_its_trigger(gemini_connection, gemini_emulator, bucket):
    gemini_emulator.configure(processing_delay=0.5)
    registered = GeminiRegisterGcsFilesOperator(
        task_id="register", bucket=BUCKET, prefix="incoming/"
    ).execute(ctx())
    sensor = GeminiFileActiveSensor(
        task_id="wait", files=registered, deferrable=True, poke_interval=0.1, timeout=30
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx())
    _, kwargs = deferred.value.trigger.serialize()
    assert "test-api-key" not in json.dumps(kwargs), "no secret in trigger kwargs"

    event = run_trigger(deferred.value.trigger)
    assert event["status"] == "success"
    json.dumps(event)  # the payload is plain JSON
    refs = sensor.execute_complete(ctx(), event)
    assert [ref.state for ref in refs] == ["ACTIVE"] * 3
    assert [ref.source_uri for ref in refs] == [ref.source_uri for ref in registered]


def test_failed_processing_fails_sensor_and_trigger_with_geminis_message(
    gemini_connection, gemini_emulator, paths
):
    gemini_emulator.configure(processing_delay=0.2)
    gemini_emulator.fail_processing("revenue_chart", "Image is corrupt.")
    refs = GeminiUploadFileOperator(task_id="upload", source=paths).execute(ctx())
    with pytest.raises(GeminiFileFailedError, match=r"revenue_chart_q3\.png.*Image is corrupt"):
        GeminiFileActiveSensor(task_id="wait", files=refs, poke_interval=0.1, timeout=30).execute(ctx())

    sensor = GeminiFileActiveSensor(
        task_id="wait", files=refs[1], poke_interval=0.1, timeout=30, deferrable=True
    )
    from airflow_gemini_files.triggers.files import GeminiFileActiveTrigger

    trigger = GeminiFileActiveTrigger(
        file_names=[refs[1].name], gemini_conn_id=gemini_connection, poll_interval=0.1, end_time=2e9
    )
    event = run_trigger(trigger)
    assert event["status"] == "error"
    with pytest.raises(GeminiFileFailedError, match="Image is corrupt"):
        sensor.execute_complete(ctx(), event)


def test_generate_refuses_a_processing_file_without_calling_the_model(
    gemini_connection, gemini_emulator, paths
):
    gemini_emulator.configure(processing_delay=60)
    ref = GeminiUploadFileOperator(task_id="upload", source=paths[0]).execute(ctx())
    with pytest.raises(GeminiFileNotUsableError, match="PROCESSING, not ACTIVE"):
        GeminiGenerateContentOperator(
            task_id="generate", model="gemini-2.5-flash", prompt="Hi", files=ref
        ).execute(ctx())
    assert gemini_emulator.stats()["requests"].get("generate", 0) == 0


def test_generate_refuses_a_deleted_file(gemini_connection, gemini_emulator, paths):
    ref = GeminiUploadFileOperator(task_id="upload", source=paths[0]).execute(ctx())
    GeminiDeleteFilesOperator(task_id="cleanup", files=ref).execute(ctx())
    with pytest.raises(GeminiFileNotUsableError, match=f"{ref.name}.*does not exist"):
        GeminiGenerateContentOperator(
            task_id="generate", model="gemini-2.5-flash", prompt="Hi", files=ref
        ).execute(ctx())


def test_generate_with_a_json_schema_returns_validated_json(gemini_connection, gemini_emulator, paths):
    ref = GeminiUploadFileOperator(task_id="upload", source=paths[0]).execute(ctx())
    schema = {
        "type": "object",
        "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
        "required": ["vendor", "total"],
    }
    result = GeminiGenerateContentOperator(
        task_id="generate", model="gemini-2.5-flash", prompt="Extract.", files=ref, response_schema=schema
    ).execute(ctx())
    assert isinstance(result, dict)
    assert set(result) >= {"vendor", "total"}
    assert isinstance(result["total"], int | float)


def test_generate_rides_out_429_through_the_hooks_retries(gemini_connection, gemini_emulator, paths):
    refs = GeminiUploadFileOperator(task_id="upload", source=paths).execute(ctx())
    gemini_emulator.inject_faults("generate", sequence=[429, 503])
    answers = GeminiGenerateContentOperator(
        task_id="generate", model="gemini-2.5-flash", prompt="Summarise.", files=refs, per_file=True
    ).execute(ctx())
    assert all(answers)
    assert gemini_emulator.stats()["requests"]["generate"] == 5, "3 answers after 2 retried refusals"


def test_a_model_typo_fails_the_task_before_any_file_is_checked_naming_close_names(
    gemini_connection, gemini_emulator, paths
):
    refs = GeminiUploadFileOperator(task_id="upload", source=paths[:2]).execute(ctx())
    before = dict(gemini_emulator.stats()["requests"])
    with pytest.raises(GeminiInputError) as error:
        GeminiGenerateContentOperator(
            task_id="generate", model="gemini-2.5-flsh", prompt="Hi", files=refs, per_file=True
        ).execute(ctx())
    message = str(error.value)
    assert message.startswith("Gemini model 'gemini-2.5-flsh' was not found at http://127.0.0.1:")
    assert "Did you mean 'gemini-2.5-flash' or " in message
    assert isinstance(error.value, AirflowFailException), "not retried"
    after = gemini_emulator.stats()["requests"]
    assert (after["get"], after["generate"]) == (before["get"], before["generate"]), "no file work"
    assert after["models"] == before["models"] + 2  # models.get, then models.list for the close names


def test_retried_upload_reuses_files_instead_of_duplicating(gemini_connection, gemini_emulator, paths):
    first = GeminiUploadFileOperator(task_id="upload", source=paths).execute(ctx())
    chunks = gemini_emulator.stats()["requests"]["upload_chunk"]
    again = GeminiUploadFileOperator(task_id="upload", source=paths).execute(ctx(try_number=2))
    assert [ref.name for ref in again] == [ref.name for ref in first]
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == chunks, "the retry sent no bytes"
    assert len(gemini_emulator.files()) == 3


def test_failed_upload_in_a_list_rolls_back_the_others(gemini_connection, gemini_emulator, paths, tmp_path):
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(GeminiInputError, match="empty"):
        GeminiUploadFileOperator(task_id="upload", source=[*paths, str(empty)], max_concurrency=1).execute(
            ctx()
        )
    assert gemini_emulator.files() == []


def test_first_try_that_finds_its_name_taken_reuses_the_file(gemini_connection, gemini_emulator, paths):
    first = GeminiUploadFileOperator(task_id="upload", source=paths[0]).execute(ctx())
    again = GeminiUploadFileOperator(task_id="upload", source=paths[0]).execute(ctx())
    assert again.name == first.name
    assert len(gemini_emulator.files()) == 1


def test_cleanup_finds_a_runs_uploads_without_any_xcom(gemini_connection, gemini_emulator, paths):
    GeminiUploadFileOperator(task_id="upload", source=paths[:2]).execute(ctx(run_id="run-a"))
    kept = GeminiUploadFileOperator(task_id="upload", source=paths[2]).execute(ctx(run_id="run-b"))
    deleted = GeminiDeleteFilesOperator(task_id="cleanup", delete_run_uploads=True).execute(
        ctx(run_id="run-a")
    )
    assert len(deleted) == 2
    assert [f["name"] for f in gemini_emulator.files()] == [kept.name]


def test_delete_of_already_deleted_files_is_not_an_error(gemini_connection, gemini_emulator, paths):
    ref = GeminiUploadFileOperator(task_id="upload", source=paths[0]).execute(ctx())
    assert GeminiDeleteFilesOperator(task_id="cleanup", files=[ref]).execute(ctx()) == [ref.name]
    assert GeminiDeleteFilesOperator(task_id="cleanup", files=[ref, "files/never-was"]).execute(ctx()) == []


def test_missing_connection_is_reported_once_for_a_list(monkeypatch, paths):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH", raising=False)
    with pytest.raises(GeminiInputError, match="'no_such' is not defined") as caught:
        GeminiUploadFileOperator(task_id="upload", source=paths, gemini_conn_id="no_such").execute(ctx())
    assert str(caught.value).count("is not defined") == 1


def test_refs_from_an_xcom_of_dicts_work_end_to_end(gemini_connection, gemini_emulator, paths):
    ref = GeminiUploadFileOperator(task_id="upload", source=paths[0]).execute(ctx())
    as_xcom = json.loads(json.dumps([ref.to_dict()]))
    active = GeminiFileActiveSensor(task_id="wait", files=as_xcom, poke_interval=0.1, timeout=10).execute(
        ctx()
    )
    assert isinstance(active[0], GeminiFileRef)
    assert active[0].source_uri == paths[0]


@pytest.mark.parametrize(
    ("source", "display_name", "match"),
    [
        ("gs:/ops-docs/incoming/a.pdf", None, r"gs:/ops-docs/incoming/a\.pdf"),
        (f"gs://{BUCKET}/incoming/missing.pdf", None, r"missing\.pdf"),
        ("LOCAL", "x" * 513, "512"),
    ],
)
def test_bad_sources_name_the_value_and_leave_nothing(
    gemini_connection, gemini_emulator, bucket, paths, source, display_name, match
):
    sources = [paths[0], paths[1] if source == "LOCAL" else source]
    names = None if display_name is None else ["fine.pdf", display_name]
    with pytest.raises(GeminiInputError, match=match):
        GeminiUploadFileOperator(
            task_id="upload", source=sources, display_name=names, max_concurrency=1
        ).execute(ctx())
    assert gemini_emulator.files() == []
