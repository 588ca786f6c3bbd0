"""files:register against the GCS emulator, with the real google-cloud-storage client and SDK."""

from __future__ import annotations

import itertools

import httpx
import pytest
from google import genai
from google.genai import errors
from google.oauth2.credentials import Credentials

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.testing import GcsEmulator

_BUCKETS = itertools.count()


@pytest.fixture
def bucket_objects(gcs_emulator: GcsEmulator) -> list[str]:
    """Two objects in a new bucket (other tests' buckets are left alone)."""
    storage = gcs_emulator.client()
    bucket = storage.create_bucket(f"register-{next(_BUCKETS)}")
    bucket.blob("docs/a.pdf").upload_from_string(b"%PDF-1.4 tiny", content_type="application/pdf")
    bucket.blob("docs/b notes.txt").upload_from_string(b"hello gcs", content_type="text/plain")
    return [f"gs://{bucket.name}/docs/a.pdf", f"gs://{bucket.name}/docs/b notes.txt"]


def _token() -> Credentials:
    return Credentials(token="offline-token")


def test_register_reads_object_metadata(
    client: genai.Client, gemini_emulator: GeminiEmulator, bucket_objects: list[str]
) -> None:
    response = client.files.register_files(auth=_token(), uris=bucket_objects)
    files = response.files or []
    assert [(f.mime_type, f.size_bytes) for f in files] == [("application/pdf", 13), ("text/plain", 9)]
    assert all(f.source is not None and f.source.name == "REGISTERED" for f in files)
    assert all(f.state is not None and f.state.name == "ACTIVE" for f in files)
    assert [f["name"] for f in gemini_emulator.files()] == [f.name for f in files]
    assert gemini_emulator.stats()["requests"]["register"] == 1
    assert gemini_emulator.store.get(files[1].name or "").source_uri == bucket_objects[1]

    answer = client.models.generate_content(model="gemini-2.5-flash", contents=["What?", *files]).text or ""
    assert f"registered from {bucket_objects[0]}" in answer


def test_register_missing_object_is_refused_and_registers_nothing(
    client: genai.Client, gemini_emulator: GeminiEmulator, bucket_objects: list[str]
) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.files.register_files(
            auth=_token(), uris=[bucket_objects[0], bucket_objects[0].replace("a.pdf", "missing.pdf")]
        )
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    assert "missing.pdf" in (info.value.message or "")
    assert gemini_emulator.files() == []


def test_register_needs_a_bearer_token(gemini_emulator: GeminiEmulator, bucket_objects: list[str]) -> None:
    reply = httpx.post(
        f"{gemini_emulator.base_url}/v1beta/files:register",
        headers={"x-goog-api-key": "test-api-key"},
        json={"uris": bucket_objects},
    )
    assert reply.status_code == 401
    assert reply.json()["error"]["status"] == "UNAUTHENTICATED"


def test_register_processing_and_failure_follow_the_rules(
    client: genai.Client, gemini_emulator: GeminiEmulator, bucket_objects: list[str]
) -> None:
    gemini_emulator.configure(processing_delay=10)
    gemini_emulator.fail_processing("a.pdf", "cannot read this PDF")
    files = client.files.register_files(auth=_token(), uris=bucket_objects).files or []
    assert [f.state.name if f.state else None for f in files] == ["PROCESSING", "PROCESSING"]
    gemini_emulator.advance_clock(11)
    states = [client.files.get(name=f.name or "").state for f in files]
    assert [s.name if s else None for s in states] == ["FAILED", "ACTIVE"]


def test_register_rejects_non_gcs_uris(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.files.register_files(auth=_token(), uris=["https://example.com/a.pdf"])
    assert info.value.code == 400
