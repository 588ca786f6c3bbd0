"""Contract: the resumable upload protocol beyond what the SDK sends: granularity, cancel, late query."""

from __future__ import annotations

import httpx

from .conftest import Target

G = 256 * 1024


def _start(target: Target, http: httpx.Client, size: int) -> httpx.Response:
    return http.post(
        f"{target.base_url}/upload/v1beta/files",
        headers={
            "x-goog-api-key": target.api_key,
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(size),
            "X-Goog-Upload-Header-Content-Type": "text/plain",
        },
        json={"file": {"display_name": "contract upload"}},
    )


def _send(
    http: httpx.Client, url: str, command: str, data: bytes = b"", offset: int | None = None
) -> httpx.Response:
    headers = {"X-Goog-Upload-Command": command}
    if offset is not None:
        headers["X-Goog-Upload-Offset"] = str(offset)
    return http.post(url, headers=headers, content=data)


def test_start_advertises_the_chunk_granularity(target: Target) -> None:
    with target.http() as http:
        start = _start(target, http, 10)
        assert start.status_code == 200
        assert start.headers["x-goog-upload-status"] == "active"
        assert start.headers["x-goog-upload-chunk-granularity"] == str(G)
        assert _send(http, start.headers["x-goog-upload-url"], "cancel").status_code == 200


def test_a_misaligned_non_final_chunk_is_refused_and_nothing_of_it_kept(target: Target) -> None:
    with target.http() as http:
        url = _start(target, http, G + 5).headers["x-goog-upload-url"]
        refused = _send(http, url, "upload", b"a" * 1000, 0)
        assert refused.status_code == 400
        query = _send(http, url, "query")
        assert (query.headers["x-goog-upload-status"], query.headers["x-goog-upload-size-received"]) == (
            "active",
            "0",
        )
        assert _send(http, url, "upload", b"a" * G, 0).status_code == 200
        final = _send(http, url, "upload, finalize", b"b" * 5, G)
        assert final.headers["x-goog-upload-status"] == "final"
        target.track(final.json()["file"])
        assert final.json()["file"]["sizeBytes"] == str(G + 5)


def test_cancel_ends_the_session(target: Target) -> None:
    with target.http() as http:
        url = _start(target, http, 2 * G).headers["x-goog-upload-url"]
        assert _send(http, url, "upload", b"a" * G, 0).status_code == 200
        cancelled = _send(http, url, "cancel")
        assert (cancelled.status_code, cancelled.headers["x-goog-upload-status"]) == (200, "cancelled")
        after = _send(http, url, "upload, finalize", b"a" * G, G)
        assert after.status_code >= 400
        assert after.headers.get("x-goog-upload-status") == "cancelled"


def test_query_after_finalize_answers_final(target: Target) -> None:
    with target.http() as http:
        url = _start(target, http, 4).headers["x-goog-upload-url"]
        final = _send(http, url, "upload, finalize", b"done", 0)
        target.track(final.json()["file"])
        query = _send(http, url, "query")
        assert query.status_code == 200
        assert query.headers["x-goog-upload-status"] == "final"
        assert query.headers["x-goog-upload-size-received"] == "4"
