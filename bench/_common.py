"""Shared pieces of the benchmarks: emulators on 127.0.0.1, a minimal task context, repeats, machine info.

The Gemini emulator runs as its own process (``gemini-files-emulator``), driven over its HTTP controls, so
its request handling does not share the GIL with the code being measured. The GCS emulator
(gcp-storage-emulator) runs in-process in memory, with a request log that records every request the
client made (method, path, query, user agent, response bytes).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
API_KEY = "bench-api-key"
CONN_ID = "gemini_default"
GCS_PROJECT = "bench"

T = TypeVar("T")


# Repeats ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """Median, min and max of repeated measurements."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        """``median (min-max) unit``; a single value alone."""
        u = f" {unit}" if unit else ""
        if len(self.values) == 1:
            return f"{self.median:.{digits}f}{u}"
        return f"{self.median:.{digits}f}{u} ({self.min:.{digits}f}-{self.max:.{digits}f})"

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "values": list(self.values)}


def summarize(values: Sequence[float]) -> Summary:
    """Summary of at least one value."""
    if not values:
        raise ValueError("nothing to summarize")
    return Summary(tuple(float(v) for v in values))


def repeat(func: Callable[[], T], runs: int, label: str = "") -> list[T]:
    """Call ``func`` ``runs`` times, printing one line per run."""
    out: list[T] = []
    for i in range(runs):
        value = func()
        if label:
            print(f"  {label} run {i + 1}/{runs}: {value}", flush=True)
        out.append(value)
    return out


# Gemini emulator in its own process -----------------------------------------------------------------
class EmulatorProcess:
    """``gemini-files-emulator`` on a free port in a child process, steered through ``/_emulator/*``."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> EmulatorProcess:
        args = [sys.executable, "-m", "airflow_gemini_files.emulator", "--port", "0", "--api-key", API_KEY]
        for key, value in self._settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"gemini-files-emulator did not start (printed {line!r})")
        self.base_url = line
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _call(self, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/{action}",
            data=data,
            method=method,
            # The emulator started with an API key wants it on its controls too.
            headers={"Content-Type": "application/json", "x-goog-api-key": API_KEY},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def requests(self) -> dict[str, int]:
        """Request counts per operation (zeros included)."""
        counts: dict[str, int] = self.stats()["requests"]
        return counts

    def files(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = self._call("GET", "files")["files"]
        return files

    def reset(self) -> None:
        self._call("POST", "reset")

    def configure(self, **settings: Any) -> None:
        self._call("POST", "config", settings)

    def inject_faults(self, operation: str, **plan: Any) -> None:
        self._call("POST", "faults", {"operation": operation, **plan})

    def connection_env(self, **extra: Any) -> None:
        """Point the Airflow connection ``gemini_default`` (env var) at this emulator."""
        conn = {"conn_type": "gemini", "password": API_KEY, "extra": {"base_url": self.base_url, **extra}}
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(conn)


# GCS emulator in-process, with a request log --------------------------------------------------------
@dataclass(frozen=True)
class GcsRequest:
    """One request the GCS emulator answered."""

    method: str
    path: str
    user_agent: str
    response_bytes: int

    @property
    def kind(self) -> str:
        """``media`` (object bytes), ``upload``, ``list``, ``metadata``, ``bucket`` or ``other``."""
        if "alt=media" in self.path or self.path.startswith("/download/"):
            return "media"
        if self.path.startswith("/upload/") or "uploadType=" in self.path:
            return "upload"
        route = self.path.split("?", 1)[0]
        if route.endswith("/o"):
            return "list"
        if "/o/" in route:
            return "metadata"
        if "/b/" in route:
            return "bucket"
        return "other"

    @property
    def client(self) -> str:
        """Who asked: the google-cloud-storage client (the worker) or urllib (the Gemini emulator)."""
        return "gemini-emulator" if self.user_agent.startswith("Python-urllib") else "worker"


@dataclass
class GcsServer:
    """gcp-storage-emulator in this process (in memory) on a free port; ``log`` records every request."""

    host: str = ""
    log: list[GcsRequest] = field(default_factory=list)
    _server: Any = None

    def start(self) -> GcsServer:
        from http import server as http_server

        from gcp_storage_emulator import server as gcs

        log = self.log
        lock = threading.Lock()

        class LoggingHandler(gcs.RequestHandler):  # type: ignore[misc]
            _bytes = 0
            disable_nagle_algorithm = True  # same 40 ms delayed-ACK stall as the Gemini emulator

            def send_header(self, keyword: str, value: str) -> None:
                if keyword.lower() == "content-length":
                    self._bytes = int(value)
                super().send_header(keyword, value)

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass

            def handle_one_request(self) -> None:
                self._bytes = 0
                super().handle_one_request()
                if getattr(self, "command", None):
                    entry = GcsRequest(
                        self.command, self.path, self.headers.get("User-Agent", ""), self._bytes
                    )
                    with lock:
                        log.append(entry)

        class Thread(gcs.APIThread):  # type: ignore[misc]
            def run(self) -> None:
                from functools import partial

                self._httpd = http_server.ThreadingHTTPServer(
                    (self._host, self._port), partial(LoggingHandler, self._storage)
                )
                self._httpd.daemon_threads = True
                self.is_running.set()
                self._httpd.serve_forever()

        self._server = gcs.create_server("127.0.0.1", 0, in_memory=True)
        port = _free_port()
        self._server._api = Thread("127.0.0.1", port, self._server._storage, daemon=True)
        self._server.start()
        self.host = f"http://127.0.0.1:{port}"
        os.environ["STORAGE_EMULATOR_HOST"] = self.host
        anonymous = {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}
        os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps(anonymous)  # offline GCP access
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> GcsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seed(self, bucket: str, names: Sequence[str], payload: bytes, content_type: str) -> None:
        """Create ``bucket`` and the objects straight in the emulator's in-memory storage.

        Uploading through HTTP rewrites the emulator's whole metadata file on every object (quadratic: 1,000
        objects take minutes); this builds the same object resources (checksums included) and writes the
        metadata once.
        """
        from gcp_storage_emulator.handlers import buckets, objects

        storage = self._server._storage
        buckets.create_bucket(bucket, storage)
        entries = storage.objects.setdefault(bucket, {})
        for name in names:
            obj = objects._make_object_resource(self.host, bucket, name, content_type, str(len(payload)))
            entries[name] = objects._checksums(payload, obj)
            storage._store.write_bytes(storage._object_path(bucket, name), payload)
        storage._write_config_to_file()

    def client(self) -> Any:
        """An anonymous ``google.cloud.storage.Client`` for seeding."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=GCS_PROJECT,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.host},
        )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# A minimal task context for operator.execute() ------------------------------------------------------
class BenchTaskInstance:
    """What the operators read from ``context["ti"]``: ids, map index, and XCom pushes (kept in a dict)."""

    def __init__(self, task_id: str, dag_id: str = "bench", run_id: str = "bench-run") -> None:
        self.task_id = task_id
        self.dag_id = dag_id
        self.run_id = run_id
        self.map_index = -1
        self.try_number = 1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)


def task_context(task_id: str, run_id: str = "bench-run") -> Any:
    """A minimal context (``ti``, ids) for ``operator.execute(context)`` outside a DAG run."""
    ti = BenchTaskInstance(task_id, run_id=run_id)
    return {"ti": ti, "task_instance": ti, "run_id": run_id, "params": {}}


# Machine info ----------------------------------------------------------------------------------------
PACKAGES = (
    "airflow-gemini-files",
    "apache-airflow",
    "apache-airflow-task-sdk",
    "google-genai",
    "google-cloud-storage",
    "gcp-storage-emulator",
    "httpx",
)


def machine_info() -> dict[str, Any]:
    """CPU count, RAM, load, Python, OS, package versions and the git commit."""
    import psutil

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "os": platform.platform(),
        "packages": versions,
        "commit": commit,
    }


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed: ...; elapsed()`` in seconds."""
    start = time.perf_counter()
    end: list[float] = []
    try:
        yield lambda: (end[0] if end else time.perf_counter()) - start
    finally:
        end.append(time.perf_counter())


def quiet_logs() -> None:
    """Keep the operators' progress logs and the "outside of the Task Runner" warning out of the output.

    Airflow reads the level when it configures logging on import, so this module sets it at import time
    (``AIRFLOW__LOGGING__LOGGING_LEVEL=ERROR`` unless already set); calling this re-applies it to the
    loggers already created.
    """
    import logging

    level = os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
    for name in ("airflow", "airflow_gemini_files", "httpx", "httpx2", "google_genai"):
        logging.getLogger(name).setLevel(level)


def random_file(path: str, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256 as the Files API reports it (base64 of hex)."""
    import base64
    import hashlib

    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 * 1024 * 1024))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return base64.b64encode(digest.hexdigest().encode()).decode()


def json_child(args: Sequence[str], what: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python *args`` in a fresh process; the JSON object on its last line of output.

    A child that fails stops the benchmark, with the end of its stderr and ``what`` it was.
    """
    child = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=False)
    if child.returncode:
        sys.stderr.write(child.stderr[-4000:])
        raise SystemExit(f"{what} failed (exit {child.returncode})")
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
