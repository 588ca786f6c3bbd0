"""The resumable upload protocol where the SDK cannot reach: offsets, query, sizes, names, limits."""

from __future__ import annotations

import base64
import hashlib
import io

import httpx
import pytest
from google import genai
from google.genai import errors

from airflow_gemini_files.emulator import GeminiEmulator

KEY = "test-api-key"
# One client for the module: building an httpx.Client (its SSL context) costs ~0.1 s each time.
http = httpx.Client(timeout=30)


def _start(emu: GeminiEmulator, size: int | None, **file: str) -> httpx.Response:
    headers = {
        "x-goog-api-key": KEY,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Type": "application/octet-stream",
    }
    if size is not None:
        headers["X-Goog-Upload-Header-Content-Length"] = str(size)
    meta = {"mime_type": "application/octet-stream", **file}
    return http.post(f"{emu.base_url}/upload/v1beta/files", headers=headers, json={"file": meta})


def _chunk(url: str, data: bytes, offset: int, command: str = "upload") -> httpx.Response:
    return http.post(
        url, headers={"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}, content=data
    )


def _query(url: str) -> httpx.Response:
    return http.post(url, headers={"X-Goog-Upload-Command": "query"})


def test_chunks_need_no_api_key_and_finalize_returns_the_file(gemini_emulator: GeminiEmulator) -> None:
    start = _start(gemini_emulator, 6, display_name="raw")
    assert start.status_code == 200
    assert start.headers["x-goog-upload-status"] == "active"
    url = start.headers["x-goog-upload-url"]
    assert url.startswith(gemini_emulator.base_url + "/upload/v1beta/files?")
    first = _chunk(url, b"abc", 0)
    assert first.headers["x-goog-upload-status"] == "active"
    final = _chunk(url, b"def", 3, "upload, finalize")
    assert final.status_code == 200
    assert final.headers["x-goog-upload-status"] == "final"
    file = final.json()["file"]
    assert file["sizeBytes"] == "6"
    assert file["displayName"] == "raw"
    assert file["sha256Hash"] == base64.b64encode(hashlib.sha256(b"abcdef").hexdigest().encode()).decode()


def test_wrong_offset_is_refused_and_query_reports_committed_bytes(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 9).headers["x-goog-upload-url"]
    assert _chunk(url, b"abc", 0).status_code == 200

    wrong = _chunk(url, b"xyz", 6)
    assert wrong.status_code == 400
    assert wrong.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert wrong.headers["x-goog-upload-size-received"] == "3"
    assert "committed 3 bytes" in wrong.json()["error"]["message"]

    query = _query(url)
    assert query.status_code == 200
    assert query.headers["x-goog-upload-status"] == "active"
    assert query.headers["x-goog-upload-size-received"] == "3"

    assert _chunk(url, b"def", 3).status_code == 200
    final = _chunk(url, b"ghi", 6, "upload, finalize")
    assert final.json()["file"]["sizeBytes"] == "9"
    assert gemini_emulator.stats()["requests"]["upload_query"] == 1


def test_finalize_short_of_the_declared_size_is_refused(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 10).headers["x-goog-upload-url"]
    reply = _chunk(url, b"abc", 0, "upload, finalize")
    assert reply.status_code == 400
    assert reply.headers["x-goog-upload-status"] == "final"
    assert "10 bytes were declared" in reply.json()["error"]["message"]
    assert gemini_emulator.files() == []
    assert _query(url).status_code == 404  # the session is gone


def test_more_bytes_than_declared_are_refused(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 4).headers["x-goog-upload-url"]
    reply = _chunk(url, b"abcdef", 0, "upload, finalize")
    assert reply.status_code == 400
    assert reply.headers["x-goog-upload-status"] == "final"
    assert "exceeds the declared size of 4" in reply.json()["error"]["message"]


def test_chunked_transfer_encoding_body_is_accepted(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 3000).headers["x-goog-upload-url"]
    pieces = (b"x" * 1000 for _ in range(3))
    reply = http.post(
        url,
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
        content=pieces,
    )
    assert reply.status_code == 200
    assert reply.json()["file"]["sizeBytes"] == "3000"


def test_dropped_connection_mid_chunk_then_resume_from_query(gemini_emulator: GeminiEmulator) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    url = _start(gemini_emulator, 2 * len(data)).headers["x-goog-upload-url"]
    assert _chunk(url, data, 0).status_code == 200
    gemini_emulator.inject_faults("upload_chunk", drop_mid_chunk=1)
    with pytest.raises(httpx.TransportError):
        _chunk(url, data, len(data), "upload, finalize")
    committed = int(_query(url).headers["x-goog-upload-size-received"])
    assert committed == len(data)  # nothing of the cut chunk was kept
    final = _chunk(url, data, committed, "upload, finalize")
    assert final.status_code == 200
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == 3
    expected = base64.b64encode(hashlib.sha256(data + data).hexdigest().encode()).decode()
    assert final.json()["file"]["sha256Hash"] == expected


def test_start_without_api_key_is_refused(gemini_emulator: GeminiEmulator) -> None:
    reply = http.post(
        f"{gemini_emulator.base_url}/upload/v1beta/files",
        headers={"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
        json={"file": {"mime_type": "text/plain"}},
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["status"] == "PERMISSION_DENIED"


def test_unknown_upload_session(gemini_emulator: GeminiEmulator) -> None:
    reply = _chunk(f"{gemini_emulator.base_url}/upload/v1beta/files?upload_id=nope", b"a", 0)
    assert reply.status_code == 404
    assert reply.headers["x-goog-upload-status"] == "final"


def test_caller_chosen_name_taken_is_already_exists(client: genai.Client) -> None:
    client.files.upload(file=io.BytesIO(b"one"), config={"mime_type": "text/plain", "name": "report-2026"})
    with pytest.raises(errors.ClientError) as info:
        client.files.upload(
            file=io.BytesIO(b"two"), config={"mime_type": "text/plain", "name": "files/report-2026"}
        )
    assert (info.value.code, info.value.status) == (409, "ALREADY_EXISTS")


@pytest.mark.parametrize("name", ["-starts-with-dash", "Upper", "has_underscore", "x" * 41, "ends-"])
def test_invalid_caller_names_are_refused(client: genai.Client, name: str) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain", "name": name})
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")


def test_longest_valid_name_and_display_name_are_accepted(client: genai.Client) -> None:
    name = "a" + "-" * 38 + "z"
    file = client.files.upload(
        file=io.BytesIO(b"x"), config={"mime_type": "text/plain", "name": name, "display_name": "d" * 512}
    )
    assert file.name == f"files/{name}"
    assert file.display_name == "d" * 512


def test_display_name_over_512_characters_is_refused(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.files.upload(
            file=io.BytesIO(b"x"), config={"mime_type": "text/plain", "display_name": "d" * 513}
        )
    assert info.value.code == 400
    assert "512" in (info.value.message or "")


def test_per_file_limit(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(max_file_bytes=1000)
    with pytest.raises(errors.ClientError) as info:
        client.files.upload(file=io.BytesIO(b"x" * 1001), config={"mime_type": "text/plain"})
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert (
        client.files.upload(file=io.BytesIO(b"x" * 1000), config={"mime_type": "text/plain"}).size_bytes
        == 1000
    )


def test_per_project_limit_is_resource_exhausted_until_files_are_deleted(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    gemini_emulator.configure(max_project_bytes=2500)
    first = client.files.upload(file=io.BytesIO(b"x" * 1000), config={"mime_type": "text/plain"})
    client.files.upload(file=io.BytesIO(b"x" * 1000), config={"mime_type": "text/plain"})
    with pytest.raises(errors.ClientError) as info:
        client.files.upload(file=io.BytesIO(b"x" * 1000), config={"mime_type": "text/plain"})
    assert (info.value.code, info.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert "file_storage_bytes" in (info.value.message or "")
    assert first.name is not None
    client.files.delete(name=first.name)
    assert (
        client.files.upload(file=io.BytesIO(b"x" * 1000), config={"mime_type": "text/plain"}).size_bytes
        == 1000
    )


def test_reset_restores_configured_limits(gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(max_file_bytes=1, model_latency=3)
    gemini_emulator.reset()
    assert gemini_emulator.settings()["max_file_bytes"] == 2 * 1024**3
    assert gemini_emulator.settings()["model_latency"] == 0
