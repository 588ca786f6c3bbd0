"""Shared set-up of the reliability suite: fast retries, a task context, and real DAG runs.

Everything talks to the real emulators through the real SDK and storage client (fixtures of the
``airflow_gemini_files.testing`` plugin); only the retry *delays* are shortened so faults cost
milliseconds instead of seconds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.example_dags import FOLDER as EXAMPLE_DAGS_FOLDER

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = EXAMPLE_DAGS_FOLDER
BUNDLE = "reliability-dags"
FAST_RETRIES = {"retry_attempts": 8, "retry_initial_delay": 0.01, "retry_max_delay": 0.05}
"""Connection extras: as many attempts as a nightly run needs to ride out 15 % faults, tiny waits."""

_dates = itertools.count()


def set_connection(
    monkeypatch: pytest.MonkeyPatch, emulator: GeminiEmulator, *, key: str | None = None, **extra: Any
) -> str:
    """Point ``gemini_default`` at ``emulator`` with fast retries (``extra`` overrides); returns its id."""
    conn = {
        "conn_type": "gemini",
        "password": emulator.api_key if key is None else key,
        "extra": {"base_url": emulator.base_url, **FAST_RETRIES, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    return "gemini_default"


@pytest.fixture
def fast_connection(gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``gemini_default`` on the emulator with retries that wait milliseconds."""
    return set_connection(monkeypatch, gemini_emulator)


class FakeTI:
    """The task-instance surface the operators use: identity, try number, XCom push."""

    def __init__(
        self,
        *,
        dag_id: str = "nightly",
        run_id: str = "scheduled__2026-11-21T00:00:00+00:00",
        task_id: str = "upload",
        map_index: int = -1,
        try_number: int = 1,
    ) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def context(**ti: Any) -> Any:
    """A task context holding a :class:`FakeTI` (``ti`` kwargs: dag_id, run_id, task_id, map_index, ...)."""
    return {"ti": FakeTI(**ti)}


# ---- real DAG runs --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The session's metadata DB (SQLite in the session's AIRFLOW_HOME), migrated once."""
    from airflow.utils import db

    db.upgradedb()


@dataclass
class DagRun:
    """State of one finished run: the run and every task instance (``task`` or ``task[label]``)."""

    state: str
    tasks: dict[str, str | None]
    logical_date: datetime
    seconds: float

    def states(self, task_id: str) -> list[str | None]:
        """States of every instance of ``task_id`` (mapped or not)."""
        return [s for key, s in self.tasks.items() if key == task_id or key.startswith(f"{task_id}[")]


@pytest.fixture
def run_dag(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DagRun]:
    """``run_dag(dag_id, conf)``: parse the example DAGs as a bundle, ``dag.test()`` one run, retries off."""
    bundles = [
        {
            "name": BUNDLE,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(DAGS_FOLDER), "refresh_interval": 0},
        }
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))

    def run(dag_id: str, conf: dict[str, Any]) -> DagRun:
        import time

        from airflow.dag_processing.dagbag import BundleDagBag
        from airflow.utils.session import create_session

        bag = BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name=BUNDLE)
        assert not bag.import_errors, bag.import_errors
        dag = bag.get_dag(dag_id)
        assert dag is not None
        for task in dag.tasks:
            task.retries = 0  # hook-level retries must carry the run; task retries would wait minutes
        logical_date = datetime(2027, 6, 1, tzinfo=UTC) + timedelta(days=next(_dates))
        started = time.monotonic()
        result = dag.test(logical_date=logical_date, run_conf=conf)
        seconds = time.monotonic() - started
        with create_session() as session:
            tasks = {
                _task_key(ti): str(ti.state) if ti.state else None
                for ti in result.get_task_instances(session=session)
            }
        return DagRun(str(result.state), tasks, logical_date, seconds)

    return run


def _task_key(ti: Any) -> str:
    return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"
