"""One task for all documents (``per_file=True``) against one mapped task instance per document, on Celery.

    uv run python bench/celery_per_file.py                   # 200 documents
    uv run python bench/celery_per_file.py --documents 60

One deployment (``tests/system/cluster.py``: PostgreSQL, Redis, CeleryExecutor, two workers with four
slots, provider preloaded) runs, over the same number of documents and with the same emulator latencies:

- ``mapped``: the nightly example DAG in register mode (per document: a deferred sensor, an analyse and a
  store task instance);
- ``per_file``: ``bench/dags/gemini_per_file_analysis.py`` (register, one deferred sensor for all files,
  ONE ``GeminiGenerateContentOperator(per_file=True, max_concurrency=8)``, one store task, delete).

Printed and written to ``bench/results/celery_per_file.md`` / ``.json``: wall time, documents per minute,
task instances and executions, CPU seconds per document of each part.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cluster import cost_table, days, publish, report_header, run_dag
from _common import machine_info

from tests.system.cluster import nightly_cluster, stop_cleanly_on_sigterm

PER_FILE_DAG = Path(__file__).resolve().parent / "dags" / "gemini_per_file_analysis.py"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--processing-delay", type=float, default=3.0)
    parser.add_argument("--model-latency", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    machine = machine_info()
    print("starting the deployment (2 workers x 4 slots)", flush=True)
    with nightly_cluster(
        workers=2,
        slots=4,
        processing_delay=args.processing_delay,
        model_latency=args.model_latency,
        extra_dags=[PER_FILE_DAG],
    ) as nightly:
        day = days(datetime.now(UTC).date() - timedelta(days=1))
        figures = [
            run_dag(nightly, "mapped", args.documents, next(day), conf={"mode": "register"}),
            run_dag(nightly, "per_file", args.documents, next(day), dag_id=PER_FILE_DAG.stem),
        ]
    mapped, one_task = figures
    ratio = mapped.wall_s / one_task.wall_s
    cpu_ratio = sum(mapped.cpu_s.values()) / max(sum(one_task.cpu_s.values()), 1e-9)
    title = "One `per_file` task against one mapped task instance per document, on Celery"
    markdown = (
        report_header(title, f"uv run python bench/celery_per_file.py --documents {args.documents}", machine)
        + f"{args.documents} documents per run (register mode), two workers with four slots each, files "
        f"PROCESSING for {args.processing_delay:g} s, {args.model_latency:g} s per generate call.\n\n"
        + cost_table(figures, "DAG", per_document=True)
        + f"\n\nThe mapped DAG took {ratio:.1f}x the wall time and {cpu_ratio:.1f}x the CPU of the one-task "
        "DAG.\n"
    )
    return publish("celery_per_file", markdown, figures, machine, args)


if __name__ == "__main__":
    sys.exit(main())
