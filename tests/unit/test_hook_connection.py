"""GeminiHook connection handling and input validation that needs no server."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.get_provider_info import get_provider_info
from airflow_gemini_files.hooks.gemini import (
    CONNECTION_EXTRAS,
    DEFAULT_API_VERSION,
    DEFAULT_BASE_URL,
    GeminiConnectionSettings,
    GeminiHook,
    validate_file_name,
)

KEY = "AIzaSy-unit-test-key-0123456789"


def conn(extra: dict | None = None, password: str | None = KEY, conn_id: str = "gemini_unit") -> Connection:
    return Connection(conn_id=conn_id, conn_type="gemini", password=password, extra=json.dumps(extra or {}))


def test_extras_become_sdk_http_options_and_our_retry_policy():
    settings = GeminiConnectionSettings.from_connection(
        conn(
            {
                "base_url": "http://127.0.0.1:8765",
                "api_version": "v1beta",
                "timeout": "12.5",
                "retry_attempts": "3",
                "retry_initial_delay": 0.5,
                "retry_max_delay": 4,
                "retry_max_total_wait": "60",
            }
        )
    )
    options = settings.http_options()
    assert options.base_url == "http://127.0.0.1:8765"
    assert options.api_version == "v1beta"
    assert options.timeout == 12500
    # The SDK tries once (its retries read neither RetryInfo nor Retry-After); the hook retries.
    assert options.retry_options is not None
    assert options.retry_options.attempts == 1
    retry = settings.retry
    assert (retry.attempts, retry.initial_delay, retry.max_delay, retry.max_total_wait) == (3, 0.5, 4, 60)


def test_defaults_are_the_gemini_api_and_the_sdks_default_version():
    settings = GeminiConnectionSettings.from_connection(conn())
    options = settings.http_options()
    assert options.base_url == DEFAULT_BASE_URL == "https://generativelanguage.googleapis.com/"
    assert options.api_version == DEFAULT_API_VERSION == "v1"
    assert options.timeout is None
    assert (settings.retry.attempts, settings.retry.max_total_wait) == (5, 180)
    assert settings.upload_chunk_size == 8 * 1024 * 1024
    assert settings.register_auth == "key_and_bearer"


@pytest.mark.parametrize("mode", ["key_and_bearer", "key_only", " key_only "])
def test_register_auth_is_a_connection_extra(mode):
    settings = GeminiConnectionSettings.from_connection(conn({"register_auth": mode}))
    assert settings.register_auth == mode.strip()


def test_register_auth_credentials_only_is_refused_because_the_sdk_needs_a_key():
    with pytest.raises(GeminiInputError) as info:
        GeminiConnectionSettings.from_connection(conn({"register_auth": "credentials_only"}))
    message = str(info.value)
    assert "'gemini_unit'" in message
    assert "No API key was provided" in message
    assert "Use 'key_and_bearer' (the default) or 'key_only'." in message


def test_the_sdk_client_and_the_uploader_take_the_version_from_the_connection():
    settings = GeminiConnectionSettings.from_connection(conn({"api_version": "v1beta"}))
    hook = GeminiHook(gemini_conn_id="gemini_unit")
    hook.__dict__["settings"] = settings
    assert hook.client._api_client._http_options.api_version == "v1beta"


@pytest.mark.parametrize(
    ("value", "expected"), [("262144", 262144), (1048576, 1048576), (None, 8 * 1024 * 1024)]
)
def test_upload_chunk_size_is_a_connection_extra(value, expected):
    assert (
        GeminiConnectionSettings.from_connection(conn({"upload_chunk_size": value})).upload_chunk_size
        == expected
    )


@pytest.mark.parametrize("value", [0, -262144, 1000, "big", 262144.5, True])
def test_upload_chunk_size_must_be_a_multiple_of_256_kib(value):
    with pytest.raises(GeminiInputError, match=r"upload_chunk_size=.*multiple of 262144 bytes"):
        GeminiConnectionSettings.from_connection(conn({"upload_chunk_size": value}))


def test_the_connection_form_lists_every_extra_the_hook_understands():
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert set(fields) == CONNECTION_EXTRAS


def test_api_key_never_shows_in_the_settings_repr():
    settings = GeminiConnectionSettings.from_connection(conn())
    assert KEY not in repr(settings)


@pytest.mark.parametrize("password", [None, "", "   "])
def test_missing_api_key_names_the_connection_and_the_fix(password):
    with pytest.raises(GeminiInputError) as info:
        GeminiConnectionSettings.from_connection(conn(password=password))
    assert "'gemini_unit'" in str(info.value)
    assert "password" in str(info.value)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"timeout": "soon"}, "timeout='soon'"),
        ({"timeout": -1}, "timeout=-1"),
        ({"base_url": "127.0.0.1:8765"}, "base_url='127.0.0.1:8765'"),
        ({"api_version": "beta"}, "api_version='beta'"),
        ({"retry_attempts": "many"}, "retry_attempts='many'"),
        ({"retry_attempts": 0}, "retry_attempts"),
        ({"retry_max_total_wait": "long"}, "retry_max_total_wait='long'"),
        ({"register_auth": "oauth"}, "register_auth='oauth'"),
    ],
)
def test_bad_extras_name_the_key_the_value_and_the_connection(extra, fragment):
    with pytest.raises(GeminiInputError) as info:
        GeminiConnectionSettings.from_connection(conn(extra))
    assert fragment in str(info.value)
    assert "'gemini_unit'" in str(info.value)
    assert KEY not in str(info.value)


def test_unknown_extras_are_logged_not_fatal(caplog):
    caplog.set_level("WARNING")
    GeminiConnectionSettings.from_connection(conn({"base_ulr": "http://x"}))
    assert "base_ulr" in caplog.text


def test_client_is_built_once_per_hook_from_the_environment_connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_GEMINI_ENV",
        json.dumps({"conn_type": "gemini", "password": KEY, "extra": {"base_url": "http://127.0.0.1:9"}}),
    )
    hook = GeminiHook(gemini_conn_id="gemini_env")
    assert hook.client is hook.client
    assert hook.get_conn() is hook.client
    assert hook.client._api_client._http_options.base_url == "http://127.0.0.1:9"
    assert not hook.client.vertexai


def test_undefined_connection_says_how_to_create_it():
    with pytest.raises(GeminiInputError) as info:
        _ = GeminiHook(gemini_conn_id="gemini_nowhere").client
    assert "'gemini_nowhere'" in str(info.value)
    assert "AIRFLOW_CONN_GEMINI_NOWHERE" in str(info.value)


def test_connection_form_relabels_the_password_as_api_key():
    behaviour = GeminiHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"password": "API key"}
    assert "login" in behaviour["hidden_fields"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("files/report-2026", "files/report-2026"), ("abc123", "files/abc123"), ("a", "files/a")],
)
def test_valid_file_names_normalise_to_files_prefix(name, expected):
    assert validate_file_name(name) == expected


@pytest.mark.parametrize("name", ["files/Report", "-abc", "abc-", "files/a_b", "x" * 41, "", "files/"])
def test_invalid_file_names_are_refused_with_the_rule(name):
    with pytest.raises(GeminiInputError, match="lowercase letters, digits or dashes"):
        validate_file_name(name)


def test_a_file_name_that_is_not_a_string_is_refused_naming_it():
    with pytest.raises(GeminiInputError, match=r"123 \(a int\) is not a Gemini file name"):
        validate_file_name(123)  # type: ignore[arg-type]


def test_the_async_client_reads_the_connection_without_a_blocking_call(monkeypatch):
    import asyncio

    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_ASYNC", json.dumps({"conn_type": "gemini", "password": KEY}))
    hook = GeminiHook(gemini_conn_id="gemini_async")

    def blocking(*args, **kwargs):
        raise AssertionError("the trigger's event loop must not read the connection with a blocking call")

    monkeypatch.setattr(hook, "get_connection", blocking)
    client = asyncio.run(hook.aget_client())
    assert client is hook.client.aio
