"""Real DAG runs for tests: ``dag.test()`` of a DAG file parsed through a DAG bundle of its own.

The DAG that runs is the serialized one Airflow would schedule, with the same XCom serde, mapping and
triggers. The ``airflow_db`` and ``run_dag`` fixtures (tests/conftest.py) wrap this module.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.example_dags import FOLDER as EXAMPLE_DAGS_FOLDER

REPO = Path(__file__).resolve().parents[1]
"""The example DAGs that ``run_dag`` runs by default: the ones shipped in the package."""
BUNDLE = "example-dags"
FIRST_LOGICAL_DATE = datetime(2026, 11, 2, tzinfo=UTC)  # after every example DAG's start_date

_dates = itertools.count()


@dataclass
class DagRunResult:
    """What a test checks after a run: the run state and each task instance's state and label."""

    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str | None]
    """``task_id`` or ``task_id[map label]`` -> state."""
    logical_date: datetime
    seconds: float = 0.0

    @property
    def ds(self) -> str:
        return self.logical_date.date().isoformat()

    def states(self, task_id: str) -> list[str | None]:
        """States of every instance of ``task_id`` (mapped or not)."""
        return [s for key, s in self.tasks.items() if key == task_id or key.startswith(f"{task_id}[")]

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The value a task pushed, as a downstream task would receive it (serde applied)."""
        from airflow.models.xcom import XComModel
        from airflow.sdk.serde import deserialize
        from airflow.utils.session import create_session

        with create_session() as session:
            query = XComModel.get_many(
                run_id=self.run_id, key=key, task_ids=task_id, dag_ids=self.dag_id, map_indexes=map_index
            )
            row = session.scalars(query).first()
            assert row is not None, f"{task_id} pushed no XCom {key!r}"
            return deserialize(XComModel.deserialize_value(row))

    def tries(self, task_id: str) -> int:
        """How many times an unmapped task instance ran."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            query = select(TaskInstance.try_number).where(
                TaskInstance.dag_id == self.dag_id,
                TaskInstance.run_id == self.run_id,
                TaskInstance.task_id == task_id,
            )
            return int(session.scalars(query).one())

    def mapped(self, task_id: str) -> dict[str, str | None]:
        """The map labels (document names) and states of a mapped task."""
        prefix = f"{task_id}["
        return {key[len(prefix) : -1]: state for key, state in self.tasks.items() if key.startswith(prefix)}


def next_logical_date() -> datetime:
    """A logical date no other run of this session uses (so runs never share task instances)."""
    return FIRST_LOGICAL_DATE + timedelta(days=next(_dates))


def run_dag(
    monkeypatch: pytest.MonkeyPatch,
    dag_id: str,
    conf: dict[str, Any] | None = None,
    *,
    retries: int = 0,
    tweak: Callable[[Any], None] | None = None,
    dags_folder: Path = EXAMPLE_DAGS_FOLDER,
    logical_date: datetime | None = None,
) -> DagRunResult:
    """One real run of ``dag_id`` from ``dags_folder``, every task's retries set to ``retries``."""
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.utils.session import create_session

    bundle = BUNDLE if dags_folder == EXAMPLE_DAGS_FOLDER else f"{BUNDLE}-{dags_folder.name}"
    bundles = [
        {
            "name": bundle,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(dags_folder), "refresh_interval": 0},
        }
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    bag = BundleDagBag(dag_folder=dags_folder, bundle_path=dags_folder, bundle_name=bundle)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"{dag_id} not found in {dags_folder}"
    for task in dag.tasks:
        task.retries = retries
    if tweak is not None:
        tweak(dag)
    logical_date = logical_date or next_logical_date()
    started = time.monotonic()
    result = dag.test(logical_date=logical_date, run_conf=conf or {})
    seconds = time.monotonic() - started
    with create_session() as session:
        tasks = {
            ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]": (
                str(ti.state) if ti.state else None
            )
            for ti in result.get_task_instances(session=session)
        }
    return DagRunResult(dag_id, result.run_id, str(result.state), tasks, logical_date, seconds)
