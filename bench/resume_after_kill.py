"""A worker killed mid-upload, then the task's retry: what is sent again (issue 16, item 6).

A 200 MiB local file is uploaded by ``GeminiUploadFileOperator`` (deterministic names, the default) in a
child process, against the Gemini emulator (its own process). The parent watches the chunks the server
acknowledged and kills the child with SIGKILL once 144 MiB are in, as a worker dies (OOM kill, node lost):
no ``except``, no ``finally``, no cancel of the session. Then side by side, each from a fresh process:

- ``retry``: the task's retry, as Airflow runs it: the same operator, run, task and source, so the same
  deterministic file name. It starts a new upload session and sends every byte again.
- ``resume``: what resuming the killed attempt's session would cost: ask the session URL how many bytes it
  holds (``X-Goog-Upload-Command: query``), then send the rest. The benchmark's parent keeps the URL for
  this measurement only (in memory, against the emulator); the provider does not keep it (see RESULTS.md).

Per scenario: bytes the killed attempt had sent, bytes the second attempt sent, its wall time, and what the
emulator holds afterwards (one file, no session left over).

    uv run python bench/resume_after_kill.py [--size 200MiB] [--kill-at 144MiB] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_json
from streaming import API_KEY, gemini_emulator, parse_size, reset_gemini

MiB = 1024 * 1024
CHUNK = 8 * MiB

CHILD = r"""
import json, logging, os, sys, time
logging.disable(logging.CRITICAL)
sys.path.insert(0, {bench!r})
from _common import task_context
from airflow_gemini_files.hooks import upload as upload_module
from airflow_gemini_files.operators.files import GeminiUploadFileOperator

cfg = json.loads(sys.argv[1])
os.environ["AIRFLOW_CONN_GEMINI_DEFAULT"] = json.dumps(
    {{"conn_type": "gemini", "password": cfg["key"], "extra": {{"base_url": cfg["url"]}}}}
)
start, send_chunk = upload_module._Session.start, upload_module._Session.send_chunk

def reporting_start(self, **kwargs):  # the benchmark's parent needs the URL for the resume scenario
    granularity = start(self, **kwargs)
    print(json.dumps({{"session_url": self.url}}), flush=True)
    return granularity

def reporting_send_chunk(self, chunk, chunk_offset, *, last):
    file = send_chunk(self, chunk, chunk_offset, last=last)
    acknowledged = chunk_offset + len(chunk)
    print(json.dumps({{"acknowledged": acknowledged, "sent": self.stats.bytes_sent}}), flush=True)
    return file

upload_module._Session.start = reporting_start
upload_module._Session.send_chunk = reporting_send_chunk
op = GeminiUploadFileOperator(task_id="upload", source=cfg["file"], mime_type="text/plain")
started = time.perf_counter()
ref = op.execute(task_context("upload", run_id=cfg["run_id"]))
print(json.dumps({{"done": ref.name, "seconds": time.perf_counter() - started, "sha256": ref.sha256_hash}}))
"""


def attempt(cfg: dict[str, Any], kill_at: int | None) -> dict[str, Any]:
    """Run the upload task in a child; kill it (SIGKILL) once ``kill_at`` bytes are acknowledged."""
    script = CHILD.format(bench=str(Path(__file__).resolve().parent))
    child = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(cfg)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    out: dict[str, Any] = {"acknowledged": 0, "sent": 0, "killed": False}
    for line in child.stdout:
        event = json.loads(line)
        out.update(event)
        if kill_at is not None and event.get("acknowledged", 0) >= kill_at:
            child.send_signal(signal.SIGKILL)
            out["killed"] = True
            break
    child.wait()
    if not out["killed"] and child.returncode != 0:
        raise SystemExit(f"the upload task failed (exit {child.returncode})")
    return out


def resume(session_url: str, path: str, size: int) -> dict[str, Any]:
    """Query the killed session, then send the rest of the file to it (the resume a provider could do)."""
    import httpx

    started = time.perf_counter()
    sent = 0
    with httpx.Client(timeout=300) as http:
        reply = http.post(session_url, headers={"X-Goog-Upload-Command": "query"})
        offset = int(reply.headers["x-goog-upload-size-received"])
        committed = offset
        with open(path, "rb") as source:
            source.seek(offset)
            while offset < size:
                chunk = source.read(min(CHUNK, size - offset))
                last = offset + len(chunk) >= size
                reply = http.post(
                    session_url,
                    content=chunk,
                    headers={
                        "X-Goog-Upload-Command": "upload, finalize" if last else "upload",
                        "X-Goog-Upload-Offset": str(offset),
                    },
                )
                reply.raise_for_status()
                offset += len(chunk)
                sent += len(chunk)
    file = reply.json()["file"]
    return {
        "committed_before": committed,
        "sent": sent,
        "seconds": time.perf_counter() - started,
        "sha256": file["sha256Hash"],
    }


def run(size: int, kill_at: int, runs: int, data_root: str) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-resume-", dir=data_root)
    results: dict[str, list[dict[str, Any]]] = {"retry": [], "resume": []}
    try:
        path = os.path.join(workdir, "report.bin")
        with open(path, "wb") as out:
            out.write(os.urandom(size))
        with gemini_emulator(workdir, data_root) as (url, _pid):
            for number in range(runs):
                for scenario in ("retry", "resume"):
                    reset_gemini(url)
                    load = os.getloadavg()[0]
                    cfg = {"key": API_KEY, "url": url, "file": path, "run_id": f"{scenario}-{number}"}
                    killed = attempt(cfg, kill_at)
                    if scenario == "retry":
                        second = attempt(cfg, None)
                        sent, seconds = second["sent"], second["seconds"]
                    else:
                        second = resume(killed["session_url"], path, size)
                        sent, seconds = second["sent"], second["seconds"]
                    files = _emulator_files(url)
                    result = {
                        "killed_after_acknowledged": killed["acknowledged"],
                        "killed_attempt_sent": killed["sent"],
                        "second_attempt_sent": sent,
                        "second_attempt_seconds": seconds,
                        "files_after": len(files),
                        "load_avg_1m": load,
                    }
                    results[scenario].append(result)
                    print(
                        f"run {number + 1} {scenario:6s}: killed after "
                        f"{killed['acknowledged'] / MiB:.0f} MiB acknowledged "
                        f"({killed['sent'] / MiB:.0f} MiB sent); second attempt sent "
                        f"{sent / MiB:.0f} MiB in {seconds:.2f} s; files afterwards: {len(files)} "
                        f"(load {load:.1f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        scenario: {
            "second_attempt_sent_mib": statistics.median(r["second_attempt_sent"] for r in rows) / MiB,
            "second_attempt_seconds": statistics.median(r["second_attempt_seconds"] for r in rows),
        }
        for scenario, rows in results.items()
    }
    print(f"\nkilled at {kill_at / MiB:.0f} of {size / MiB:.0f} MiB, median of {runs}:")
    for scenario, figures in summary.items():
        print(
            f"  {scenario:6s}: sends {figures['second_attempt_sent_mib']:.0f} MiB again in "
            f"{figures['second_attempt_seconds']:.2f} s"
        )
    return {"size": size, "kill_at": kill_at, "runs": runs, "results": results, "summary": summary}


def _emulator_files(url: str) -> list[dict[str, Any]]:
    import urllib.request

    request = urllib.request.Request(f"{url}/_emulator/files", headers={"x-goog-api-key": API_KEY})
    with urllib.request.urlopen(request, timeout=60) as response:
        files: list[dict[str, Any]] = json.loads(response.read())["files"]
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("200MiB"))
    parser.add_argument("--kill-at", type=parse_size, default=parse_size("144MiB"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--data-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.size, args.kill_at, args.runs, args.data_dir)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
