"""Next to the official Google provider (the CI matrix installs its latest release with this one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow.providers.google", reason="apache-airflow-providers-google is not installed")


def test_both_providers_are_registered_and_each_owns_its_connection_types() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert {"airflow-gemini-files", "apache-airflow-providers-google"} <= set(manager.providers)
    hooks = manager.hooks
    gemini = hooks["gemini"]
    assert gemini is not None
    assert (gemini.package_name, gemini.hook_class_name) == (
        "airflow-gemini-files",
        "airflow_gemini_files.hooks.gemini.GeminiHook",
    )
    gcp = hooks["google_cloud_platform"]
    assert gcp is not None
    assert gcp.package_name == "apache-airflow-providers-google"


def test_our_hook_works_with_the_sdk_the_google_provider_settled_on(
    gemini_emulator: Any, gemini_connection: str, tmp_path: Path
) -> None:
    from airflow.providers.google.cloud.hooks.gen_ai import GenAIGeminiAPIHook

    from airflow_gemini_files.hooks.gemini import GeminiHook

    assert GenAIGeminiAPIHook.__module__ == "airflow.providers.google.cloud.hooks.gen_ai"
    document = tmp_path / "notes.md"
    document.write_text("# Notes\n", encoding="utf-8")
    hook = GeminiHook(gemini_conn_id=gemini_connection)

    ref = hook.upload_file(str(document))

    assert ref.display_name == "notes.md"
    assert [file.name for file in hook.list_files()] == [ref.name]
    assert hook.delete_file(ref)
    assert gemini_emulator.files() == []
