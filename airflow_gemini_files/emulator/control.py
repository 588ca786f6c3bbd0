"""``GeminiEmulator``: start/stop the emulator in a background thread and steer it from tests."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from airflow_gemini_files.emulator.batches import BatchStore
from airflow_gemini_files.emulator.faults import Faults
from airflow_gemini_files.emulator.models import ModelCatalogue
from airflow_gemini_files.emulator.server import EmulatorHTTPServer, fetch_gcs_metadata
from airflow_gemini_files.emulator.store import FileStore, MiB

#: How ``files:register`` may authenticate on the emulated server (see ``Handler._check_register_auth``).
REGISTER_AUTH_MODES = ("key_and_bearer", "key_only", "credentials_only")
#: What kind of identity an OAuth token on ``files:register`` stands for (decides a ``key_only`` refusal).
REGISTER_IDENTITIES = ("user", "service_account")


class GeminiEmulator:
    """A local Gemini Developer API (Files API, generateContent, Batch API) for the unmodified SDK.

    Use it as a context manager (or ``start()`` / ``stop()``) and point the SDK at ``base_url``::

        with GeminiEmulator(api_key="k") as emu:
            client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=emu.base_url))

    Settings (constructor, :meth:`configure`, ``POST /_emulator/config``; :meth:`reset` restores the
    constructor's): ``processing_delay`` (seconds PROCESSING -> ACTIVE for every file, ``0`` for instant
    ACTIVE; ``None`` for the realistic per-media model), ``video_processing_delay`` (video/*; default
    3x ``processing_delay``), ``model_latency``, ``max_file_bytes``, ``max_project_bytes``,
    ``max_inline_bytes``, ``max_inline_pdf_bytes``, ``register_auth`` (one of ``REGISTER_AUTH_MODES``),
    ``register_identity`` (``user`` or ``service_account``), ``models`` (the model names served).
    Constructor only: ``socket_timeout``, ``max_large_bodies``, ``allowed_hosts`` (extra ``Host`` values
    to accept besides the bound address), ``data_dir`` (scratch space, see :mod:`.store`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        data_dir: str | None = None,
        processing_delay: float | None = None,
        video_processing_delay: float | None = None,
        model_latency: float = 0.0,
        max_file_bytes: int = 2 * 1024**3,
        max_project_bytes: int = 20 * 1024**3,
        gcs_host: str | None = None,
        *,
        max_inline_bytes: int = 100 * MiB,
        max_inline_pdf_bytes: int = 50 * MiB,
        register_auth: str = "key_and_bearer",
        register_identity: str = "user",
        models: Sequence[str] | None = None,
        socket_timeout: float = 60.0,
        max_large_bodies: int = 2,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.model_latency = model_latency
        self.register_auth = "key_and_bearer"
        self.register_identity = "user"
        self.socket_timeout = socket_timeout
        self.max_large_bodies = max_large_bodies
        self.allowed_hosts = tuple(allowed_hosts)
        self._gcs_host = gcs_host
        self.store = FileStore(
            data_dir=data_dir,
            processing_delay=processing_delay,
            video_processing_delay=video_processing_delay,
            max_file_bytes=max_file_bytes,
            max_project_bytes=max_project_bytes,
            max_inline_bytes=max_inline_bytes,
            max_inline_pdf_bytes=max_inline_pdf_bytes,
        )
        self.models = ModelCatalogue(models)
        self.faults = Faults()
        self.batch_store = BatchStore(self.store, self.models)
        self.configure(register_auth=register_auth, register_identity=register_identity)
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
        self._server = EmulatorHTTPServer(
            (self.host, self.port),
            self,
            socket_timeout=self.socket_timeout,
            max_large_bodies=self.max_large_bodies,
            extra_hosts=self.allowed_hosts,
        )
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
        self.batch_store.close()
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
    def max_json_body(self) -> int:
        """The largest JSON request read: the inline data limit in base64, plus room for the rest."""
        return self.store.max_inline_bytes * 4 // 3 + 16 * MiB

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
        """Request counts per operation (``batch_create`` ... included), the most requests of each operation
        served at once (``peak_in_flight``: what a concurrency cap such as an Airflow pool must bound), those
        being served now (``in_flight``; a client has its answer a moment before the server is done), the
        number of stored files and their bytes, and the number of stored batch jobs (``batches``)."""
        return {**self.store.stats(), "batches": len(self.batch_store.jobs())}

    def reset(self) -> None:
        """Drop all files, upload sessions, counters, faults and failure rules; rewind the clock;
        restore the settings given to the constructor."""
        self.batch_store.reset()
        self.store.reset()
        self.faults.clear()
        defaults = dict(self._defaults)
        self.store.processing_delay = defaults.pop("processing_delay")
        self.store.video_delay_setting = self._video_default
        defaults.pop("video_processing_delay")
        self.configure(**defaults)

    def settings(self) -> dict[str, Any]:
        """The current tunable settings (see :meth:`configure`); a delay of None means realistic."""
        return {
            "processing_delay": self.store.processing_delay,
            "video_processing_delay": self.store.video_processing_delay,
            "model_latency": self.model_latency,
            "max_file_bytes": self.store.max_file_bytes,
            "max_project_bytes": self.store.max_project_bytes,
            "max_inline_bytes": self.store.max_inline_bytes,
            "max_inline_pdf_bytes": self.store.max_inline_pdf_bytes,
            "register_auth": self.register_auth,
            "register_identity": self.register_identity,
            "models": self.models.names(),
        }

    def configure(
        self,
        *,
        processing_delay: float | str | None = None,
        video_processing_delay: float | str | None = None,
        model_latency: float | None = None,
        max_file_bytes: int | None = None,
        max_project_bytes: int | None = None,
        max_inline_bytes: int | None = None,
        max_inline_pdf_bytes: int | None = None,
        register_auth: str | None = None,
        register_identity: str | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        """Change settings of a running emulator (e.g. the shared one of the pytest fixture); None leaves
        a setting as it is, ``"realistic"`` turns a processing delay back to the realistic model.
        ``reset()`` restores the constructor's values."""
        if processing_delay is not None:
            self.store.processing_delay = _delay(processing_delay, "processing_delay")
        if video_processing_delay is not None:
            self.store.video_delay_setting = _delay(video_processing_delay, "video_processing_delay")
        if model_latency is not None:
            self.model_latency = _seconds(model_latency, "model_latency")
        for name, value in (
            ("max_file_bytes", max_file_bytes),
            ("max_project_bytes", max_project_bytes),
            ("max_inline_bytes", max_inline_bytes),
            ("max_inline_pdf_bytes", max_inline_pdf_bytes),
        ):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a number of bytes >= 0, got {value!r}")
                setattr(self.store, name, value)
        if register_auth is not None:
            if register_auth not in REGISTER_AUTH_MODES:
                raise ValueError(f"register_auth must be one of {REGISTER_AUTH_MODES}, got {register_auth!r}")
            self.register_auth = register_auth
        if register_identity is not None:
            if register_identity not in REGISTER_IDENTITIES:
                raise ValueError(
                    f"register_identity must be one of {REGISTER_IDENTITIES}, got {register_identity!r}"
                )
            self.register_identity = register_identity
        if models is not None:
            if isinstance(models, str):
                raise ValueError("models must be a list of model names, not one string")
            self.models.replace(models)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (finishes processing, expires files after 48 h); batch
        jobs catch up before it returns (due requests answered, jobs finished or expired)."""
        self.store.clock.advance(seconds)
        self.batch_store.settle_all()

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
        retry_delay: float = 0.0,
        retry_after: float | None = None,
    ) -> None:
        """Make ``operation`` (a stats key or ``"*"``) fail: scripted ``sequence`` of statuses first
        (0/200 = pass), then a ``rate`` of ``statuses``; add ``latency`` seconds; cut the connection
        half-way through the next ``drop_mid_chunk`` upload chunks (nothing of them is committed).
        An injected 429 carries QuotaFailure and RetryInfo details asking for ``retry_delay`` seconds
        (also as ``Retry-After``); ``retry_after`` sets a ``Retry-After`` header on every injected error
        (any status) instead."""
        self.faults.inject(
            operation,
            rate=rate,
            statuses=statuses,
            sequence=sequence,
            latency=latency,
            drop_mid_chunk=drop_mid_chunk,
            retry_delay=retry_delay,
            retry_after=retry_after,
        )

    def files(self) -> list[dict[str, Any]]:
        """The stored File resources (camelCase JSON, oldest first), for assertions."""
        now = self.store.clock.now()
        return [f.resource(now, self.base_url) for f in self.store.all_files()]

    # ---- Batch API controls -------------------------------------------------------------------
    def configure_batches(
        self,
        *,
        pending_seconds: float | None = None,
        running_seconds: float | None = None,
        seconds_per_request: float | None = None,
        expire_after_seconds: float | None = None,
        result_order: str | None = None,
    ) -> None:
        """Timing and result order of batch jobs created from now on (``reset()`` restores the defaults):
        PENDING for ``pending_seconds`` (1), then RUNNING for ``running_seconds`` (1) plus
        ``seconds_per_request`` (0) per request; EXPIRED when not done ``expire_after_seconds`` (48 h)
        after creation; results ``"shuffled"`` (default, deterministic, as the live API may reorder) or
        in ``"input"`` order."""
        given = {
            "pending_seconds": pending_seconds,
            "running_seconds": running_seconds,
            "seconds_per_request": seconds_per_request,
            "expire_after_seconds": expire_after_seconds,
            "result_order": result_order,
        }
        self.batch_store.configure(**{k: v for k, v in given.items() if v is not None})

    def batch_settings(self) -> dict[str, Any]:
        """The current batch settings (see :meth:`configure_batches`)."""
        return dict(vars(self.batch_store.settings))

    def batches(self) -> list[dict[str, Any]]:
        """The stored batch jobs as ``batches.get`` returns them (oldest first), for assertions."""
        store = self.batch_store
        for job in store.jobs():
            store.settle(job)
        return [store.operation(job, "v1beta") for job in store.jobs()]

    def hold_batches(self, match: str = "") -> list[str]:
        """Keep batch jobs whose name or display name contains ``match`` ("" = all) in PENDING, those
        pending now and those created later, until :meth:`release_batches` (they still expire after
        48 h). Returns the names of the jobs held now."""
        return self.batch_store.hold(match)

    def release_batches(self, match: str = "") -> list[str]:
        """Held jobs whose name or display name contains ``match`` start running (now at the earliest);
        the rule ``hold_batches(match)`` is dropped, other hold rules stay. Returns the names released."""
        return self.batch_store.release(match)

    def fail_batches(self, match: str = "", message: str = "Batch failed.") -> list[str]:
        """Unfinished batch jobs matching ``match`` end FAILED with ``message`` now; jobs created later
        fail when they would start running. Returns the names of the jobs failed now."""
        return self.batch_store.fail(match, message)

    def expire_batches(self, match: str = "") -> list[str]:
        """Unfinished batch jobs matching ``match`` end EXPIRED now (as if their 48 h had passed)."""
        return self.batch_store.expire(match)


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _delay(value: float | str, name: str) -> float | None:
    """A processing delay setting: seconds, or ``"realistic"`` (None) for the per-media model."""
    return None if value == "realistic" else _seconds(value, name)
