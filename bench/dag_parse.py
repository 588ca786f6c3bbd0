"""DAG parse time: what the provider adds to every parse of a DAG file (issue 16, item 1).

Airflow's dag-processor parses each DAG file in a fresh child process, again every
``min_file_process_interval``: the child inherits what the manager process has loaded (Airflow itself,
plus the ``airflow.*`` modules the file names, which the manager pre-imports) and pays for everything
else the file imports, on every parse. This benchmark reproduces that: for each DAG file, a fresh
interpreter loads Airflow's dag-processing modules, pre-imports the file's ``airflow.*`` imports as the
manager does, then times Airflow's own parse of the file (``airflow.dag_processing.processor._parse_file``:
the loader, ``BundleDagBag``, and the serialization of its DAGs), wall and CPU.

The files, side by side in one run (each parse in its own process, the files interleaved in each round):

- ``standard``: a DAG of standard operators (Python, Bash, Empty, PythonSensor) shaped like the nightly
  DAG (listing, a mapped task group of wait -> analyse -> store, a teardown);
- ``standard + provider imports``: the same DAG, plus the imports a DAG of this provider makes
  (operators, sensor, hook, refs): their difference is what importing the provider adds to a parse;
- ``same DAG, provider operators``: the same shape built from the provider's operators (register, sensor,
  generate, delete): the difference adds their construction and serialization;
- the provider's example DAGs, as shipped.

With ``--compare-ref REF`` the provider's package at that git commit (``git archive``) is measured too, in
the same rounds (before / after).

    uv run python bench/dag_parse.py [--runs 7] [--compare-ref main] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, summarize, write_json

TARGET_SECONDS = 0.1

STANDARD_DAG = """
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import TriggerRule, dag, task, task_group
{provider_imports}

@dag(schedule="@daily", start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False, tags=["bench"])
def bench_standard_operators():
    listing = BashOperator(task_id="list_documents", bash_command="echo '[\\"a\\", \\"b\\"]'")

    @task
    def split(text: str) -> list[str]:
        return text.split()

    @task_group
    def per_document(name: str):
        wait = PythonSensor(
            task_id="wait_ready", python_callable=lambda: True, poke_interval=2, mode="reschedule"
        )
        analyse = PythonOperator(task_id="analyse", python_callable=lambda: {{"ok": True}})
        store = EmptyOperator(task_id="store")
        wait >> analyse >> store

    groups = per_document.expand(name=split(listing.output))
    cleanup = EmptyOperator(task_id="cleanup", trigger_rule=TriggerRule.ALL_DONE)
    groups >> cleanup.as_teardown(setups=listing)


bench_standard_operators()
"""

PROVIDER_IMPORTS = """
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators.files import (
    GeminiDeleteFilesOperator,
    GeminiRegisterGcsFilesOperator,
    GeminiUploadFileOperator,
)
from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor
"""

PROVIDER_DAG = """
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import TriggerRule, dag, task, task_group

from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiRegisterGcsFilesOperator
from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor


@dag(schedule="@daily", start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False, tags=["bench"])
def bench_provider_operators():
    listing = GeminiRegisterGcsFilesOperator(
        task_id="list_documents", bucket="b", prefix="incoming/{{ ds }}/"
    )

    @task
    def split(refs: list) -> list:
        return list(refs)

    @task_group
    def per_document(ref):
        wait = GeminiFileActiveSensor(task_id="wait_ready", files=ref, poke_interval=2, mode="reschedule")
        analyse = GeminiGenerateContentOperator(
            task_id="analyse", model="gemini-2.5-flash", prompt="Summarise.", files=wait.output
        )
        store = EmptyOperator(task_id="store")
        wait >> analyse >> store

    groups = per_document.expand(ref=split(listing.output))
    cleanup = GeminiDeleteFilesOperator(
        task_id="cleanup", files=listing.output, trigger_rule=TriggerRule.ALL_DONE
    )
    groups >> cleanup.as_teardown(setups=listing)


bench_provider_operators()
"""

HEAVY = ("google.genai", "google.cloud.storage", "google.api_core", "grpc", "requests")

CHILD = r"""
import json, os, sys, time
from pathlib import Path

import airflow  # the manager process has Airflow and its dag-processing modules loaded
from airflow.dag_processing import processor
from airflow.utils.file import iter_airflow_imports
import importlib
import structlog

path = sys.argv[1]
for module in iter_airflow_imports(path):  # what the manager pre-imports before it forks the parser
    try:
        importlib.import_module(module)
    except Exception:
        pass
before = set(sys.modules)
request = processor.DagFileParseRequest(file=path, bundle_path=Path(path).parent, bundle_name="bench")
wall, cpu = time.perf_counter(), time.process_time()
result = processor._parse_file(request, structlog.get_logger())
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
heavy = json.loads(sys.argv[2])
loaded = sorted(m for m in set(sys.modules) - before if m in heavy)
print(json.dumps({
    "wall": wall, "cpu": cpu, "dags": len(result.serialized_dags),
    "import_errors": {k: v[-300:] for k, v in result.import_errors.items()},
    "new_modules": len(set(sys.modules) - before), "heavy_loaded": loaded,
}))
"""


def extract_package(ref: str, into: Path) -> Path:
    """The provider package at git ``ref`` (``git archive``), unpacked under ``into``; its root."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "airflow_gemini_files"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def parse_once(path: Path, home: Path, pythonpath: Path | None) -> dict[str, Any]:
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"parsing {path} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["import_errors"] or not result["dags"]:
        raise RuntimeError(f"{path}: no DAG parsed, import errors {result['import_errors']}")
    return result


def cases(work: Path, ref_root: Path | None) -> list[tuple[str, str, Path, Path | None]]:
    """(label, variant, DAG file, PYTHONPATH) for every file measured."""
    dags = work / "dags"
    dags.mkdir()
    standard = dags / "bench_standard.py"
    standard.write_text(STANDARD_DAG.format(provider_imports=""))
    with_provider = dags / "bench_standard_with_provider.py"
    with_provider.write_text(STANDARD_DAG.format(provider_imports=PROVIDER_IMPORTS))
    provider_dag = dags / "bench_provider_operators.py"
    provider_dag.write_text(PROVIDER_DAG)
    examples = sorted((REPO / "airflow_gemini_files" / "example_dags").glob("gemini_*.py"))
    out: list[tuple[str, str, Path, Path | None]] = [("standard", "-", standard, None)]
    variants: list[tuple[str, Path | None, Path]] = [("this tree", None, REPO / "airflow_gemini_files")]
    if ref_root is not None:
        variants.insert(0, ("ref", ref_root, ref_root / "airflow_gemini_files"))
    for variant, pythonpath, package in variants:
        out.append(("standard + provider imports", variant, with_provider, pythonpath))
        out.append(("same DAG, provider operators", variant, provider_dag, pythonpath))
        for example in examples:
            out.append((example.stem, variant, package / "example_dags" / example.name, pythonpath))
    return out


def run(runs: int = 7, compare_ref: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-dag-parse-") as tmp:
        work = Path(tmp)
        home = work / "airflow-home"
        home.mkdir()
        ref_root = extract_package(compare_ref, work / "ref") if compare_ref else None
        todo = cases(work, ref_root)
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {(label, v): [] for label, v, _, _ in todo}
        load: list[float] = []
        for i in range(runs):
            load.append(os.getloadavg()[0])
            for label, variant, path, pythonpath in todo:
                samples[(label, variant)].append(parse_once(path, home, pythonpath))
            print(f"  round {i + 1}/{runs} done (load {os.getloadavg()[0]:.2f})", flush=True)
    standard = samples[("standard", "-")]
    base_wall = statistics.median(s["wall"] for s in standard)
    base_cpu = statistics.median(s["cpu"] for s in standard)
    rows = []
    for (label, variant), found in samples.items():
        wall = summarize([s["wall"] for s in found])
        cpu = summarize([s["cpu"] for s in found])
        rows.append(
            {
                "file": label,
                "provider": variant if variant != "ref" else compare_ref,
                "wall": wall.to_dict(),
                "cpu": cpu.to_dict(),
                "added_wall": wall.median - base_wall,
                "added_cpu": cpu.median - base_cpu,
                "heavy_loaded": sorted({m for s in found for m in s["heavy_loaded"]}),
                "new_modules": statistics.median(s["new_modules"] for s in found),
            }
        )
    print(f"\nDAG parse (Airflow's _parse_file in a fresh process), {runs} rounds, median (min-max):")
    print(f"{'file':34} {'provider':10} {'wall s':>20} {'CPU s':>20} {'+wall':>7} {'+CPU':>7}  heavy loaded")
    for row in rows:
        print(
            f"{row['file']:34} {row['provider']:10} {summarize(row['wall']['values']).fmt(3):>20} "
            f"{summarize(row['cpu']['values']).fmt(3):>20} "
            f"{row['added_wall']:>7.3f} {row['added_cpu']:>7.3f}  "
            f"{','.join(row['heavy_loaded']) or '-'}"
        )
    return {
        "runs": runs,
        "compare_ref": compare_ref,
        "target_seconds": TARGET_SECONDS,
        "load_avg_1m": load,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--compare-ref", help="also measure the provider at this git ref (e.g. main)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.runs, args.compare_ref)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
