"""A local GCS emulator process (``gcp-storage-emulator``, in memory) for the demo and for tests.

Needs the ``demo`` or ``testing`` extra (``pip install 'airflow-gemini-files[testing]'``); imports
neither pytest nor the emulator package until :meth:`GcsEmulator.start` runs.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud import storage

GCS_PROJECT = "test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GcsEmulator:
    """A running gcp-storage-emulator subprocess (in-memory storage) on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        # Read back only when the process fails to start; closed by stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115

    def start(self, timeout: float = 30.0) -> GcsEmulator:
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            raise RuntimeError(
                "The local GCS emulator needs the gcp-storage-emulator package: "
                "pip install 'airflow-gemini-files[testing]' (or [demo])."
            )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
             "--port", str(self.port), "--in-memory", "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._stderr.seek(0)
                detail = self._stderr.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(
                    f"gcp-storage-emulator exited with status {self._proc.returncode}: " + " / ".join(detail)
                )
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
        self._stderr.close()

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
