"""The nightly DAG with Airflow's object-storage XCom backend: the refs travel through files, not the DB.

For lists of refs that outgrow the metadata database (README, "Very large runs"), Airflow's
``XComObjectStorageBackend`` (apache-airflow-providers-common-io) keeps values above a threshold in object
storage and only their path in the database. Here it writes to a local path: its GCS filesystem (gcsfs)
is not pointed at the GCS emulator. The refs must make the round trip through the backend's JSON (serde
with the class allow-listed), and the run must behave as with the database backend.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_gemini_files.refs import GeminiFileRef

from .test_nightly_document_analysis import DOCUMENTS, nightly  # noqa: F401 (the fixture)

backend = pytest.importorskip("airflow.providers.common.io.xcom.backend")

BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"


@pytest.fixture
def object_storage_xcom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """XComs of 1 KiB or more go to ``tmp_path/xcom`` for this test (the task runner resolves the backend
    class once, at import: it is swapped in where the runner and the lazy XCom sequences read it)."""
    from airflow.sdk.execution_time import task_runner, xcom

    root = tmp_path / "xcom"
    monkeypatch.setenv("AIRFLOW__CORE__XCOM_BACKEND", BACKEND)
    monkeypatch.setenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", f"file://{root}")
    monkeypatch.setenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD", "1024")
    cached = (backend._get_base_path, backend._get_threshold, backend._get_compression)
    for function in cached:
        function.cache_clear()
    monkeypatch.setattr(xcom, "XCom", backend.XComObjectStorageBackend)
    monkeypatch.setattr(task_runner, "XCom", backend.XComObjectStorageBackend)
    yield root
    for function in cached:
        function.cache_clear()


def test_the_nightly_run_passes_its_refs_through_object_storage(
    nightly: Any,  # noqa: F811
    object_storage_xcom: Path,
    gemini_emulator: Any,
) -> None:
    run, results, manifest = nightly("register")

    assert run.state == "success", run.tasks
    assert sorted(results) == [f"{name}.json" for name in DOCUMENTS]
    assert manifest is not None
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (5, 5, 0)
    assert gemini_emulator.files() == []  # cleanup read its list of refs back from object storage
    # The database holds only the path; the refs are in a JSON file under the configured path.
    stored = run.xcom("register_documents")
    assert isinstance(stored, str)
    assert stored.startswith(f"file://{object_storage_xcom}/")
    refs = backend.XComObjectStorageBackend.deserialize_value(SimpleNamespace(value=stored))
    assert all(isinstance(ref, GeminiFileRef) for ref in refs)
    assert sorted(ref.source_uri.rsplit("/", 1)[-1] for ref in refs) == DOCUMENTS
    written = [path for path in object_storage_xcom.rglob("*") if path.is_file()]
    assert len(written) >= 2  # at least the register list and the documents list
