"""Retries without duplicates, never the wrong bytes, never another deployment's files.

Design under test (``airflow_gemini_files/naming.py``): every upload gets a deterministic file id,
``af<12 hex of sha256(scope, dag_id, run_id)>-<25 hex of sha256(task_id, map_index, source)>``, where the
scope is the configured deployment id or else the DAG run's start time. The try number is not part of it,
so attempt 2 computes the id attempt 1 used: it reuses that file only when it is usable and holds the
source's bytes (size and SHA-256), replaces it otherwise, and uploads it when attempt 1 died before the
upload finished. The run-wide prefix lets ``GeminiDeleteFilesOperator(delete_run_uploads=True)`` list and
delete every upload of the run even when no XCom was ever written, and nothing of another deployment's
run with the same run id. The emulator's file count proves it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from dag_runs import DagRunResult as DagRun
from doubles import context

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.naming import context_run_prefix, upload_file_id
from airflow_gemini_files.operators import files as files_module
from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiUploadFileOperator
from airflow_gemini_files.refs import GeminiFileRef

RUN = "scheduled__2026-11-21T00:00:00+00:00"


@pytest.fixture
def documents(tmp_path: Path) -> list[str]:
    paths = []
    for name in ("invoice.txt", "notes.md", "orders.csv"):
        path = tmp_path / name
        path.write_text(f"{name}: the content of a nightly document\n" * 50)
        paths.append(str(path))
    return paths


def _upload(sources: Any, **ti: Any) -> Any:
    operator = GeminiUploadFileOperator(task_id=ti.get("task_id", "upload"), source=sources)
    return operator.execute(context(**ti))


def test_a_retry_after_a_successful_upload_reuses_the_files(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    first = _upload(documents, try_number=1)
    assert sorted(f["name"] for f in gemini_emulator.files()) == sorted(ref.name for ref in first)

    second = _upload(documents, try_number=2)

    assert [ref.name for ref in second] == [ref.name for ref in first]
    assert [ref.source_uri for ref in second] == documents
    stats = gemini_emulator.stats()
    assert stats["files"] == len(documents)  # not 6
    assert stats["requests"]["upload_chunk"] == len(documents)  # the retry sent no byte
    prefix = context_run_prefix(context())
    assert all(ref.file_id.startswith(f"{prefix}-") for ref in second)


def test_an_attempt_lost_before_its_try_number_moved_on_reuses_the_files(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    """The same context twice (a crash before Airflow recorded the try): the name is taken, no duplicate."""
    first = _upload(documents, try_number=1)
    chunks = gemini_emulator.stats()["requests"]["upload_chunk"]

    second = _upload(documents, try_number=1)

    assert [ref.name for ref in second] == [ref.name for ref in first]
    stats = gemini_emulator.stats()
    assert stats["files"] == len(documents)
    assert stats["requests"]["upload_chunk"] == chunks  # refused at start (409): no byte sent again


def test_a_retry_replaces_a_file_the_first_attempt_left_failed(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    gemini_emulator.fail_processing("invoice.txt", "Document is corrupt.")
    [first] = _upload(documents[:1], try_number=1)
    assert gemini_emulator.files()[0]["state"] == "FAILED"
    gemini_emulator.store._fail_rules.clear()  # the source was fixed before the retry

    [second] = _upload(documents[:1], try_number=2)

    assert second.name == first.name
    [stored] = gemini_emulator.files()
    assert stored["state"] == "ACTIVE"
    assert gemini_emulator.stats()["requests"]["delete"] == 1


def test_the_names_never_collide_across_runs_tasks_map_indexes_or_sources(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    refs = [
        _upload(documents[0]),
        _upload(documents[0], run_id="scheduled__2026-11-22T00:00:00+00:00"),
        _upload(documents[0], dag_id="other_dag"),
        _upload(documents[0], task_id="upload_again"),
        _upload(documents[0], map_index=3),
        _upload(documents[1]),
    ]
    assert len({ref.name for ref in refs}) == 6
    assert gemini_emulator.stats()["files"] == 6


def test_a_retry_after_the_worker_died_mid_upload_uploads_again(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    """Attempt 1 was killed after opening the upload session and sending a chunk: no file exists."""
    [planned] = _planned_names(documents[:1])
    start = httpx.post(
        f"{gemini_emulator.base_url}/upload/v1beta/files",
        headers={
            "x-goog-api-key": gemini_emulator.api_key or "",
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(Path(documents[0]).stat().st_size),
            "X-Goog-Upload-Header-Content-Type": "text/plain",
        },
        json={"file": {"name": planned, "mime_type": "text/plain"}},
    )
    assert start.status_code == 200
    httpx.post(
        start.headers["x-goog-upload-url"],
        headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"},
        content=b"x" * 10,
    )
    assert gemini_emulator.files() == []

    [ref] = _upload(documents[:1], try_number=2)

    assert ref.name == planned
    assert [f["name"] for f in gemini_emulator.files()] == [planned]
    assert gemini_emulator.files()[0]["sizeBytes"] == str(Path(documents[0]).stat().st_size)


def _planned_names(sources: list[str], **ti: Any) -> list[str]:
    ctx = context(**ti)
    return [f"files/{upload_file_id(ctx, source)}" for source in sources]


def test_cleanup_finds_every_upload_of_the_run_even_without_an_xcom(
    gemini_emulator: GeminiEmulator,
    fast_connection: str,
    documents: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Attempt 1 of a mapped upload dies after its uploads finished but before it could return (no XCom):
    # the worker is killed right after the fan-out, before the operator's own rollback could run.
    def killed(*args: Any, **kwargs: Any) -> Any:
        raise SystemExit("worker killed (SIGKILL) after uploading")

    with monkeypatch.context() as patched:
        patched.setattr(files_module, "map_index_label", killed)
        for index, path in enumerate(documents):
            with pytest.raises(SystemExit):
                _upload(path, task_id="upload_documents", map_index=index)
    assert gemini_emulator.stats()["files"] == len(documents)
    # Files of another run, and files this provider did not name, must survive the cleanup.
    other_run = _upload(documents[0], run_id="scheduled__2026-11-22T00:00:00+00:00")
    foreign = GeminiHook().upload_file(io.BytesIO(b"not ours"), mime_type="text/plain", display_name="keep")

    deleted = GeminiDeleteFilesOperator(
        task_id="delete_gemini_files", files=None, delete_run_uploads=True
    ).execute(context(task_id="delete_gemini_files"))

    assert len(deleted) == len(documents)
    left = {f["name"] for f in gemini_emulator.files()}
    assert left == {other_run.name, foreign.name}


def test_cleanup_with_xcom_and_prefix_deletes_each_file_once(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    uploaded = _upload(documents)
    as_xcom = [ref.to_dict() for ref in uploaded] + [None]  # a mapped upstream that pushed nothing

    deleted = GeminiDeleteFilesOperator(
        task_id="delete_gemini_files", files=as_xcom, delete_run_uploads=True
    ).execute(context(task_id="delete_gemini_files"))

    assert sorted(deleted) == sorted(ref.name for ref in uploaded)
    assert gemini_emulator.files() == []
    assert gemini_emulator.stats()["requests"]["delete"] == len(documents)
    # Running cleanup again (a retried cleanup task) is harmless.
    again = GeminiDeleteFilesOperator(
        task_id="delete_gemini_files", files=as_xcom, delete_run_uploads=True
    ).execute(context(task_id="delete_gemini_files"))
    assert again == []
    assert all(isinstance(GeminiFileRef.coerce(item), GeminiFileRef) for item in as_xcom[:-1])


def test_the_nightly_dag_cleans_up_an_upload_whose_task_died_before_its_xcom(
    run_dag: Callable[..., DagRun],
    gemini_emulator: GeminiEmulator,
    fast_connection: str,
    gcs_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real Airflow: one mapped upload task uploads its file, then dies; no XCom names that file."""
    client = gcs_emulator.client()
    bucket = client.create_bucket(f"reliability-orphans-{time.monotonic_ns()}")
    for index in range(4):
        bucket.blob(f"incoming/orphans/doc-{index}.txt").upload_from_string(
            f"Document {index}: meeting notes.\n" * 40, content_type="text/plain"
        )
    original = GeminiUploadFileOperator.execute

    def dies_after_uploading(self: GeminiUploadFileOperator, context: Any) -> Any:
        result = original(self, context)
        if str(self.source).endswith("doc-2.txt"):
            raise RuntimeError("worker lost after uploading, before the XCom was pushed")
        return result

    monkeypatch.setattr(GeminiUploadFileOperator, "execute", dies_after_uploading)
    conf = {"bucket": bucket.name, "mode": "upload", "prefix": "incoming/orphans/", "results_prefix": "out/"}

    run = run_dag("gemini_nightly_document_analysis", conf)

    assert run.state == "failed"  # the manifest reports the lost document and fails the run
    assert sorted(run.states("upload_documents"), key=str) == ["failed", "success", "success", "success"]
    assert run.tasks["delete_gemini_files"] == "success"
    requests = gemini_emulator.stats()["requests"]
    assert requests["upload_start"] == 4
    assert requests["delete"] == 4  # three named by XCom, the orphan found by the run's prefix
    assert gemini_emulator.files() == []
    results = sorted(blob.name for blob in client.list_blobs(bucket.name, prefix="out/"))
    assert results == ["out/_manifest.json", "out/doc-0.txt.json", "out/doc-1.txt.json", "out/doc-3.txt.json"]


# ---- issue 10, item 1: never the wrong bytes --------------------------------------------------------
def test_a_retry_after_the_source_was_fixed_uploads_the_new_bytes(
    gemini_emulator: GeminiEmulator,
    fast_connection: str,
    documents: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The user fixes an input file and clears the task: Gemini must get the fixed content, not the old."""
    caplog.set_level(logging.INFO)
    [first] = _upload(documents[:1], try_number=1)
    fixed = Path(documents[0]).read_text().replace("content", "CONTENT")  # same size, other bytes
    Path(documents[0]).write_text(fixed)

    [second] = _upload(documents[:1], try_number=2)

    assert second.name == first.name
    assert second.sha256_hex == hashlib.sha256(fixed.encode()).hexdigest() != first.sha256_hex
    assert "its content differs from the source" in caplog.text
    [stored] = gemini_emulator.files()
    assert stored["sha256Hash"] == second.sha256_hash


def test_a_foreign_file_under_the_predicted_name_is_never_returned_as_the_upload(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    """Someone else made a file under the predicted name (409 on a first try): it is replaced, not reused."""
    [planned] = _planned_names(documents[:1])
    GeminiHook().upload_file(io.BytesIO(b"someone else's bytes"), mime_type="text/plain", name=planned)

    [ref] = _upload(documents[:1])

    assert ref.name == planned
    assert ref.sha256_hex == hashlib.sha256(Path(documents[0]).read_bytes()).hexdigest()
    assert ref.size_bytes == Path(documents[0]).stat().st_size


def test_a_retry_of_a_gcs_upload_reuses_only_an_unchanged_object(
    gemini_emulator: GeminiEmulator, fast_connection: str, gcs_emulator: Any
) -> None:
    bucket = gcs_emulator.client().create_bucket(f"reliability-reuse-{time.monotonic_ns()}")
    blob = bucket.blob("incoming/report.txt")
    blob.upload_from_string(b"quarterly report v1\n" * 100, content_type="text/plain")
    uri = f"gs://{bucket.name}/incoming/report.txt"
    first = _upload(uri, try_number=1)
    chunks = gemini_emulator.stats()["requests"]["upload_chunk"]
    assert _upload(uri, try_number=2).name == first.name
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == chunks, "unchanged: reused, no byte sent"

    blob.upload_from_string(b"quarterly report v2\n" * 100, content_type="text/plain")  # a new generation
    third = _upload(uri, try_number=3)

    assert third.sha256_hex == hashlib.sha256(b"quarterly report v2\n" * 100).hexdigest()
    assert len(gemini_emulator.files()) == 1


# ---- issue 10, item 2: cleanup scoped to one deployment ------------------------------------------
STAGING = datetime(2026, 11, 22, 0, 0, 2, 81234, tzinfo=UTC)
PRODUCTION = datetime(2026, 11, 22, 0, 0, 1, 5507, tzinfo=UTC)


def test_two_deployments_sharing_a_key_and_a_run_id_never_touch_each_others_files(
    gemini_emulator: GeminiEmulator, fast_connection: str, documents: list[str]
) -> None:
    """Staging and production run the same DAG with the same scheduled run id and the same API key."""
    staging = _upload(documents, run_started=STAGING)
    production = _upload(documents, run_started=PRODUCTION)
    assert {ref.name for ref in staging}.isdisjoint(ref.name for ref in production)

    again = _upload(documents, run_started=STAGING, try_number=2)  # a staging retry finds its own files
    assert [ref.name for ref in again] == [ref.name for ref in staging]

    deleted = GeminiDeleteFilesOperator(
        task_id="delete_gemini_files", files=None, delete_run_uploads=True
    ).execute(context(task_id="delete_gemini_files", run_started=STAGING))

    assert sorted(deleted) == sorted(ref.name for ref in staging)
    assert sorted(f["name"] for f in gemini_emulator.files()) == sorted(ref.name for ref in production)


def test_a_configured_deployment_id_scopes_the_names_instead_of_the_run_start(
    gemini_emulator: GeminiEmulator,
    fast_connection: str,
    documents: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__GEMINI_FILES__DEPLOYMENT_ID", "production")
    first = _upload(documents[:1], run_started=PRODUCTION)
    # The run was cleared after it finished: it restarts later, in the same deployment.
    restarted = _upload(documents[:1], run_started=STAGING, try_number=2)
    assert restarted[0].name == first[0].name
    assert gemini_emulator.stats()["files"] == 1
    monkeypatch.setenv("AIRFLOW__GEMINI_FILES__DEPLOYMENT_ID", "staging")
    assert _upload(documents[:1], run_started=PRODUCTION)[0].name != first[0].name
