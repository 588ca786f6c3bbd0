"""Emulator upload throughput on loopback and the emulator's peak RSS during a large upload.

Runs ``gemini-files-emulator`` as a separate process (so its memory is measured alone, from
``VmHWM`` in /proc), then uploads ``--size-mib`` bytes (default 1024 = 1 GiB) twice: with raw HTTP
(the resumable protocol in 8 MiB chunks over a bare socket, so the client costs next to nothing) and
with the real google-genai SDK's ``files.upload`` (a seekable stream of the same bytes that holds
nothing big in memory).

    uv run python bench/emulator_upload.py [--size-mib 1024] [--chunk-mib 8] [--repeat 3]

Besides wall-clock throughput it prints the emulator's own CPU time per MiB, a figure that holds
even when the machine is busy with other work (the load average is printed beside each run).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
from google import genai
from google.genai import types

API_KEY = "bench-key"


class PatternStream(io.RawIOBase):
    """``size`` bytes of a repeating random 8 MiB block: seekable, nothing big in memory."""

    def __init__(self, size: int, block: bytes) -> None:
        self._size = size
        self._block = block
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        out = memoryview(buffer)
        done = 0
        while done < n:
            start = (self._pos + done) % len(self._block)
            take = min(n - done, len(self._block) - start)
            out[done : done + take] = self._block[start : start + take]
            done += take
        self._pos += n
        return n


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: its cost, whatever else the machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_upload(base_url: str, size: int, chunk: int, block: bytes) -> float:
    """The resumable protocol over a bare keep-alive socket: the cheapest possible client, so the
    figure is the emulator's, not an HTTP library's."""
    with httpx.Client(timeout=120) as http:
        reply = http.post(
            f"{base_url}/upload/v1beta/files",
            headers={
                "x-goog-api-key": API_KEY,
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(size),
                "X-Goog-Upload-Header-Content-Type": "text/plain",
            },
            json={"file": {"display_name": "bench-raw", "mime_type": "text/plain"}},
        )
        reply.raise_for_status()
        url = urllib.parse.urlsplit(reply.headers["x-goog-upload-url"])
        payload = (block * (chunk // len(block) + 1))[:chunk]
        start = time.perf_counter()
        with socket.create_connection((url.hostname, url.port)) as sock, sock.makefile("rb") as replies:
            offset = 0
            status, headers, body = "", {}, b""
            while offset < size:
                n = min(chunk, size - offset)
                command = "upload, finalize" if offset + n >= size else "upload"
                sock.sendall(
                    f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                    f"X-Goog-Upload-Command: {command}\r\nX-Goog-Upload-Offset: {offset}\r\n"
                    f"Content-Length: {n}\r\n\r\n".encode()
                )
                sock.sendall(memoryview(payload)[:n])
                status = replies.readline().decode()
                headers = {}
                while (line := replies.readline()) != b"\r\n":
                    key, _, value = line.decode().partition(":")
                    headers[key.lower()] = value.strip()
                body = replies.read(int(headers["content-length"]))
                offset += n
        elapsed = time.perf_counter() - start
        assert " 200 " in status, status
        assert headers["x-goog-upload-status"] == "final", headers
        name = json.loads(body)["file"]["name"]
        http.delete(f"{base_url}/v1beta/{name}", headers={"x-goog-api-key": API_KEY}).raise_for_status()
    return elapsed


def sdk_upload(base_url: str, size: int, block: bytes) -> float:
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=base_url))
    stream = io.BufferedReader(PatternStream(size, block), buffer_size=1024 * 1024)
    start = time.perf_counter()
    uploaded = client.files.upload(
        file=stream, config={"mime_type": "text/plain", "display_name": "bench-sdk"}
    )
    elapsed = time.perf_counter() - start
    assert uploaded.size_bytes == size
    client.files.delete(name=uploaded.name or "")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="runs per client; the best one is reported")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    block = os.urandom(8 * 1024 * 1024)
    mib = size / 1024 / 1024

    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_gemini_files.emulator.cli", "--port", str(args.port),
         "--api-key", API_KEY, "--max-project-bytes", str(2 * size + 1), "--max-file-bytes", str(size + 1)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    runs: dict[str, list[tuple[float, float]]] = {}
    labels = {"raw": f"raw HTTP ({args.chunk_mib} MiB chunks)", "sdk": "google-genai files.upload"}
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        idle = vm_rss_mib(proc.pid)
        print(f"emulator upload of {mib:.0f} MiB on loopback ({base_url}), {os.cpu_count()} CPUs")
        print(f"  {'client':34} {'wall':>8}  {'throughput':>12}  {'emulator CPU':>12}  MiB/CPU-s  load")
        for _ in range(args.repeat):
            for key in labels:
                cpu0 = cpu_seconds(proc.pid)
                if key == "raw":
                    wall = raw_upload(base_url, size, args.chunk_mib * 1024 * 1024, block)
                else:
                    wall = sdk_upload(base_url, size, block)
                cpu = cpu_seconds(proc.pid) - cpu0
                runs.setdefault(key, []).append((wall, cpu))
                print(
                    f"  {labels[key]:34} {wall:6.2f} s  {mib / wall:7.1f} MiB/s  {cpu:10.2f} s  "
                    f"{mib / cpu:9.1f}  {os.getloadavg()[0]:4.1f}",
                    flush=True,
                )
        peak = vm_hwm_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    for key, label in labels.items():
        wall, cpu = min(runs[key])
        print(f"  best {label}: {mib / wall:.1f} MiB/s ({mib / cpu:.1f} MiB per emulator CPU-second)")
    print(f"  emulator RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB ({peak * 1.048576:.1f} MB)")
    print(f"  peak RSS < 200 MB: {'yes' if peak * 1.048576 < 200 else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
