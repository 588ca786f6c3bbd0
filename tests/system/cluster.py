"""The provider on a CeleryExecutor deployment on one machine: PostgreSQL, Redis, Airflow, two workers.

Everything runs on 127.0.0.1 on free ports, each piece in a temporary directory, and stops on exit:

- PostgreSQL (metadata DB and Celery result backend) and Redis (Celery broker), from Debian's packages
  (``tests/system/backing_services.py``; ``.ci/services.sh`` installs them when missing);
- Airflow with ``CeleryExecutor``: ``scheduler``, ``dag-processor``, ``triggerer``, ``api-server`` and
  ``celery worker`` services ``worker-1``, ``worker-2``, ... as separate process groups
  (``tests/system/airflow_services.py``), with the nightly example DAG in their DAGs folder;
- the Gemini API emulator and a GCS emulator, with connection ``gemini_default`` pointing at the former.

Try the provider on Celery by hand (Ctrl-C stops everything)::

    uv run python -m tests.system.cluster --documents 50 --trigger

It prints the Airflow UI's address and login, seeds sample documents for yesterday's partition and, with
``--trigger``, starts a run and reports its progress. The Celery system tests
(``tests/system/test_celery_cluster.py``) and ``bench/celery_*.py`` start the same deployment through
:func:`nightly_cluster`.

Settings beyond those of ``airflow_services.service_settings``, and why:

- ``[celery] worker_prefetch_multiplier = 1`` with Airflow's default ``task_acks_late``: a worker
  reserves no more messages than it runs, so a killed worker strands as few queued tasks as possible.
- ``[celery_broker_transport_options] visibility_timeout = 120`` (Airflow's default: 6 hours): a task
  message a killed worker had reserved goes back to the queue after two minutes; a redelivered message
  of a task that is still running elsewhere is ignored by the Celery provider (TaskAlreadyRunningError).
- ``[scheduler] task_instance_heartbeat_timeout = 20`` (default 300): the task instances of a dead worker
  are failed (and retried elsewhere) 20 s after their last heartbeat, not five minutes; a live task
  beats every second (``[workers] min_heartbeat_interval = 1``).
- ``[scheduler] use_job_schedule = False``: runs start only when triggered, so a test or a bench decides
  which runs exist (the nightly DAG allows one active run at a time).
- each worker's ``[core] hostname_callable`` reports its own name (``worker_identity.py``), so the
  ``hostname`` of a task instance says which worker ran it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow_gemini_files.demo import DAG_ID, airflow_env
from airflow_gemini_files.example_dags import FOLDER as EXAMPLE_DAGS_FOLDER
from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS, sample_path

from .airflow_services import SERVICES, AirflowServices, running
from .backing_services import PostgresServer, RedisServer, postgres_server, redis_server
from .worker_identity import WORKER_ENV

if TYPE_CHECKING:
    from google.cloud import storage

    from airflow_gemini_files.emulator import GeminiEmulator
    from airflow_gemini_files.testing import GcsEmulator

REPO = Path(__file__).resolve().parents[2]
NIGHTLY_DAG_FILE = EXAMPLE_DAGS_FOLDER / f"{DAG_ID}.py"
"""The nightly example DAG every Celery test and bench runs (the one place to repoint if it moves)."""
BUCKET = "cluster-documents"
HOSTNAME_CALLABLE = "tests.system.worker_identity.worker_hostname"
PRELOAD_CONFIG = "tests.system.celery_preload.CELERY_CONFIG"


def worker_names(count: int) -> tuple[str, ...]:
    return tuple(f"worker-{index + 1}" for index in range(count))


def celery_settings(postgres: PostgresServer, redis: RedisServer) -> dict[str, str]:
    """The ``AIRFLOW__*`` settings that make a deployment Celery on PostgreSQL + Redis (module docstring)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": postgres.url("db+postgresql+psycopg2"),
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "120",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    }


@dataclass
class Cluster:
    """A running deployment: Airflow's services plus the database and broker under them."""

    airflow: AirflowServices
    postgres: PostgresServer | None
    redis: RedisServer | None
    workers: tuple[str, ...]
    """The Celery worker services (``worker-1``, ...); none with the LocalExecutor."""


@contextlib.contextmanager
def airflow_cluster(
    home: Path,
    base_env: Mapping[str, str],
    *,
    executor: Literal["celery", "local"] = "celery",
    database: Literal["postgres", "sqlite"] = "postgres",
    workers: int = 2,
    slots: int = 4,
    settings: Mapping[str, str] | None = None,
    preload: bool = True,
) -> Iterator[Cluster]:
    """Start the database (and Redis) and Airflow's ``SERVICES``: with ``executor="celery"`` also
    ``workers`` Celery workers of ``slots`` each (``preload`` imports the provider in them before they
    fork, ``celery_preload.py``); with ``"local"`` the LocalExecutor runs ``workers * slots`` tasks at once.
    ``database="sqlite"`` (LocalExecutor only) keeps the SQLite DB of ``base_env``."""
    if executor == "celery" and database != "postgres":
        raise ValueError("the CeleryExecutor needs PostgreSQL here (SQLite is for the LocalExecutor only)")
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(postgres_server()) if database == "postgres" else None
        redis = stack.enter_context(redis_server()) if executor == "celery" else None
        cluster_settings = {
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        }
        if postgres is not None and redis is not None:
            cluster_settings |= celery_settings(postgres, redis)
        else:
            cluster_settings |= {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(workers * slots),
            }
        airflow = AirflowServices.create(
            home,
            base_env,
            settings={**cluster_settings, **(settings or {})},
            database_url=postgres.url() if postgres else None,
        )
        names = worker_names(workers) if executor == "celery" else ()
        worker_env = {"AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE}
        if preload:
            worker_env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = PRELOAD_CONFIG
        for name in names:
            airflow.define(
                name,
                "celery", "worker", "--concurrency", str(slots), "--celery-hostname", f"{name}@%h",
                "--skip-serve-logs", "--without-mingle", "--without-gossip",
                env={WORKER_ENV: name, **worker_env},
            )  # fmt: skip
        airflow.log_paths += [server.log_path for server in (postgres, redis) if server is not None]
        airflow.run_cli("db", "migrate", timeout=300)
        with running(airflow, (*SERVICES, *names)):
            airflow.wait_healthy(["scheduler", "triggerer", "dag_processor"])
            yield Cluster(airflow, postgres, redis, names)


@dataclass
class NightlyCluster:
    """A deployment with the emulators and the nightly DAG parsed."""

    cluster: Cluster
    gemini: GeminiEmulator
    gcs: GcsEmulator
    home: Path

    @property
    def airflow(self) -> AirflowServices:
        return self.cluster.airflow


@contextlib.contextmanager
def nightly_cluster(
    *,
    executor: Literal["celery", "local"] = "celery",
    database: Literal["postgres", "sqlite"] = "postgres",
    workers: int = 2,
    slots: int = 4,
    processing_delay: float = 0.0,
    model_latency: float = 0.0,
    settings: Mapping[str, str] | None = None,
    preload: bool = True,
    local_settings: str | None = None,
    extra_dags: Sequence[Path] = (),
    keep: bool = False,
) -> Iterator[NightlyCluster]:
    """Emulators + :func:`airflow_cluster` with the nightly DAG (and ``extra_dags``) parsed.
    ``local_settings`` is the source of the deployment's ``airflow_local_settings.py`` (cluster policies);
    ``keep`` keeps the Airflow home."""
    from airflow_gemini_files.emulator import GeminiEmulator
    from airflow_gemini_files.testing import GcsEmulator

    home = Path(tempfile.mkdtemp(prefix="gemini-files-cluster-"))
    api_key = f"cluster-{secrets.token_hex(8)}"
    gcs = GcsEmulator().start()
    try:
        with GeminiEmulator(
            api_key=api_key,
            gcs_host=gcs.host,
            processing_delay=processing_delay,
            model_latency=model_latency,
        ) as gemini:
            dags = home / "dags"
            dags.mkdir()
            for dag_file in (NIGHTLY_DAG_FILE, *extra_dags):
                shutil.copy(dag_file, dags)
            if local_settings is not None:  # Airflow imports it from $AIRFLOW_HOME/config in every process
                (home / "config").mkdir()
                (home / "config" / "airflow_local_settings.py").write_text(local_settings)
            env = airflow_env(home, dags, gemini_base_url=gemini.base_url, gcs_host=gcs.host)
            env["AIRFLOW_CONN_GEMINI_DEFAULT"] = json.dumps(
                {"conn_type": "gemini", "password": api_key, "extra": {"base_url": gemini.base_url}}
            )
            env["GEMINI_DOCUMENTS_BUCKET"] = BUCKET
            gcs.client().create_bucket(BUCKET)
            with airflow_cluster(
                home,
                env,
                executor=executor,
                database=database,
                workers=workers,
                slots=slots,
                settings=settings,
                preload=preload,
            ) as cluster:
                for dag_file in (NIGHTLY_DAG_FILE, *extra_dags):
                    cluster.airflow.wait_for_dag(dag_file.stem)
                yield NightlyCluster(cluster, gemini, gcs, home)
    finally:
        gcs.stop()
        if keep:
            print(f"kept the Airflow home {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def seed_documents(client: storage.Client, bucket: str, prefix: str, count: int) -> list[str]:
    """``count`` documents under ``gs://bucket/prefix``: the samples in turn, each under its own name."""
    samples = list(NIGHTLY_DOCUMENTS.items())
    target = client.bucket(bucket)
    uris = []
    for index in range(count):
        name, content_type = samples[index % len(samples)]
        blob = target.blob(f"{prefix}doc-{index:04d}-{name}")
        blob.upload_from_filename(str(sample_path(name)), content_type=content_type)
        uris.append(f"gs://{bucket}/{blob.name}")
    return uris


def task_summary(airflow: AirflowServices, run_id: str) -> dict[str, int]:
    """``{state: count}`` of a run's task instances."""
    rows = airflow.query(
        "SELECT coalesce(state, 'none'), count(*) FROM task_instance WHERE dag_id = ? AND run_id = ? "
        "GROUP BY state",
        (DAG_ID, run_id),
    )
    return {state: count for state, count in rows}


def stop_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``kill <pid>`` still stops every service and deletes the temp dirs."""

    def raise_exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.system.cluster",
        description="Run the provider on a local CeleryExecutor deployment (PostgreSQL, Redis, two workers).",
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument("--slots", type=int, default=4, help="task slots per worker (default 4)")
    parser.add_argument("--documents", type=int, default=20, help="documents to seed (default 20)")
    parser.add_argument("--mode", choices=("register", "upload"), default="register")
    parser.add_argument("--trigger", action="store_true", help="trigger a run and follow it")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home (logs) afterwards")
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()
    ds = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    print("starting PostgreSQL, Redis, the emulators and Airflow (about a minute) ...", flush=True)
    with nightly_cluster(workers=args.workers, slots=args.slots, keep=args.keep) as nightly:
        airflow, cluster = nightly.airflow, nightly.cluster
        seed_documents(nightly.gcs.client(), BUCKET, f"incoming/{ds}/", args.documents)
        airflow.unpause(DAG_ID)
        print(
            f"Airflow UI {airflow.base_url} (user admin, password {airflow.password})\n"
            f"metadata DB {cluster.postgres.url() if cluster.postgres else '-'}, "
            f"broker {cluster.redis.url if cluster.redis else '-'}\n"
            f"workers {', '.join(cluster.workers)} with {args.slots} slots each; logs in {airflow.home}\n"
            f"Gemini emulator {nightly.gemini.base_url}; {args.documents} documents in "
            f"gs://{BUCKET}/incoming/{ds}/ (trigger {DAG_ID} with logical date {ds})",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            if args.trigger:
                run_id = airflow.trigger(DAG_ID, f"manual_{ds}", f"{ds}T00:00:00Z", {"mode": args.mode})
                follow(nightly, run_id)
            print("running; Ctrl-C stops everything", flush=True)
            signal.pause()
    return 0


def follow(cluster: NightlyCluster, run_id: str) -> None:
    """Print the run's task states every few seconds until it ends."""
    airflow, start = cluster.airflow, time.monotonic()
    while True:
        state = airflow.run_state(DAG_ID, run_id)
        stats: dict[str, Any] = cluster.gemini.stats()
        print(
            f"[{time.monotonic() - start:5.0f}s] run {state}; tasks {task_summary(airflow, run_id)}; "
            f"Gemini files {stats['files']}",
            flush=True,
        )
        if state in ("success", "failed"):
            return
        time.sleep(5)


if __name__ == "__main__":
    sys.exit(main())
