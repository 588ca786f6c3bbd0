"""gs:// URI parsing and GCP credential selection (no network)."""

from __future__ import annotations

import json

import pytest

from airflow_gemini_files import gcs
from airflow_gemini_files.exceptions import GeminiInputError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://my-bucket/report.pdf", ("my-bucket", "report.pdf")),
        ("gs://my.bucket_1/a/b/c d.pdf", ("my.bucket_1", "a/b/c d.pdf")),
        ("  gs://bkt/x  ", ("bkt", "x")),
    ],
)
def test_valid_uris_split_into_bucket_and_object(uri, expected):
    assert gcs.parse_gs_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("s3://bucket/key", "must start with 'gs://'"),
        ("gs:/bucket/key", "must start with 'gs://'"),
        ("bucket/key.pdf", "must start with 'gs://'"),
        ("gs://", "no bucket"),
        ("gs:///obj", "no bucket"),
        ("gs://bucket", "no object"),
        ("gs://bucket/", "no object"),
        ("gs://Bad_Bucket/x", "invalid bucket name 'Bad_Bucket'"),
        ("gs://ab/x", "invalid bucket name 'ab'"),
        ("gs://bucket/..", "invalid object name"),
        ("gs://bucket/a\nb", "invalid object name"),
        ("https://storage.googleapis.com/bkt/a.pdf", "write it as 'gs://bkt/a.pdf'"),
    ],
)
def test_malformed_uris_name_the_value_and_the_expected_form(uri, fragment):
    with pytest.raises(GeminiInputError) as info:
        gcs.parse_gs_uri(uri)
    assert fragment in str(info.value)
    assert repr(uri) in str(info.value)


def test_non_string_uri_is_rejected():
    with pytest.raises(GeminiInputError, match="not a string"):
        gcs.parse_gs_uri(None)  # type: ignore[arg-type]


def test_offline_credentials_need_no_gcp_configuration(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    creds = gcs.register_credentials(None)
    assert creds.token == gcs.OFFLINE_TOKEN
    assert not creds.expired  # the SDK will not try to refresh it


def test_missing_adc_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(GeminiInputError) as info:
        gcs.register_credentials(None)
    assert "gcp_conn_id" in str(info.value)
    assert "application-default login" in str(info.value)


def _fake_service_account_key() -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "nightly-docs",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "airflow@nightly-docs.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.mark.parametrize("form", ["gcp_provider_extra", "gcp_provider_prefixed", "password", "key_path"])
def test_service_account_key_is_read_from_an_airflow_connection(monkeypatch, tmp_path, form):
    key = _fake_service_account_key()
    if form == "gcp_provider_extra":
        conn = {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": json.dumps(key)}}
    elif form == "gcp_provider_prefixed":
        conn = {
            "conn_type": "google_cloud_platform",
            "extra": {"extra__google_cloud_platform__keyfile_dict": key},
        }
    elif form == "password":
        conn = {"conn_type": "generic", "password": json.dumps(key)}
    else:
        path = tmp_path / "key.json"
        path.write_text(json.dumps(key))
        conn = {"conn_type": "google_cloud_platform", "extra": {"key_path": str(path)}}
    monkeypatch.setenv("AIRFLOW_CONN_GCP_DOCS", json.dumps(conn))
    creds, project = gcs.service_account_credentials("gcp_docs")
    assert creds.service_account_email == "airflow@nightly-docs.iam.gserviceaccount.com"
    assert project == "nightly-docs"
    assert "https://www.googleapis.com/auth/devstorage.read_only" in creds.scopes


@pytest.mark.parametrize(
    ("conn", "fragment"),
    [
        ({"conn_type": "google_cloud_platform"}, "holds no service-account key"),
        ({"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "{not json"}}, "not valid JSON"),
        ({"conn_type": "google_cloud_platform", "extra": {"key_path": "/nope/key.json"}}, "does not exist"),
        ({"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": {"type": "x"}}}, "incomplete"),
    ],
)
def test_bad_gcp_connections_say_what_to_fix(monkeypatch, conn, fragment):
    monkeypatch.setenv("AIRFLOW_CONN_GCP_BAD", json.dumps(conn))
    with pytest.raises(GeminiInputError) as info:
        gcs.service_account_credentials("gcp_bad")
    assert "'gcp_bad'" in str(info.value)
    assert fragment in str(info.value)


def test_undefined_gcp_connection_names_the_connection():
    with pytest.raises(GeminiInputError, match=r"'gcp_nowhere'.*not defined"):
        gcs.register_credentials("gcp_nowhere")
