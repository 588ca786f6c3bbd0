"""Pytest fixtures for testing DAGs against the local Gemini and GCS emulators (a pytest plugin).

Loaded automatically through the ``pytest11`` entry point once ``airflow-gemini-files`` is installed:

- ``gcs_emulator`` (session): gcp-storage-emulator in a subprocess on a free port, in memory;
  sets ``STORAGE_EMULATOR_HOST`` and the anonymous GCP connection ``google_cloud_default``.
  ``.host``, ``.client()`` (an anonymous ``storage.Client``), ``.reset()``.
- ``gemini_emulator``: a :class:`~airflow_gemini_files.emulator.GeminiEmulator` with API key
  ``"test-api-key"``, one server per session, reset before each test.
- ``gemini_connection``: sets ``AIRFLOW_CONN_GEMINI_DEFAULT`` to point at ``gemini_emulator`` and
  yields ``"gemini_default"``.

This module imports nothing heavy at import time, so loading the plugin never slows or breaks
test collection.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from google.cloud import storage

    from airflow_gemini_files.emulator import GeminiEmulator

TEST_API_KEY = "test-api-key"
GCS_PROJECT = "test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GcsEmulator:
    """A running gcp-storage-emulator subprocess (in-memory storage)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> GcsEmulator:
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            raise RuntimeError(
                "the gcs_emulator fixture needs the gcp-storage-emulator package (pip install it)"
            )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
             "--port", str(self.port), "--in-memory", "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited with status {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.host}/storage/v1/b?project={GCS_PROJECT}", timeout=2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"gcp-storage-emulator did not answer on {self.host}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def client(self) -> storage.Client:
        """An anonymous ``google.cloud.storage.Client`` talking to this emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=GCS_PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.host},
        )

    def reset(self) -> None:
        """Delete every bucket and object."""
        with urllib.request.urlopen(f"{self.host}/wipe", timeout=30):
            pass


def _anonymous_gcp_connection() -> dict[str, Any]:
    from airflow_gemini_files.hooks.gcs import ANONYMOUS_GCP_CONNECTION

    return ANONYMOUS_GCP_CONNECTION


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    """A GCS emulator for the whole session; ``STORAGE_EMULATOR_HOST`` points at it meanwhile."""
    emulator = GcsEmulator().start()
    settings = {
        "STORAGE_EMULATOR_HOST": emulator.host,
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(_anonymous_gcp_connection()),
    }
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield emulator
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        emulator.stop()


@pytest.fixture(scope="session")
def _gemini_emulator_server() -> Iterator[GeminiEmulator]:
    from airflow_gemini_files.emulator import GeminiEmulator

    # No gcs_host: the emulator reads STORAGE_EMULATOR_HOST when a register request arrives,
    # so it finds the gcs_emulator fixture whenever a test uses both.
    with GeminiEmulator(api_key=TEST_API_KEY) as emulator:
        yield emulator


@pytest.fixture
def gemini_emulator(_gemini_emulator_server: GeminiEmulator) -> GeminiEmulator:
    """The session's Gemini emulator, emptied and restored to its defaults before the test."""
    _gemini_emulator_server.reset()
    return _gemini_emulator_server


@pytest.fixture
def gemini_connection(gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Airflow connection ``gemini_default`` (via env) pointing at the emulator; yields its id."""
    conn: dict[str, Any] = {
        "conn_type": "gemini",
        "password": gemini_emulator.api_key,
        "extra": {"base_url": gemini_emulator.base_url},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    return "gemini_default"
