"""Token usage normalised from what the API and the SDK report, and its price from the dated table."""

from __future__ import annotations

import json
import math

import pytest
from google.genai import types

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.pricing import (
    DEFAULT_PRICES,
    PRICES_AS_OF,
    PRICES_SOURCE,
    PriceTable,
    TokenUsage,
    UnknownModelPriceError,
    cost_report,
    estimate_cost,
    price_table_from_extra,
    sum_usage,
    usage_from_dict,
    usage_from_response,
    usage_report,
)

M = 1_000_000


def response(**metadata: object) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(
        {"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}}], "usage_metadata": metadata}
    )


# Usage ------------------------------------------------------------------------------------------------
def test_a_response_of_a_thinking_model_with_a_cache_and_audio_is_read_in_full() -> None:
    usage = usage_from_response(
        response(
            prompt_token_count=1000,
            cached_content_token_count=300,
            candidates_token_count=120,
            thoughts_token_count=80,
            tool_use_prompt_token_count=7,
            total_token_count=1207,
            prompt_tokens_details=[
                {"modality": "TEXT", "token_count": 600},
                {"modality": "AUDIO", "token_count": 400},
            ],
            cache_tokens_details=[{"modality": "AUDIO", "token_count": 100}],
        )
    )
    assert usage == TokenUsage(
        prompt=1000,
        cached=300,
        candidates=120,
        thoughts=80,
        tool_use_prompt=7,
        audio_prompt=400,
        cached_audio=100,
        total=1207,
        calls=1,
    )
    assert usage.output == 200  # thinking is billed as output


def test_the_api_camel_case_of_a_batch_results_line_reads_the_same() -> None:
    line = {
        "usageMetadata": {
            "promptTokenCount": 50,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 9,
            "totalTokenCount": 64,
            "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 20}],
        }
    }
    assert usage_from_response(line) == TokenUsage(
        prompt=50, candidates=5, thoughts=9, audio_prompt=20, total=64, calls=1
    )


def test_missing_counts_are_zero_and_a_missing_total_is_the_sum_of_the_parts() -> None:
    assert usage_from_response(response(prompt_token_count=10, candidates_token_count=2)) == TokenUsage(
        prompt=10, candidates=2, total=12, calls=1
    )
    assert usage_from_response(types.GenerateContentResponse()) == TokenUsage(calls=1)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "12"])
def test_a_count_that_is_not_a_whole_number_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"prompt_token_count={bad!r}"):
        usage_from_response({"prompt_token_count": bad})


def test_usages_add_up_and_survive_the_xcom_round_trip() -> None:
    a = TokenUsage(prompt=10, cached=2, candidates=3, thoughts=4, total=17, calls=1)
    b = TokenUsage(prompt=1, candidates=1, audio_prompt=1, total=2, calls=1)
    total = sum_usage([a, b])
    assert total == TokenUsage(
        prompt=11, cached=2, candidates=4, thoughts=4, audio_prompt=1, total=19, calls=2
    )
    assert usage_from_dict(json.loads(json.dumps(total.as_dict()))) == total
    assert sum_usage([]) == TokenUsage()
    assert total.as_dict()["thoughts_token_count"] == 4  # the SDK's names, as the usage XCom always had


# Price ------------------------------------------------------------------------------------------------
def test_flash_online_price_counts_cached_audio_and_thinking_at_their_own_rates() -> None:
    usage = TokenUsage(
        prompt=1000, cached=300, audio_prompt=400, cached_audio=100, candidates=120, thoughts=80
    )
    # fresh text 1000-300-300 = 400 at 0.30; fresh audio 400-100 = 300 at 1.00; cached text 200 at 0.03;
    # cached audio 100 at 0.10; output 200 at 2.50 (USD per million)
    expected = (400 * 0.30 + 300 * 1.00 + 200 * 0.03 + 100 * 0.10 + 200 * 2.50) / M
    assert estimate_cost("gemini-2.5-flash", usage) == pytest.approx(expected)
    assert estimate_cost("models/gemini-2.5-flash", usage) == pytest.approx(expected)


def test_batch_halves_input_and_output_but_not_cached_input() -> None:
    usage = TokenUsage(prompt=1000, cached=200, candidates=100)
    online = (800 * 0.30 + 200 * 0.03 + 100 * 2.50) / M
    batch = (800 * 0.15 + 200 * 0.03 + 100 * 1.25) / M
    assert estimate_cost("gemini-2.5-flash", usage) == pytest.approx(online)
    assert estimate_cost("gemini-2.5-flash", usage, batch=True) == pytest.approx(batch)


def test_a_long_prompt_is_billed_whole_at_the_long_context_tier() -> None:
    at_limit = TokenUsage(prompt=200_000, candidates=1000)
    above = TokenUsage(prompt=200_001, candidates=1000)
    assert estimate_cost("gemini-2.5-pro", at_limit) == pytest.approx((200_000 * 1.25 + 1000 * 10) / M)
    assert estimate_cost("gemini-2.5-pro", above) == pytest.approx((200_001 * 2.50 + 1000 * 15) / M)
    assert estimate_cost("gemini-2.5-pro", above, batch=True) == pytest.approx(
        (200_001 * 1.25 + 1000 * 7.5) / M
    )
    # Flash has no tier: the same rate however long the prompt
    assert estimate_cost("gemini-2.5-flash", TokenUsage(prompt=300_000)) == pytest.approx(300_000 * 0.30 / M)


def test_tool_use_prompt_tokens_are_input() -> None:
    assert estimate_cost(
        "gemini-2.5-flash-lite", TokenUsage(prompt=100, tool_use_prompt=50)
    ) == pytest.approx(150 * 0.10 / M)


def test_estimate_cost_takes_a_response_its_metadata_or_the_usage_xcom() -> None:
    reply = response(prompt_token_count=1000, candidates_token_count=100, total_token_count=1100)
    expected = (1000 * 0.30 + 100 * 2.50) / M
    assert estimate_cost("gemini-2.5-flash", reply) == pytest.approx(expected)
    assert estimate_cost("gemini-2.5-flash", reply.usage_metadata) == pytest.approx(expected)
    assert estimate_cost("gemini-2.5-flash", usage_from_response(reply).as_dict()) == pytest.approx(expected)


def test_a_model_without_a_price_is_an_error_naming_it_the_close_names_and_the_fix() -> None:
    with pytest.raises(UnknownModelPriceError) as caught:
        estimate_cost("gemini-2.5-flsh", TokenUsage(prompt=1))
    message = str(caught.value)
    assert "No price for model 'gemini-2.5-flsh'" in message
    assert "Did you mean 'gemini-2.5-flash'" in message
    assert 'extra "prices"' in message
    with pytest.raises(UnknownModelPriceError, match="'gemini-flash-latest'"):  # aliases move: not priced
        estimate_cost("gemini-flash-latest", TokenUsage(prompt=1))


def test_the_default_table_states_its_date_and_source_and_prices_every_emulated_model() -> None:
    from airflow_gemini_files.emulator.models import DEFAULT_MODELS

    assert (DEFAULT_PRICES.as_of, DEFAULT_PRICES.source) == (PRICES_AS_OF, PRICES_SOURCE)
    assert PRICES_SOURCE == "https://ai.google.dev/gemini-api/docs/pricing"
    priced = {model.name for model in DEFAULT_MODELS if not model.name.endswith("-latest")}
    assert priced <= set(DEFAULT_PRICES.models)


def test_usage_report_carries_the_counts_the_price_and_where_it_comes_from() -> None:
    report = usage_report("gemini-2.5-flash", TokenUsage(prompt=1000, candidates=100, total=1100, calls=1))
    assert report["total_token_count"] == 1100
    assert report["estimated_cost"] == pytest.approx(0.00055)
    assert (report["pricing"], report["currency"], report["prices_as_of"]) == ("online", "USD", PRICES_AS_OF)
    assert usage_report("unpriced", TokenUsage(total=1), batch=True)["estimated_cost"] is None
    assert usage_report("unpriced", TokenUsage(total=1), batch=True)["pricing"] == "batch"


# The connection's extra "prices" ------------------------------------------------------------------------
def test_an_override_replaces_one_model_adds_another_and_keeps_the_rest() -> None:
    table = price_table_from_extra(
        {
            "models": {
                "gemini-2.5-flash": {"input": 0.2, "cached_input": 0.02, "output": 2.0},
                "models/my-model": {
                    "input": 1,
                    "cached_input": 0.1,
                    "output": 4,
                    "input_audio": 3,
                    "long_context": {"above_tokens": 1000, "input": 2, "cached_input": 0.2, "output": 8},
                },
            },
            "batch_discount": 0.25,
            "as_of": "2026-12-01",
            "source": "contract 42",
        }
    )
    usage = TokenUsage(prompt=1000, candidates=100)
    assert table.cost("gemini-2.5-flash", usage) == pytest.approx((1000 * 0.2 + 100 * 2.0) / M)
    assert table.cost("my-model", usage) == pytest.approx((1000 * 1 + 100 * 4) / M)
    assert table.cost("my-model", TokenUsage(prompt=1001)) == pytest.approx(1001 * 2 / M)
    assert table.cost("my-model", TokenUsage(prompt=10, audio_prompt=10)) == pytest.approx(10 * 3 / M)
    assert table.cost("my-model", usage, batch=True) == pytest.approx((1000 * 0.75 + 100 * 3) / M)
    assert table.cost("gemini-2.5-pro", usage) == DEFAULT_PRICES.cost("gemini-2.5-pro", usage)
    assert (table.as_of, table.source) == ("2026-12-01", "contract 42")


def test_no_override_is_the_default_table_and_json_text_is_read() -> None:
    assert price_table_from_extra(None) is DEFAULT_PRICES
    assert price_table_from_extra("") is DEFAULT_PRICES
    table = price_table_from_extra('{"batch_discount": 0}')
    assert table.cost("gemini-2.5-flash", TokenUsage(prompt=M), batch=True) == pytest.approx(0.30)
    assert table.as_of == f"{PRICES_AS_OF} with connection overrides"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"models": {"gemini-2.5-flash": {"input": 0.3, "output": 2.5}}},
            r"missing token kind\(s\) \['cached_input'\]",
        ),
        (
            {"models": {"m": {"input": 0.3, "cached_input": 0.03, "output": 2.5, "ouput": 1}}},
            r"unknown token kind\(s\) \['ouput'\]; the kinds are .* \(and long_context\)\.$",
        ),
        (
            {"models": {"m": {"input": -0.3, "cached_input": 0.03, "output": 2.5}}},
            r"input=-0.3 must be a finite number >= 0",
        ),
        (
            {"models": {"m": {"input": "cheap", "cached_input": 0.03, "output": 2.5}}},
            r"input='cheap' is not a number",
        ),
        (
            {"models": {"m": {"input": True, "cached_input": 0.03, "output": 2.5}}},
            r"input=True is not a number",
        ),
        (
            {"models": {"m": {"input": math.nan, "cached_input": 0.03, "output": 2.5}}},
            r"input=nan must be a finite",
        ),
        (
            {"models": {"m": {"input": None, "cached_input": 0.03, "output": 2.5}}},
            r"input=None is not a number",
        ),
        (
            {"models": {"Gemini 2.5 Flash": {"input": 1, "cached_input": 1, "output": 1}}},
            r"'Gemini 2.5 Flash' is not a model id",
        ),
        ({"models": {"m": [0.3, 0.03, 2.5]}}, r"model 'm' must be an object of prices per token kind"),
        (
            {
                "models": {
                    "m": {"input": 1, "cached_input": 1, "output": 1, "long_context": {"above_tokens": 0}}
                }
            },
            r"above_tokens=0 must be a whole number",
        ),
        (
            {"models": {"m": {"input": 1, "cached_input": 1, "output": 1, "long_context": {"input": 2}}}},
            r"long_context: missing token kind\(s\) \['cached_input', 'output'\]",
        ),
        ({"models": ["gemini-2.5-flash"]}, r"models=\['gemini-2.5-flash'\] must map model ids"),
        ({"batch_discount": 1.5}, r"batch_discount=1.5 must be a number from 0 to 1"),
        ({"batch_discount": "half"}, r"batch_discount='half' must be a number from 0 to 1"),
        ({"model": {}}, r"unknown key\(s\) \['model'\]"),
        ([1, 2], r"must be an object"),
        ("{not json", r"is not valid JSON"),
    ],
)
def test_a_bad_price_table_is_refused_naming_the_value(extra: object, message: str) -> None:
    with pytest.raises(GeminiInputError, match=message):
        price_table_from_extra(extra)


def test_the_overridden_model_names_itself_in_the_error() -> None:
    with pytest.raises(GeminiInputError, match=r"model 'my-model': output=-1 must be"):
        price_table_from_extra({"models": {"my-model": {"input": 1, "cached_input": 1, "output": -1}}})


def test_a_table_is_reusable_as_a_base() -> None:
    base = PriceTable(models={}, as_of="x", source="y")
    table = price_table_from_extra({"models": {"a": {"input": 1, "cached_input": 1, "output": 1}}}, base=base)
    assert list(table.models) == ["a"]
    assert table.source == "y"


# What the mutation run showed untested ------------------------------------------------------------------
def test_a_plain_dict_in_the_sdk_spelling_is_read_in_full() -> None:
    reply = {
        "usage_metadata": {
            "prompt_token_count": 100,
            "cached_content_token_count": 40,
            "prompt_tokens_details": [
                {"modality": "AUDIO", "token_count": 30},
                {"modality": "AUDIO", "token_count": 20},  # several entries of one modality add up
                {"modality": "TEXT", "token_count": 50},
            ],
            "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 10}],
        }
    }
    usage = usage_from_response(reply)
    assert (usage.prompt, usage.cached, usage.audio_prompt, usage.cached_audio) == (100, 40, 50, 10)
    with pytest.raises(ValueError, match=r"AUDIO tokens=-1"):
        usage_from_response({"prompt_tokens_details": [{"modality": "AUDIO", "token_count": -1}]})


@pytest.mark.parametrize("key", ["prompt_token_count", "audio_prompt_token_count", "calls"])
def test_a_bad_count_in_the_usage_xcom_is_refused_naming_it(key: str) -> None:
    values = {**TokenUsage(calls=1).as_dict(), key: -3}
    with pytest.raises(ValueError, match=rf"{key}=-3"):
        usage_from_dict(values)


def test_the_usage_xcom_keeps_its_audio_share_when_priced() -> None:
    xcom = TokenUsage(prompt=100, audio_prompt=100, calls=1).as_dict()
    assert estimate_cost("gemini-2.5-flash", xcom) == pytest.approx(100 * 1.00 / M)  # audio rate
    # an API usageMetadata dict is not the XCom: read as a response
    assert estimate_cost("gemini-2.5-flash", {"promptTokenCount": 100}) == pytest.approx(100 * 0.30 / M)


def test_batch_halves_audio_input_but_not_cached_audio() -> None:
    usage = TokenUsage(prompt=300, audio_prompt=300, cached=100, cached_audio=100)
    # fresh audio 200 at 1.00 / 2; cached audio 100 at 0.10
    assert estimate_cost("gemini-2.5-flash", usage, batch=True) == pytest.approx((200 * 0.5 + 100 * 0.10) / M)
    table = price_table_from_extra({"models": {"m": {"input": 1, "cached_input": 0.1, "output": 1}}})
    # a model without audio prices charges audio as text, online and batch
    assert table.cost("m", TokenUsage(prompt=10, audio_prompt=10), batch=True) == pytest.approx(10 * 0.5 / M)


def test_output_alone_costs_only_output() -> None:
    assert estimate_cost("gemini-2.5-flash", TokenUsage(candidates=10)) == pytest.approx(10 * 2.50 / M)


def test_a_name_far_from_any_priced_model_gets_no_suggestion() -> None:
    with pytest.raises(UnknownModelPriceError) as caught:
        estimate_cost("claude-3", TokenUsage())
    assert "Did you mean" not in str(caught.value)


def test_usage_report_prices_batch_rounds_to_micro_dollars_and_names_the_model() -> None:
    usage = TokenUsage(prompt=1000, candidates=100, total=1100, calls=1)
    report = usage_report("models/gemini-2.5-flash", usage, batch=True)
    assert report["estimated_cost"] == pytest.approx(0.000275)
    assert report["model"] == "gemini-2.5-flash"
    assert usage_report("gemini-2.5-flash", TokenUsage(prompt=1))["estimated_cost"] == 0.0  # 3e-7 rounds to 0
    assert DEFAULT_PRICES.describe() == {
        "prices_as_of": PRICES_AS_OF,
        "prices_source": PRICES_SOURCE,
        "currency": "USD",
    }


def test_cost_report_is_a_manifests_cost_entry_and_counts_use_the_batch_manifests_names() -> None:
    usage = TokenUsage(
        prompt=1000, cached=200, candidates=100, thoughts=50, audio_prompt=10, total=1150, calls=2
    )
    assert cost_report("gemini-2.5-flash", usage, batch=True) == {
        "estimated": round(((800 * 0.30 + 150 * 2.50) / 2 + 200 * 0.03 - 10 * 0.15 + 10 * 0.50) / M, 6),
        "pricing": "batch",
        "prices_as_of": PRICES_AS_OF,
        "prices_source": PRICES_SOURCE,
        "currency": "USD",
    }
    assert cost_report("unpriced", usage)["estimated"] is None
    assert cost_report("unpriced", usage)["pricing"] == "online"
    assert usage.counts() == {
        "prompt": 1000,
        "cached": 200,
        "candidates": 100,
        "thoughts": 50,
        "tool_use_prompt": 0,
        "audio_prompt": 10,
        "cached_audio": 0,
        "total": 1150,
    }
    assert TokenUsage(**usage.counts(), calls=2) == usage


def test_free_prices_and_a_free_batch_api_are_accepted() -> None:
    table = price_table_from_extra(
        {"models": {"free": {"input": 0, "cached_input": 0, "output": 0}}, "batch_discount": 1}
    )
    assert table.cost("free", TokenUsage(prompt=M, candidates=M)) == 0.0
    assert table.cost("gemini-2.5-flash", TokenUsage(prompt=M), batch=True) == 0.0
    assert table.currency == "USD"


def test_the_date_says_when_the_connection_changed_the_prices() -> None:
    models = {"m": {"input": 1, "cached_input": 1, "output": 1}}
    assert price_table_from_extra({"models": models}).as_of == f"{PRICES_AS_OF} with connection overrides"
    assert price_table_from_extra({"source": "our copy"}).as_of == PRICES_AS_OF  # same prices


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({5: {"input": 1, "cached_input": 1, "output": 1}}, r"5 is not a model id"),
        (
            {"m": {"input": 1, "cached_input": 1, "output": 1, "long_context": 5}},
            r"long_context=5 must be an object",
        ),
        (
            {"m": {"input": 1, "cached_input": 1, "output": 1, "long_context": {"above_tokens": True}}},
            r"above_tokens=True must be",
        ),
        (
            {
                "m": {
                    "input": 1,
                    "cached_input": 1,
                    "output": 1,
                    "long_context": {"input": 1, "cached_input": 1, "output": 1, "long_context": {}},
                }
            },
            r"long_context: unknown token kind\(s\) \['long_context'\]; the kinds are [a-z_, ]+\.$",
        ),
    ],
)
def test_a_bad_model_entry_is_refused_naming_it(models: object, message: str) -> None:
    with pytest.raises(GeminiInputError, match=message):
        price_table_from_extra({"models": models})


def test_a_long_context_tier_may_start_above_one_token() -> None:
    tier = {"above_tokens": 1, "input": 2, "cached_input": 2, "output": 2}
    table = price_table_from_extra(
        {"models": {"m": {"input": 1, "cached_input": 1, "output": 1, "long_context": tier}}}
    )
    assert table.cost("m", TokenUsage(prompt=1)) == pytest.approx(1 / M)
    assert table.cost("m", TokenUsage(prompt=2)) == pytest.approx(4 / M)
