"""The ``hook_target`` fixture: a GeminiHook on the emulator, and (marked ``live``) on the real Gemini API.

Provider contract tests take it and run twice, like the emulator's own contract tests: offline against
the emulators, and with ``GEMINI_API_KEY`` set (``uv run pytest -m live``) against the real service
through an ordinary ``gemini`` connection. Registration live needs ``GEMINI_LIVE_GCS_URI`` and
Application Default Credentials (``GEMINI_LIVE_REGISTER_AUTH`` picks the connection's ``register_auth``).
Every file a test creates through the target is deleted when the test ends. See ``tests/live.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from live import LIVE_BASE_URL_ENV, LIVE_KEY_ENV, HookTarget, live_model

from airflow_gemini_files.hooks.gemini import GeminiHook

LIVE_REGISTER_AUTH_ENV = "GEMINI_LIVE_REGISTER_AUTH"


@pytest.fixture(params=["emulator", pytest.param("live", marks=pytest.mark.live)])
def hook_target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[HookTarget]:
    """A hook through the connection ``gemini_contract``; what the test creates is deleted afterwards."""
    if request.param == "live":
        key = os.environ.get(LIVE_KEY_ENV)
        if not key:
            pytest.skip(f"set {LIVE_KEY_ENV} to run the provider's contract tests against the Gemini API")
        extra = {}
        if os.environ.get(LIVE_BASE_URL_ENV):
            extra["base_url"] = os.environ[LIVE_BASE_URL_ENV]
        if os.environ.get(LIVE_REGISTER_AUTH_ENV):
            extra["register_auth"] = os.environ[LIVE_REGISTER_AUTH_ENV]
        # Live GCS is reached with Application Default Credentials, never an emulator another test started.
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", raising=False)
        emulator = None
    else:
        emulator = request.getfixturevalue("gemini_emulator")
        key = emulator.api_key
        extra = {"base_url": emulator.base_url}
    conn = {"conn_type": "gemini", "password": key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_CONTRACT", json.dumps(conn))
    target = HookTarget(GeminiHook(gemini_conn_id="gemini_contract"), live_model(), emulator)
    try:
        yield target
    finally:
        target.hook.delete_files_quietly(target.created)


@pytest.fixture
def dag_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str, str], Path]:
    """``dag_bundle(bundle_name, file_name, source)``: a local DAG bundle folder holding one DAG file,
    configured as this test's only bundle (for ``BundleDagBag`` and ``dag.test()``)."""

    def make(bundle_name: str, file_name: str, source: str) -> Path:
        folder = tmp_path / "dags"
        folder.mkdir()
        (folder / file_name).write_text(source)
        bundle = {
            "name": bundle_name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder), "refresh_interval": 0},
        }
        monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
        return folder

    return make


@pytest.fixture
def run_bundle_dag() -> Callable[..., tuple[Any, dict[str, str], dict[str, int]]]:
    """``run_bundle_dag(folder, bundle_name, dag_id, logical_date)``: the DAG run by ``dag.test()`` from a
    :func:`dag_bundle` folder, with each task's state and try number."""

    def run(
        folder: Path, bundle_name: str, dag_id: str, logical_date: Any
    ) -> tuple[Any, dict[str, str], dict[str, int]]:
        from airflow.dag_processing.dagbag import BundleDagBag
        from airflow.utils.session import create_session

        bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name=bundle_name)
        assert not bag.import_errors, bag.import_errors
        dag_run = bag.get_dag(dag_id).test(logical_date=logical_date)
        with create_session() as session:
            tis = dag_run.get_task_instances(session=session)
            states = {ti.task_id: str(ti.state) for ti in tis}
            tries = {ti.task_id: ti.try_number for ti in tis}
        return dag_run, states, tries

    return run
