"""What ships: the runtime package never needs pytest, and the pytest plugin is opt-in."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from importlib.metadata import entry_points

import airflow_gemini_files

RUNTIME_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(airflow_gemini_files.__path__, prefix="airflow_gemini_files.")
    if info.name != "airflow_gemini_files.testing"
    and not info.name.endswith(".__main__")  # runs a server
    and not info.name.startswith("airflow_gemini_files.example_dags.")
)


def test_every_runtime_module_imports_without_pytest() -> None:
    assert "airflow_gemini_files.demo" in RUNTIME_MODULES
    assert "airflow_gemini_files.gcs_emulator" in RUNTIME_MODULES
    script = (
        "import importlib, json, sys\n"
        f"for name in {RUNTIME_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('_pytest', 'pytest')))))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_pytest_plugin_is_not_loaded_into_every_pytest_run() -> None:
    plugins = [ep.value for ep in entry_points(group="pytest11")]
    assert not [value for value in plugins if value.startswith("airflow_gemini_files")]


def test_the_provider_is_registered_with_airflow() -> None:
    (provider,) = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_gemini_files")
    ]
    info = provider.load()()
    assert info["package-name"] == "airflow-gemini-files"
    assert [c["connection-type"] for c in info["connection-types"]] == ["gemini"]
