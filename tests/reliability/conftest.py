"""Shared set-up of the reliability suite: a connection with fast retries.

Everything talks to the real emulators through the real SDK and storage client (fixtures of the
``airflow_gemini_files.testing`` plugin); only the retry *delays* are shortened so faults cost
milliseconds instead of seconds. Real DAG runs (``run_dag``) and the task context (``doubles.context``)
are the suite's shared ones.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_gemini_files.emulator import GeminiEmulator

FAST_RETRIES = {"retry_attempts": 8, "retry_initial_delay": 0.01, "retry_max_delay": 0.05}
"""Connection extras: as many attempts as a nightly run needs to ride out 15 % faults, tiny waits."""


def set_connection(
    monkeypatch: pytest.MonkeyPatch, emulator: GeminiEmulator, *, key: str | None = None, **extra: Any
) -> str:
    """Point ``gemini_default`` at ``emulator`` with fast retries (``extra`` overrides); returns its id."""
    conn = {
        "conn_type": "gemini",
        "password": emulator.api_key if key is None else key,
        "extra": {"base_url": emulator.base_url, **FAST_RETRIES, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DEFAULT", json.dumps(conn))
    return "gemini_default"


@pytest.fixture
def fast_connection(gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``gemini_default`` on the emulator with retries that wait milliseconds."""
    return set_connection(monkeypatch, gemini_emulator)
