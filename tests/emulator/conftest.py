"""Helpers shared by the emulator tests: SDK clients bound to the session's emulator, and the contract target.

Contract tests take the ``target`` fixture and run twice: against the emulator, and (marked ``live``)
against the real Gemini API when ``GEMINI_API_KEY`` is set: ``uv run pytest -m live`` (the settings are
in ``tests/live.py``). Tests that need the emulator's controls (clock, faults, configuration, stats) are
marked ``emulator_only``.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from live import LIVE_BASE_URL, LIVE_BASE_URL_ENV, LIVE_KEY_ENV

from airflow_gemini_files.emulator import GeminiEmulator


def make_client(
    emu: GeminiEmulator, api_key: str = "test-api-key", api_version: str | None = None
) -> genai.Client:
    return genai.Client(
        api_key=api_key, http_options=types.HttpOptions(base_url=emu.base_url, api_version=api_version)
    )


@pytest.fixture
def client(gemini_emulator: GeminiEmulator) -> genai.Client:
    return make_client(gemini_emulator)


@dataclass
class Target:
    """Where a contract test runs: the emulator or the real API, through the unmodified SDK."""

    kind: str
    client: genai.Client
    api_key: str
    base_url: str
    emulator: GeminiEmulator | None = None
    created: list[str] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.emulator is None

    def http(self) -> httpx.Client:
        """A plain HTTP client for what the SDK does not send (upload protocol commands)."""
        return httpx.Client(timeout=60)

    def upload(self, data: bytes, mime_type: str, **config: Any) -> types.File:
        """Upload through the SDK and remember the file, so it is deleted after the test."""
        file = self.client.files.upload(file=io.BytesIO(data), config={"mime_type": mime_type, **config})
        self.track(file)
        return file

    def track(self, file: types.File | dict[str, Any]) -> None:
        name = file.get("name") if isinstance(file, dict) else file.name
        if name:
            self.created.append(name)

    def active(self, file: types.File, timeout: float = 300) -> types.File:
        """The file once it left PROCESSING: the emulator's clock jumps ahead, the live API is polled."""
        deadline = time.monotonic() + timeout
        while True:
            if self.emulator is not None:
                self.emulator.advance_clock(600)
            fresh = self.client.files.get(name=file.name or "")
            if fresh.state is None or fresh.state.name != "PROCESSING" or time.monotonic() > deadline:
                return fresh
            time.sleep(2)

    def cleanup(self) -> None:
        for name in self.created:
            with contextlib.suppress(errors.APIError):
                self.client.files.delete(name=name)


@pytest.fixture(params=["emulator", pytest.param("live", marks=pytest.mark.live)])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The service under test; every file a test creates through it is deleted afterwards."""
    if request.param == "live":
        key = os.environ.get(LIVE_KEY_ENV)
        if not key:
            pytest.skip(f"set {LIVE_KEY_ENV} to run the contract tests against the real Gemini API")
        base_url = os.environ.get(LIVE_BASE_URL_ENV) or LIVE_BASE_URL
        client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url))
        found = Target("live", client, key, base_url.rstrip("/"))
    else:
        emu: GeminiEmulator = request.getfixturevalue("gemini_emulator")
        found = Target("emulator", make_client(emu), "test-api-key", emu.base_url, emulator=emu)
    try:
        yield found
    finally:
        found.cleanup()
