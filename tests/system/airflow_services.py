"""Real Airflow 3 services (scheduler, dag-processor, triggerer, api-server, ...) in a throw-away home.

Each service is an ``airflow <service>`` subprocess in its own process group, logging to
``<home>/services/<name>.log`` (``<name>-2.log`` after a restart). By default the metadata DB is SQLite
and the executor LocalExecutor; ``AirflowServices.create(settings=..., database_url=...)`` gives another
executor and a PostgreSQL database (``tests/system/cluster.py`` builds a CeleryExecutor deployment on it,
with ``define()``-d Celery worker services). The api-server listens on a free 127.0.0.1 port and also
serves the execution API the task processes talk to. The scheduler and the triggerer run with
``--skip-serve-logs`` so they open no fixed ports (8793/8794): the logs are read from disk.

Settings changed from Airflow's defaults, and why:

- ``[workers] min_heartbeat_interval = 1`` (default 5): the task supervisor notices its task process has
  exited only on this tick, so every task took up to 5 s longer, and a deferral that fired within those
  seconds raced the executor's late "success" report ("state changed externally" -> task failed; seen
  here with a sensor whose trigger fired 4 s after it deferred, and reported upstream as
  apache/airflow#71580 and #72716).
- ``[triggerer] job_heartbeat_sec = 1`` and ``triggerer_health_check_threshold = 8`` (defaults 5 and 30):
  after a triggerer dies, its triggers move to a live triggerer only once its heartbeat is older than the
  threshold; 8 s keeps the restart test short while a healthy triggerer (beating every second) never
  looks dead.
- ``[dag_processor] min_file_process_interval = 600`` (default 30): the DAG files never change during a
  test, and re-parsing them every 30 s only takes CPU from the tasks.
- ``[api] workers = 1``: one uvicorn worker is plenty here and saves ~200 MB.
- a fixed ``[api_auth] jwt_secret`` (64 random bytes, the length SHA-512 wants): scheduler and api-server
  must share it to sign and check task tokens; and a known ``[core] fernet_key`` so a test can decrypt
  the trigger kwargs it scans for secrets.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from cryptography.fernet import Fernet

from .backing_services import free_port

SERVICES = ("scheduler", "dag-processor", "triggerer", "api-server")
TERMINAL_RUN_STATES = ("success", "failed")
_ADMIN = "admin"


def airflow_command(*args: str) -> list[str]:
    """The Airflow CLI of this interpreter's environment (no reliance on PATH)."""
    return [sys.executable, "-m", "airflow", *args]


def service_settings(home: Path, api_port: int, fernet_key: str) -> dict[str, str]:
    """The ``AIRFLOW__*`` settings of a local deployment of all four services (see the module docstring)."""
    base_url = f"http://127.0.0.1:{api_port}"
    passwords = home / "simple_auth_manager_passwords.json"
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{_ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
    }


@dataclass(frozen=True)
class ServiceSpec:
    """How to start a service: the ``airflow`` CLI arguments and environment variables of its own."""

    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


def default_spec(name: str) -> ServiceSpec:
    """``airflow <name>`` (``--skip-serve-logs`` for the scheduler and the triggerer)."""
    extra = ("--skip-serve-logs",) if name in ("scheduler", "triggerer") else ()
    return ServiceSpec((name, *extra))


@dataclass
class Service:
    """One running ``airflow <name>`` process group and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


@dataclass
class AirflowServices:
    """A throw-away Airflow deployment: start, kill and restart services; query its API and metadata DB."""

    home: Path
    env: dict[str, str]
    api_port: int
    fernet_key: str
    password: str
    database_url: str | None = None
    """SQLAlchemy URL of a PostgreSQL metadata DB; None: SQLite in ``<home>/airflow.db``."""
    specs: dict[str, ServiceSpec] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    log_paths: list[Path] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)
    _token: str | None = None

    @classmethod
    def create(
        cls,
        home: Path,
        base_env: Mapping[str, str],
        *,
        settings: Mapping[str, str] | None = None,
        database_url: str | None = None,
    ) -> AirflowServices:
        """Settings for a deployment in ``home``; ``base_env`` holds the DAGs folder, connections, etc.;
        ``settings`` override :func:`service_settings` (executor, ...); ``database_url`` is a PostgreSQL
        metadata DB (default: SQLite in ``home``)."""
        api_port = free_port()
        fernet_key = Fernet.generate_key().decode()
        password = secrets.token_urlsafe(16)
        (home / "services").mkdir(parents=True, exist_ok=True)
        (home / "simple_auth_manager_passwords.json").write_text(json.dumps({_ADMIN: password}))
        env = {**base_env, **service_settings(home, api_port, fernet_key), **(settings or {})}
        env["AIRFLOW_HOME"] = str(home)
        if database_url is not None:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url
        return cls(
            home=home,
            env=env,
            api_port=api_port,
            fernet_key=fernet_key,
            password=password,
            database_url=database_url,
        )

    def define(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        """Make ``start(name)`` run ``airflow <args>`` with ``env`` added (e.g. a second Celery worker)."""
        self.specs[name] = ServiceSpec(tuple(args), dict(env or {}))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def db_path(self) -> Path:
        """The SQLite metadata DB file (unused with a ``database_url``)."""
        return self.home / "airflow.db"

    # ---- processes ---------------------------------------------------------------------------------
    def run_cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` to completion (output logged to ``services/cli.log``); raise on failure."""
        log_path = self.home / "services" / "cli.log"
        if log_path not in self.log_paths:
            self.log_paths.append(log_path)
        result = subprocess.run(
            airflow_command(*args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ airflow {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            raise RuntimeError(f"`airflow {' '.join(args)}` failed ({result.returncode}); see {log_path}")
        return result

    def start(self, name: str) -> Service:
        """Start ``airflow <name>`` in a new process group, logging to a fresh file."""
        if name in self.services and self.services[name].process.poll() is None:
            raise RuntimeError(f"{name} is already running")
        self.starts[name] = count = self.starts.get(name, 0) + 1
        log_path = self.home / "services" / (f"{name}.log" if count == 1 else f"{name}-{count}.log")
        self.log_paths.append(log_path)
        spec = self.specs.get(name) or default_spec(name)
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            airflow_command(*spec.args),
            env={**self.env, **spec.env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.services[name] = Service(name, process, log_path, log_file)
        return self.services[name]

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, grace: float = 0.0) -> None:
        """Send ``sig`` to the service's process group and descendants; SIGKILL what outlives ``grace``."""
        service = self.services.pop(name, None)
        if service is None:
            return
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(service.process.pid)
            family = [leader, *leader.children(recursive=True)]
            _signal_processes(family, service.process.pid, sig)
            _, alive = psutil.wait_procs(family, timeout=grace)
            _signal_processes(alive, service.process.pid, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=10)
        service.log_file.close()

    def stop_all(self) -> None:
        """Stop every service (SIGTERM, SIGKILL after 3 s), then any process still using this home."""
        for name in list(self.services):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                os.killpg(self.services[name].process.pid, signal.SIGTERM)
        for name in list(self.services):
            self.kill(name, signal.SIGTERM, grace=3.0)
        strays = [proc for proc in psutil.process_iter() if _uses_home(proc, self.home)]
        for proc in strays:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(strays, timeout=10)

    # ---- readiness ---------------------------------------------------------------------------------
    def wait_healthy(self, components: Sequence[str], timeout: float = 180.0) -> None:
        """Wait until the api-server answers and reports every one of ``components`` healthy."""
        last: Any = None

        def healthy() -> bool:
            nonlocal last
            self._check_alive()
            try:
                last = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            return all((last.get(c) or {}).get("status") == "healthy" for c in components)

        wait_until(healthy, timeout, lambda: f"services not healthy: {last}\n{self.diagnostics()}")

    def _check_alive(self) -> None:
        for service in self.services.values():
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with {service.process.returncode}\n{self.diagnostics()}"
                )

    # ---- REST API ----------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the public REST API (``/api/v2`` + ``path``) as the admin user; return the JSON reply."""
        if self._token is None:
            reply = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": _ADMIN, "password": self.password},
                timeout=30,
            )
            reply.raise_for_status()
            self._token = reply.json()["access_token"]
        response = httpx.request(
            method,
            f"{self.base_url}/api/v2{path}",
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=30,
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> None:
        """Wait until the dag-processor has parsed and serialized ``dag_id``."""

        def parsed() -> bool:
            self._check_alive()
            return bool(self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", (dag_id,)))

        def explain() -> str:
            errors = self.query("SELECT filename, stacktrace FROM import_error")
            return f"{dag_id} not parsed; import errors: {errors}\n{self.diagnostics()}"

        wait_until(parsed, timeout, explain)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, logical_date: str, conf: Mapping[str, Any]) -> str:
        """Create a manual run; return its run id."""
        run = self.api(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            {"dag_run_id": run_id, "logical_date": logical_date, "conf": dict(conf)},
        )
        return str(run["dag_run_id"])

    # ---- metadata DB -------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (``?`` placeholders) on the metadata DB, SQLite or PostgreSQL."""
        if self.database_url is not None:
            return _postgres_query(self.database_url, sql, params)
        deadline = time.monotonic() + 30
        while True:
            try:
                with contextlib.closing(
                    sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
                ) as db:
                    return db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{"task_id[map_index]": state}`` of one run."""
        rows = self.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        )
        return {f"{t}[{m}]" if m >= 0 else t: s for t, m, s in rows}

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return rows[0][0] if rows else None

    def decrypt(self, value: str) -> str:
        """A Fernet-encrypted column value (e.g. ``trigger.kwargs``) in clear text."""
        if value.startswith("{"):  # stored unencrypted
            return value
        return Fernet(self.fernet_key.encode()).decrypt(value.encode()).decode()

    # ---- diagnostics -------------------------------------------------------------------------------
    def diagnostics(self, lines: int = 25) -> str:
        """Where every log is, with the last ``lines`` lines of each service log."""
        parts = [f"AIRFLOW_HOME {self.home}; task logs under {self.home / 'logs'}"]
        for path in self.log_paths:
            tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(line[:400] for line in tail))
        return "\n".join(parts)


def _postgres_query(url: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """One read-only transaction on PostgreSQL (``?`` placeholders become psycopg2's ``%s``)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    with contextlib.closing(
        psycopg2.connect(
            host=parsed.host,
            port=parsed.port,
            user=parsed.username,
            dbname=parsed.database,
            connect_timeout=10,
        )
    ) as db:
        db.set_session(readonly=True, autocommit=True)
        with db.cursor() as cursor:
            cursor.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))
            return list(cursor.fetchall())


def _signal_processes(processes: Sequence[psutil.Process], leader: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for proc in processes:  # task processes live in process groups of their own
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _uses_home(proc: psutil.Process, home: Path) -> bool:
    try:
        return proc.environ().get("AIRFLOW_HOME") == str(home)
    except psutil.Error:
        return False


def wait_until(
    condition: Callable[[], bool], timeout: float, explain: Callable[[], str], interval: float = 0.5
) -> None:
    """Poll ``condition`` until it holds; after ``timeout`` seconds fail with ``explain()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(explain())
        time.sleep(interval)


@contextlib.contextmanager
def running(services: AirflowServices, names: Sequence[str] = SERVICES) -> Iterator[AirflowServices]:
    """Start ``names`` and stop every process of the deployment on exit, whatever happened."""
    try:
        for name in names:
            services.start(name)
        yield services
    finally:
        services.stop_all()
