"""Helpers shared by the emulator tests: SDK clients bound to the session's emulator."""

from __future__ import annotations

import pytest
from google import genai
from google.genai import types

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
