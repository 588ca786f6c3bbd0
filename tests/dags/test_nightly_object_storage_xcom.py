"""The nightly DAG with Airflow's object-storage XCom backend: the refs travel through files, not the DB.

For lists of refs that outgrow the metadata database (README, "Very large runs", whose settings this
runs), Airflow's ``XComObjectStorageBackend`` (apache-airflow-providers-common-io) keeps values above a
threshold in object storage (gzipped) and only their path in the database. Here it writes to a local
path: its GCS filesystem (gcsfs) is not pointed at the GCS emulator. The refs must make the round trip
through the backend's JSON (serde with the class allow-listed), and the run must behave as with the
database backend.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_gemini_files.refs import GeminiFileRef

from .test_nightly_document_analysis import DOCUMENTS, nightly  # noqa: F401 (the fixture)

backend = pytest.importorskip("airflow.providers.common.io.xcom.backend")

BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def readme_xcom_settings() -> dict[str, str]:
    """The README's configuration ("Very large runs") as Airflow environment variables."""
    after = README[README.index("### Very large runs") :]
    match = re.search(r"```ini\n(.*?)```", after, re.DOTALL)
    assert match is not None
    config = configparser.ConfigParser()
    config.read_string(match.group(1))
    return {
        f"AIRFLOW__{section.upper().replace('.', '_')}__{key.upper()}": value
        for section in config.sections()
        for key, value in config[section].items()
    }


@pytest.fixture
def object_storage_xcom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """XComs of 1 KiB or more go to ``tmp_path/xcom`` for this test (the task runner resolves the backend
    class once, at import: it is swapped in where the runner and the lazy XCom sequences read it)."""
    from airflow.sdk.execution_time import task_runner, xcom

    root = tmp_path / "xcom"
    settings = readme_xcom_settings()
    assert settings["AIRFLOW__CORE__XCOM_BACKEND"] == BACKEND
    # The README's settings, with a local path (see above) and a threshold the test's five refs exceed.
    settings["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] = f"file://{root}"
    settings["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD"] = "1024"
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
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
