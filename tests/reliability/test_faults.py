"""Faults: the hook rides out 503/429 and dropped connections, and the nightly DAG still finishes.

The heavy test runs the real nightly DAG (``example_dags/gemini_nightly_document_analysis.py``, upload mode)
over 50 documents of 1 MiB (5 upload chunks each) while the Gemini emulator answers 10 % of every request with
503 and 5 % with 429, and cuts connections half-way through upload chunks. It must end with a result for
every document, nothing left in the Files API, and only failed chunks sent twice. Run it alone, with its
figures::

    uv run pytest tests/reliability/test_faults.py -s -k nightly
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dag_runs import DagRunResult as DagRun
from google.cloud import storage
from google.genai import errors

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.hooks import upload as upload_module
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.hooks.upload import ResumableUpload, UploadStats

from .conftest import set_connection

MiB = 1024 * 1024
CHUNK = 256 * 1024  # the emulator's chunk granularity: a 1.05 MiB document takes 5 chunks
DAG_ID = "gemini_nightly_document_analysis"
DOCUMENTS = 50
DOCUMENT_BYTES = MiB + 50 * 1024
CUT_IN = ("doc-007.txt", "doc-033.txt")
"""Documents whose third chunk has its connection cut half-way (mid-upload, mid-chunk)."""
FAULTS: dict[str, Any] = {"rate": 0.15, "statuses": (503, 503, 429)}
"""15 % of requests fail; the status is drawn from (503, 503, 429): 10 % 503 and 5 % 429."""


@pytest.fixture
def upload_stats(monkeypatch: pytest.MonkeyPatch) -> list[UploadStats]:
    """The :class:`UploadStats` of every upload that completed during the test."""
    recorded: list[UploadStats] = []
    original = ResumableUpload.upload

    def recording(self: ResumableUpload, stream: Any, **kwargs: Any) -> Any:
        file = original(self, stream, **kwargs)
        recorded.append(self.stats)
        return file

    monkeypatch.setattr(ResumableUpload, "upload", recording)
    return recorded


@pytest.fixture
def small_chunks(gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch) -> int:
    """Uploads and GCS read-ahead use 256 KiB chunks (a connection extra): a 1 MiB document has several."""
    set_connection(monkeypatch, gemini_emulator, upload_chunk_size=CHUNK)
    return CHUNK


# ---- hook level -----------------------------------------------------------------------------------
def test_a_wrong_api_key_is_refused_once_and_never_retried(
    gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    set_connection(monkeypatch, gemini_emulator, key="wrong-key-0123")
    hook = GeminiHook()
    with pytest.raises(GeminiInputError) as listing:
        list(hook.list_files())
    document = tmp_path / "report.txt"
    document.write_text("quarterly report\n")
    with pytest.raises(GeminiInputError) as uploading:
        hook.upload_file(str(document))

    for error in (listing.value, uploading.value):
        assert "rejected the API key of connection 'gemini_default'" in str(error)
        assert "password" in str(error)
        assert "wrong-key-0123" not in str(error)
    requests = gemini_emulator.stats()["requests"]
    assert (requests["list"], requests["upload_start"], requests["upload_chunk"]) == (1, 1, 0)


def test_a_503_sequence_is_retried_with_exponential_backoff(
    gemini_emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waits: 0.1, 0.2, 0.4 s (+ jitter, capped at 1 s each) before retries 1-3.
    set_connection(monkeypatch, gemini_emulator, retry_attempts=4, retry_initial_delay=0.1, retry_max_delay=1)
    ref = GeminiHook().upload_file(io.BytesIO(b"hello"), mime_type="text/plain", display_name="hello.txt")
    gemini_emulator.inject_faults("get", sequence=[503, 503, 503])

    started = time.monotonic()
    fresh = GeminiHook().get_file(ref.name)
    waited = time.monotonic() - started

    assert fresh.state == "ACTIVE"
    assert gemini_emulator.stats()["requests"]["get"] == 4
    assert 0.7 <= waited < 10  # at least 0.1 + 0.2 + 0.4 s of backoff; each wait is capped at 1 s

    gemini_emulator.inject_faults("get", sequence=[503, 503, 503, 503])
    with pytest.raises(errors.ServerError) as exhausted:
        GeminiHook().get_file(ref.name)
    assert (exhausted.value.code, exhausted.value.message) == (
        503,
        "The model is overloaded. Please try again later.",
    )
    assert gemini_emulator.stats()["requests"]["get"] == 4 + 4  # attempts=4, then it gives up
    GeminiHook().delete_file(ref)


def test_the_async_client_of_the_trigger_retries_too(
    gemini_emulator: GeminiEmulator, fast_connection: str
) -> None:
    """The deferred sensor polls with ``aget_file`` in the triggerer: 503/429 there are retried as well."""
    import asyncio

    ref = GeminiHook().upload_file(io.BytesIO(b"hello"), mime_type="text/plain", display_name="hello.txt")
    gemini_emulator.inject_faults("get", sequence=[503, 429, 503])

    fresh = asyncio.run(GeminiHook().aget_file(ref.name))

    assert fresh.state == "ACTIVE"
    assert gemini_emulator.stats()["requests"]["get"] == 4
    GeminiHook().delete_file(ref)


def test_a_chunk_cut_mid_body_resumes_and_re_sends_only_that_chunk(
    gemini_emulator: GeminiEmulator,
    fast_connection: str,
    small_chunks: int,
    upload_stats: list[UploadStats],
    tmp_path: Any,
) -> None:
    document = tmp_path / "big.txt"
    document.write_bytes(b"line of text\n" * (3 * MiB // 13))
    gemini_emulator.inject_faults("upload_chunk", sequence=[0, 0, 503])
    cut = _CutChunks(gemini_emulator, when=lambda label, offset: offset == CHUNK)

    with cut:
        ref = GeminiHook().upload_file(str(document))

    [stats] = upload_stats
    assert ref.size_bytes == document.stat().st_size
    assert gemini_emulator.files()[0]["sha256Hash"] == ref.sha256_hash
    assert stats.queries >= 2  # after the 503 and after the cut, the uploader asked where to resume
    assert stats.retries >= 2
    # The cut chunk is sent again whole (the emulator keeps no partial chunk); the 503'd chunk's bytes
    # never reached storage either: each costs exactly one chunk, nothing else is re-sent.
    assert stats.bytes_resent == 2 * CHUNK
    assert stats.bytes_sent == document.stat().st_size + 2 * CHUNK
    GeminiHook().delete_file(ref)
    assert gemini_emulator.files() == []


class _CutChunks:
    """Context manager: cut the connection of the chunk ``when(label, offset)`` picks, once per label."""

    def __init__(self, emulator: GeminiEmulator, *, when: Callable[[str, int], bool]) -> None:
        self.emulator = emulator
        self.monkeypatch = pytest.MonkeyPatch()
        self.when = when
        self.cut: list[tuple[str, int]] = []

    def __enter__(self) -> _CutChunks:
        original = upload_module._Session.send_chunk
        owner = self

        def send_chunk(self: Any, chunk: bytes, chunk_offset: int, *, last: bool) -> Any:
            if (
                owner.when(self.source_name, chunk_offset)
                and (self.source_name, chunk_offset) not in owner.cut
            ):
                owner.cut.append((self.source_name, chunk_offset))
                plan = owner.emulator.faults._plans.get("upload_chunk")
                owner.emulator.inject_faults(
                    "upload_chunk",
                    rate=plan.rate if plan else 0.0,
                    statuses=plan.statuses if plan else (503,),
                    sequence=list(plan.sequence) if plan else None,
                    drop_mid_chunk=1,
                )
            return original(self, chunk, chunk_offset, last=last)

        self.monkeypatch.setattr(upload_module._Session, "send_chunk", send_chunk)
        return self

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.undo()


# ---- the nightly DAG under faults -----------------------------------------------------------------
@pytest.fixture
def documents_bucket(gcs_emulator: Any) -> Iterator[tuple[storage.Bucket, str]]:
    """A bucket holding DOCUMENTS text documents of 1.05 MiB each under ``incoming/faults/``."""
    client = gcs_emulator.client()
    bucket = client.create_bucket(f"reliability-faults-{time.monotonic_ns()}")
    prefix = "incoming/faults/"
    for index in range(DOCUMENTS):
        line = f"Document {index:03d}: invoice line for order {index * 7919 % 10007}, net EUR {index}.\n"
        body = (line * (DOCUMENT_BYTES // len(line) + 1))[:DOCUMENT_BYTES]
        bucket.blob(f"{prefix}doc-{index:03d}.txt").upload_from_string(body, content_type="text/plain")
    yield bucket, prefix
    for blob in client.list_blobs(bucket.name):
        blob.delete()
    bucket.delete()


@pytest.mark.timeout(900)
def test_nightly_dag_over_50_documents_survives_503_429_and_CutChunks(
    run_dag: Callable[..., DagRun],
    gemini_emulator: GeminiEmulator,
    fast_connection: str,
    small_chunks: int,
    upload_stats: list[UploadStats],
    documents_bucket: tuple[storage.Bucket, str],
) -> None:
    import json

    bucket, prefix = documents_bucket
    gemini_emulator.inject_faults("*", **FAULTS)
    gemini_emulator.inject_faults("upload_chunk", **FAULTS)
    cut = _CutChunks(
        gemini_emulator, when=lambda label, offset: label.endswith(CUT_IN) and offset == 2 * CHUNK
    )
    conf = {"bucket": bucket.name, "mode": "upload", "prefix": prefix, "results_prefix": "results/faults/"}

    with cut:
        run = run_dag(DAG_ID, conf)

    # Every document has its result and the manifest counts them all.
    assert run.state == "success", run.tasks
    blobs = {b.name: b for b in bucket.client.list_blobs(bucket.name, prefix="results/faults/")}
    manifest = json.loads(blobs.pop("results/faults/_manifest.json").download_as_bytes())
    assert (manifest["documents"], manifest["succeeded"], manifest["failed"]) == (DOCUMENTS, DOCUMENTS, 0)
    assert sorted(blobs) == [f"results/faults/doc-{i:03d}.txt.json" for i in range(DOCUMENTS)]
    results = [json.loads(blob.download_as_bytes()) for blob in blobs.values()]
    assert all(r["size_bytes"] == DOCUMENT_BYTES for r in results)
    assert len({r["gemini_file"] for r in results}) == DOCUMENTS  # one file per document, no duplicate
    # Nothing is left in the Files API.
    stats = gemini_emulator.stats()
    assert gemini_emulator.files() == []
    assert stats["files"] == 0
    # The faults really happened and were absorbed: both cuts, and retried requests everywhere.
    assert sorted(label.rsplit("/", 1)[1] for label, _ in cut.cut) == sorted(CUT_IN)
    assert len(upload_stats) == DOCUMENTS
    chunks_needed = DOCUMENTS * -(-DOCUMENT_BYTES // CHUNK)
    requests = stats["requests"]
    resent = sum(s.bytes_resent for s in upload_stats)
    sent = sum(s.bytes_sent for s in upload_stats)
    upload_retries = sum(s.retries for s in upload_stats)
    assert requests["upload_start"] > DOCUMENTS  # some starts were refused and retried
    assert requests["upload_chunk"] > chunks_needed
    assert requests["upload_query"] >= 2
    assert upload_retries >= 2
    # Only failed chunks are re-sent: at most one chunk per chunk-level failure.
    chunk_failures = requests["upload_chunk"] - chunks_needed
    assert len(CUT_IN) * CHUNK <= resent <= chunk_failures * CHUNK
    assert sent == DOCUMENTS * DOCUMENT_BYTES + resent
    print(
        f"\nnightly DAG under faults: {DOCUMENTS} documents x {DOCUMENT_BYTES / MiB:.2f} MiB in "
        f"{CHUNK // 1024} KiB chunks; run {run.seconds:.1f} s; requests {requests}; "
        f"upload retries {upload_retries}; chunk requests {requests['upload_chunk']} for {chunks_needed} "
        f"chunks; bytes sent {sent} for {DOCUMENTS * DOCUMENT_BYTES} ({resent} re-sent = "
        f"{resent / (DOCUMENTS * DOCUMENT_BYTES):.2%}); cut chunks {cut.cut}"
    )
