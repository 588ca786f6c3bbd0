"""Contract: models.list / models.get / countTokens, unknown models, and generateContent usage metadata."""

from __future__ import annotations

import re

import pytest
from google.genai import errors

from .conftest import Target

MODEL = "gemini-2.5-flash"
_NOT_FOUND = (
    r"^models/{model} is not found for API version v1(beta|alpha)?, or is not supported for {method}\. "
    r"Call ListModels to see the list of available models and their supported methods\.$"
)


def test_models_list_serves_the_current_models(target: Target) -> None:
    models = {m.name: m for m in target.client.models.list(config={"page_size": 100})}
    assert f"models/{MODEL}" in models
    flash = models[f"models/{MODEL}"]
    assert flash.supported_actions is not None
    assert {"generateContent", "countTokens"} <= set(flash.supported_actions)
    assert (flash.input_token_limit or 0) >= 1_000_000


def test_models_get(target: Target) -> None:
    model = target.client.models.get(model=MODEL)
    assert model.name == f"models/{MODEL}"
    assert model.display_name
    assert (model.output_token_limit or 0) > 0
    assert model.thinking is True
    with pytest.raises(errors.ClientError) as info:
        target.client.models.get(model="gemini-2.5-flsh")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")


@pytest.mark.parametrize("model", ["gemini-2.5-flsh", "gemini-1.0-pro", "gpt-4o"])
def test_unknown_model_is_not_found_with_the_real_message(target: Target, model: str) -> None:
    with pytest.raises(errors.ClientError) as info:
        target.client.models.generate_content(model=model, contents="hi")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    assert re.match(
        _NOT_FOUND.format(model=re.escape(model), method="generateContent"), info.value.message or ""
    )
    with pytest.raises(errors.ClientError) as counted:
        target.client.models.count_tokens(model=model, contents="hi")
    assert counted.value.code == 404
    assert re.match(
        _NOT_FOUND.format(model=re.escape(model), method="countTokens"), counted.value.message or ""
    )


def test_count_tokens(target: Target) -> None:
    short = target.client.models.count_tokens(model=MODEL, contents="one two three")
    long = target.client.models.count_tokens(model=MODEL, contents="one two three " * 200)
    assert short.total_tokens
    assert long.total_tokens
    assert long.total_tokens > 10 * short.total_tokens


def test_count_tokens_refuses_unsupported_files(target: Target) -> None:
    from google.genai import types

    part = types.Part.from_bytes(data=b"{}", mime_type="application/cu-seeme")
    with pytest.raises(errors.ClientError) as info:
        target.client.models.count_tokens(model=MODEL, contents=[part])
    assert info.value.message == "Unsupported MIME type: application/cu-seeme"


def test_usage_metadata_adds_up_with_thoughts(target: Target) -> None:
    response = target.client.models.generate_content(
        model=MODEL, contents="Name one prime number.", config={"max_output_tokens": 2048}
    )
    usage = response.usage_metadata
    assert usage is not None
    assert usage.thoughts_token_count
    assert usage.total_token_count == (
        (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0) + usage.thoughts_token_count
    )
    details = usage.prompt_tokens_details or []
    assert [(d.modality.name if d.modality else None, d.token_count) for d in details] == [
        ("TEXT", usage.prompt_token_count)
    ]


def test_no_thoughts_with_a_zero_thinking_budget(target: Target) -> None:
    config = {"thinking_config": {"thinking_budget": 0}, "max_output_tokens": 256}
    usage = target.client.models.generate_content(
        model=MODEL, contents="Name one prime number.", config=config
    ).usage_metadata
    assert usage is not None
    assert not usage.thoughts_token_count
    assert usage.total_token_count == (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0)
