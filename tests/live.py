"""Live contract mode: which tests also run against the real Gemini API, and with what.

Tests marked ``live`` (usually through a fixture parametrised ``emulator`` / ``live``) run against the
real API when ``GEMINI_API_KEY`` is set: ``uv run pytest -m live``. Without a key they are deselected
(not merely skipped), so CI stays offline and quiet. Registration also needs ``GEMINI_LIVE_GCS_URI`` (a
``gs://`` object the key's project may read) and Application Default Credentials.
``GEMINI_LIVE_BASE_URL`` points the live runs elsewhere (e.g. at an emulator started from the CLI, to
check the harness itself offline); ``GEMINI_LIVE_MODEL`` picks the model (default ``gemini-2.5-flash``).
"""

from __future__ import annotations

import os

import pytest

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
