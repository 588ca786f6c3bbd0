"""The emulator's Batch API at nightly scale: a file-input job of thousands of requests, end to end.

For each job size it starts ``gemini-files-emulator`` in a fresh process (so its peak RSS, ``VmHWM``,
belongs to that job alone), then with the real google-genai SDK: uploads a handful of documents,
streams a JSONL input of ``n`` keyed structured-output requests (each one asks about one of the
documents) to a temporary file and uploads it, creates the batch job, polls it until it is done,
streams the GENERATED results file to disk with ``files.download(destination=...)`` and checks that
every key came back once. It prints the wall time of each step, the emulator's CPU seconds, its RSS at
rest and at peak, and the API calls the emulator counted; the table goes to
``bench/results/emulator_batch.md``.

    uv run python bench/emulator_batch.py [--docs 2000,10000] [--plain-docs 100000] [--poll 0.5]

``--docs`` jobs ask for structured output: the emulator answers each request with its own
generateContent logic (JSON built from the response schema and validated with jsonschema), so the
job's running time is that work, on this machine. ``--plain-docs`` jobs ask for plain text, which is
cheap to answer: they make a results file much larger than the emulator's memory growth, which shows
that jobs and downloads are streamed rather than held.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from google import genai
from google.genai import types

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import API_KEY, RESULTS_DIR, EmulatorProcess, machine_info

MODEL = "gemini-2.5-flash"
DONE = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "document_type": {"type": "STRING", "enum": ["invoice", "contract", "letter", "other"]},
        "summary": {"type": "STRING"},
        "word_count": {"type": "INTEGER"},
    },
    "required": ["document_type", "summary", "word_count"],
}


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_input(path: Path, n: int, documents: list[types.File], structured: bool) -> None:
    """One keyed request per line, written as a stream (never the whole input in memory)."""
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            doc = documents[i % len(documents)]
            request: dict[str, Any] = {
                "contents": [
                    {
                        "role": "user",
                        "parts": [
                            {"text": f"Classify and summarise document {i}."},
                            {"fileData": {"fileUri": doc.uri, "mimeType": doc.mime_type}},
                        ],
                    }
                ],
            }
            if structured:
                config = {"responseMimeType": "application/json", "responseSchema": SCHEMA}
                request["generationConfig"] = config
            out.write(json.dumps({"key": f"doc-{i:06d}", "request": request}) + "\n")


def run_job(n: int, poll: float, structured: bool) -> dict[str, Any]:
    with EmulatorProcess() as emu, tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=emu.base_url))
        pid = emu.pid
        idle = status_mib(pid, "VmRSS")
        cpu0 = cpu_seconds(pid)
        documents = [
            client.files.upload(
                file=io.BytesIO(f"Invoice {d}: total {d * 10} EUR, due in 30 days.\n".encode() * 20),
                config={"mime_type": "text/plain", "display_name": f"invoice-{d}.txt"},
            )
            for d in range(20)
        ]
        figures: dict[str, Any] = {"docs": n, "kind": "structured" if structured else "plain text"}
        figures["rss_idle_mib"] = idle

        started = time.perf_counter()
        source = Path(tmp) / "input.jsonl"
        write_input(source, n, documents, structured)
        uploaded = client.files.upload(file=source, config={"mime_type": "text/plain"})
        figures["input_mib"] = source.stat().st_size / 2**20
        figures["build_upload_s"] = time.perf_counter() - started

        started = time.perf_counter()
        config = {"display_name": f"bench-{n}"}
        job = client.batches.create(model=MODEL, src=uploaded.name or "", config=config)
        figures["create_s"] = time.perf_counter() - started
        started = time.perf_counter()
        polls = 0
        while True:
            job = client.batches.get(name=job.name or "")
            polls += 1
            if job.state is not None and job.state.name in DONE:
                break
            time.sleep(poll)
        figures["run_s"] = time.perf_counter() - started
        figures["polls"] = polls
        if job.state is None or job.state.name != "JOB_STATE_SUCCEEDED":
            raise RuntimeError(f"batch job ended {job.state}")
        if job.dest is None or job.dest.file_name is None:
            raise RuntimeError("the job succeeded without a results file")

        started = time.perf_counter()
        results = Path(tmp) / "results.jsonl"
        client.files.download(file=job.dest.file_name, destination=str(results))
        figures["download_s"] = time.perf_counter() - started
        figures["results_mib"] = results.stat().st_size / 2**20

        keys: set[str] = set()
        failed = 0
        with open(results, encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                keys.add(item["key"])
                failed += "error" in item
        if keys != {f"doc-{i:06d}" for i in range(n)}:
            raise RuntimeError(f"{n - len(keys)} keys missing from the results")
        figures["failed_requests"] = failed
        figures["emulator_cpu_s"] = cpu_seconds(pid) - cpu0
        figures["rss_peak_mib"] = status_mib(pid, "VmHWM")
        requests = emu.requests()
        figures["api_calls"] = {k: v for k, v in requests.items() if v}
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="2000,10000", help="comma-separated job sizes (requests per job)")
    parser.add_argument("--plain-docs", default="100000", help="job sizes with plain-text answers")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between batches.get polls")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "emulator_batch.md")
    args = parser.parse_args()
    jobs = [(int(n), True) for n in args.docs.split(",") if n] + [
        (int(n), False) for n in args.plain_docs.split(",") if n
    ]
    info = machine_info()
    print(f"emulator Batch API, file input, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for n, structured in jobs:
        figures = run_job(n, args.poll, structured)
        rows.append(figures)
        print(
            f"  {n:>6} {figures['kind']} requests: input {figures['input_mib']:.1f} MiB built+uploaded in "
            f"{figures['build_upload_s']:.2f} s, create {figures['create_s']:.2f} s, done after "
            f"{figures['run_s']:.1f} s ({figures['polls']} polls), results {figures['results_mib']:.1f} MiB "
            f"downloaded in {figures['download_s']:.2f} s; emulator CPU {figures['emulator_cpu_s']:.1f} s, "
            f"RSS {figures['rss_idle_mib']:.0f} MiB at rest, {figures['rss_peak_mib']:.0f} MiB peak "
            f"(+{figures['rss_peak_mib'] - figures['rss_idle_mib']:.0f}); calls {figures['api_calls']}",
            flush=True,
        )
    lines = [
        "# Emulator Batch API at scale",
        "",
        f"`uv run python bench/emulator_batch.py --docs {args.docs} --plain-docs {args.plain_docs}` "
        f"at commit {info.get('commit', '?')}, "
        f"{info.get('cpus', os.cpu_count())} CPUs, load {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| requests | answers | input MiB | build+upload s | create s | until done s | results MiB "
        "| download s | emulator CPU s | RSS at rest MiB | RSS peak MiB | peak - rest MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in rows:
        growth = f["rss_peak_mib"] - f["rss_idle_mib"]
        lines.append(
            f"| {f['docs']} | {f['kind']} | {f['input_mib']:.1f} | {f['build_upload_s']:.2f} "
            f"| {f['create_s']:.2f} "
            f"| {f['run_s']:.1f} | {f['results_mib']:.1f} | {f['download_s']:.2f} "
            f"| {f['emulator_cpu_s']:.1f} | {f['rss_idle_mib']:.0f} | {f['rss_peak_mib']:.0f} "
            f"| {growth:.0f} |"
        )
    lines += [
        "",
        "API calls the emulator counted per job (upload of 20 documents and the input included): "
        + "; ".join(f"{f['docs']} {f['kind']}: {f['api_calls']}" for f in rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"table written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
