"""Pytest fixtures for testing DAGs against the local Gemini and GCS emulators (a pytest plugin).

Opt-in: install ``airflow-gemini-files[testing]`` and enable it with one line in your ``conftest.py``:
``pytest_plugins = ["airflow_gemini_files.testing"]``.

- ``gcs_emulator`` (session): a :class:`~airflow_gemini_files.gcs_emulator.GcsEmulator` (gcp-storage-emulator
  in a subprocess on a free port, in memory); sets ``STORAGE_EMULATOR_HOST`` and the anonymous GCP
  connection ``google_cloud_default``. ``.host``, ``.client()`` (an anonymous ``storage.Client``),
  ``.reset()``.
- ``gemini_emulator``: a :class:`~airflow_gemini_files.emulator.GeminiEmulator` with API key
  ``"test-api-key"``, one server per session, reset before each test.
- ``gemini_connection``: sets ``AIRFLOW_CONN_GEMINI_DEFAULT`` to point at ``gemini_emulator`` and
  yields ``"gemini_default"``.

This module imports nothing heavy at import time, so loading the plugin never slows or breaks
test collection.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from airflow_gemini_files.gcs_emulator import GcsEmulator

if TYPE_CHECKING:
    from airflow_gemini_files.emulator import GeminiEmulator

TEST_API_KEY = "test-api-key"


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
