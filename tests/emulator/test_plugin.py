"""The pytest plugin's fixtures, as a user's DAG test sees them."""

from __future__ import annotations

import json
import os

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.testing import GcsEmulator


def test_gemini_connection_points_airflow_at_the_emulator(
    gemini_connection: str, gemini_emulator: GeminiEmulator
) -> None:
    assert gemini_connection == "gemini_default"
    conn = json.loads(os.environ["AIRFLOW_CONN_GEMINI_DEFAULT"])
    assert conn == {
        "conn_type": "gemini",
        "password": "test-api-key",
        "extra": {"base_url": gemini_emulator.base_url},
    }


def test_gcs_emulator_sets_the_env_and_gives_a_client(gcs_emulator: GcsEmulator) -> None:
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs_emulator.host
    gcs_emulator.reset()
    client = gcs_emulator.client()
    client.create_bucket("plugin-bucket").blob("a.txt").upload_from_string(b"hi")
    assert [b.name for b in client.list_blobs("plugin-bucket")] == ["a.txt"]
    gcs_emulator.reset()
    assert list(client.list_buckets()) == []


def test_gemini_emulator_is_fresh_for_each_test(gemini_emulator: GeminiEmulator) -> None:
    assert gemini_emulator.stats()["files"] == 0
    assert sum(gemini_emulator.stats()["requests"].values()) == 0
