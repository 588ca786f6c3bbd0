"""files:register against the GCS emulator, with the real google-cloud-storage client and SDK.

Emulator only: the registration modes are the emulator's settings, and the objects live in the GCS
emulator (``test_contract_register.py`` runs registration against the real API).
"""

from __future__ import annotations

import itertools

import httpx
import pytest
from google import genai
from google.genai import errors
from google.oauth2.credentials import Credentials

from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.testing import GcsEmulator

from .conftest import make_client

pytestmark = pytest.mark.emulator_only
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


def _register_raw(emu: GeminiEmulator, uris: list[str], *, key: bool, bearer: bool) -> httpx.Response:
    """What a client without the SDK's header rules sends: the key, a bearer token, both or neither."""
    headers = {}
    if key:
        headers["x-goog-api-key"] = "test-api-key"
    if bearer:
        headers["Authorization"] = "Bearer offline-token"
    return httpx.post(f"{emu.base_url}/v1beta/files:register", headers=headers, json={"uris": uris})


def _reason(reply: httpx.Response) -> tuple[int, str, str | None]:
    error = reply.json()["error"]
    reasons = [d.get("reason") for d in error.get("details", []) if "reason" in d]
    return error["code"], error["status"], reasons[0] if reasons else None


def test_key_only_mode_refuses_the_seed_pattern_as_overloaded_credentials(
    client: genai.Client, gemini_emulator: GeminiEmulator, bucket_objects: list[str]
) -> None:
    gemini_emulator.configure(register_auth="key_only")
    with pytest.raises(errors.ClientError) as info:
        client.files.register_files(auth=_token(), uris=bucket_objects)  # the seed notebook's call
    assert (info.value.code, info.value.status) == (401, "UNAUTHENTICATED")
    assert info.value.message == (
        "API key for authentication is used with other authentication credentials. Expected only one form "
        "of authentication."
    )
    detail = info.value.details["error"]["details"][0]
    assert detail["reason"] == "OVERLOADED_CREDENTIALS"
    assert detail["metadata"]["method"] == "google.ai.generativelanguage.v1beta.FileService.RegisterFiles"
    # The key alone (what python-genai #2535 proposes, through the SDK's private call) is what works.
    files = client.files._register_files(uris=bucket_objects).files or []
    assert [f.source.name if f.source else None for f in files] == ["REGISTERED", "REGISTERED"]
    assert gemini_emulator.stats()["files"] == 2


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("user", (403, "PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")),
        ("service_account", (403, "PERMISSION_DENIED", None)),
    ],
)
def test_key_only_mode_refuses_oauth_identities(
    gemini_emulator: GeminiEmulator, bucket_objects: list[str], identity: str, expected: tuple
) -> None:
    gemini_emulator.configure(register_auth="key_only", register_identity=identity)
    reply = _register_raw(gemini_emulator, bucket_objects, key=False, bearer=True)
    assert _reason(reply) == expected
    if identity == "service_account":
        assert reply.json()["error"]["message"] == (
            "Access to Gemini API is restricted with service accounts. Use authorization keys instead."
        )
    assert gemini_emulator.files() == []


def test_credentials_only_mode_takes_a_bearer_token_alone(
    gemini_emulator: GeminiEmulator, bucket_objects: list[str]
) -> None:
    gemini_emulator.configure(register_auth="credentials_only")
    assert _reason(_register_raw(gemini_emulator, bucket_objects, key=True, bearer=True)) == (
        401,
        "UNAUTHENTICATED",
        "OVERLOADED_CREDENTIALS",
    )
    assert _reason(_register_raw(gemini_emulator, bucket_objects, key=True, bearer=False))[:2] == (
        401,
        "UNAUTHENTICATED",
    )
    reply = _register_raw(gemini_emulator, bucket_objects, key=False, bearer=True)
    assert reply.status_code == 200
    assert len(reply.json()["files"]) == 2


def test_default_mode_is_the_seed_pattern(gemini_emulator: GeminiEmulator, bucket_objects: list[str]) -> None:
    assert gemini_emulator.settings()["register_auth"] == "key_and_bearer"
    assert _register_raw(gemini_emulator, bucket_objects, key=False, bearer=True).status_code == 403
    assert _register_raw(gemini_emulator, bucket_objects, key=True, bearer=True).status_code == 200
    wrong_key = httpx.post(
        f"{gemini_emulator.base_url}/v1beta/files:register",
        headers={"x-goog-api-key": "nope", "Authorization": "Bearer t"},
        json={"uris": bucket_objects},
    )
    assert _reason(wrong_key) == (400, "INVALID_ARGUMENT", "API_KEY_INVALID")


def test_registered_files_live_30_days_and_do_not_count_against_storage(
    client: genai.Client, gemini_emulator: GeminiEmulator, bucket_objects: list[str]
) -> None:
    gemini_emulator.configure(max_project_bytes=5)  # smaller than either object
    files = client.files.register_files(auth=_token(), uris=bucket_objects).files or []
    created, expires = files[0].create_time, files[0].expiration_time
    assert created is not None
    assert expires is not None
    assert (expires - created).total_seconds() == pytest.approx(30 * 24 * 3600, abs=0.1)
    assert gemini_emulator.stats()["bytes"] == 0
    gemini_emulator.advance_clock(29 * 24 * 3600)
    assert client.files.get(name=files[0].name or "").name == files[0].name
    gemini_emulator.advance_clock(24 * 3600)
    with pytest.raises(errors.ClientError) as info:
        client.files.get(name=files[0].name or "")
    assert info.value.code == 403


def test_registered_object_of_a_type_gemini_cannot_read_is_refused_in_generate(
    gcs_emulator: GcsEmulator, client: genai.Client
) -> None:
    bucket = gcs_emulator.client().create_bucket(f"register-{next(_BUCKETS)}")
    bucket.blob("report.docx").upload_from_string(b"PK\x03\x04", content_type="application/msword")
    files = client.files.register_files(auth=_token(), uris=[f"gs://{bucket.name}/report.docx"]).files or []
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents=["Summarise", *files])
    assert info.value.message == "Unsupported MIME type: application/msword"


def test_register_modes_are_settings_restored_by_reset(gemini_emulator: GeminiEmulator) -> None:
    gemini_emulator.configure(register_auth="credentials_only", register_identity="service_account")
    gemini_emulator.reset()
    assert gemini_emulator.settings()["register_auth"] == "key_and_bearer"
    assert gemini_emulator.settings()["register_identity"] == "user"
    with pytest.raises(ValueError, match="register_identity must be one of"):
        gemini_emulator.configure(register_identity="robot")
    assert make_client(gemini_emulator)  # still serving
