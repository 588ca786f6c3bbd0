"""Shared pieces of the ``celery_*`` benchmarks: a deployment from ``tests/system/cluster.py``, one nightly
run followed to its end, and the CPU time each part of the deployment spent on it.

CPU time is read with psutil from every process of a part (its live processes plus the children they
have reaped, so task processes that came and went count towards the worker or executor that forked
them), once before the run is triggered and once after it ended; the difference is what the run cost.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the deployment helpers live in tests/system
    sys.path.insert(0, str(REPO))

from airflow_gemini_files.demo import DAG_ID  # noqa: E402
from tests.system.cluster import BUCKET, NightlyCluster, seed_documents  # noqa: E402

PARTS = (
    "scheduler",
    "api-server",
    "dag-processor",
    "triggerer",
    "workers",
    "database",
    "broker",
    "emulators",
)


def _tree_cpu(pid: int, *, own: bool = True, descendants: bool = True) -> float:
    """CPU seconds of a process (``own``) and/or its live descendants, with the children each has reaped."""
    try:
        root = psutil.Process(pid)
        procs = ([root] if own else []) + (root.children(recursive=True) if descendants else [])
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def _postmaster_pid(nightly: NightlyCluster) -> int | None:
    postgres = nightly.cluster.postgres
    if postgres is None:
        return None
    pid_file = postgres.data_dir / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def cpu_by_part(nightly: NightlyCluster) -> dict[str, float]:
    """CPU seconds so far of each part of the deployment (``PARTS``)."""
    airflow = nightly.airflow
    services = {name: s.process.pid for name, s in airflow.services.items()}
    cpu = {part: 0.0 for part in PARTS}
    local_executor = not nightly.cluster.workers
    for name, pid in services.items():
        if name == "scheduler" and local_executor:  # the LocalExecutor's workers are the scheduler's children
            cpu["scheduler"] += _tree_cpu(pid, descendants=False)
            cpu["workers"] += _tree_cpu(pid, own=False)
            continue
        part = "workers" if name.startswith("worker-") else name
        cpu[part] = cpu.get(part, 0.0) + _tree_cpu(pid)
    postmaster = _postmaster_pid(nightly)
    if postmaster is not None:
        cpu["database"] = _tree_cpu(postmaster)
    redis = nightly.cluster.redis
    if redis is not None and redis.process is not None:
        cpu["broker"] = _tree_cpu(redis.process.pid)
    emulators = psutil.Process().cpu_times()  # the Gemini emulator serves from this process's threads
    gcs_proc = getattr(nightly.gcs, "_proc", None)
    cpu["emulators"] = emulators.user + emulators.system + (_tree_cpu(gcs_proc.pid) if gcs_proc else 0.0)
    return cpu


@dataclass
class RunFigures:
    """What one nightly run cost."""

    label: str
    documents: int
    mode: str
    state: str
    wall_s: float
    task_instances: int
    executions: int
    """Starts of task instances on a worker (Airflow's audit log): a resumed sensor starts twice."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    hosts: dict[str, int] = field(default_factory=dict)
    gemini_requests: dict[str, int] = field(default_factory=dict)
    files_left: int = 0

    @property
    def docs_per_min(self) -> float:
        return self.documents / self.wall_s * 60

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["docs_per_min"] = self.docs_per_min
        return data


def run_dag(
    nightly: NightlyCluster,
    label: str,
    documents: int,
    day: date,
    *,
    dag_id: str = DAG_ID,
    conf: dict[str, Any] | None = None,
    timeout: float = 3600,
) -> RunFigures:
    """Seed ``documents`` for ``day``, trigger ``dag_id`` with ``conf``, wait for the end; the figures."""
    airflow = nightly.airflow
    ds = day.isoformat()
    mode = str((conf or {}).get("mode", "register"))
    seed_documents(nightly.gcs.client(), BUCKET, f"incoming/{ds}/", documents)
    airflow.unpause(dag_id)
    nightly.gemini.reset()  # request counts of this run only
    before = cpu_by_part(nightly)
    start = time.monotonic()
    run_id = airflow.trigger(dag_id, f"bench_{label}_{ds}", f"{ds}T00:00:00Z", conf or {})
    last_print = 0.0
    while (state := airflow.run_state(dag_id, run_id)) not in ("success", "failed"):
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise TimeoutError(f"{label}: run {run_id} still {state} after {timeout:.0f}s")
        if elapsed - last_print >= 15:
            last_print = elapsed
            done = airflow.query(
                "SELECT count(*) FROM task_instance WHERE dag_id = ? AND run_id = ? AND state = 'success'",
                (dag_id, run_id),
            )[0][0]
            print(f"  [{elapsed:5.0f}s] {label}: {state}, {done} task instances done", flush=True)
        time.sleep(0.5)
    wall = time.monotonic() - start
    after = cpu_by_part(nightly)
    rows = airflow.query(
        "SELECT hostname, count(*) FROM task_instance WHERE dag_id = ? AND run_id = ? GROUP BY hostname",
        (dag_id, run_id),
    )
    starts = airflow.query(
        "SELECT count(*) FROM log WHERE dag_id = ? AND run_id = ? AND event = 'running'", (dag_id, run_id)
    )[0][0]
    stats = nightly.gemini.stats()
    figures = RunFigures(
        label=label,
        documents=documents,
        mode=mode,
        state=str(state),
        wall_s=wall,
        task_instances=sum(count for _, count in rows),
        executions=starts,
        cpu_s={part: after[part] - before[part] for part in PARTS},
        hosts={str(host): count for host, count in rows},
        gemini_requests=dict(stats["requests"]),
        files_left=len(nightly.gemini.files()),
    )
    print(
        f"  {label}: {figures.state} in {wall:.1f}s, {figures.task_instances} task instances "
        f"({figures.executions} executions), {figures.docs_per_min:.1f} documents/min, "
        f"CPU {sum(figures.cpu_s.values()):.0f}s",
        flush=True,
    )
    return figures


def cost_table(figures: list[RunFigures], first_column: str, *, per_document: bool) -> str:
    """Markdown: wall time, documents/min, task instances (executions) and the CPU of each part, in
    seconds per document (``per_document``) or milliseconds per task instance."""
    unit = "CPU s per document" if per_document else "CPU ms per task instance"
    lines = [
        f"| {first_column} | wall | documents/min | task instances (executions) | {unit}: "
        + " / ".join(PARTS)
        + " | total |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        scale, digits = (1 / f.documents, 2) if per_document else (1000 / f.task_instances, 0)
        parts = " / ".join(f"{f.cpu_s.get(part, 0.0) * scale:.{digits}f}" for part in PARTS)
        lines.append(
            f"| {f.label} | {f.wall_s:.0f} s | **{f.docs_per_min:.1f}** | "
            f"{f.task_instances} ({f.executions}) | {parts} | {sum(f.cpu_s.values()) * scale:.{digits}f} |"
        )
    return "\n".join(lines)


def report_header(title: str, command: str, machine: dict[str, Any]) -> str:
    """A results file's title and the line saying how, when and under which load it was measured."""
    return (
        f"# {title}\n\n`{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {machine['commit']}, "
        f"{machine['cpus']} CPUs, load {machine['load_avg_1m']} at the start, {os.getloadavg()[0]:.2f} at "
        "the end)\n\n"
    )


def days(start: date) -> Iterator[date]:
    """Distinct logical dates, one per run of a deployment."""
    day = start
    while True:
        yield day
        day -= timedelta(days=1)


def publish(name: str, markdown: str, figures: list[RunFigures], machine: dict[str, Any], args: Any) -> int:
    """Print the report, write ``bench/results/<name>.md`` and ``.json`` (unless ``args.no_write``); the exit
    status: 0 when every run succeeded and left no Gemini file."""
    print(markdown)
    if not args.no_write:
        out = REPO / "bench" / "results"
        data = {"machine": machine, "args": vars(args), "runs": [f.to_dict() for f in figures]}
        (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        (out / f"{name}.md").write_text(markdown)
        print(f"wrote bench/results/{name}.md")
    return 0 if all(f.state == "success" and f.files_left == 0 for f in figures) else 1
