"""The resumable upload protocol where the SDK cannot reach: offsets, query, sizes, names, limits.

Emulator only: the messages and the request counters are the emulator's (the protocol behaviours the
real service shares are in ``test_contract_upload.py``).
"""

from __future__ import annotations

import base64
import hashlib
import io

import httpx
import pytest
from google import genai
from google.genai import errors

from airflow_gemini_files.emulator import GeminiEmulator

pytestmark = pytest.mark.emulator_only
KEY = "test-api-key"
G = 256 * 1024  # the advertised chunk granularity
# One client for the module: building an httpx.Client (its SSL context) costs ~0.1 s each time.
# No keep-alive: a connection left idle past the emulator's socket_timeout (60 s; slow tests run between
# uses) can be closed by the server just as the next test sends on it.
http = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def _start(emu: GeminiEmulator, size: int | None, **file: str) -> httpx.Response:
    headers = {
        "x-goog-api-key": KEY,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Type": "text/plain",
    }
    if size is not None:
        headers["X-Goog-Upload-Header-Content-Length"] = str(size)
    meta = {"mime_type": "text/plain", **file}
    return http.post(f"{emu.base_url}/upload/v1beta/files", headers=headers, json={"file": meta})


def _chunk(url: str, data: bytes, offset: int, command: str = "upload") -> httpx.Response:
    return http.post(
        url, headers={"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}, content=data
    )


def _query(url: str) -> httpx.Response:
    return http.post(url, headers={"X-Goog-Upload-Command": "query"})


def test_chunks_need_no_api_key_and_finalize_returns_the_file(gemini_emulator: GeminiEmulator) -> None:
    data = b"a" * G + b"def"
    start = _start(gemini_emulator, len(data), display_name="raw")
    assert start.status_code == 200
    assert start.headers["x-goog-upload-status"] == "active"
    url = start.headers["x-goog-upload-url"]
    assert url.startswith(gemini_emulator.base_url + "/upload/v1beta/files?")
    first = _chunk(url, data[:G], 0)
    assert first.headers["x-goog-upload-status"] == "active"
    final = _chunk(url, data[G:], G, "upload, finalize")
    assert final.status_code == 200
    assert final.headers["x-goog-upload-status"] == "final"
    file = final.json()["file"]
    assert file["sizeBytes"] == str(len(data))
    assert file["displayName"] == "raw"
    assert file["sha256Hash"] == base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()


def test_wrong_offset_is_refused_and_query_reports_committed_bytes(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 2 * G + 3).headers["x-goog-upload-url"]
    assert _chunk(url, b"a" * G, 0).status_code == 200

    wrong = _chunk(url, b"x" * G, 2 * G)
    assert wrong.status_code == 400
    assert wrong.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert wrong.headers["x-goog-upload-size-received"] == str(G)
    assert f"committed {G} bytes" in wrong.json()["error"]["message"]

    query = _query(url)
    assert query.status_code == 200
    assert query.headers["x-goog-upload-status"] == "active"
    assert query.headers["x-goog-upload-size-received"] == str(G)

    assert _chunk(url, b"b" * G, G).status_code == 200
    final = _chunk(url, b"ghi", 2 * G, "upload, finalize")
    assert final.json()["file"]["sizeBytes"] == str(2 * G + 3)
    assert gemini_emulator.stats()["requests"]["upload_query"] == 1


def test_misaligned_chunk_is_refused_whole_and_the_session_lives_on(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, G + 10).headers["x-goog-upload-url"]
    refused = _chunk(url, b"a" * (G - 1), 0)
    assert refused.status_code == 400
    assert refused.headers["x-goog-upload-status"] == "active"
    assert refused.headers["x-goog-upload-size-received"] == "0"
    assert f"multiple of {G} bytes" in refused.json()["error"]["message"]
    assert _query(url).headers["x-goog-upload-size-received"] == "0"  # nothing of it was kept
    assert _chunk(url, b"a" * G, 0).status_code == 200
    assert _chunk(url, b"b" * 10, G, "upload, finalize").json()["file"]["sizeBytes"] == str(G + 10)


def test_unsupported_mime_type_is_refused_at_start(gemini_emulator: GeminiEmulator) -> None:
    reply = _start(gemini_emulator, 3, mime_type="application/cu-seeme")
    assert reply.status_code == 400
    assert reply.json()["error"] == {
        "code": 400,
        "message": "Unsupported MIME type: application/cu-seeme",
        "status": "INVALID_ARGUMENT",
    }
    assert "x-goog-upload-url" not in reply.headers


def test_batch_request_files_may_be_uploaded_but_not_prompted(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    jsonl = client.files.upload(
        file=io.BytesIO(b'{"key": "1", "request": {}}\n'), config={"mime_type": "application/jsonl"}
    )
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents=["Read this", jsonl])
    assert info.value.message == "Unsupported MIME type: application/jsonl"


def test_cancel_frees_the_session_its_bytes_and_the_chosen_name(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 2 * G, name="files/cancel-me").headers["x-goog-upload-url"]
    assert _chunk(url, b"a" * G, 0).status_code == 200
    assert list((gemini_emulator.store.root / "uploads").iterdir())
    cancelled = http.post(url, headers={"X-Goog-Upload-Command": "cancel"})
    assert (cancelled.status_code, cancelled.headers["x-goog-upload-status"]) == (200, "cancelled")
    assert not list((gemini_emulator.store.root / "uploads").iterdir())
    assert http.post(url, headers={"X-Goog-Upload-Command": "cancel"}).status_code == 200  # idempotent
    after = _chunk(url, b"a" * G, G)
    assert (after.status_code, after.headers["x-goog-upload-status"]) == (404, "cancelled")
    assert _query(url).headers["x-goog-upload-status"] == "cancelled"
    again = _start(gemini_emulator, 3, name="files/cancel-me").headers["x-goog-upload-url"]
    assert _chunk(again, b"abc", 0, "upload, finalize").json()["file"]["name"] == "files/cancel-me"
    assert gemini_emulator.stats()["requests"]["upload_cancel"] == 2


def test_query_after_finalize_repeats_the_final_answer(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 3, display_name="done").headers["x-goog-upload-url"]
    final = _chunk(url, b"abc", 0, "upload, finalize").json()["file"]
    query = _query(url)
    assert (query.status_code, query.headers["x-goog-upload-status"]) == (200, "final")
    assert query.headers["x-goog-upload-size-received"] == "3"
    assert query.json()["file"]["name"] == final["name"]
    cancel = http.post(url, headers={"X-Goog-Upload-Command": "cancel"})
    assert (cancel.status_code, cancel.headers["x-goog-upload-status"]) == (400, "final")
    assert gemini_emulator.files()[0]["name"] == final["name"]  # a late cancel deletes nothing


def test_finalize_short_of_the_declared_size_is_refused(gemini_emulator: GeminiEmulator) -> None:
    url = _start(gemini_emulator, 10).headers["x-goog-upload-url"]
    reply = _chunk(url, b"abc", 0, "upload, finalize")
    assert reply.status_code == 400
    assert reply.headers["x-goog-upload-status"] == "final"
    assert "10 bytes were declared" in reply.json()["error"]["message"]
    assert gemini_emulator.files() == []
    assert _query(url).status_code == 404  # the session is gone
    assert not list((gemini_emulator.store.root / "uploads").iterdir())


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
    data = bytes(range(256)) * 4096  # 1 MiB, a multiple of the granularity
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
