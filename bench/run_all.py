"""Run every benchmark of issues 5 and 16; write ``bench/results/RESULTS.md`` (+ ``streaming.png``, raw JSON).

    uv run python bench/run_all.py            # the full run: 1 GiB streaming, 500 documents, 3 repeats
    uv run python bench/run_all.py --quick    # small sizes, 1 repeat, no `airflow dags test` (a few minutes)
    uv run python bench/run_all.py --size 256MiB --only streaming,register

Each benchmark runs in its own process (``bench/<name>.py --json ...``) against emulators on 127.0.0.1 it
starts itself; its output is shown as it runs. A benchmark that fails is reported as failed in the table,
and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS_DIR, Summary, machine_info, write_json

MiB = 1024 * 1024
PARSE_BASELINE = "a0e2163"
"""main before issue 16 was merged: the same features, with the SDK and the GCS client imported at the top."""
BENCHES = ("streaming", "fanout", "register", "sensor", "parse", "local_upload", "large", "resume")


def bench_args(name: str, quick: bool, size: str, runs: int, out: Path) -> list[str]:
    """Command-line arguments of one benchmark script for a full or quick run."""
    if out.resolve().is_relative_to(REPO):
        out = out.resolve().relative_to(REPO)
    if name == "streaming":
        return [
            "bench/streaming.py",
            "--size",
            size,
            "--repeat",
            str(runs),
            "--hog",
            "1",
            "--out",
            str(out / "streaming.md"),
        ]
    if name == "parse":
        return ["bench/dag_parse.py", "--runs", "2" if quick else "5", "--compare-ref", PARSE_BASELINE]
    if name == "local_upload":
        if quick:
            return ["bench/local_upload.py", "--sizes", "1MiB,64MiB", "--repeat", "1"]
        return ["bench/local_upload.py", "--sizes", "1MiB,16MiB,256MiB,1GiB", "--repeat", "5"]
    if name == "large":
        return ["bench/large_runs.py", "--objects", "5000" if quick else "100000", "--runs", "1"]
    if name == "resume":
        return ["bench/resume_after_kill.py", "--runs", str(runs)]
    if name == "fanout":
        if quick:
            return ["bench/fanout.py", "--docs", "100", "--runs", str(runs), "--quick", "--no-airflow"]
        return ["bench/fanout.py", "--docs", "500", "--mapped", "50", "--runs", str(runs)]
    if name == "register":
        return ["bench/register_scale.py", "--objects", "1000", "--runs", str(runs)]
    if name == "sensor":
        if quick:
            return ["bench/sensor_economy.py", "--files", "6", "--first-delay", "1", "--runs", str(runs)]
        return ["bench/sensor_economy.py", "--files", "20", "--runs", str(runs)]
    raise ValueError(name)


def run_bench(name: str, args: list[str], json_path: Path) -> dict[str, Any]:
    """Run one benchmark script; its figures (or the failure) and how long it took."""
    command = [sys.executable, *args, "--json", str(json_path)]
    shown = "uv run python " + shlex.join(args)
    print(f"\n=== {name}: {shown}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, check=False)
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {"command": shown, "seconds": seconds, "returncode": result.returncode}
    if result.returncode == 0 and json_path.exists():
        record["data"] = json.loads(json_path.read_text())
    print(f"=== {name}: exit {result.returncode} after {seconds:.0f} s", flush=True)
    return record


# Formatting -----------------------------------------------------------------------------------------
def fmt(values: Sequence[float], digits: int = 2, unit: str = "") -> str:
    """``median (min-max) unit`` of one or more values."""
    return Summary(tuple(float(v) for v in values)).fmt(digits, unit)


def fmt_summary(summary: dict[str, Any], digits: int = 2, unit: str = "") -> str:
    return fmt(summary["values"], digits, unit)


def verdict(met: bool, missed: str = "") -> str:
    return "**met**" if met else f"**missed** {missed}".rstrip()


Row = tuple[str, str, str, str, str]
"""item, figure, target, measured, verdict/notes."""


def streaming_rows(data: dict[str, list[dict[str, Any]]], size: int) -> list[Row]:
    def seconds(leg: str) -> list[float]:
        return [run["seconds"] for run in data.get(leg, [])]

    rows: list[Row] = []
    a, b, c, d = (seconds(leg) for leg in ("gcs_read", "gemini_upload", "official", "pipelined"))
    label = f"{size / MiB:.0f} MiB"
    if c and d:
        ratios = [x / statistics.median(c) for x in d]
        ratio = statistics.median(d) / statistics.median(c)
        rows.append(
            (
                "1",
                f"streaming {label}: time of ours (d) / official download-then-upload (c)",
                "<= 0.6x",
                f"{fmt(ratios)}x (d {fmt(d, 1, 's')}, c {fmt(c, 1, 's')})",
                verdict(ratio <= 0.6, f"by {ratio - 0.6:.2f}x"),
            )
        )
    if d:
        rss = [run["peak_rss_above_baseline"] / MiB for run in data["pipelined"]]
        rows.append(
            (
                "1",
                f"streaming {label}: peak RSS of the uploading process above its baseline",
                "<= 64 MiB",
                fmt(rss, 1, "MiB"),
                verdict(max(rss) <= 64, f"(worst run {max(rss):.1f} MiB)"),
            )
        )
    c_hog, d_hog = seconds("official_hog"), seconds("pipelined_hog")
    if c_hog and d_hog:
        ratio_hog = statistics.median(d_hog) / statistics.median(c_hog)
        loads = [run["load_avg_1m"] for run in data["pipelined_hog"] + data["official_hog"]]
        rows.append(
            (
                "16.2",
                f"streaming {label} with a CPU hog on the other core: time of ours (d) / official (c)",
                "<= 0.5x",
                f"{fmt([x / statistics.median(c_hog) for x in d_hog])}x (d {fmt(d_hog, 1, 's')}, "
                f"c {fmt(c_hog, 1, 's')}); load {fmt(loads, 1)}",
                verdict(ratio_hog <= 0.5, f"by {ratio_hog - 0.5:.2f}x (see notes)"),
            )
        )
    if c and d:
        gib = size / (1024 * MiB)

        def per_gib(leg: str, key: str) -> float:
            return statistics.median(run[key] for run in data[leg]) / gib

        cells = []
        for leg, name in (("official", "c"), ("pipelined", "d")):
            client = per_gib(leg, "client_cpu_s")
            servers = per_gib(leg, "gcs_emulator_cpu_s") + per_gib(leg, "gemini_emulator_cpu_s")
            cells.append(f"{name}: worker {client:.2f} + emulators {servers:.2f} = {client + servers:.2f}")
        split = (
            f"; d's read-ahead thread: ranged reads {per_gib('pipelined', 'gcs_read_cpu_s'):.2f}, "
            f"CRC32C {per_gib('pipelined', 'crc32c_cpu_s'):.2f}"
            if "crc32c_cpu_s" in data["pipelined"][0]
            else ""
        )
        rows.append(
            (
                "16.2",
                "CPU seconds per GiB (worker process; both emulators)",
                "report",
                "; ".join(cells) + split,
                "",
            )
        )
    if a and b and d:
        slower, total = (
            max(statistics.median(a), statistics.median(b)),
            statistics.median(a) + statistics.median(b),
        )
        rows.append(
            (
                "1",
                "streaming: ours against the legs alone (GCS read a, Gemini upload b)",
                "approach max(a, b), not a + b",
                f"d {statistics.median(d):.1f} s; max(a, b) {slower:.1f} s; a + b {total:.1f} s",
                f"{statistics.median(d) / slower:.2f}x the slower leg",
            )
        )
    return rows


def fanout_rows(data: dict[str, Any]) -> list[Row]:
    docs = data["docs"]
    one = data["one_task"]["seconds"]
    target = data["target_seconds"]
    total = data["upload_seconds"] + one["median"]
    rows: list[Row] = [
        (
            "2",
            f"{docs} documents analysed in ONE task (per_file, max_concurrency=32, model latency "
            f"{data['model_latency']:g} s), execute()",
            f"<= {target:g} s" + ("" if docs == 500 else " (for 500)"),
            fmt_summary(one, 2, "s"),
            verdict(one["median"] <= target, f"by {one['median'] - target:.1f} s"),
        ),
        (
            "2",
            f"upload of the same {docs} documents (one task, max_concurrency=32), then upload + analysis",
            f"<= {target:g} s if the upload counts too",
            f"upload {data['upload_seconds']:.1f} s ({data['upload_seconds'] / docs * 1000:.0f} ms/doc); "
            f"upload + analysis {total:.1f} s",
            verdict(total <= target, f"by {total - target:.1f} s"),
        ),
    ]
    sweep = data["sweep"]
    parts = [
        f"{conc}: {s['per_doc_seconds'] * 1000:.0f} ms/doc ({s['docs_per_second']:.1f} docs/s, "
        f"{s['projected_seconds_for_all']:.0f} s for {docs})"
        for conc, s in sweep.items()
    ]
    rows.append(
        ("2", "max_concurrency sweep (1 runs on a subset, projected)", "(no target)", "; ".join(parts), "")
    )
    backoff = data["backoff"]
    rows.append(
        (
            "2",
            f"{docs} documents with {backoff['rate']:.0%} of generate calls answered 429",
            "all succeed, retries visible",
            f"{fmt_summary(backoff['seconds'], 2, 's')}, {fmt_summary(backoff['retries'], 0)} retries "
            f"(emulator requests - {docs})",
            "met: every call succeeded after back-off",
        )
    )
    airflow = data.get("airflow")
    if airflow:
        one_af = airflow["bench_fanout_one_task"]
        mapped = airflow["bench_fanout_mapped"]
        one_span, mapped_span = one_af["analyse"]["span_seconds"], mapped["analyse"]["span_seconds"]
        ratio = mapped["per_doc_seconds"] / max(one_af["per_doc_seconds"], 1e-9)
        rows.append(
            (
                "2",
                f"`airflow dags test`: one task, {one_af['docs']} docs vs one mapped task per doc "
                f"({mapped['docs']} docs, measured)",
                "compare",
                f"one task {one_span:.1f} s ({one_af['per_doc_seconds'] * 1000:.0f} ms/doc); "
                f"mapped {mapped_span:.1f} s for {mapped['analyse']['instances']} TIs "
                f"({mapped['per_doc_seconds'] * 1000:.0f} ms/doc) -> "
                f"{airflow['mapped_projected_seconds_for_all']:.0f} s for {one_af['docs']} (extrapolated)",
                f"one task is {ratio:.0f}x cheaper per document",
            )
        )
    return rows


def register_rows(data: dict[str, Any]) -> list[Row]:
    n = data["objects"]
    calls = data["register_calls"]
    total_mib = data["total_object_bytes"] / MiB
    worker_kib = [v / 1024 for v in data["worker_gcs_response_bytes"]["values"]]
    media = data["worker_media_requests"]["values"]
    return [
        (
            "3",
            f"register {n} GCS objects (bucket + prefix): Gemini register calls",
            f"<= {data['target_calls']}",
            fmt_summary(calls, 0),
            verdict(calls["max"] <= data["target_calls"], f"({calls['max']:.0f} calls)"),
        ),
        (
            "3",
            f"register {n} GCS objects: task wall time",
            "(no target)",
            fmt_summary(data["seconds"], 2, "s"),
            "",
        ),
        (
            "3",
            "object bytes through the worker (GCS emulator request log, worker's client)",
            "none",
            f"{fmt(media, 0)} object reads; {fmt(worker_kib, 0, 'KiB')} of listing JSON received "
            f"vs {total_mib:.1f} MiB of object data",
            verdict(max(media) == 0, "(object reads seen)"),
        ),
    ]


def sensor_rows(data: dict[str, Any]) -> list[Row]:
    poke, deferred = data["poke"], data["deferred"]
    interval = data["poke_interval"]
    return [
        (
            "4",
            f"API calls per file while waiting ({data['files']} files, delays {data['delays']}, "
            f"poke_interval {interval:g} s)",
            "fewer than a naive poller",
            f"poke {fmt_summary(poke['gets_per_file'])}, deferred (trigger, backoff x1.5) "
            f"{fmt_summary(deferred['gets_per_file'])}; "
            f"naive all-files poller {data['naive_gets_per_file']:.0f}",
            verdict(
                max(poke["gets_per_file"]["median"], deferred["gets_per_file"]["median"])
                < data["naive_gets_per_file"],
            ),
        ),
        (
            "4",
            "delay from a file turning ACTIVE to the sensor noticing (median over files; max)",
            f"<= poke_interval ({interval:g} s) typical",
            f"poke {fmt_summary(poke['notice_median'])} s (max {fmt_summary(poke['notice_max'])} s); "
            f"trigger {fmt_summary(deferred['notice_median'])} s "
            f"(max {fmt_summary(deferred['notice_max'])} s)",
            f"last file ACTIVE to sensor done: poke {fmt_summary(poke['completion_delay'])} s, "
            f"trigger {fmt_summary(deferred['completion_delay'])} s",
        ),
        (
            "4",
            "worker slots held while deferred (worker-slot seconds for the whole wait)",
            "0 while deferred",
            f"deferred {fmt_summary(deferred['worker_slot_seconds'])} s (one check, then TaskDeferred; "
            f"execute_complete) vs poke {fmt_summary(poke['worker_slot_seconds'])} s",
            verdict(True) + ": no worker process during the wait (see notes)",
        ),
    ]


def parse_rows(data: dict[str, Any]) -> list[Row]:
    target = data["target_seconds"]
    rows_by = {(row["file"], row["provider"]): row for row in data["rows"]}
    before = data.get("compare_ref")
    loads = fmt(data["load_avg_1m"], 1)

    def added(name: str, provider: str) -> str:
        row = rows_by[(name, provider)]
        return f"+{row['added_wall']:.3f} s wall, +{row['added_cpu']:.3f} s CPU"

    out: list[Row] = []
    for name, what in (
        ("standard + provider imports", "importing the provider (a DAG of standard operators + its imports)"),
        ("same DAG, provider operators", "the same DAG built from the provider's operators"),
    ):
        row = rows_by[(name, "this tree")]
        was = f" (before, {before}: {added(name, before)})" if before else ""
        worst = max(row["added_wall"], row["added_cpu"])
        out.append(
            (
                "16.1",
                f"DAG parse (Airflow's _parse_file, fresh process), {data['runs']} rounds: {what}, vs the "
                "standard DAG alone",
                f"<= {target:g} s",
                f"{added(name, 'this tree')}{was}; load {loads}",
                verdict(worst <= target, f"by {worst - target:.3f} s (see notes)"),
            )
        )
    examples = sorted({file for file, _ in rows_by if file.startswith("gemini_")})
    cells = []
    for file in examples:
        now = rows_by[(file, "this tree")]
        text = f"{file}: {now['cpu']['median']:.2f} s CPU, {now['wall']['median']:.2f} s wall"
        if before:
            was = rows_by[(file, before)]
            text += f" (before {was['cpu']['median']:.2f} s CPU, {was['wall']['median']:.2f} s wall)"
        cells.append(text)
    standard = rows_by[("standard", "-")]
    cells.append(
        f"standard DAG: {standard['cpu']['median']:.2f} s CPU, {standard['wall']['median']:.2f} s wall"
    )
    heavy = sorted({m for row in data["rows"] if row["provider"] == "this tree" for m in row["heavy_loaded"]})
    out.append(
        (
            "16.1",
            "parse of each example DAG as shipped (median)",
            "SDK/GCS client not loaded",
            "; ".join(cells),
            verdict(not heavy, f"(loaded {heavy})"),
        )
    )
    return out


def local_upload_rows(data: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for size, routes in data["sizes"].items():
        ours = [run["seconds"] for run in routes["ours"]]
        sdk = [run["seconds"] for run in routes["sdk"]]
        ratio = statistics.median(ours) / statistics.median(sdk)
        rss_ours = max(run["peak_rss_above_baseline"] for run in routes["ours"]) / MiB
        rss_sdk = max(run["peak_rss_above_baseline"] for run in routes["sdk"]) / MiB
        loads = [run["load_avg_1m"] for run in routes["ours"] + routes["sdk"]]
        out.append(
            (
                "16.3",
                f"local file {int(size) / MiB:g} MiB: our upload operator / the SDK's files.upload "
                f"(median of {len(ours)})",
                "<= 1.0x, memory flat",
                f"{ratio:.2f}x (ours {fmt(ours, 3, 's')}, SDK {fmt(sdk, 3, 's')}); peak RSS ours "
                f"+{rss_ours:.0f} MiB, SDK +{rss_sdk:.0f} MiB; load {fmt(loads, 1)}",
                verdict(ratio <= 1.0 and rss_ours <= 64, f"by {ratio - 1:.2f}x (see notes)"),
            )
        )
    return out


def large_rows(data: dict[str, Any]) -> list[Row]:
    n = data["objects"]
    runs = data["runs"]

    def med(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    per_10k = 10_000 / n
    loads = fmt([run["load_avg_1m"] for run in runs], 1)
    return [
        (
            "16.5",
            f"register {n:,} GCS objects under one prefix in one task (max_concurrency "
            f"{data['concurrency']}; GCS: {data['gcs']})",
            "calls, wall, worker memory",
            f"{med('register_calls'):.0f} register calls, {med('listing_requests'):.0f} listing pages; "
            f"{med('seconds'):.0f} s wall (worker CPU {med('cpu_s'):.0f} s); worker peak RSS "
            f"+{med('peak_rss_with_xcom') / MiB:.0f} MiB; load {loads}",
            f"{med('seconds') / n * 1000:.1f} ms/object, mostly the emulator reading each object (notes)",
        ),
        (
            "16.5",
            "XCom of the refs, per 10,000 refs",
            "smaller where safe",
            f"{med('xcom_bytes') * per_10k / 1e6:.2f} MB (earlier format "
            f"{med('xcom_bytes_earlier_format') * per_10k / 1e6:.2f} MB); gzipped "
            f"{med('xcom_bytes_gzip') * per_10k / 1e6:.2f} MB (object-storage backend with compression)",
            f"{1 - med('xcom_bytes') / med('xcom_bytes_earlier_format'):.0%} smaller; switch: see notes",
        ),
    ]


def resume_rows(data: dict[str, Any]) -> list[Row]:
    summary = data["summary"]
    retry = data["results"]["retry"]
    loads = fmt([run["load_avg_1m"] for run in retry], 1)
    size, kill_at = data["size"] / MiB, data["kill_at"] / MiB
    return [
        (
            "16.6",
            f"worker killed (SIGKILL) at {kill_at:.0f} of {size:.0f} MiB: what the task's retry sends again",
            "measure; resume or say why not",
            f"retry: {summary['retry']['second_attempt_sent_mib']:.0f} MiB in "
            f"{summary['retry']['second_attempt_seconds']:.2f} s; resuming the session would send "
            f"{summary['resume']['second_attempt_sent_mib']:.0f} MiB in "
            f"{summary['resume']['second_attempt_seconds']:.2f} s; one file afterwards in both; load {loads}",
            "not resumed: the saving is seconds against minutes of retry delay (notes)",
        )
    ]


def failed_row(item: str, name: str, record: dict[str, Any]) -> Row:
    return (item, f"{name} benchmark", "-", f"FAILED (exit {record['returncode']})", "see the console output")


def render(
    records: dict[str, dict[str, Any]],
    info: dict[str, Any],
    args: argparse.Namespace,
    size: int,
    history: str = "",
) -> str:
    builders: dict[str, tuple[str, Callable[[Any], list[Row]]]] = {
        "streaming": ("1", lambda d: streaming_rows(d, size)),
        "fanout": ("2", fanout_rows),
        "register": ("3", register_rows),
        "sensor": ("4", sensor_rows),
        "parse": ("16.1", parse_rows),
        "local_upload": ("16.3", local_upload_rows),
        "large": ("16.5", large_rows),
        "resume": ("16.6", resume_rows),
    }
    rows: list[Row] = []
    for name in BENCHES:
        if name not in records:
            continue
        item, build = builders[name]
        record = records[name]
        rows.extend(build(record["data"]) if "data" in record else [failed_row(item, name, record)])
    command = (
        "uv run python bench/run_all.py"
        + (" --quick" if args.quick else "")
        + (f" --size {args.size}" if args.size else "")
        + (f" --runs {args.runs}" if args.runs else "")
        + (f" --only {','.join(records)}" if set(records) != set(BENCHES) else "")
        + (f" --report {args.report}" if args.report != "RESULTS.md" else "")
    )
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    lines = [
        "# Benchmark results (issues 5 and 16)",
        "",
        f"`{command}` - {info['finished']} UTC, commit {info['commit']}, "
        f"total {info['total_seconds'] / 60:.1f} min"
        + (
            " - **quick run: small sizes, 1 repeat; not the figures targets are judged on**"
            if args.quick
            else ""
        ),
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB RAM, "
        f"Python {info['python']}, {info['os']}. Load average (1 min) {info['load_avg_1m']} at the start, "
        f"{info['load_end']} at the end.",
        f"Packages: {pkgs}.",
        "",
        "Each figure is the median (min-max) of the repeated runs unless it says otherwise.",
        "",
        "| # | figure | target | measured | result |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows]
    lines += ["", "## Notes", "", NOTES, "## Findings for other owners", "", FINDINGS, "## Commands", ""]
    lines += [
        f"- {name}: `{records[name]['command']}` ({records[name]['seconds']:.0f} s)" for name in records
    ]
    if history:
        lines += [
            "",
            "## Full runs so far (medians; `history.md`)",
            "",
            "Wall-time figures move with the machine's load (other helpers' test runs share the 2 CPUs).",
            "",
            history.rstrip(),
        ]
    streaming_md = args.out_dir / "streaming.md"
    if "streaming" in records and streaming_md.exists():
        lines += ["", "## Streaming detail (from bench/streaming.py)", "", "![streaming](streaming.png)", ""]
        lines += [streaming_md.read_text().replace("## Streaming", "### Streaming", 1)]
    return "\n".join(lines).rstrip() + "\n"


NOTES = """\
- Everything runs on one shared machine: the 2 CPUs are shared with the other helpers' test runs, so
  wall times (especially `airflow dags test` and streaming throughput) carry their load; see the load
  average above. The emulators run on 127.0.0.1 as separate processes, except the in-memory GCS emulator
  of the register benchmark, which runs in the benchmark's process so its request log can be read.
- The Gemini emulator sets TCP_NODELAY on its sockets (since 77a1421): it writes headers and body in two
  sends, so with Nagle's algorithm every response waited for the client's 40 ms delayed ACK (get_file
  ~47 ms instead of ~14 ms on loopback), an emulator artefact that would have inflated every
  per-request figure. The benchmark turns it off in the in-process GCS emulator for the same reason.
- Item 2: the main figure runs the operators' `execute()` with a minimal context (a stand-in task
  instance that keeps XCom pushes); `airflow dags test` (real Airflow 3.3, SQLite, temporary
  AIRFLOW_HOME) runs the same operators end to end. `dags test` runs task instances one after another in
  one process, so the mapped DAG is measured on fewer documents (see its row) and extrapolated
  linearly to 500; a real deployment can run mapped instances in parallel, but each still pays its
  own start-up, DB round trips and executor slot.
- Item 2, 429s: the emulator answers a seeded 10 % of generate requests with 429; the hook's client
  retries them (connection defaults: 5 attempts, 1 s initial delay doubling, up to 1 s jitter). Retries
  = generate requests counted by the emulator minus documents.
- Item 3: the Gemini emulator reads each object's metadata from the GCS emulator when it registers it
  (standing in for Google's servers); those requests come from the emulator's urllib client and are
  counted apart from the worker's google-cloud-storage client in the GCS request log.
- Item 4: noticing delays are measured by wrapping `GeminiHook.get_file` / `aget_file` to time-stamp
  their results (the real calls still reach the emulator). The deferred run executes the sensor until it
  raises `TaskDeferred` (the worker process is released there), runs the `GeminiFileActiveTrigger` it
  hands over with asyncio exactly as a triggerer does, and resumes with `execute_complete`. Its trigger
  kwargs are file names, connection id, poll interval and deadline only. The real-scheduler proof that
  deferred sensors hold no worker slot (TIs in state `deferred`, triggers held by the triggerer) is the
  system test `tests/system/test_nightly_dag_system.py`. Reschedule mode is not measured (it needs a
  metadata DB).
- Item 16.1: `bench/dag_parse.py` times Airflow's own parse (`airflow.dag_processing.processor._parse_file`)
  of each file in a fresh interpreter that has pre-loaded what the dag-processor manager has (Airflow and
  the file's `airflow.*` imports); "before" is the provider at the commit named in the row, extracted with
  `git archive`, measured in the same rounds. `tests/unit/test_parse_cost.py` fails if importing the
  operators, sensor, triggers, hook, lineage or an example DAG loads google-genai, the GCS client, grpc,
  requests or OpenLineage (httpx is loaded by `airflow.sdk` itself). The target rows compare DAGs of the
  same shape; the example DAGs are larger than the standard DAG (the nightly one has parameters, a branch,
  assets and a dozen tasks), so their difference to it is partly their own size, not the provider.
- Item 16.2: `--hog 1` runs (c) and (d) again while one process spins on the last CPU (pinned), so the
  worker, both emulators and the hog share the two CPUs. CPU seconds per GiB count the worker process and
  both emulators. Where ours spent CPU: httpx's transport copies what each socket send leaves over, so an
  8 MiB chunk handed over as one buffer was copied again for about half its size; chunks now travel as the
  1 MiB pieces the ranged reads return, never joined (db425a6). CRC32C (google-crc32c, C) costs little
  beside the ranged reads (split in the row).
- Item 16.3: the 10 % was the upload task building a `genai.Client` it never used (uploads go through the
  hook's own HTTP client): each build loads the CA bundle into new TLS contexts, ~0.1 s of CPU per task
  (profiled; a015c06), plus the chunk copies above. Both routes run in fresh processes against the same
  emulator, alternating. Small files are dominated by the load: in the full run of 2026-11-30 the 16 MiB
  row missed at load 6.5 with overlapping ranges (ours 0.09-0.61 s, SDK 0.16-0.53 s); alone,
  `uv run python bench/local_upload.py --sizes 16MiB --repeat 9` at load 3.2 gave 0.85x (0.095 s vs
  0.111 s; client CPU 0.060 s vs 0.080 s).
- Item 16.5: `bench/large_runs.py` serves the GCS listing and object metadata of 100,000 generated objects
  from a small in-process server (the Python GCS emulator slows down past a few thousand objects, and
  fake-gcs-server took over 7 minutes to load them); the worker's storage client and the operator are the
  real ones. The listing asks for pages of 1,000 names only (`fields=items(name),nextPageToken`). Wall
  time is mostly the Gemini emulator reading each object's metadata as it registers it (the worker's own
  CPU is in the row). When to switch XCom backends: the refs are one XCom value, sent whole through the
  Execution API and stored in one row of the metadata database, and every downstream task that pulls the
  list reads it whole; above about 10,000 documents per run (about 5 MB) use Airflow's
  `XComObjectStorageBackend` (apache-airflow-providers-common-io) with gzip compression, tested with the
  nightly DAG in `tests/dags/test_nightly_object_storage_xcom.py` (README, "Very large runs").
- Item 16.6: not resumed after a worker dies. The session URL lets anyone holding it write the upload
  without the API key, so keeping it across attempts means storing a credential (XCom, Variables and logs
  are not secret stores; the provider redacts it from logs). What a resume saves is the re-send of what
  the killed attempt had sent: seconds (row above) against the task's retry delay (minutes by default).
  Deterministic file names keep the retry from making a second file, and the killed session never
  becomes a file (the emulator holds one file afterwards in both scenarios).
"""


FINDINGS = """\
- `airflow_gemini_files/hooks/gemini.py`, `GeminiHook._send`: until commit 1a5aadc every upload built its own
  `httpx.Client`, and building one loads the CA bundle into a new SSL context (`load_verify_locations`,
  ~97 ms of CPU under the GIL, profiled), so small-file uploads hardly parallelised: 100 small documents at
  max_concurrency=32 took 248 ms/file, 16 ms/file with one shared client (measured by this benchmark before
  TCP_NODELAY). Fixed in 1a5aadc (one `httpx.Client` per hook); re-measured after it: 9 ms/file.
- `airflow_gemini_files/triggers/files.py`, `GeminiFileActiveTrigger.run` (owner OPS): the first poll runs
  at once, although `GeminiFileActiveSensor.execute` checked every file just before deferring, so each
  deferral costs one extra get per pending file (one of the deferred run's gets per file in item 4). Fix:
  sleep `poll_interval` before the first poll (the deadline still bounds the wait), or have the sensor pass
  the time of its own check so the trigger waits for the rest of the interval.
"""


HISTORY_HEADER = (
    "| finished (UTC) | commit | load 1 min start/end | streaming d/c | streaming RSS | one task, docs | "
    "register calls | gets/file poke/deferred | d/c with a CPU hog | parse: provider adds (wall / CPU) | "
    "local 1 GiB ours/SDK | 100,000 registered | XCom per 10,000 refs | retry after a kill re-sends |\n"
    + "|---" * 14
    + "|\n"
)
"""Issue 5's columns first (earlier rows have only those), then issue 16's."""


def history_row(records: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    """One line of headline figures (medians) of a full run, for the history table."""

    def median(values: Sequence[float]) -> float:
        return statistics.median(values) if values else float("nan")

    cells = [info["finished"], info["commit"], f"{info['load_avg_1m']} / {info['load_end']}"]
    streaming = records.get("streaming", {}).get("data") or {}
    if streaming.get("official") and streaming.get("pipelined"):
        c = median([r["seconds"] for r in streaming["official"]])
        d = median([r["seconds"] for r in streaming["pipelined"]])
        rss = max(r["peak_rss_above_baseline"] for r in streaming["pipelined"]) / MiB
        cells += [f"{d / c:.2f}x", f"{rss:.1f} MiB"]
    else:
        cells += ["-", "-"]
    fanout = records.get("fanout", {}).get("data")
    cells.append(f"{fanout['one_task']['seconds']['median']:.1f} s, {fanout['docs']}" if fanout else "-")
    register = records.get("register", {}).get("data")
    cells.append(f"{register['register_calls']['max']:.0f} for {register['objects']}" if register else "-")
    sensor = records.get("sensor", {}).get("data")
    if sensor:
        poke, deferred = sensor["poke"]["gets_per_file"], sensor["deferred"]["gets_per_file"]
        cells.append(f"{poke['median']:.2f} / {deferred['median']:.2f}")
    else:
        cells.append("-")
    if streaming.get("official_hog") and streaming.get("pipelined_hog"):
        c = median([r["seconds"] for r in streaming["official_hog"]])
        d = median([r["seconds"] for r in streaming["pipelined_hog"]])
        cells.append(f"{d / c:.2f}x")
    else:
        cells.append("-")
    parse = records.get("parse", {}).get("data")
    row = (
        next(
            (
                r
                for r in parse["rows"]
                if r["file"] == "standard + provider imports" and r["provider"] == "this tree"
            ),
            None,
        )
        if parse
        else None
    )
    cells.append(f"{row['added_wall']:+.3f} / {row['added_cpu']:+.3f} s" if row else "-")
    local = records.get("local_upload", {}).get("data")
    gib = local["sizes"].get(str(1024 * MiB)) if local else None
    if gib:
        ratio = median([r["seconds"] for r in gib["ours"]]) / median([r["seconds"] for r in gib["sdk"]])
        cells.append(f"{ratio:.2f}x")
    else:
        cells.append("-")
    large = records.get("large", {}).get("data")
    if large:
        runs = large["runs"]
        seconds = median([r["seconds"] for r in runs])
        peak = median([r["peak_rss_with_xcom"] for r in runs]) / MiB
        xcom = median([r["xcom_bytes"] for r in runs]) * 10_000 / large["objects"] / 1e6
        cells += [f"{large['objects']}: {seconds:.0f} s, +{peak:.0f} MiB", f"{xcom:.2f} MB"]
    else:
        cells += ["-", "-"]
    resume = records.get("resume", {}).get("data")
    cells.append(f"{resume['summary']['retry']['second_attempt_sent_mib']:.0f} MiB" if resume else "-")
    return "| " + " | ".join(cells) + " |\n"


def append_history(path: Path, row: str) -> str:
    """Add ``row`` to the history table at ``path`` (created with its header); the whole table."""
    text = path.read_text() if path.exists() else HISTORY_HEADER
    old_rows = text.splitlines(keepends=True)[2:]
    text = HISTORY_HEADER + "".join(old_rows) + row  # the header of today's columns over the earlier rows
    path.write_text(text)
    return text


def plot_streaming(data: dict[str, list[dict[str, Any]]], size: int, path: Path) -> None:
    """Wall time and peak RSS per streaming leg: median bars with min-max whiskers (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legs = [
        ("gcs_read", "(a) GCS read\nalone"),
        ("gemini_upload", "(b) Gemini upload\nalone"),
        ("official", "(c) official:\ndownload, upload"),
        ("pipelined", "(d) ours:\npipelined"),
    ]
    legs = [(key, label) for key, label in legs if data.get(key)]
    colors = {
        "gcs_read": "#9e9e9e",
        "gemini_upload": "#9e9e9e",
        "official": "#d62728",
        "pipelined": "#2ca02c",
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        (left, "seconds", 1.0, "wall time (s)", f"{size / MiB:.0f} MiB gs:// object to Gemini"),
        (
            right,
            "peak_rss_above_baseline",
            MiB,
            "peak RSS above baseline (MiB)",
            "uploading process memory (target 64 MiB)",
        ),
    )
    for axis, field, scale, ylabel, title in panels:
        medians, low, high = [], [], []
        for key, _label in legs:
            values = [run[field] / scale for run in data[key]]
            med = statistics.median(values)
            medians.append(med)
            low.append(med - min(values))
            high.append(max(values) - med)
        x = range(len(legs))
        axis.bar(x, medians, yerr=[low, high], capsize=4, color=[colors[k] for k, _ in legs])
        axis.set_xticks(list(x), [label for _, label in legs], fontsize=8)
        axis.set_ylabel(ylabel)
        axis.set_title(title, fontsize=10)
        for i, value in enumerate(medians):
            axis.annotate(f"{value:.1f}", (i, value), ha="center", va="bottom", fontsize=8)
    right.axhline(64, linestyle="--", color="k", linewidth=1)
    if data.get("official"):
        target = 0.6 * statistics.median(r["seconds"] for r in data["official"])
        left.axhline(target, linestyle="--", color="k", linewidth=1)
        left.annotate("target: 0.6 x (c)", (0, target), va="bottom", fontsize=8)
    fig.text(0.5, 0.01, "bars: median of the runs; whiskers: min-max", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]iB)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 256MiB)")
    units = {None: 1, "kib": 1024, "mib": MiB, "gib": 1024 * MiB}
    return int(float(match.group(1)) * units[match.group(2) and match.group(2).lower()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat, no airflow dags test")
    parser.add_argument("--size", help="streaming object size (default 1GiB; 64MiB with --quick)")
    parser.add_argument("--runs", type=int, help="repeats of each figure (default 3; 1 with --quick)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {BENCHES}")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--report",
        default="RESULTS.md",
        help="the Markdown file written in --out-dir (default RESULTS.md, raw figures in results.json; "
        "another name, e.g. issue16.md with --only, puts them in <name>.json)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: write the report again from its raw figures (after editing the notes)",
    )
    args = parser.parse_args()
    size_text = args.size or ("64MiB" if args.quick else "1GiB")
    size = parse_size(size_text)
    runs = args.runs or (1 if args.quick else 3)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {','.join(BENCHES)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report_path = args.out_dir / args.report
    raw = args.out_dir / ("results.json" if args.report == "RESULTS.md" else f"{report_path.stem}.json")
    if args.render:
        saved = json.loads(raw.read_text())
        history_path = args.out_dir / "history.md"
        history = history_path.read_text() if history_path.exists() and not args.quick else ""
        report_path.write_text(render(saved["benchmarks"], saved["machine"], args, size, history))
        print(f"Wrote {report_path} from {raw}")
        return 0

    info = machine_info()
    started = time.perf_counter()
    records: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        for name in BENCHES:
            if name in only:
                records[name] = run_bench(
                    name,
                    bench_args(name, args.quick, size_text, runs, args.out_dir),
                    Path(tmp) / f"{name}.json",
                )
    info["load_end"] = round(os.getloadavg()[0], 2)
    info["total_seconds"] = time.perf_counter() - started
    info["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    streaming = records.get("streaming", {}).get("data")
    if streaming:
        plot_streaming(streaming, size, args.out_dir / "streaming.png")
    write_json(raw, {"machine": info, "benchmarks": records})
    history = "" if args.quick else append_history(args.out_dir / "history.md", history_row(records, info))
    report = render(records, info, args, size, history)
    report_path.write_text(report)
    print("\n" + report)
    print(f"Wrote {report_path}")
    return 0 if all(record["returncode"] == 0 for record in records.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
