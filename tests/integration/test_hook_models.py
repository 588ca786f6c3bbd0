"""GeminiHook.check_model against the emulator's model catalogue, through the real SDK."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.hooks.gemini import GeminiHook

_names = itertools.count()


def hook_for(monkeypatch: pytest.MonkeyPatch, emulator, api_key: str | None = None) -> GeminiHook:
    """A hook on the emulator; the models are checked once per process, so each test uses fresh names."""
    conn = {
        "conn_type": "gemini",
        "password": api_key or emulator.api_key,
        "extra": {"base_url": emulator.base_url, "retry_initial_delay": 0, "retry_max_delay": 0.01},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_MODELS", json.dumps(conn))
    hook = GeminiHook(gemini_conn_id="gemini_models")
    hook.sleep = lambda seconds: None
    return hook


def fresh_model(emulator, *others: str) -> str:
    """A model name no other test checked in this process, served next to ``others``."""
    name = f"gemini-test-{next(_names)}-flash"
    emulator.configure(models=[name, *others])
    return name


def test_a_known_model_is_checked_once_per_process(monkeypatch, gemini_emulator):
    name = fresh_model(gemini_emulator)
    hook = hook_for(monkeypatch, gemini_emulator)
    assert hook.check_model(name) == name
    assert hook.check_model(f"models/{name}") == name
    assert hook_for(monkeypatch, gemini_emulator).check_model(f" {name} ") == name  # another hook
    assert gemini_emulator.stats()["requests"]["models"] == 1


def test_a_typo_fails_with_the_close_names_and_is_not_retried(monkeypatch, gemini_emulator):
    gemini_emulator.configure(models=["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"])
    hook = hook_for(monkeypatch, gemini_emulator)
    with pytest.raises(GeminiInputError) as error:
        hook.check_model("gemini-2.5-flsh")
    assert str(error.value) == (
        f"Gemini model 'gemini-2.5-flsh' was not found at {gemini_emulator.base_url} (connection "
        "'gemini_models'). Did you mean 'gemini-2.5-flash' or 'gemini-2.5-flash-lite' or 'gemini-2.5-pro'? "
        "Use a model id such as 'gemini-2.5-flash' (client.models.list() lists them)."
    )
    assert isinstance(error.value, AirflowFailException)
    assert gemini_emulator.stats()["requests"]["models"] == 2  # models.get, models.list


def test_with_no_close_name_the_served_models_are_listed(monkeypatch, gemini_emulator):
    gemini_emulator.configure(models=["gemini-2.5-flash", "gemini-2.5-pro"])
    with pytest.raises(
        GeminiInputError, match=re.escape("models serving generateContent include 'gemini-2.5-flash', ")
    ):
        hook_for(monkeypatch, gemini_emulator).check_model("gpt-4o")


def test_a_model_that_does_not_serve_the_method_is_refused(monkeypatch, gemini_emulator):
    name = fresh_model(gemini_emulator)
    with pytest.raises(GeminiInputError) as error:
        hook_for(monkeypatch, gemini_emulator).check_model(name, method="embedContent")
    assert str(error.value).startswith(
        f"Gemini model '{name}' does not serve embedContent (it serves generateContent, countTokens, "
        "createCachedContent, batchGenerateContent)."
    )


def test_a_check_that_cannot_be_made_lets_the_task_go_on_and_is_tried_again(
    monkeypatch, gemini_emulator, caplog
):
    name = fresh_model(gemini_emulator)
    hook = hook_for(monkeypatch, gemini_emulator)
    gemini_emulator.inject_faults("models", sequence=[503] * 5)  # every attempt of one check
    assert hook.check_model(name) == name
    assert f"Could not check model '{name}' (503 UNAVAILABLE); going on without." in caplog.text
    assert hook.check_model(name) == name  # not cached: asked again, and found
    assert gemini_emulator.stats()["requests"]["models"] == 6


def test_a_rejected_key_fails_the_check_as_every_call(monkeypatch, gemini_emulator):
    with pytest.raises(GeminiInputError, match="rejected the API key"):
        hook_for(monkeypatch, gemini_emulator, api_key="wrong-key").check_model("gemini-2.5-pro")


def test_the_generate_operator_checks_the_model_before_anything_else(gemini_connection, gemini_emulator):
    from doubles import context

    from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator

    gemini_emulator.configure(models=["gemini-2.5-flash"])
    with pytest.raises(GeminiInputError, match=re.escape("Did you mean 'gemini-2.5-flash'")):
        GeminiGenerateContentOperator(
            task_id="ask", model="gemini-25-flash", prompt="Hi", files=["files/never-fetched"]
        ).execute(context())
    requests = gemini_emulator.stats()["requests"]
    assert (requests["get"], requests["generate"]) == (0, 0)
