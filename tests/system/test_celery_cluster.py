"""The nightly DAG on the CeleryExecutor: PostgreSQL, Redis, two Celery workers, a worker killed.

One deployment for the module (``tests/system/cluster.py``): PostgreSQL (metadata DB and Celery result
backend), Redis (broker), scheduler, dag-processor, triggerer, api-server and two Celery workers with four
slots each, every one its own process group; the Gemini and GCS emulators; and the README's cluster
policy, which puts every task of this provider into a pool of ``POOL_SLOTS`` slots.

Two runs of ``DOCUMENTS`` documents each, side by side (CI time: bench/results/celery.md):

1. register mode, its files parked PROCESSING. Once all its sensors are deferred (their first executions
   ran on both workers), the upload run starts and the triggerer is SIGKILLed and restarted; only the
   new triggerer sees the files turn ACTIVE;
2. upload mode, every upload chunk held by the emulator for a few seconds: worker-1 is SIGKILLed (its
   whole process tree, as when a host dies) in the middle of an upload and stays dead; its task
   instances miss their heartbeats, are retried on worker-2, and their deterministic file names keep
   them from duplicating anything.

Checked on the emulator (one Gemini file per document, none left, requests in flight under the pool)
and in the metadata DB (both workers executed document tasks, host and pid recorded, the
``GeminiFileRef`` values in PostgreSQL's XCom table). ``bench/celery_throughput.py`` runs 200 documents.

Needs Debian's ``postgresql`` and ``redis-server`` (``bash .ci/services.sh``): without them the module is
skipped, or fails when ``GEMINI_FILES_REQUIRE_SERVICES=1`` (set by ``.ci/services.sh`` in CI).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.demo import DAG_ID
from airflow_gemini_files.refs import GeminiFileRef

from .backing_services import REQUIRE_SERVICES_ENV, missing_services
from .cluster import BUCKET, REPO, NightlyCluster, nightly_cluster, seed_documents
from .runs import (
    PARKED,
    SENSOR,
    RunRecord,
    TriggererRestart,
    Watch,
    assert_succeeded,
    task_log_folder,
    watch_runs,
)

DOCUMENTS = int(os.environ.get("GEMINI_CELERY_DOCUMENTS", "30"))
"""Documents per run: 30 keeps the module near 4 minutes on 2 shared cores (bench/results/celery.md);
``GEMINI_CELERY_DOCUMENTS=200`` runs the full nightly volume."""
RUN_TIMEOUT = 300.0 + 15.0 * DOCUMENTS
"""Generous: both runs end within ~6 s per document here, plus the ~2 minutes a killed worker costs."""

pytestmark = [pytest.mark.system, pytest.mark.celery, pytest.mark.timeout(RUN_TIMEOUT + 300)]
WORKERS, SLOTS = ("worker-1", "worker-2"), 4
POOL, POOL_SLOTS = "gemini_api", 4
"""The README policy's pool, smaller than the 8 worker slots so that it is what limits Gemini calls."""
DELETE_MAX_CONCURRENCY = 8
"""``GeminiDeleteFilesOperator``'s default ``max_concurrency``: one task, many files, many calls at once."""
UPLOAD_CHUNK_LATENCY = 3.0
"""Seconds the emulator holds each upload chunk until worker-1 is killed: its uploads are mid-flight."""
GEMINI_TASKS = ("register_documents", "upload_documents", "per_document.wait_active", "per_document.analyse")
OTHER_TASKS = ("choose_mode", "list_documents", "documents", "per_document.store_result", "write_manifest")


def readme_python_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", readme[readme.index(heading) :], re.DOTALL)
    assert match is not None, heading
    return match.group(1)


POOL_POLICY_HEADING = "### One pool for every Gemini call of the cluster"
PRELOAD_HEADING = "### Celery workers: import the provider once"
SIDE_BY_SIDE = """

def dag_policy(dag):
    # The test runs the register and the upload run side by side (CI time); the DAG allows one at a time.
    dag.max_active_runs = 2


_readme_task_policy = task_policy


def task_policy(task):
    # CI time: the killed worker's task instances are retried after 5 s, not the DAG's 1 min with
    # exponential backoff; what the test checks (nothing duplicated, nothing left) is the same.
    _readme_task_policy(task)
    from datetime import timedelta

    task.retry_delay = timedelta(seconds=5)
    task.retry_exponential_backoff = False
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[NightlyCluster]:
    """The Celery deployment with the README's pool policy, the pool, and the nightly DAG unpaused."""
    missing = missing_services()
    if missing:
        reason = "; ".join(missing)
        if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
            pytest.fail(f"{REQUIRE_SERVICES_ENV}=1 but services are missing: {reason}")
        pytest.skip(f"Celery cluster tests need PostgreSQL and Redis: {reason}")
    with nightly_cluster(
        workers=len(WORKERS),
        slots=SLOTS,
        processing_delay=PARKED,
        model_latency=0.3,
        local_settings=readme_python_block(POOL_POLICY_HEADING) + SIDE_BY_SIDE,
        keep=bool(os.environ.get("GEMINI_SYSTEM_KEEP")),
    ) as nightly:
        assert nightly.cluster.workers == WORKERS
        nightly.airflow.api(
            "POST",
            "/pools",
            {"name": POOL, "slots": POOL_SLOTS, "description": "Gemini API calls", "include_deferred": False},
        )
        nightly.airflow.unpause(DAG_ID)
        yield nightly


@dataclass
class Scenario:
    """The two runs, as watched, and what the test did to the deployment meanwhile."""

    register: RunRecord
    upload: RunRecord
    register_ds: str
    upload_ds: str
    files_seen: dict[str, dict[str, Any]]
    """Every Gemini file the emulator held while the runs ran (name -> resource)."""
    requests: dict[str, int]
    peaks: dict[str, int]
    """The most Gemini requests of each operation in flight at once."""
    restart: TriggererRestart
    kill: KillWorker


@dataclass
class KillWorker:
    """SIGKILL worker-1's whole process tree (as when its host dies) once one of its upload task instances
    has logged that its upload session started; the emulator holds every upload chunk until then."""

    cluster: NightlyCluster
    killed: dict[str, int] = field(default_factory=dict)
    """Task instances running on worker-1 when it was killed -> their try number then."""
    mid_upload: list[str] = field(default_factory=list)

    def __call__(self, record: RunRecord) -> None:
        if self.killed:
            return
        self.mid_upload = [
            key
            for key, row in record.instances.items()
            if key.startswith("upload_documents[") and row.state == "running" and row.hostname == WORKERS[0]
            and _upload_started(self.cluster.home, record.run_id, key, row.try_number)
        ]  # fmt: skip
        if not self.mid_upload:
            return
        self.killed = {
            key: row.try_number
            for key, row in record.instances.items()
            if row.state == "running" and row.hostname == WORKERS[0]
        }
        self.cluster.airflow.kill(WORKERS[0], signal.SIGKILL)
        self.cluster.gemini.inject_faults("upload_chunk")  # full speed again


def _upload_started(home: Path, run_id: str, key: str, try_number: int) -> bool:
    log = task_log_folder(home, run_id, key) / f"attempt={try_number}.log"
    return log.exists() and " in chunks of " in log.read_text(errors="replace")  # logged once started


@pytest.fixture(scope="module")
def scenario(cluster: NightlyCluster) -> Scenario:
    """The register run starts; once all its sensors are deferred (they ran on both workers), the upload
    run starts and the triggerer is killed and restarted; worker-1 dies in the middle of an upload and
    stays dead; the register run is released once the new triggerer holds its triggers."""
    airflow, gemini = cluster.airflow, cluster.gemini
    register_day = datetime.now(UTC).date() - timedelta(days=1)
    register_ds, register_id = start_run(cluster, register_day, "register")
    upload_ds = (register_day - timedelta(days=1)).isoformat()
    seed_documents(cluster.gcs.client(), BUCKET, f"incoming/{upload_ds}/", DOCUMENTS)
    restart = TriggererRestart(airflow, gemini, expected=DOCUMENTS)
    kill = KillWorker(cluster)

    def step(watch: Watch) -> None:
        register = watch.records[register_id]
        if len(watch.run_ids) == 1 and register.deferred_sensors_assigned(DOCUMENTS):
            gemini.configure(processing_delay=0.0)  # the upload run's files are ACTIVE at once
            gemini.inject_faults("upload_chunk", latency=UPLOAD_CHUNK_LATENCY)
            watch.run_ids.append(trigger(cluster, upload_ds, "upload"))
        restart(register)
        if len(watch.run_ids) == 2 and watch.run_ids[1] in watch.records:
            kill(watch.records[watch.run_ids[1]])

    watch = watch_runs(airflow, [register_id], step, timeout=RUN_TIMEOUT, gemini=gemini)
    assert len(watch.run_ids) == 2, f"the register run's sensors never were all deferred: {watch.records}"
    stats = gemini.stats()
    return Scenario(
        register=watch.records[register_id],
        upload=watch.records[watch.run_ids[1]],
        register_ds=register_ds,
        upload_ds=upload_ds,
        files_seen=watch.files_seen,
        requests=dict(stats["requests"]),
        peaks=dict(stats["peak_in_flight"]),
        restart=restart,
        kill=kill,
    )


def trigger(cluster: NightlyCluster, ds: str, mode: str) -> str:
    return cluster.airflow.trigger(DAG_ID, f"celery_{mode}_{ds}", f"{ds}T00:00:00Z", {"mode": mode})


def start_run(cluster: NightlyCluster, day: date, mode: str) -> tuple[str, str]:
    ds = day.isoformat()
    seed_documents(cluster.gcs.client(), BUCKET, f"incoming/{ds}/", DOCUMENTS)
    return ds, trigger(cluster, ds, mode)


# ---- checks --------------------------------------------------------------------------------------------
def manifest(cluster: NightlyCluster, ds: str) -> dict[str, Any]:
    blob = cluster.gcs.client().bucket(BUCKET).blob(f"results/{ds}/_manifest.json")
    data: dict[str, Any] = json.loads(blob.download_as_bytes())
    return data


def executions(cluster: NightlyCluster, run_id: str) -> list[tuple[str, int, int, str]]:
    """Every start of a task instance of the run on a worker (Airflow's audit log: one "running" event per
    execution, resumed sensors and retries included): task id, map index, try number, host."""
    rows = cluster.airflow.query(
        "SELECT task_id, map_index, try_number, extra FROM log WHERE dag_id = ? AND run_id = ? "
        "AND event = 'running'",
        (DAG_ID, run_id),
    )
    return [
        (task, index, tries, json.loads(extra or "{}").get("host_name")) for task, index, tries, extra in rows
    ]


def refs_from_xcom(cluster: NightlyCluster, run_id: str, task_id: str) -> list[GeminiFileRef]:
    """What ``task_id`` returned, read from PostgreSQL's XCom table and deserialized as Airflow does."""
    from airflow.sdk.serde import deserialize

    rows = cluster.airflow.query(
        "SELECT CAST(value AS TEXT) FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? "
        "AND key = 'return_value'",
        (DAG_ID, run_id, task_id),
    )
    refs: list[GeminiFileRef] = []
    for (text,) in rows:
        value = deserialize(json.loads(text))
        refs += value if isinstance(value, list) else [value]
    return refs


def check_run(cluster: NightlyCluster, record: RunRecord, ds: str, mode: str, files_seen: dict) -> set[str]:
    """Success, every result stored, the refs crossed XCom, one Gemini file per document; its file names."""
    assert_succeeded(cluster.airflow, record, DOCUMENTS)
    result = manifest(cluster, ds)
    assert (result["documents"], result["succeeded"], result["failed"], result["mode"]) == (
        DOCUMENTS, DOCUMENTS, 0, mode
    )  # fmt: skip
    producer = "register_documents" if mode == "register" else "upload_documents"
    produced = refs_from_xcom(cluster, record.run_id, producer)
    waited = refs_from_xcom(cluster, record.run_id, SENSOR)
    for refs in (produced, waited):
        assert all(isinstance(ref, GeminiFileRef) for ref in refs), refs[:2]
        sources = [ref.source_uri for ref in refs]
        assert len(set(sources)) == DOCUMENTS == len(sources), sources  # one ref per document
        assert all(str(uri).startswith(f"gs://{BUCKET}/incoming/{ds}/") for uri in sources), sources
    names = {ref.name for ref in produced}
    assert names == {ref.name for ref in waited}  # each sensor returned its document's file
    assert names <= set(files_seen)  # ... a file the emulator really held
    return names


def test_both_runs_complete_with_one_gemini_file_per_document(
    cluster: NightlyCluster, scenario: Scenario
) -> None:
    register = check_run(cluster, scenario.register, scenario.register_ds, "register", scenario.files_seen)
    upload = check_run(cluster, scenario.upload, scenario.upload_ds, "upload", scenario.files_seen)
    # No Gemini file beyond one per document of each run ever existed, and none is left.
    assert not register & upload
    assert set(scenario.files_seen) == register | upload, set(scenario.files_seen) - register - upload
    assert cluster.gemini.files() == []
    assert scenario.requests["register"] >= 1


def test_task_instances_ran_on_both_workers(cluster: NightlyCluster, scenario: Scenario) -> None:
    """Each task instance names the worker and process that last ran it; in each run both workers
    executed document tasks (the register run's sensors, the upload run's uploads)."""
    for record in (scenario.register, scenario.upload):
        for key, row in record.instances.items():
            if row.state == "success":
                assert row.hostname in WORKERS, (record.run_id, key, row)
                assert row.pid, (record.run_id, key, row)
    register_hosts = {
        host for task, _, _, host in executions(cluster, scenario.register.run_id) if task == SENSOR
    }
    upload_hosts = {
        host for task, _, _, host in executions(cluster, scenario.upload.run_id) if task == "upload_documents"
    }
    assert register_hosts == set(WORKERS)
    assert upload_hosts == set(WORKERS)


def test_killed_workers_uploads_retried_on_the_other_worker(
    cluster: NightlyCluster, scenario: Scenario
) -> None:
    kill = scenario.kill
    assert kill.mid_upload, "worker-1 was never seen uploading"
    assert cluster.airflow.services.get(WORKERS[0]) is None  # it stayed dead
    started = executions(cluster, scenario.upload.run_id)
    for key, try_number in kill.killed.items():
        task_id, _, index = key.rstrip("]").partition("[")
        row = scenario.upload.instances[key]
        assert row.state == "success", (key, row)
        assert row.try_number > try_number, (key, row)  # a new try ...
        assert row.hostname == WORKERS[1], (key, row)  # ... on the surviving worker
        hosts = {
            (tries, host) for task, i, tries, host in started if task == task_id and str(i) == (index or "-1")
        }
        assert (try_number, WORKERS[0]) in hosts, (key, hosts)
    # An interrupted upload was either completed by the server (the retry found that file under the same
    # deterministic name) or started again under that name: at most one more upload per killed task
    # instance, and never a second file for a document (test_both_runs_complete_...).
    assert DOCUMENTS <= scenario.requests["upload_start"] <= DOCUMENTS + len(kill.killed), scenario.requests


def test_triggerer_restarted_while_sensors_deferred(cluster: NightlyCluster, scenario: Scenario) -> None:
    scenario.restart.check(scenario.register)
    for key in scenario.register.sensors():
        assert "deferred" in scenario.register.seen[key], key


def test_pool_capped_concurrent_gemini_calls(cluster: NightlyCluster, scenario: Scenario) -> None:
    """The README policy put every Gemini task (and only those) in the pool; no more of them ran at once
    than the pool has slots, so no more single-file calls were in flight; a many-file task still fans
    out to its own ``max_concurrency``."""
    for record in (scenario.register, scenario.upload):
        for key, row in record.instances.items():
            task_id = key.split("[")[0]
            if task_id in GEMINI_TASKS or task_id == "delete_gemini_files":
                assert row.pool == POOL, (key, row.pool)
            elif task_id in OTHER_TASKS:
                assert row.pool == "default_pool", (key, row.pool)
    intervals = cluster.airflow.query(
        "SELECT start_date, end_date FROM task_instance WHERE dag_id = ? AND pool = ? AND state = 'success' "
        "AND task_id IN (?, ?)",
        (DAG_ID, POOL, "upload_documents", "per_document.analyse"),
    )
    assert len(intervals) == 3 * DOCUMENTS  # the upload run's uploads, both runs' analyses
    assert max_overlap(intervals) <= POOL_SLOTS
    for operation in ("generate", "upload_start", "upload_chunk"):
        assert scenario.peaks.get(operation, 0) <= POOL_SLOTS, (operation, scenario.peaks)
    assert scenario.peaks["generate"] >= 1
    assert scenario.peaks.get("delete", 0) <= DELETE_MAX_CONCURRENCY, scenario.peaks


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_readme_preload_snippet_is_the_workers_celery_config() -> None:
    """The README's worker preload block is the module the test deployment's workers import."""
    module = (REPO / "tests" / "system" / "celery_preload.py").read_text(encoding="utf-8")
    assert readme_python_block(PRELOAD_HEADING).strip() in module
