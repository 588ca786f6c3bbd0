"""Run the example DAGs for real (``dag.test()`` on the parsed files) against the local emulators.

The metadata DB (SQLite in the session's AIRFLOW_HOME, see tests/conftest.py) is migrated once per
session. Each run parses the DAG file from ``airflow_gemini_files/example_dags/`` through a DAG bundle
of its own, so the DAG that runs is the serialized one Airflow would schedule, with the same XCom
serde, mapping and triggers.
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

from airflow_gemini_files.example_dags import FOLDER as DAGS_FOLDER

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "example-dags"
FIRST_LOGICAL_DATE = datetime(2026, 11, 2, tzinfo=UTC)  # after every example DAG's start_date

_dates = itertools.count()
_buckets = itertools.count()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The session's metadata DB, migrated once (a few seconds on SQLite)."""
    from airflow.utils import db

    db.upgradedb()


@dataclass
class DagRunResult:
    """What a test checks after a run: the run state and each task instance's state and label."""

    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str | None]
    """``task_id`` or ``task_id[map label]`` -> state."""
    logical_date: datetime

    @property
    def ds(self) -> str:
        return self.logical_date.date().isoformat()

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


def _load_dag(dag_id: str, dags_folder: Path, bundle: str) -> Any:
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=dags_folder, bundle_path=dags_folder, bundle_name=bundle)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"{dag_id} not found in {dags_folder}"
    return dag


def next_logical_date() -> datetime:
    """A logical date no other run of this session uses (so runs never share task instances)."""
    return FIRST_LOGICAL_DATE + timedelta(days=next(_dates))


@pytest.fixture
def run_dag(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DagRunResult]:
    """
    ``run_dag(dag_id, conf=None, retries=0, tweak=None, dags_folder=DAGS_FOLDER, logical_date=None)``.

    One real run of a DAG parsed from ``dags_folder``. Retries are off by default so a failing task fails
    at once instead of waiting for its retry delay; ``tweak(dag)`` may adjust the parsed DAG (e.g. a
    shorter poke interval) before it runs.
    """

    def run(
        dag_id: str,
        conf: dict[str, Any] | None = None,
        *,
        retries: int = 0,
        tweak: Callable[[Any], None] | None = None,
        dags_folder: Path = DAGS_FOLDER,
        logical_date: datetime | None = None,
    ) -> DagRunResult:
        from airflow.utils.session import create_session

        bundle = BUNDLE if dags_folder == DAGS_FOLDER else f"{BUNDLE}-{dags_folder.name}"
        bundles = [
            {
                "name": bundle,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(dags_folder), "refresh_interval": 0},
            }
        ]
        monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
        dag = _load_dag(dag_id, dags_folder, bundle)
        for task in dag.tasks:
            task.retries = retries
        if tweak is not None:
            tweak(dag)
        logical_date = logical_date or next_logical_date()
        run = dag.test(logical_date=logical_date, run_conf=conf or {})
        with create_session() as session:
            tasks = {
                ti.task_id
                if ti.map_index < 0
                else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]": (
                    str(ti.state) if ti.state else None
                )
                for ti in run.get_task_instances(session=session)
            }
        return DagRunResult(
            dag_id=dag_id, run_id=run.run_id, state=str(run.state), tasks=tasks, logical_date=logical_date
        )

    return run


@pytest.fixture
def bucket(gcs_emulator: Any) -> str:
    """A new, empty bucket in the GCS emulator (unique per test)."""
    name = f"dag-test-{next(_buckets)}"
    gcs_emulator.client().create_bucket(name)
    return name


def read_json_objects(gcs_emulator: Any, bucket: str, prefix: str) -> dict[str, Any]:
    """Every JSON object under ``gs://bucket/prefix``, by object name relative to the prefix."""
    return {
        blob.name[len(prefix) :]: json.loads(blob.download_as_bytes())
        for blob in gcs_emulator.client().list_blobs(bucket, prefix=prefix)
    }
