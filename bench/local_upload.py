"""Local files to Gemini: our upload operator against the SDK's ``files.upload`` (issue 16, item 3).

The official Google provider's ``GenAIGeminiUploadFileOperator`` uploads a local path with the SDK:
``GenAIGeminiAPIHook.upload_file`` builds a ``genai.Client`` and calls ``client.files.upload(file=path)``
(apache-airflow-providers-google 22.8.0), as this benchmark does; ours is
``GeminiUploadFileOperator(source=path)``, which goes through the hook's resumable upload. For each
size, both routes upload the same random file (on tmpfs) to the same Gemini emulator (its own process),
each upload in a fresh client process whose wall time, CPU and peak RSS above its baseline are
measured; the routes alternate within each repeat. Target: ours at least
as fast as the SDK at every size (median), memory flat.

    uv run python bench/local_upload.py [--sizes 1MiB,16MiB,256MiB,1GiB] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import json_child, random_file, write_json
from streaming import API_KEY, gemini_emulator, measured, parse_size, reset_gemini

MiB = 1024 * 1024
ROUTES = ("sdk", "ours")


def run_route(route: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One upload in this (fresh) process, after a warm-up upload of a few bytes on the same path."""
    import logging

    logging.disable(logging.CRITICAL)
    from google import genai
    from google.genai import types

    from airflow_gemini_files.operators.files import GeminiUploadFileOperator

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import task_context

    os.environ["AIRFLOW_CONN_GEMINI_DEFAULT"] = json.dumps(
        {"conn_type": "gemini", "password": API_KEY, "extra": {"base_url": cfg["gemini_url"]}}
    )
    warm = os.path.join(cfg["dir"], f"warm-{os.getpid()}.txt")
    Path(warm).write_bytes(b"warm-up")

    def upload(path: str, run_id: str) -> str | None:
        if route == "sdk":  # as GenAIGeminiAPIHook.upload_file does it: a new client per upload
            client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=cfg["gemini_url"]))
            return client.files.upload(file=path, config={"mime_type": "text/plain"}).sha256_hash
        op = GeminiUploadFileOperator(task_id="upload", source=path, mime_type="text/plain")
        return str(op.execute(task_context("upload", run_id=run_id)).sha256_hash)

    upload(warm, f"warm-{os.getpid()}")
    os.unlink(warm)
    got: dict[str, str | None] = {}

    def run() -> None:
        got["sha256"] = upload(cfg["file"], f"run-{os.getpid()}")

    figures = measured(run)
    return {"route": route, **figures, "sha256": got["sha256"]}


def run(sizes: list[int], repeat: int, data_root: str) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-local-upload-", dir=data_root)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    load: list[float] = []
    try:
        with gemini_emulator(workdir, data_root) as (url, pid):
            emulator = psutil.Process(pid)
            for size in sizes:
                path = os.path.join(workdir, f"source-{size}.bin")
                sha = random_file(path, size)
                cfg = {"gemini_url": url, "file": path, "dir": workdir}
                per_route: dict[str, list[dict[str, Any]]] = {route: [] for route in ROUTES}
                for number in range(repeat):
                    for route in ROUTES if number % 2 == 0 else ROUTES[::-1]:
                        reset_gemini(url)
                        load.append(os.getloadavg()[0])
                        emu_cpu = sum(emulator.cpu_times()[:2])
                        result = json_child(
                            [__file__, "--route", route, "--config", json.dumps(cfg)], f"route {route}"
                        )
                        result["emulator_cpu_s"] = sum(emulator.cpu_times()[:2]) - emu_cpu
                        result["load_avg_1m"] = load[-1]
                        if result["sha256"] != sha:
                            raise SystemExit(f"{route}: Gemini got different bytes (sha256 mismatch)")
                        per_route[route].append(result)
                        print(
                            f"{size / MiB:7.0f} MiB run {number + 1} {route:5s} {result['seconds']:7.3f} s "
                            f"client CPU {result['client_cpu_s']:6.3f} s, emulator CPU "
                            f"{result['emulator_cpu_s']:6.3f} s, peak +"
                            f"{result['peak_rss_above_baseline'] / MiB:6.1f} MiB (load {load[-1]:.1f})",
                            flush=True,
                        )
                results[str(size)] = per_route
                os.unlink(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nsize     | SDK files.upload            | ours (operator)             | ours / SDK | peak RSS")
    for size, per_route in results.items():
        med = {r: statistics.median(x["seconds"] for x in per_route[r]) for r in ROUTES}
        cpu = {r: statistics.median(x["client_cpu_s"] for x in per_route[r]) for r in ROUTES}
        rss = {r: max(x["peak_rss_above_baseline"] for x in per_route[r]) / MiB for r in ROUTES}
        print(
            f"{int(size) / MiB:6.0f} MiB | {med['sdk']:7.3f} s (CPU {cpu['sdk']:6.3f} s) | "
            f"{med['ours']:7.3f} s (CPU {cpu['ours']:6.3f} s) | {med['ours'] / med['sdk']:6.2f}x    | "
            f"SDK +{rss['sdk']:.0f} MiB, ours +{rss['ours']:.0f} MiB"
        )
    return {"repeat": repeat, "load_avg_1m": load, "sizes": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1MiB,16MiB,256MiB,1GiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--data-dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
        help="source files and the emulator's data (default /dev/shm: no disk noise)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--route", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.route:
        print(json.dumps(run_route(args.route, json.loads(args.config))), flush=True)
        return 0
    sizes = [parse_size(text) for text in args.sizes.split(",") if text.strip()]
    result = run(sizes, args.repeat, args.data_dir)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
