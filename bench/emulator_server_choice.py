"""Why the emulator uses the standard library's threading server: it against a uvicorn ASGI app.

Both servers receive the same upload chunks from the same bare-socket client and do the same work per
byte (SHA-256 plus a write to a file under /tmp); the script prints wall-clock throughput and the
server's CPU time per MiB. The uvicorn app (httptools + uvloop when installed) hashes and writes on its
event loop, the cheapest it can do without handing each piece to a thread.

    uv run python bench/emulator_server_choice.py [--size-mib 512] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

CHUNK = 8 * 1024 * 1024
API_KEY = "bench-key"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def asgi_app() -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        hasher = hashlib.sha256()
        fd, path = tempfile.mkstemp(prefix="uvicorn-bench-")
        try:
            while True:
                message = await receive()
                body = message.get("body", b"")
                if body:
                    hasher.update(body)
                    os.write(fd, body)
                if not message.get("more_body"):
                    break
        finally:
            os.close(fd)
            os.unlink(path)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def post_chunks(port: int, path: str, size: int, block: bytes, *, resumable: bool) -> float:
    """Send ``size`` bytes in 8 MiB POSTs over one keep-alive socket; seconds taken."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as replies:
        offset = 0
        while offset < size:
            extra = ""
            if resumable:
                command = "upload, finalize" if offset + CHUNK >= size else "upload"
                extra = f"X-Goog-Upload-Command: {command}\r\nX-Goog-Upload-Offset: {offset}\r\n"
            head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: {CHUNK}\r\n\r\n"
            sock.sendall(head.encode())
            sock.sendall(block)
            status = replies.readline()
            assert b" 200 " in status, status
            length = 0
            while (line := replies.readline()) != b"\r\n":
                key, _, value = line.decode().partition(":")
                if key.lower() == "content-length":
                    length = int(value)
            replies.read(length)
            offset += CHUNK
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_emulator(size: int, block: bytes) -> tuple[float, float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_gemini_files.emulator.cli", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        reply = httpx.post(
            f"{base_url}/upload/v1beta/files",
            headers={
                "x-goog-api-key": API_KEY,
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(size),
            },
            json={"file": {"mime_type": "text/plain"}},
        )
        url = httpx.URL(reply.headers["x-goog-upload-url"])
        cpu0 = cpu_seconds(proc.pid)
        wall = post_chunks(url.port or 80, f"{url.path}?{url.query.decode()}", size, block, resumable=True)
        return wall, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_uvicorn(size: int, block: bytes) -> tuple[float, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-uvicorn", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        cpu0 = cpu_seconds(proc.pid)
        wall = post_chunks(port, "/upload", size, block, resumable=False)
        return wall, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--serve-uvicorn", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_uvicorn is not None:
        import uvicorn

        uvicorn.run(
            asgi_app(), host="127.0.0.1", port=args.serve_uvicorn, log_level="warning", access_log=False
        )
        return 0
    size = args.size_mib // 8 * CHUNK
    block = os.urandom(CHUNK)
    mib = size / 1024 / 1024
    print(f"{mib:.0f} MiB in 8 MiB chunks from a bare-socket client, {os.cpu_count()} CPUs")
    for _ in range(args.repeat):
        for label, run in (("ThreadingHTTPServer emulator", run_emulator), ("uvicorn ASGI app", run_uvicorn)):
            wall, cpu = run(size, block)
            print(
                f"  {label:28} {mib / wall:7.1f} MiB/s  {mib / cpu:7.1f} MiB per server CPU-s  "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
