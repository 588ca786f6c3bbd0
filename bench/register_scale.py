"""Register 1,000 GCS objects with Gemini in one task (issue 5, item 3).

Seeds ``--objects`` PDF-sized objects (``--object-kib`` each) into an in-memory gcp-storage-emulator running
in this process, then runs ``GeminiRegisterGcsFilesOperator(bucket=..., prefix=...)`` against the Gemini
emulator (its own process), repeated. Measured per run:

- register calls, from the Gemini emulator's request counter (target <= 10 for 1,000 objects);
- wall time of the task;
- what the worker asked GCS for, from the GCS emulator's request log, split by client (the worker's
  google-cloud-storage client vs the Gemini emulator's own metadata look-ups, which stand in for Google's
  servers reading the objects): requests by kind (list, metadata, media) and response bytes. No object
  bytes through the worker means zero ``media`` requests from it, and response bytes far below the
  objects' total size.

    uv run python bench/register_scale.py [--objects 1000] [--object-kib 64] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EmulatorProcess, GcsServer, quiet_logs, summarize, task_context, write_json

BUCKET = "bench-register"
PREFIX = "nightly/2026-11-22/"
TARGET_CALLS = 10


def seed(gcs: GcsServer, count: int, size: int) -> float:
    """``count`` objects of ``size`` bytes under :data:`PREFIX` (and one outside it); seconds taken."""
    payload = b"%PDF-1.4\n" + os.urandom(max(0, size - 9))
    names = [f"{PREFIX}doc-{i:05d}.pdf" for i in range(count)] + ["other/ignored.pdf"]
    start = time.perf_counter()
    gcs.seed(BUCKET, names, payload, "application/pdf")
    # Check through the real client that the objects are there and readable.
    blob = gcs.client().bucket(BUCKET).blob(names[0])
    assert blob.download_as_bytes() == payload
    return time.perf_counter() - start


def register_once(emu: EmulatorProcess, gcs: GcsServer, count: int) -> dict[str, Any]:
    from airflow_gemini_files.operators.files import GeminiRegisterGcsFilesOperator

    emu.reset()
    gcs.log.clear()
    op = GeminiRegisterGcsFilesOperator(task_id="register", bucket=BUCKET, prefix=PREFIX)
    start = time.perf_counter()
    refs = op.execute(task_context("register"))
    elapsed = time.perf_counter() - start
    assert len(refs) == count, f"registered {len(refs)} of {count}"
    assert all(ref.source == "REGISTERED" and ref.source_uri for ref in refs)
    requests = emu.requests()
    by_client: dict[str, dict[str, Any]] = {}
    for entry in list(gcs.log):
        stats = by_client.setdefault(entry.client, {"requests": {}, "response_bytes": 0})
        stats["requests"][entry.kind] = stats["requests"].get(entry.kind, 0) + 1
        stats["response_bytes"] += entry.response_bytes
    return {
        "seconds": elapsed,
        "register_calls": requests["register"],
        "gemini_requests": {k: v for k, v in requests.items() if v},
        "gcs": by_client,
    }


def run(objects: int = 1000, object_kib: int = 64, runs: int = 3) -> dict[str, Any]:
    quiet_logs()
    with GcsServer() as gcs, EmulatorProcess(gcs_host=gcs.host) as emu:
        emu.connection_env()
        print(f"register: seeding {objects} objects of {object_kib} KiB in the in-memory GCS emulator")
        seed_seconds = seed(gcs, objects, object_kib * 1024)
        print(f"  seeded in {seed_seconds:.1f} s")
        results = []
        for i in range(runs):
            result = register_once(emu, gcs, objects)
            worker = result["gcs"].get("worker", {"requests": {}, "response_bytes": 0})
            print(
                f"  run {i + 1}/{runs}: {objects} objects, {result['register_calls']} register calls, "
                f"{result['seconds']:.2f} s; worker -> GCS {worker['requests']} "
                f"{worker['response_bytes'] / 1024:.0f} KiB"
            )
            results.append(result)
    worker_bytes = [r["gcs"].get("worker", {}).get("response_bytes", 0) for r in results]
    worker_media = [r["gcs"].get("worker", {}).get("requests", {}).get("media", 0) for r in results]
    return {
        "objects": objects,
        "object_bytes": object_kib * 1024,
        "total_object_bytes": objects * object_kib * 1024,
        "seed_seconds": seed_seconds,
        "seconds": summarize([r["seconds"] for r in results]).to_dict(),
        "register_calls": summarize([r["register_calls"] for r in results]).to_dict(),
        "worker_gcs_response_bytes": summarize(worker_bytes).to_dict(),
        "worker_media_requests": summarize(worker_media).to_dict(),
        "runs": results,
        "target_calls": TARGET_CALLS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--object-kib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.objects, args.object_kib, args.runs)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
