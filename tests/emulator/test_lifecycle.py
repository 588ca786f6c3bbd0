"""GeminiEmulator as a context manager: data directory, restart, no secrets in its repr. Emulator only."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from google import genai
from google.genai import types

from airflow_gemini_files.emulator import GeminiEmulator

pytestmark = pytest.mark.emulator_only


def test_uploaded_bytes_land_in_the_data_dir(tmp_path: Path) -> None:
    with GeminiEmulator(api_key="secret-key", data_dir=str(tmp_path)) as emu:
        client = genai.Client(api_key="secret-key", http_options=types.HttpOptions(base_url=emu.base_url))
        file = client.files.upload(file=io.BytesIO(b"payload bytes"), config={"mime_type": "text/plain"})
        assert file.name is not None
        stored = tmp_path / "gemini-files-emulator" / "files" / file.name.removeprefix("files/")
        assert stored.read_bytes() == b"payload bytes"
        assert "secret-key" not in repr(emu)
        client.files.delete(name=file.name)
        assert not stored.exists()
    assert tmp_path.is_dir()  # a caller's data_dir is left in place, emptied of what the emulator made
    assert list(tmp_path.iterdir()) == []


def test_stop_and_start_again() -> None:
    emu = GeminiEmulator()
    with emu:
        first_url = emu.base_url
    with emu:
        client = genai.Client(api_key="any-key", http_options=types.HttpOptions(base_url=emu.base_url))
        file = client.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})
        assert file.size_bytes == 1
    assert first_url.startswith("http://127.0.0.1:")
