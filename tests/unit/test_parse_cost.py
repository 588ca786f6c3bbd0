"""What a DAG file pays at parse time: importing the provider must not load the SDK or the GCS client.

Airflow parses every DAG file in a fresh process, again and again; whatever the provider imports at
module level is paid on every parse. The SDK (``google.genai``), the GCS client and its error classes
(which pull in grpc) are loaded where they are used, at run time. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import airflow_gemini_files.example_dags as example_dags
import airflow_gemini_files.operators as operators
import airflow_gemini_files.sensors as sensors
import airflow_gemini_files.triggers as triggers

HEAVY = (
    "google.genai",
    "google.cloud.storage",
    "google.api_core",
    "grpc",
    "requests",
    "openlineage",
    "airflow.providers.openlineage",
)
"""Loaded only when the provider talks to Gemini or GCS or reports lineage, never by importing what a DAG
file imports."""


def _submodules(package: object) -> list[str]:
    return [info.name for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}.")]  # type: ignore[attr-defined]


DAG_FACING = sorted(
    [
        "airflow_gemini_files.refs",
        "airflow_gemini_files.naming",
        "airflow_gemini_files.hooks.gemini",
        "airflow_gemini_files.lineage",
        *_submodules(operators),
        *_submodules(sensors),
        *_submodules(triggers),
    ]
)
EXAMPLE_DAGS = _submodules(example_dags)


_SCRIPT = """
import importlib, json, sys
import airflow.sdk  # what every DAG file loads anyway
heavy = json.loads(sys.argv[1])
found = {}
for name in json.loads(sys.argv[2]):
    before = set(sys.modules)
    importlib.import_module(name)
    new = set(sys.modules) - before
    found[name] = sorted(m for m in new if any(m == h or m.startswith(h + ".") for h in heavy))
print(json.dumps(found))
"""


def _heavy_modules_after_importing(modules: list[str]) -> dict[str, list[str]]:
    """Import the modules one after the other in a fresh interpreter: the heavy modules each one loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(HEAVY), json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"importing {modules} failed:\n{done.stderr[-2000:]}"
    found: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_modules_a_dag_file_imports_load_neither_the_sdk_nor_the_gcs_client() -> None:
    assert "airflow_gemini_files.operators.files" in DAG_FACING
    assert "airflow_gemini_files.sensors.files" in DAG_FACING
    assert "airflow_gemini_files.triggers.files" in DAG_FACING
    loaded = _heavy_modules_after_importing(DAG_FACING)
    assert {name: heavy for name, heavy in loaded.items() if heavy} == {}


def test_parsing_the_example_dags_loads_neither_the_sdk_nor_the_gcs_client() -> None:
    assert "airflow_gemini_files.example_dags.gemini_nightly_document_analysis" in EXAMPLE_DAGS
    loaded = _heavy_modules_after_importing(EXAMPLE_DAGS)
    assert {name: heavy for name, heavy in loaded.items() if heavy} == {}


def test_the_check_sees_a_heavy_module_when_one_is_imported() -> None:
    """The check itself can fail: a module that imports the SDK or the GCS client at the top is caught."""
    loaded = _heavy_modules_after_importing(
        ["airflow_gemini_files.refs", "google.cloud.storage", "google.genai", "openlineage.client.event_v2"]
    )
    assert loaded["airflow_gemini_files.refs"] == []
    assert "openlineage.client.event_v2" in loaded["openlineage.client.event_v2"]
    assert "google.cloud.storage" in loaded["google.cloud.storage"]
    assert "google.genai" in loaded["google.genai"]
