"""ResumableUpload against a scripted in-process resumable-upload server (httpx.MockTransport).

The emulator covers the everyday faults (tests/integration/test_upload*.py); this scripted server
covers the protocol corners it cannot produce: a server that keeps part of a cut chunk, one that
lost bytes before the current chunk, a final reply lost on the wire, chunk granularity.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable

import httpx
import pytest
from google.genai import errors

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.hooks.retry import RetryPolicy
from airflow_gemini_files.hooks.upload import ResumableUpload, ResumableUploadError

KEY = "AIza-secret-key-for-tests"
FAST = RetryPolicy(attempts=4, initial_delay=0.001, max_delay=0.01, jitter=0)
Hook = Callable[[httpx.Request, "FakeScotty"], httpx.Response | None]


class FakeScotty:
    """A minimal server speaking Google's resumable upload protocol, with hooks to misbehave."""

    def __init__(self, granularity: int | None = None) -> None:
        self.data = bytearray()
        self.declared = -1
        self.metadata: dict = {}
        self.final = False
        self.granularity = granularity
        self.requests: list[httpx.Request] = []
        self.before: Hook | None = None  # may answer a request instead of the server

    def file(self) -> dict:
        sha = hashlib.sha256(self.data).hexdigest()
        return {"file": {"name": "files/abc", "sizeBytes": str(len(self.data)), "sha256Hash": sha}}

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if self.before and (answer := self.before(request, self)) is not None:
            return answer
        command = request.headers["x-goog-upload-command"]
        if command == "start":
            if request.headers.get("x-goog-api-key") != KEY:
                body = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}
                return httpx.Response(400, json=body)
            self.metadata = json.loads(request.content)["file"]
            self.declared = int(request.headers["x-goog-upload-header-content-length"])
            headers = {
                "x-goog-upload-url": "http://upload.test/session?upload_id=1",
                "x-goog-upload-status": "active",
            }
            if self.granularity:
                headers["x-goog-upload-chunk-granularity"] = str(self.granularity)
            return httpx.Response(200, headers=headers)
        if command == "query":
            if self.final:
                return httpx.Response(200, headers={"x-goog-upload-status": "final"}, json=self.file())
            return self.active()
        if command == "cancel":
            return httpx.Response(200, headers={"x-goog-upload-status": "cancelled"})
        offset = int(request.headers["x-goog-upload-offset"])
        if offset != len(self.data):
            return httpx.Response(400, json={"error": {"code": 400, "message": "bad offset"}})
        self.data += request.content
        if "finalize" in command:
            assert len(self.data) == self.declared
            self.final = True
            return httpx.Response(200, headers={"x-goog-upload-status": "final"}, json=self.file())
        return self.active()

    def active(self) -> httpx.Response:
        headers = {"x-goog-upload-status": "active", "x-goog-upload-size-received": str(len(self.data))}
        return httpx.Response(200, headers=headers)

    def uploader(self, chunk_size: int = 1000, retry: RetryPolicy = FAST) -> ResumableUpload:
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        return ResumableUpload(
            base_url="http://api.test/",
            api_version="v1beta",
            api_key=KEY,
            retry=retry,
            chunk_size=chunk_size,
            http=http,
        )

    def chunk_offsets(self) -> list[int]:
        return [
            int(r.headers["x-goog-upload-offset"])
            for r in self.requests
            if r.headers["x-goog-upload-command"].startswith("upload")
        ]


class Pipe(io.RawIOBase):
    """A non-seekable stream that returns short reads, like a socket or a pipe."""

    def __init__(self, data: bytes, step: int = 333) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._step if size < 0 else min(size, self._step)
        out, self._data = bytes(self._data[:size]), self._data[size:]
        return out


def payload(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def test_wire_format_matches_the_sdk_and_the_key_only_goes_to_start() -> None:
    server = FakeScotty()
    data = payload(2500)
    file = server.uploader().upload(
        io.BytesIO(data), size=2500, mime_type="application/pdf", display_name="Report", name="report-1"
    )
    assert file.name == "files/abc"
    assert file.size_bytes == 2500
    assert bytes(server.data) == data
    start, *chunks = server.requests
    assert str(start.url) == "http://api.test/upload/v1beta/files"
    assert start.headers["x-goog-upload-protocol"] == "resumable"
    assert start.headers["x-goog-upload-header-content-type"] == "application/pdf"
    assert server.metadata == {
        "mime_type": "application/pdf",
        "size_bytes": 2500,
        "display_name": "Report",
        "name": "files/report-1",
    }
    assert [c.headers["x-goog-upload-command"] for c in chunks] == ["upload", "upload", "upload, finalize"]
    assert server.chunk_offsets() == [0, 1000, 2000]
    assert all("x-goog-api-key" not in c.headers for c in chunks)
    assert all(str(c.url) == "http://upload.test/session?upload_id=1" for c in chunks)


def test_empty_file_sends_one_empty_finalize_chunk() -> None:
    server = FakeScotty()
    file = server.uploader().upload(io.BytesIO(b""), size=0, mime_type="text/plain")
    assert file.size_bytes == 0
    assert [r.headers["x-goog-upload-command"] for r in server.requests] == ["start", "upload, finalize"]


def test_non_seekable_stream_with_short_reads_arrives_whole() -> None:
    server = FakeScotty()
    data = payload(5000)
    upload = server.uploader()
    upload.upload(Pipe(data), size=len(data), mime_type="application/octet-stream")
    assert bytes(server.data) == data
    assert upload.stats.bytes_sent == 5000
    assert upload.stats.bytes_resent == 0


def test_cut_chunk_resumes_from_what_the_server_kept() -> None:
    server = FakeScotty()
    cuts = {"left": 1}

    def keep_half_then_drop(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        if request.headers["x-goog-upload-command"] == "upload" and len(s.data) == 1000 and cuts["left"]:
            cuts["left"] -= 1
            s.data += request.content[:400]  # the server committed part of the body, then the link died
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return None

    server.before = keep_half_then_drop
    data = payload(3000)
    upload = server.uploader()
    upload.upload(Pipe(data), size=len(data), mime_type="application/octet-stream")
    assert bytes(server.data) == data
    assert server.chunk_offsets() == [0, 1000, 1400, 2000]
    stats = upload.stats
    assert stats.retries == 1
    assert stats.queries == 1
    assert stats.bytes_resent == 600  # only what the server did not keep
    assert stats.bytes_sent == 3600


def test_retryable_statuses_back_off_then_succeed_and_honour_retry_after(caplog) -> None:
    server = FakeScotty()
    script = [503, 429]

    def flaky(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        if request.headers["x-goog-upload-command"] == "upload" and script:
            return httpx.Response(script.pop(0), headers={"retry-after": "0"}, json={"error": {"code": 503}})
        return None

    server.before = flaky
    data = payload(2500)
    upload = server.uploader()
    with caplog.at_level(logging.WARNING, logger="airflow_gemini_files.hooks.upload"):
        upload.upload(io.BytesIO(data), size=2500, mime_type="text/plain", source_name="doc.txt")
    assert bytes(server.data) == data
    assert upload.stats.retries == 2
    assert "doc.txt" in caplog.text
    assert "HTTP 503" in caplog.text
    assert "retry 1 of 3" in caplog.text


def test_lost_final_reply_is_recovered_by_query() -> None:
    server = FakeScotty()

    def lose_final(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        if request.headers["x-goog-upload-command"] == "upload, finalize" and not s.final:
            s.before = None
            s.handle(request)  # the server finalizes ...
            raise httpx.ReadError("connection reset", request=request)  # ... but the reply never arrives
        return None

    server.before = lose_final
    file = server.uploader().upload(io.BytesIO(b"abc"), size=3, mime_type="text/plain")
    assert file.name == "files/abc"
    assert bytes(server.data) == b"abc"


def test_server_that_lost_earlier_bytes_rewinds_a_seekable_stream() -> None:
    server = FakeScotty()

    def lose_a_chunk(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        if request.headers["x-goog-upload-command"] == "upload" and len(s.data) == 2000:
            s.before = None
            del s.data[1000:]  # the server forgot the last committed chunk
            return httpx.Response(503, json={"error": {"code": 503}})
        return None

    server.before = lose_a_chunk
    data = payload(3500)
    upload = server.uploader()
    upload.upload(io.BytesIO(data), size=3500, mime_type="text/plain")
    assert bytes(server.data) == data
    assert upload.stats.bytes_resent == 2000  # the lost chunk, and the chunk the 503 refused

    server = FakeScotty()
    server.before = lose_a_chunk
    with pytest.raises(ResumableUploadError, match="cannot seek back"):
        server.uploader().upload(Pipe(data), size=3500, mime_type="text/plain")


def test_granularity_from_the_server_rounds_the_chunk_size() -> None:
    server = FakeScotty(granularity=256)
    data = payload(1500)
    server.uploader(chunk_size=1000).upload(io.BytesIO(data), size=1500, mime_type="text/plain")
    assert server.chunk_offsets() == [0, 768]


def test_bad_api_key_is_not_retried_and_not_echoed() -> None:
    server = FakeScotty()
    uploader = ResumableUpload(
        base_url="http://api.test",
        api_version="v1beta",
        api_key="wrong-key-123",
        retry=FAST,
        http=httpx.Client(transport=httpx.MockTransport(server.handle)),
    )
    with pytest.raises(errors.ClientError) as info:
        uploader.upload(io.BytesIO(b"x"), size=1, mime_type="text/plain")
    assert info.value.code == 400
    assert "API key not valid" in str(info.value)
    assert "wrong-key-123" not in str(info.value)
    assert "wrong-key-123" not in repr(info.value.details)
    assert len(server.requests) == 1


def test_persistent_503_gives_up_after_the_policy_attempts() -> None:
    server = FakeScotty()

    def always_busy(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        if request.headers["x-goog-upload-command"] == "upload":
            return httpx.Response(
                503, json={"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
            )
        return None

    server.before = always_busy
    with pytest.raises(errors.ServerError, match="giving up after 4 attempts"):
        server.uploader().upload(
            io.BytesIO(payload(2500)), size=2500, mime_type="text/plain", source_name="big.bin"
        )


@pytest.mark.parametrize(
    ("stream", "size", "match"),
    [
        (io.BytesIO(b"abc"), 5, "ended after 3 bytes but size=5"),
        (io.BytesIO(b"abcdef"), 3, "more than the announced size=3"),
        (io.StringIO("text"), 4, "binary mode"),
    ],
)
def test_stream_that_does_not_match_its_size_is_refused_and_the_session_cancelled(
    stream: io.IOBase, size: int, match: str
) -> None:
    server = FakeScotty()
    with pytest.raises(GeminiInputError, match=match):
        server.uploader().upload(stream, size=size, mime_type="text/plain")  # type: ignore[arg-type]
    assert not server.final
    if "binary" not in match:
        assert server.requests[-1].headers["x-goog-upload-command"] == "cancel"


def test_progress_is_logged_in_percent_and_mib(caplog) -> None:
    server = FakeScotty()
    with caplog.at_level(logging.INFO, logger="airflow_gemini_files.hooks.upload"):
        server.uploader(chunk_size=100).upload(
            io.BytesIO(payload(1000)), size=1000, mime_type="text/plain", source_name="a.txt"
        )
    lines = [r.getMessage() for r in caplog.records if "%" in r.getMessage()]
    assert 5 <= len(lines) <= 10
    assert "a.txt" in lines[0]
    assert "MiB/s" in lines[0]
    assert "Uploaded a.txt as files/abc" in caplog.text


def test_refused_offset_resyncs_from_what_the_server_reports() -> None:
    server = FakeScotty()

    def skip_ahead(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        if request.headers["x-goog-upload-command"] == "upload" and len(s.data) == 1000:
            s.before = None
            s.data += request.content  # committed, but the client is told "wrong offset"
            headers = {"x-goog-upload-status": "active", "x-goog-upload-size-received": str(len(s.data))}
            return httpx.Response(400, headers=headers, json={"error": {"code": 400, "message": "offset"}})
        return None

    server.before = skip_ahead
    data = payload(3000)
    server.uploader().upload(io.BytesIO(data), size=3000, mime_type="text/plain")
    assert bytes(server.data) == data


def test_giving_up_cancels_the_session() -> None:
    server = FakeScotty()

    def always_busy(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        if request.headers["x-goog-upload-command"].startswith("upload"):
            return httpx.Response(503, json={"error": {"code": 503}})
        return None

    server.before = always_busy
    with pytest.raises(errors.ServerError):
        server.uploader().upload(io.BytesIO(payload(10)), size=10, mime_type="text/plain")
    assert server.requests[-1].headers["x-goog-upload-command"] == "cancel"
    assert "x-goog-api-key" not in server.requests[-1].headers


def test_lost_final_reply_without_a_replay_says_the_file_may_exist() -> None:
    server = FakeScotty()

    def lose_final_then_answer_bare(request: httpx.Request, s: FakeScotty) -> httpx.Response | None:
        command = request.headers["x-goog-upload-command"]
        if command == "upload, finalize" and not s.final:
            s.before = None
            s.handle(request)
            s.before = lose_final_then_answer_bare
            raise httpx.ReadError("connection reset", request=request)
        if command == "query" and s.final:
            return httpx.Response(200, headers={"x-goog-upload-status": "final"})  # no body
        return None

    server.before = lose_final_then_answer_bare
    with pytest.raises(ResumableUploadError, match="completed the upload but its reply was lost"):
        server.uploader().upload(io.BytesIO(b"abc"), size=3, mime_type="text/plain")
