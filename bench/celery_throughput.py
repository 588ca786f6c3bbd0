"""Throughput of the nightly DAG on the CeleryExecutor with 1 and 2 workers, and where the limit is.

    uv run python bench/celery_throughput.py                          # 200 documents, 1x4 and 2x4
    uv run python bench/celery_throughput.py --documents 60 --configs 1x4,2x4,2x2

Each configuration (``<workers>x<slots per worker>``) is a fresh deployment (``tests/system/cluster.py``:
PostgreSQL, Redis, CeleryExecutor, provider preloaded in the workers) running one nightly run in
``--mode`` over the same documents with the same emulator latencies (files PROCESSING for
``--processing-delay`` s, ``--model-latency`` s per generate call). Printed and written to
``bench/results/celery_throughput.md`` / ``.json``: wall time, documents per minute, CPU seconds per
document of each part, and a projection to N worker hosts from those per-document costs (see the notes
in the written file).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cluster import RunFigures, cost_table, days, publish, report_header, run_dag
from _common import machine_info

from tests.system.cluster import nightly_cluster, stop_cleanly_on_sigterm

CENTRAL = ("scheduler", "api-server", "database")
"""Parts every task instance goes through once per deployment, whatever the number of workers."""


def measure(
    config: str, documents: int, mode: str, processing_delay: float, model_latency: float
) -> RunFigures:
    workers, slots = (int(part) for part in config.split("x"))
    print(f"{config}: starting the deployment ({workers} worker(s) x {slots} slots)", flush=True)
    with nightly_cluster(
        workers=workers, slots=slots, processing_delay=processing_delay, model_latency=model_latency
    ) as nightly:
        day = next(days(datetime.now(UTC).date() - timedelta(days=1)))
        return run_dag(nightly, config, documents, day, conf={"mode": mode})


def per_doc(f: RunFigures, part: str) -> float:
    return f.cpu_s.get(part, 0.0) / f.documents


def projection(f: RunFigures, cores_per_host: int = 2) -> str:
    """Documents per minute that N worker hosts could reach, bounded by the central parts' single core."""
    worker_cpu = per_doc(f, "workers")
    host_rate = cores_per_host / worker_cpu * 60 if worker_cpu else float("inf")
    limits = {part: 60 / per_doc(f, part) for part in CENTRAL if per_doc(f, part)}
    ceiling_part = min(limits, key=lambda part: limits[part])
    rows = ["| worker hosts (2 cores each) | documents/min, workers alone | bound by |", "|---|---|---|"]
    for hosts in (1, 2, 4, 8, 16, 32):
        rate = hosts * host_rate
        bound = "workers" if rate < limits[ceiling_part] else f"{ceiling_part} (one core)"
        rows.append(f"| {hosts} | {min(rate, limits[ceiling_part]):.0f} | {bound} |")
    central = ", ".join(
        f"{part} {limit:.0f}/min" for part, limit in sorted(limits.items(), key=lambda x: x[1])
    )
    return (
        "\n".join(rows)
        + f"\n\nFrom the `{f.label}` run: a worker spends {worker_cpu:.2f} CPU s per document, so one 2-core "
        f"host finishes about {host_rate:.0f} documents/min; one core of each central part handles at most: "
        f"{central}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--mode", choices=("register", "upload"), default="register")
    parser.add_argument("--configs", default="1x4,2x4", help="comma-separated <workers>x<slots>")
    parser.add_argument("--processing-delay", type=float, default=3.0)
    parser.add_argument("--model-latency", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    machine = machine_info()
    figures = [
        measure(config, args.documents, args.mode, args.processing_delay, args.model_latency)
        for config in args.configs.split(",")
    ]
    best = max(figures, key=lambda f: f.docs_per_min)
    command = (
        f"uv run python bench/celery_throughput.py --documents {args.documents} --mode {args.mode} "
        f"--configs {args.configs}"
    )
    markdown = (
        report_header("Nightly DAG throughput on the CeleryExecutor: 1 vs 2 workers", command, machine)
        + f"One run of {args.documents} documents ({args.mode} mode) per configuration; files PROCESSING for "
        f"{args.processing_delay:g} s, {args.model_latency:g} s per generate call; everything on this one "
        "machine.\n\n"
        + cost_table(figures, "workers x slots", per_document=True)
        + "\n\n## Projection to N worker hosts\n\n"
        + projection(best)
        + "\n"
    )
    return publish("celery_throughput", markdown, figures, machine, args)


if __name__ == "__main__":
    sys.exit(main())
