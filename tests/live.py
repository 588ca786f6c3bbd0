"""Live contract mode: which tests also run against the real Gemini API, and with what.

Tests marked ``live`` (usually through a fixture parametrised ``emulator`` / ``live``) run against the
real API when ``GEMINI_API_KEY`` is set: ``uv run pytest -m live``. Without a key they are deselected
(not merely skipped), so CI stays offline and quiet. Registration also needs ``GEMINI_LIVE_GCS_URI`` (a
``gs://`` object the key's project may read) and Application Default Credentials.
``GEMINI_LIVE_BASE_URL`` points the live runs elsewhere (e.g. at an emulator started from the CLI, to
check the harness itself offline); ``GEMINI_LIVE_MODEL`` picks the model (default ``gemini-2.5-flash``).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_gemini_files.emulator import GeminiEmulator
    from airflow_gemini_files.hooks.gemini import GeminiHook
    from airflow_gemini_files.refs import GeminiFileRef

LIVE_KEY_ENV = "GEMINI_API_KEY"
LIVE_GCS_URI_ENV = "GEMINI_LIVE_GCS_URI"
LIVE_BASE_URL_ENV = "GEMINI_LIVE_BASE_URL"
LIVE_MODEL_ENV = "GEMINI_LIVE_MODEL"
LIVE_BASE_URL = "https://generativelanguage.googleapis.com"


def live_model() -> str:
    """The model the live runs ask (the emulator serves the same name)."""
    return os.environ.get(LIVE_MODEL_ENV) or "gemini-2.5-flash"


def deselect_live_without_key(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without an API key, drop every ``live`` test from the run (reported as deselected)."""
    if os.environ.get(LIVE_KEY_ENV):
        return
    live = [item for item in items if item.get_closest_marker("live")]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if not item.get_closest_marker("live")]


SAMPLES = resources.files("airflow_gemini_files.samples")
_BUCKETS = itertools.count()


@dataclass
class HookTarget:
    """Where a provider contract test runs: a hook on the emulator or on the real API."""

    hook: GeminiHook
    model: str
    emulator: GeminiEmulator | None = None
    created: list[GeminiFileRef] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.emulator is None

    def track(self, *refs: GeminiFileRef) -> None:
        """Delete these files when the test ends."""
        self.created.extend(refs)

    def gcs_uri(self, request: pytest.FixtureRequest) -> str:
        """A ``gs://`` object to register: ``GEMINI_LIVE_GCS_URI`` live, a fresh emulator object offline."""
        if self.live:
            uri = os.environ.get(LIVE_GCS_URI_ENV)
            if not uri:
                pytest.skip(f"set {LIVE_GCS_URI_ENV} (and Application Default Credentials) to register live")
            return uri
        gcs = request.getfixturevalue("gcs_emulator")
        bucket = gcs.client().create_bucket(f"hook-contract-{next(_BUCKETS)}")
        blob = bucket.blob("docs/invoice.pdf")
        blob.upload_from_string(
            SAMPLES.joinpath("invoice_northwind_2026-11.pdf").read_bytes(), content_type="application/pdf"
        )
        return f"gs://{bucket.name}/docs/invoice.pdf"
