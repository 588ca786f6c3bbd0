"""Suite-wide set-up: a throw-away AIRFLOW_HOME per session, the emulator fixtures, the fake hook, real DAG
runs, shared test endpoints.

The first lines are the README's ``conftest.py`` for testing your own DAGs, except the DAGs folder: the
DAG tests here configure a bundle per run (``tests/dag_runs.py``). Shared by every test directory (one
copy each): ``fake_hook`` (operators, sensor and trigger get a :class:`doubles.FakeGeminiHook`),
``airflow_db`` and ``run_dag`` (one real ``dag.test()`` run of a DAG file), ``forbidden_gcs_url``. Test
doubles (task instance, context, service-account key) are in ``tests/doubles.py``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any

import pytest

# Before anything imports Airflow: it reads its configuration once, at import time.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="gemini-files-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# GeminiFileRef allow-lists itself for XCom on Task SDK 1.3+ (Airflow 3.3); Airflow 3.2 needs the config
# line the README gives. Only there, so that on 3.3 the suite checks the self-allow-listing.
if tuple(int(part) for part in version("apache-airflow-task-sdk").split(".")[:2]) < (1, 3):
    os.environ.setdefault(
        "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES", "airflow.* airflow_gemini_files.refs.GeminiFileRef"
    )

pytest_plugins = ["airflow_gemini_files.testing"]


# ---- live contract mode -------------------------------------------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``GEMINI_API_KEY`` the ``live`` runs are deselected: CI stays offline (see tests/live.py)."""
    from live import deselect_live_without_key

    deselect_live_without_key(config, items)


# ---- the fake hook ----------------------------------------------------------------------------------
@pytest.fixture
def fake_hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A :class:`doubles.FakeGeminiHook` that every operator, the sensor and the trigger use as their hook."""
    from doubles import FakeGeminiHook

    from airflow_gemini_files.operators import base
    from airflow_gemini_files.triggers import files as triggers

    fake = FakeGeminiHook()
    monkeypatch.setattr(base, "GeminiHook", lambda **kwargs: fake)
    monkeypatch.setattr(triggers, "GeminiHook", lambda **kwargs: fake)
    return fake


# ---- real DAG runs ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The session's metadata DB (SQLite in the session's AIRFLOW_HOME), migrated once (a few seconds)."""
    from airflow.utils import db

    db.upgradedb()


@pytest.fixture
def run_dag(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """
    ``run_dag(dag_id, conf=None, retries=0, tweak=None, dags_folder=..., logical_date=None)``: one real run
    (see ``tests/dag_runs.py``), a :class:`dag_runs.DagRunResult`. Retries are off by default so a failing
    task fails at once; ``tweak(dag)`` may adjust the parsed DAG (a shorter poke interval) first.
    """
    import dag_runs

    return functools.partial(dag_runs.run_dag, monkeypatch)


class _ForbiddenStorage(http.server.BaseHTTPRequestHandler):
    """A storage endpoint that refuses everything, as GCS does without storage.objects.* permission."""

    def _refuse(self) -> None:
        body = json.dumps(
            {"error": {"code": 403, "message": "caller does not have storage.objects.get access"}}
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def forbidden_gcs_url() -> Iterator[str]:
    """Base URL of a GCS endpoint on 127.0.0.1 that answers every request 403 PERMISSION_DENIED."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForbiddenStorage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
