"""``GeminiEmulator``: start/stop the emulator in a background thread and steer it from tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from airflow_gemini_files.emulator.faults import Faults
from airflow_gemini_files.emulator.server import EmulatorHTTPServer, fetch_gcs_metadata
from airflow_gemini_files.emulator.store import FileStore


class GeminiEmulator:
    """A local Gemini Developer API (Files API + generateContent) for the unmodified google-genai SDK.

    Use it as a context manager (or ``start()`` / ``stop()``) and point the SDK at ``base_url``::

        with GeminiEmulator(api_key="k") as emu:
            client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=emu.base_url))
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        data_dir: str | None = None,
        processing_delay: float = 0.0,
        video_processing_delay: float | None = None,
        model_latency: float = 0.0,
        max_file_bytes: int = 2 * 1024**3,
        max_project_bytes: int = 20 * 1024**3,
        gcs_host: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.model_latency = model_latency
        self._gcs_host = gcs_host
        self.store = FileStore(
            data_dir=data_dir,
            processing_delay=processing_delay,
            video_processing_delay=video_processing_delay,
            max_file_bytes=max_file_bytes,
            max_project_bytes=max_project_bytes,
        )
        self.faults = Faults()
        self._defaults = self.settings()
        self._video_default = video_processing_delay  # None: follows processing_delay
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never shows the API key
        return f"GeminiEmulator(base_url={self.base_url if self._server else None!r})"

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> GeminiEmulator:
        if self._server is not None:
            return self
        self.store.prepare()
        self._server = EmulatorHTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self.store.base_url = self.base_url
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="gemini-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        self.store.close()

    def __enter__(self) -> GeminiEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: pass it as ``types.HttpOptions(base_url=...)``."""
        return f"http://{self.host}:{self.port}"

    @property
    def gcs_host(self) -> str | None:
        """Where ``files:register`` reads object metadata (default: env ``STORAGE_EMULATOR_HOST``)."""
        return self._gcs_host or os.environ.get("STORAGE_EMULATOR_HOST")

    @gcs_host.setter
    def gcs_host(self, value: str | None) -> None:
        self._gcs_host = value

    def gcs_metadata(self, uri: str) -> dict[str, Any]:
        return fetch_gcs_metadata(self.gcs_host, uri)

    # ---- controls -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Request counts per operation, the most requests of each operation served at once
        (``peak_in_flight``: what a concurrency cap such as an Airflow pool must bound), number of stored
        files and their bytes."""
        return self.store.stats()

    def reset(self) -> None:
        """Drop all files, upload sessions, counters, faults and failure rules; rewind the clock;
        restore the settings given to the constructor."""
        self.store.reset()
        self.faults.clear()
        self.configure(**self._defaults)
        self.store.video_delay_setting = self._video_default

    def settings(self) -> dict[str, Any]:
        """The current tunable settings (see :meth:`configure`)."""
        return {
            "processing_delay": self.store.processing_delay,
            "video_processing_delay": self.store.video_processing_delay,
            "model_latency": self.model_latency,
            "max_file_bytes": self.store.max_file_bytes,
            "max_project_bytes": self.store.max_project_bytes,
        }

    def configure(
        self,
        *,
        processing_delay: float | None = None,
        video_processing_delay: float | None = None,
        model_latency: float | None = None,
        max_file_bytes: int | None = None,
        max_project_bytes: int | None = None,
    ) -> None:
        """Change settings of a running emulator (e.g. the shared one of the pytest fixture);
        ``reset()`` restores the constructor's values."""
        if processing_delay is not None:
            self.store.processing_delay = processing_delay
        if video_processing_delay is not None:
            self.store.video_delay_setting = video_processing_delay
        if model_latency is not None:
            self.model_latency = model_latency
        if max_file_bytes is not None:
            self.store.max_file_bytes = max_file_bytes
        if max_project_bytes is not None:
            self.store.max_project_bytes = max_project_bytes

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (finishes processing, expires files after 48 h)."""
        self.store.clock.advance(seconds)

    def fail_processing(self, match: str, message: str = "Processing failed.") -> None:
        """Files whose name, display name or gs:// source contains ``match`` end FAILED with ``message``."""
        self.store.fail_processing(match, message)

    def inject_faults(
        self,
        operation: str,
        *,
        rate: float = 0.0,
        statuses: Sequence[int] = (503,),
        sequence: Sequence[int] | None = None,
        latency: float = 0.0,
        drop_mid_chunk: int = 0,
    ) -> None:
        """Make ``operation`` (a stats key or ``"*"``) fail: scripted ``sequence`` of statuses first
        (0/200 = pass), then a ``rate`` of ``statuses``; add ``latency`` seconds; cut the connection
        half-way through the next ``drop_mid_chunk`` upload chunks (nothing of them is committed)."""
        self.faults.inject(
            operation,
            rate=rate,
            statuses=statuses,
            sequence=sequence,
            latency=latency,
            drop_mid_chunk=drop_mid_chunk,
        )

    def files(self) -> list[dict[str, Any]]:
        """The stored File resources (camelCase JSON, oldest first), for assertions."""
        now = self.store.clock.now()
        return [f.resource(now, self.base_url) for f in self.store.all_files()]
