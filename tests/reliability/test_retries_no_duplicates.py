"""Retries without duplicates: a task retried after it already created files leaves no second copy.

Design under test (``operators/_context.py``): every upload gets a deterministic file id,
``af<12 hex of sha256(dag_id, run_id)>-<25 hex of sha256(task_id, map_index, list position, source)>``.
The try number is not part of it, so attempt 2 computes the id attempt 1 used: it reuses that file when it
is still usable, replaces it when it FAILED or expired, and uploads it when attempt 1 died before the
upload finished. The run-wide prefix lets ``GeminiDeleteFilesOperator(delete_run_uploads=True)`` list and
delete every upload of the run even when no XCom was ever written. The emulator's file count proves it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators import files as files_module
from airflow_gemini_files.operators._context import run_file_prefix
from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiUploadFileOperator
from airflow_gemini_files.refs import GeminiFileRef

from .conftest import DagRun, context

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
    assert stats["requests"]["upload_start"] == len(documents)  # the retry sent no byte
    prefix = run_file_prefix("nightly", RUN)
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
    from airflow_gemini_files.operators._context import upload_file_id

    ctx = context(**ti)
    return [f"files/{upload_file_id(ctx, position, source)}" for position, source in enumerate(sources)]


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
        patched.setattr(files_module, "files_label", killed)
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
