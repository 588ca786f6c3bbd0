"""Test doubles shared by every test directory: one task instance, one fake hook, one service-account key.

- :class:`FakeTI` / :func:`context`: the task-instance surface the operators use (identity, try number,
  map index, XCom push) and a context with a DAG run that has a start time (the naming scope).
- :class:`FakeGeminiHook`: an in-memory GeminiHook for unit tests of operator logic alone (no HTTP at
  all); the ``fake_hook`` fixture (tests/conftest.py) puts it where operators, sensor and trigger look.
- :func:`service_account_key`: a freshly generated service-account key JSON.
- :class:`TriggerClock` / :func:`use_trigger_clock`: a wall clock and ``asyncio.sleep`` for a trigger
  module that only move when the trigger sleeps.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from google.genai import types

from airflow_gemini_files.exceptions import GeminiFileExistsError, GeminiFileGoneError, GeminiInputError
from airflow_gemini_files.pricing import DEFAULT_PRICES
from airflow_gemini_files.quota import PROJECT_STORAGE_BYTES, FilesUsage, files_usage
from airflow_gemini_files.refs import GeminiFileRef

RUN_ID = "scheduled__2026-11-21T00:00:00+00:00"
RUN_STARTED = datetime(2026, 11, 22, 0, 0, 1, 123456, tzinfo=UTC)


class FakeTI:
    """Just enough of a RuntimeTaskInstance: identity, try number, map index and an XCom dict."""

    def __init__(
        self,
        *,
        dag_id: str = "nightly",
        run_id: str = RUN_ID,
        task_id: str = "task",
        map_index: int = -1,
        try_number: int = 1,
        first_reschedule: datetime | None = None,
    ) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = try_number
        self.first_reschedule = first_reschedule
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(f"{task_ids}:{key}", self.xcom.get(key))

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return self.first_reschedule


def context(*, run_started: datetime | None = RUN_STARTED, **ti: Any) -> dict[str, Any]:
    """A task context: a :class:`FakeTI` (``ti`` keyword arguments), a DAG run started at ``run_started``."""
    task_instance = FakeTI(**ti)
    dag_run = SimpleNamespace(
        dag_id=task_instance.dag_id, run_id=task_instance.run_id, start_date=run_started
    )
    return {
        "ti": task_instance,
        "task_instance": task_instance,
        "dag_run": dag_run,
        "run_id": task_instance.run_id,
    }


def service_account_key(
    token_uri: str = "https://oauth2.googleapis.com/token", project: str = "nightly-docs"
) -> dict[str, str]:
    """A new service-account key (a real RSA key) whose token endpoint is ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": f"airflow@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


class FakeGeminiHook:
    """
    Files live in ``self.files``; every call is counted in ``self.calls``.

    ``upload_delay`` makes uploads slow (to observe concurrency); ``fail_sources`` makes the uploads of those
    sources raise; ``states`` scripts the state sequence ``get_file`` reports per name; ``reply`` builds the
    generate response text from the contents.
    """

    default_conn_name = "gemini_default"

    def __init__(self) -> None:
        self.files: dict[str, GeminiFileRef] = {}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.upload_delay = 0.0
        self.fail_delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_sources: dict[str, Exception] = {}
        self.states: dict[str, list[str]] = {}
        self.get_errors: list[Exception] = []
        self.delete_errors: dict[str, Exception] = {}
        self.generate_errors: dict[str, Exception] = {}
        self.contents: list[list[Any]] = []
        self.configs: list[Any] = []
        self.reply: Callable[[list[Any]], str] = lambda contents: "summary"
        self.upload_names: list[str | None] = []
        self.on_exists: list[str] = []
        self.register_batches: list[list[str]] = []
        self.gcs_objects: list[str] = []
        self.listed: list[tuple[str, str | None, str | None]] = []
        self.batch_jobs: list[types.BatchJob] = []
        self.model_errors: dict[str, Exception] = {}
        self.checked_models: list[str] = []
        self.prices = DEFAULT_PRICES
        self.ledger: Any = None
        self.quota_bytes = PROJECT_STORAGE_BYTES
        self.sizes: dict[str, int] = {}
        self.usage_metadata: dict[str, int] = {
            "prompt_token_count": 10,
            "candidates_token_count": 2,
            "total_token_count": 12,
        }
        self.input_tokens = 10

    def _count(self, what: str) -> None:
        with self.lock:
            self.calls[what] = self.calls.get(what, 0) + 1

    def add(self, name: str, state: str = "ACTIVE", **fields: Any) -> GeminiFileRef:
        """Put a file in the store directly."""
        fields.setdefault("display_name", name.removeprefix("files/") + ".pdf")
        fields.setdefault("expiration_time", datetime.now(UTC) + timedelta(hours=48))
        fields.setdefault("create_time", datetime.now(UTC))
        ref = GeminiFileRef(
            name=name,
            uri=f"https://emulator/v1beta/{name}",
            mime_type="application/pdf",
            state=state,
            source="UPLOADED",
            **fields,
        )
        self.files[ref.name] = ref
        return ref

    # Hook API -----------------------------------------------------------------------------------------
    def get_conn(self) -> None:
        self._count("get_conn")

    @property
    def settings(self) -> None:
        self._count("settings")

    def require_ledger(self, what: str) -> Any:
        if self.ledger is None:
            raise GeminiInputError(f"{what} needs a ledger (fake hook)")
        return self.ledger

    def count_tokens(self, *, model: str, contents: list[Any]) -> int:
        self._count("count_tokens")
        return self.input_tokens

    def source_size(self, source: Any) -> int:
        return self.sizes.get(str(source), 0) if str(source) in self.sizes else os.path.getsize(source)

    def files_usage(self) -> FilesUsage:
        self._count("files_usage")
        return files_usage(list(self.files.values()), quota_bytes=self.quota_bytes)

    def upload_file(
        self,
        source: Any,
        *,
        mime_type: str | None = None,
        display_name: str | None = None,
        name: str | None = None,
        on_exists: str = "fail",
    ) -> GeminiFileRef:
        self._count("upload")
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.upload_names.append(name)
            self.on_exists.append(on_exists)
        try:
            if str(source) in self.fail_sources:
                time.sleep(self.fail_delay)
                raise self.fail_sources[str(source)]
            time.sleep(self.upload_delay)
            if name is not None and name in self.files:
                existing = self.files[name]
                if on_exists == "fail":
                    raise GeminiFileExistsError(f"A Gemini file named {name} already exists.", file_name=name)
                if on_exists == "reuse" and existing.state != "FAILED":
                    return dataclasses.replace(existing, source_uri=str(source))
                del self.files[name]
            file_name = name or f"files/up-{next(self.ids)}"
            ref = self.add(
                file_name if file_name.startswith("files/") else f"files/{file_name}",
                state="PROCESSING",
                display_name=display_name or os.path.basename(str(source)),
            )
            ref = dataclasses.replace(ref, source_uri=str(source))
            self.files[ref.name] = ref
            return ref
        finally:
            with self.lock:
                self.in_flight -= 1

    def register_gcs_files(self, uris: Sequence[str], *, batch_size: int = 100) -> list[GeminiFileRef]:
        self._count("register")
        self.register_batches.append(list(uris))
        for uri in uris:
            if uri in self.fail_sources:
                raise self.fail_sources[uri]
        refs = []
        for uri in uris:
            ref = self.add(
                f"files/reg-{next(self.ids)}", state="PROCESSING", display_name=uri.rsplit("/", 1)[-1]
            )
            ref = dataclasses.replace(ref, source_uri=uri, source="REGISTERED")
            self.files[ref.name] = ref
            refs.append(ref)
        return refs

    def get_file(self, file: Any) -> GeminiFileRef:
        self._count("get")
        name = GeminiFileRef.coerce(file).name
        with self.lock:
            if self.get_errors:
                raise self.get_errors.pop(0)
            if name not in self.files:
                raise GeminiFileGoneError(f"Gemini file {name} does not exist.", file_name=name)
            script = self.states.get(name)
            if script:
                state = script.pop(0) if len(script) > 1 else script[0]
                error = "unsupported PDF" if state == "FAILED" else None
                self.files[name] = self.files[name].with_state(state, error)
            return self.files[name]

    async def aget_file(self, file: Any) -> GeminiFileRef:
        return self.get_file(file)

    def list_gcs_objects(
        self, bucket: str, prefix: str | None = None, match_glob: str | None = None
    ) -> list[str]:
        self._count("list_gcs")
        self.listed.append((bucket, prefix, match_glob))
        return list(self.gcs_objects)

    def list_files(self, page_size: int = 100) -> Iterator[GeminiFileRef]:
        self._count("list")
        yield from list(self.files.values())

    def list_batches(self, page_size: int = 100) -> Iterator[types.BatchJob]:
        self._count("list_batches")
        yield from list(self.batch_jobs)

    def batch_request(self, *, contents: Sequence[Any], config: Any = None) -> dict[str, Any]:
        return {"contents": [str(item) for item in contents], "config": config}

    def create_batch(self, *, model: str, src: Any, display_name: str) -> types.BatchJob:
        """A PENDING job (``src``: inline requests or an input file name), kept in ``batch_jobs``."""
        self._count("create_batch")
        job = types.BatchJob(
            name=f"batches/b-{next(self.ids)}",
            display_name=display_name,
            state=types.JobState.JOB_STATE_PENDING,
            create_time=datetime.now(UTC),
        )
        self.batch_jobs.append(job)
        return job

    def get_batch(self, name: str) -> types.BatchJob:
        self._count("get_batch")
        return next(job for job in self.batch_jobs if job.name == name)

    def delete_batch(self, name: str, *, with_results: bool = True) -> bool:
        self._count("delete_batch")
        before = len(self.batch_jobs)
        self.batch_jobs = [job for job in self.batch_jobs if job.name != name]
        return len(self.batch_jobs) < before

    def delete_files_quietly(self, files: Sequence[Any]) -> list[str]:
        deleted = []
        for file in files:
            try:
                if self.delete_file(file):
                    deleted.append(GeminiFileRef.coerce(file).name)
            except Exception:
                pass
        return deleted

    def delete_file(self, file: Any) -> bool:
        self._count("delete")
        name = GeminiFileRef.coerce(file).name
        if name in self.delete_errors:
            raise self.delete_errors[name]
        with self.lock:
            return self.files.pop(name, None) is not None

    def check_model(self, model: str, *, method: str = "generateContent") -> str:
        self._count("check_model")
        self.checked_models.append(model)
        if model in self.model_errors:
            raise self.model_errors[model]
        return model.removeprefix("models/")

    def generate_content(
        self, *, model: str, contents: list[Any], config: Any = None
    ) -> types.GenerateContentResponse:
        self._count("generate")
        with self.lock:
            self.contents.append(list(contents))
            self.configs.append(config)
        for item in contents:
            uri = getattr(getattr(item, "file_data", None), "file_uri", "") or ""
            for name, error in self.generate_errors.items():
                if uri.endswith(name):
                    raise error
        return types.GenerateContentResponse.model_validate(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": self.reply(contents)}], "role": "model"},
                        "finish_reason": "STOP",
                    }
                ],
                "usage_metadata": dict(self.usage_metadata),
            }
        )


TRIGGER_START = 1_000_000.0
"""Where a :class:`TriggerClock` starts (epoch seconds)."""


class TriggerClock:
    """Wall clock and asyncio.sleep that only move when the trigger sleeps."""

    def __init__(self) -> None:
        self.now = TRIGGER_START
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def use_trigger_clock(monkeypatch: Any, module: Any) -> TriggerClock:
    """Make ``module`` (a trigger module) see a :class:`TriggerClock` as ``time`` and ``asyncio.sleep``."""
    fake = TriggerClock()
    monkeypatch.setattr(module, "time", fake)
    monkeypatch.setattr(module.asyncio, "sleep", fake.sleep)
    return fake
