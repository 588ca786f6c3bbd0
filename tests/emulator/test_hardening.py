"""The emulator listens on a real port: it refuses web pages and strangers, bounds what one client may hold,
keeps its scratch data to itself and never logs a credential. Emulator only."""

from __future__ import annotations

import io
import logging
import socket
from pathlib import Path

import httpx
import pytest
from google import genai
from google.genai import types

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.emulator.store import MARKER_NAME, WORKDIR_NAME

pytestmark = pytest.mark.emulator_only
KEY = {"x-goog-api-key": "test-api-key"}
# No keep-alive: a connection left idle past the emulator's socket_timeout (60 s; slow tests run between
# uses) can be closed by the server just as the next test sends on it.
http = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def _port(emu: GeminiEmulator) -> int:
    return emu.port


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "attacker.example:8765"},  # DNS rebinding: a web page's own name resolving to 127.0.0.1
        {"Host": "127.0.0.1.nip.io"},
        {"Origin": "http://attacker.example"},  # a cross-site request from a page the developer opened
        {"Origin": "null"},
    ],
)
def test_foreign_host_or_origin_is_refused(gemini_emulator: GeminiEmulator, headers: dict[str, str]) -> None:
    client = genai.Client(
        api_key="test-api-key", http_options=types.HttpOptions(base_url=gemini_emulator.base_url)
    )
    file = client.files.upload(file=io.BytesIO(b"keep"), config={"mime_type": "text/plain"})
    for method, path in (("POST", "/_emulator/reset"), ("GET", "/v1beta/files")):
        reply = http.request(method, f"{gemini_emulator.base_url}{path}", headers={**KEY, **headers})
        assert reply.status_code == 403
        assert reply.json()["error"]["status"] == "PERMISSION_DENIED"
        assert "Refused" in reply.json()["error"]["message"]
    assert [f["name"] for f in gemini_emulator.files()] == [file.name]  # the reset never happened


def test_own_addresses_are_served(gemini_emulator: GeminiEmulator) -> None:
    port = _port(gemini_emulator)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert (
            http.get(f"{gemini_emulator.base_url}/v1beta/files", headers={**KEY, "Host": host}).status_code
            == 200
        )
    same_origin = {**KEY, "Origin": f"http://127.0.0.1:{port}"}
    assert http.get(f"{gemini_emulator.base_url}/v1beta/files", headers=same_origin).status_code == 200


def test_a_wildcard_bind_answers_only_the_hosts_it_is_told() -> None:
    with GeminiEmulator(host="0.0.0.0", allowed_hosts=("gemini.internal",)) as emu:
        url = f"http://127.0.0.1:{emu.port}/v1beta/files"
        assert http.get(url, headers={**KEY, "Host": f"gemini.internal:{emu.port}"}).status_code == 200
        assert http.get(url, headers={**KEY, "Host": f"other.internal:{emu.port}"}).status_code == 403


def _raw(emu: GeminiEmulator, request: bytes, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_negative_content_length_gets_a_400(gemini_emulator: GeminiEmulator) -> None:
    request = (
        f"POST /v1beta/files:register HTTP/1.1\r\nHost: 127.0.0.1:{gemini_emulator.port}\r\n"
        "x-goog-api-key: test-api-key\r\nContent-Length: -1\r\n\r\n"
    ).encode()
    reply = _raw(gemini_emulator, request)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Invalid Content-Length." in reply


def test_a_silent_connection_is_closed_after_the_socket_timeout() -> None:
    with GeminiEmulator(socket_timeout=0.3) as emu:
        assert _raw(emu, b"") == b""  # the server hung up instead of holding a thread forever
        half = (
            f"POST /v1beta/files:register HTTP/1.1\r\nHost: 127.0.0.1:{emu.port}\r\n"
            "x-goog-api-key: k\r\nAuthorization: Bearer t\r\nContent-Length: 99\r\n\r\n{"
        )
        assert _raw(emu, half.encode()) == b""  # a body that stops coming


def test_large_json_bodies_wait_for_a_slot() -> None:
    with GeminiEmulator(api_key="test-api-key", socket_timeout=0.5, max_large_bodies=1) as emu:
        assert emu._server is not None
        slots = emu._server.large_bodies
        big = {"contents": [{"parts": [{"text": "x" * (2 * 1024 * 1024)}]}]}
        url = f"{emu.base_url}/v1beta/models/gemini-2.5-flash:generateContent"
        assert slots.acquire(timeout=5)  # another client is reading a large body
        try:
            busy = http.post(url, headers=KEY, json=big)
            assert (busy.status_code, busy.json()["error"]["status"]) == (503, "UNAVAILABLE")
            small = {"contents": [{"parts": [{"text": "hi"}]}]}
            assert http.post(url, headers=KEY, json=small).status_code == 200  # small ones are not held up
        finally:
            slots.release()
        assert http.post(url, headers=KEY, json=big).status_code == 200
        assert slots.acquire(timeout=0.1)  # the slot was given back
        slots.release()


def test_reset_and_stop_delete_only_what_the_emulator_created(tmp_path: Path) -> None:
    theirs = tmp_path / "their-notes.txt"
    theirs.write_text("not the emulator's")
    with GeminiEmulator(api_key="k", data_dir=str(tmp_path)) as emu:
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=emu.base_url))
        file = client.files.upload(file=io.BytesIO(b"emulator bytes"), config={"mime_type": "text/plain"})
        workdir = tmp_path / WORKDIR_NAME
        stray = workdir / "files" / "dropped-here.txt"  # someone else's file inside the emulator's folder
        stray.write_text("also not the emulator's")
        stored = workdir / "files" / (file.name or "").removeprefix("files/")
        assert stored.exists()
        http.post(f"{emu.base_url}/_emulator/reset", headers={"x-goog-api-key": "k"})
        assert not stored.exists()
        assert stray.exists()
        client.files.upload(file=io.BytesIO(b"more"), config={"mime_type": "text/plain"})
    assert theirs.read_text() == "not the emulator's"
    assert stray.exists()
    assert sorted(p.name for p in (workdir / "files").iterdir()) == ["dropped-here.txt"]


def test_data_dir_is_scratch_space_cleaned_on_start(tmp_path: Path) -> None:
    workdir = tmp_path / WORKDIR_NAME
    (workdir / "uploads").mkdir(parents=True)
    (workdir / "files").mkdir()
    (workdir / MARKER_NAME).touch()
    leftover_upload = workdir / "uploads" / ("u" * 32)  # a crashed run's abandoned upload bytes
    leftover_file = workdir / "files" / "abc123def456"
    not_ours = workdir / "files" / "README.md"
    for path in (leftover_upload, leftover_file, not_ours):
        path.write_bytes(b"x")
    with GeminiEmulator(data_dir=str(tmp_path)) as emu:
        assert not leftover_upload.exists()
        assert not leftover_file.exists()
        assert not_ours.exists()
        assert emu.stats()["files"] == 0  # files do not survive a restart


def test_a_data_dir_the_emulator_did_not_make_is_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / WORKDIR_NAME
    foreign.mkdir()
    (foreign / "important.db").write_text("keep")
    with pytest.raises(RuntimeError, match="was not created by the Gemini emulator"):
        GeminiEmulator(data_dir=str(tmp_path))
    assert (foreign / "important.db").read_text() == "keep"


def test_verbose_logs_redact_upload_session_urls(
    gemini_emulator: GeminiEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="airflow_gemini_files.emulator"):
        start = http.post(
            f"{gemini_emulator.base_url}/upload/v1beta/files",
            headers={**KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
            json={"file": {"mime_type": "text/plain"}},
        )
        url = start.headers["x-goog-upload-url"]
        http.post(
            url,
            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
            content=b"x",
        )
        http.post(url, headers={"X-Goog-Upload-Command": "query"})
    upload_id = httpx.URL(url).params["upload_id"]
    assert "upload_id=REDACTED" in caplog.text
    assert upload_id not in caplog.text
    assert "test-api-key" not in caplog.text
