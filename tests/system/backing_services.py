"""PostgreSQL and Redis servers of Debian's packages, each on a free 127.0.0.1 port in a temporary directory.

Only the binaries are needed (``.ci/services.sh`` installs the packages when missing); the servers run as
child processes of whoever starts them and leave nothing behind. PostgreSQL refuses to run as root, so as
root ``initdb`` and the server run as the unprivileged ``postgres`` user the package creates (``nobody``
when it does not exist) on a directory made for it. The server is tuned for throw-away data: no fsync,
no synchronous commit, no full-page writes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REQUIRE_SERVICES_ENV = "GEMINI_FILES_REQUIRE_SERVICES"
"""Set to 1 (``.ci/services.sh`` does) and a missing service fails the Celery tests instead of skipping."""
INSTALL_HINT = (
    "install Debian's packages as root: `bash .ci/services.sh` (apt-get install postgresql redis-server)"
)


class ServiceUnavailable(RuntimeError):
    """A service's binaries are not installed: the message names what is missing and how to install it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (and ``process``, if given, is still alive)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")
        time.sleep(0.1)


# ---- PostgreSQL --------------------------------------------------------------------------------------
def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, else Debian's newest ``/usr/lib/postgresql/<v>/bin``."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if not candidates:
        raise ServiceUnavailable(
            f"PostgreSQL's initdb is not on PATH nor in /usr/lib/postgresql: {INSTALL_HINT}"
        )
    return Path(candidates[-1]).parent


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceUnavailable(f"redis-server is not on PATH: {INSTALL_HINT}")
    return found


def missing_services() -> list[str]:
    """Why the Celery deployment cannot start here (empty when PostgreSQL and Redis are installed)."""
    reasons = []
    for check in (postgres_bin_dir, redis_binary):
        try:
            check()
        except ServiceUnavailable as missing:
            reasons.append(str(missing))
    return reasons


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceUnavailable("running as root, and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    """A running PostgreSQL server with one database, user ``airflow`` (trust auth on 127.0.0.1)."""

    root: Path
    port: int
    bin_dir: Path
    user: pwd.struct_passwd | None
    database: str = "airflow"
    role: str = "airflow"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL (``db+postgresql+psycopg2`` is Celery's result-backend form)."""
        return f"{driver}://{self.role}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        user = self.user
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.root,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"server log: {self.log_path}"
            )

    def start(self, timeout: float = 120.0) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", self.role, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='{self.root}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 10)  # fmt: skip
        import psycopg2

        with contextlib.closing(
            psycopg2.connect(host="127.0.0.1", port=self.port, user=self.role, dbname="postgres")
        ) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=60)


@contextlib.contextmanager
def _scratch_dir(prefix: str, parent: Path | None) -> Iterator[Path]:
    """A new temporary directory, deleted on exit."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(parent: Path | None = None) -> Iterator[PostgresServer]:
    """Start PostgreSQL in a new temporary directory; stop it and delete the directory on exit."""
    bin_dir = postgres_bin_dir()
    user = _unprivileged_user()
    with _scratch_dir("gemini-files-pg-", parent) as root:
        if user is not None:  # the server's own directory: its user must own it and reach it
            os.chown(root, user.pw_uid, user.pw_gid)
            _make_reachable(root.parent)
        server = PostgresServer(root=root, port=free_port(), bin_dir=bin_dir, user=user)
        try:
            server.start()
            yield server
        finally:
            server.stop()


def _make_reachable(directory: Path) -> None:
    """Let other users traverse ``directory`` (not list it): a private parent would lock ``postgres`` out."""
    mode = directory.stat().st_mode
    if not mode & 0o001:
        directory.chmod(mode | 0o001)


# ---- Redis -------------------------------------------------------------------------------------------
@dataclass
class RedisServer:
    """A running ``redis-server`` without persistence."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    def start(self, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--logfile", str(self.log_path), "--daemonize", "no"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port, timeout, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.contextmanager
def redis_server(parent: Path | None = None) -> Iterator[RedisServer]:
    """Start Redis in a new temporary directory; stop it and delete the directory on exit."""
    redis_binary()
    with _scratch_dir("gemini-files-redis-", parent) as root:
        server = RedisServer(root=root, port=free_port())
        try:
            server.start()
            yield server
        finally:
            server.stop()
