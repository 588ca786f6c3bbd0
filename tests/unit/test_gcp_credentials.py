"""Which GCP identity the hook uses: a connection's key, the Google provider's hook, anonymous, or ADC."""

from __future__ import annotations

import json

import pytest
from doubles import service_account_key

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.hooks import gcs

requires_google_provider = pytest.mark.skipif(
    not gcs.google_provider_available(), reason="apache-airflow-providers-google is not installed"
)
without_google_provider = pytest.mark.skipif(
    gcs.google_provider_available(), reason="tests the fallback used without apache-airflow-providers-google"
)


@pytest.fixture(autouse=True)
def no_default_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test defines the connections it means (the gcs_emulator fixture may have set the default)."""
    monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", raising=False)


@pytest.fixture
def no_adc(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Application Default Credentials that cannot be found (and no metadata server is asked)."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")


def use(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def test_an_anonymous_connection_is_the_explicit_offline_setting(monkeypatch):
    use(monkeypatch, "gcp_offline", {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}})
    access = gcs.gcp_access("gcp_offline")
    assert access.anonymous
    creds = access.register_credentials()
    assert creds.token == gcs.ANONYMOUS_TOKEN
    assert not creds.expired  # the SDK will not try to refresh it
    client = gcs.storage_client(access)
    assert type(client._credentials).__name__ == "AnonymousCredentials"


def test_the_storage_emulator_variable_alone_no_longer_means_anonymous(monkeypatch, no_adc):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    with pytest.raises(GeminiInputError, match="No GCP credentials found"):
        gcs.gcp_access(None)


def test_google_cloud_default_is_used_when_it_is_defined(monkeypatch):
    use(
        monkeypatch,
        "google_cloud_default",
        {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": "true"}},
    )
    access = gcs.gcp_access(None)
    assert (access.conn_id, access.anonymous) == ("google_cloud_default", True)


def test_missing_adc_is_a_clear_error(no_adc):
    with pytest.raises(GeminiInputError) as info:
        gcs.gcp_access(None)
    assert "gcp_conn_id" in str(info.value)
    assert "application-default login" in str(info.value)
    assert "is_anonymous" in str(info.value)


@without_google_provider
@pytest.mark.parametrize("form", ["gcp_provider_extra", "gcp_provider_prefixed", "password", "key_path"])
def test_service_account_key_is_read_from_an_airflow_connection(monkeypatch, tmp_path, form):
    key = service_account_key()
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
    use(monkeypatch, "gcp_docs", conn)
    access = gcs.gcp_access("gcp_docs")
    assert access.credentials.service_account_email == "airflow@nightly-docs.iam.gserviceaccount.com"
    assert access.project == "nightly-docs"
    assert "https://www.googleapis.com/auth/cloud-platform" in access.credentials.scopes


def test_a_generic_connection_with_the_key_as_password_works_with_or_without_the_provider(monkeypatch):
    use(monkeypatch, "gcp_simple", {"conn_type": "generic", "password": json.dumps(service_account_key())})
    assert gcs.gcp_access("gcp_simple").project == "nightly-docs"


@without_google_provider
@pytest.mark.parametrize(
    ("conn", "fragment"),
    [
        ({"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "{not json"}}, "not valid JSON"),
        ({"conn_type": "google_cloud_platform", "extra": {"key_path": "/nope/key.json"}}, "does not exist"),
        ({"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": {"type": "x"}}}, "incomplete"),
        (
            {
                "conn_type": "google_cloud_platform",
                "extra": {"impersonation_chain": "sa@p.iam.gserviceaccount.com"},
            },
            "pip install apache-airflow-providers-google",
        ),
    ],
)
def test_bad_gcp_connections_say_what_to_fix(monkeypatch, conn, fragment):
    use(monkeypatch, "gcp_bad", conn)
    with pytest.raises(GeminiInputError) as info:
        gcs.gcp_access("gcp_bad")
    assert "'gcp_bad'" in str(info.value)
    assert fragment in str(info.value)


@without_google_provider
def test_a_gcp_connection_without_a_key_means_adc_with_its_project(monkeypatch, no_adc):
    use(monkeypatch, "gcp_adc", {"conn_type": "google_cloud_platform", "extra": {"project": "docs"}})
    with pytest.raises(GeminiInputError, match="No GCP credentials found"):
        gcs.gcp_access("gcp_adc")


def test_undefined_gcp_connection_names_the_connection():
    with pytest.raises(GeminiInputError, match=r"'gcp_nowhere'.*not defined"):
        gcs.gcp_access("gcp_nowhere")


@requires_google_provider
def test_with_the_google_provider_its_base_hook_builds_the_credentials(monkeypatch):
    """Impersonation, Secret Manager keys and workload identity come for free through GoogleBaseHook."""
    from airflow.providers.google.common.hooks import base_google

    key = service_account_key(project="provider-built")
    use(monkeypatch, "gcp_provider", {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": key}})
    built: list[str] = []
    original = base_google.GoogleBaseHook.get_credentials_and_project_id

    def spy(self):
        built.append(self.gcp_conn_id)
        return original(self)

    monkeypatch.setattr(base_google.GoogleBaseHook, "get_credentials_and_project_id", spy)
    access = gcs.gcp_access("gcp_provider")
    assert built == ["gcp_provider"]
    assert access.project == "provider-built"
    assert access.credentials.service_account_email == "airflow@provider-built.iam.gserviceaccount.com"


@requires_google_provider
def test_with_the_google_provider_its_errors_name_the_connection(monkeypatch):
    use(monkeypatch, "gcp_broken", {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "{oops"}})
    with pytest.raises(GeminiInputError, match=r"'gcp_broken'.*Google provider could not build credentials"):
        gcs.gcp_access("gcp_broken")
