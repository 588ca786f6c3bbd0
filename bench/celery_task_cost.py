"""What one task instance of the nightly DAG costs, and who pays: executor and metadata DB compared.

    uv run python bench/celery_task_cost.py                      # 100 documents per configuration
    uv run python bench/celery_task_cost.py --documents 40 --only celery,celery-no-preload

Each configuration is a fresh deployment (``tests/system/cluster.py``) running one nightly run in upload
mode over the same documents, with the same emulator latencies; 8 task slots in every configuration:

- ``local-sqlite``: LocalExecutor on SQLite (what ``tests/system/test_nightly_dag_system.py`` runs);
- ``local-postgres``: LocalExecutor on PostgreSQL (only the database differs from the first);
- ``celery``: CeleryExecutor on PostgreSQL + Redis, two workers with four slots each, provider preloaded
  in the workers (``tests/system/celery_preload.py``);
- ``celery-no-preload``: the same without the preload (each task process imports google-genai itself).

It prints and writes (``bench/results/celery_task_cost.md`` / ``.json``) the wall time, documents per
minute, and the CPU seconds per task instance of each part: scheduler, api-server (which also serves the
execution API every task talks to), dag-processor, triggerer, workers (the task processes), database,
broker, emulators.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cluster import RunFigures, cost_table, days, publish, report_header, run_dag
from _common import machine_info

from tests.system.cluster import nightly_cluster, stop_cleanly_on_sigterm

CONFIGS: dict[str, dict[str, Any]] = {
    "local-sqlite": {"executor": "local", "database": "sqlite"},
    "local-postgres": {"executor": "local", "database": "postgres"},
    "celery": {"executor": "celery", "database": "postgres", "preload": True},
    "celery-no-preload": {"executor": "celery", "database": "postgres", "preload": False},
}


def measure(
    name: str, documents: int, mode: str, processing_delay: float, model_latency: float
) -> RunFigures:
    print(f"{name}: starting the deployment", flush=True)
    with nightly_cluster(
        workers=2, slots=4, processing_delay=processing_delay, model_latency=model_latency, **CONFIGS[name]
    ) as nightly:
        day = next(days(datetime.now(UTC).date() - timedelta(days=1)))
        return run_dag(nightly, name, documents, day, conf={"mode": mode})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--mode", choices=("upload", "register"), default="upload")
    parser.add_argument("--processing-delay", type=float, default=3.0, help="seconds PROCESSING (default 3)")
    parser.add_argument("--model-latency", type=float, default=0.5, help="seconds per generate (default 0.5)")
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configurations")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    machine = machine_info()
    figures = [
        measure(name, args.documents, args.mode, args.processing_delay, args.model_latency)
        for name in args.only.split(",")
    ]
    command = f"uv run python bench/celery_task_cost.py --documents {args.documents} --mode {args.mode}"
    markdown = (
        report_header("Cost per task instance: executor and metadata database", command, machine)
        + f"One nightly run over {args.documents} documents ({args.mode} mode), 8 task slots, files "
        f"PROCESSING for {args.processing_delay:g} s, model latency {args.model_latency:g} s. CPU "
        "milliseconds per task instance, by part of the deployment (a deferred sensor is one task instance "
        "and two executions):\n\n" + cost_table(figures, "configuration", per_document=False) + "\n"
    )
    return publish("celery_task_cost", markdown, figures, machine, args)


if __name__ == "__main__":
    sys.exit(main())
