"""RetryPolicy: connection extras, SDK options, backoff delays and Retry-After."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest
from google.genai import types

from airflow_gemini_files.hooks.retry import RetryPolicy, retry_after_seconds


def test_defaults_retry_the_sdk_statuses_five_times() -> None:
    policy = RetryPolicy.from_connection_extra({})
    assert (policy.attempts, policy.initial_delay, policy.max_delay) == (5, 1.0, 30.0)
    assert sorted(policy.statuses) == [408, 429, 500, 502, 503, 504]
    assert not policy.is_retryable_status(400)
    assert not policy.is_retryable_status(403)


def test_extra_values_may_be_strings_from_the_connection_form() -> None:
    extra = {"retry_attempts": "3", "retry_initial_delay": "0.5", "retry_max_delay": 10, "base_url": "x"}
    policy = RetryPolicy.from_connection_extra(extra)
    assert (policy.attempts, policy.initial_delay, policy.max_delay) == (3, 0.5, 10.0)


def test_empty_extra_values_fall_back_to_defaults() -> None:
    assert RetryPolicy.from_connection_extra({"retry_attempts": "", "retry_max_delay": None}) == RetryPolicy()
    assert RetryPolicy.from_connection_extra(None) == RetryPolicy()


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"retry_attempts": "five"}, ["retry_attempts", "'five'"]),
        ({"retry_attempts": 2.5}, ["retry_attempts", "whole number"]),
        ({"retry_attempts": True}, ["retry_attempts", "boolean"]),
        ({"retry_attempts": 0}, ["retry_attempts", ">= 1"]),
        ({"retry_initial_delay": "-1"}, ["retry_initial_delay", ">= 0"]),
        ({"retry_max_delay": "soon"}, ["retry_max_delay", "'soon'"]),
        ({"retry_initial_delay": 10, "retry_max_delay": 5}, ["retry_max_delay", "max >= initial"]),
    ],
)
def test_bad_extra_names_the_key_and_the_fix(extra: dict, names: list[str]) -> None:
    with pytest.raises(ValueError, match="Gemini connection extra") as info:
        RetryPolicy.from_connection_extra(extra)
    for name in names:
        assert name in str(info.value)


def test_to_sdk_gives_the_same_policy_to_the_client() -> None:
    policy = RetryPolicy(attempts=4, initial_delay=0.25, max_delay=8, exp_base=3, jitter=0.5)
    options = policy.to_sdk()
    assert isinstance(options, types.HttpRetryOptions)
    assert options.attempts == 4
    assert options.initial_delay == 0.25
    assert options.max_delay == 8
    assert options.exp_base == 3
    assert options.jitter == 0.5
    assert options.http_status_codes == [408, 429, 500, 502, 503, 504]
    # The SDK accepts it as client options.
    types.HttpOptions(retry_options=options)


def test_delays_grow_exponentially_within_jitter_and_cap() -> None:
    policy = RetryPolicy(attempts=7, initial_delay=1, max_delay=10, exp_base=2, jitter=0.5)
    delays = list(policy.delays(random.Random(7)))
    assert len(delays) == 6  # attempts counts the first try
    for n, delay in enumerate(delays[:4]):
        assert 2**n <= delay <= 2**n + 0.5
    assert delays[4:] == [10, 10]


def test_no_jitter_is_deterministic_and_one_attempt_never_waits() -> None:
    assert list(RetryPolicy(attempts=3, initial_delay=0.1, jitter=0).delays()) == [0.1, 0.2]
    assert list(RetryPolicy(attempts=1).delays()) == []


def test_jitter_spreads_concurrent_clients() -> None:
    policy = RetryPolicy(initial_delay=1, jitter=1)
    rng = random.Random(1)
    first_retries = {round(policy.delay(1, rng), 3) for _ in range(20)}
    assert len(first_retries) > 10


def test_huge_retry_numbers_stay_at_max_delay() -> None:
    assert RetryPolicy(max_delay=30, jitter=0).delay(5000) == 30


def test_connection_errors_and_timeouts_are_transient() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/upload")
    assert RetryPolicy.is_transient_error(httpx.ConnectError("refused", request=request))
    assert RetryPolicy.is_transient_error(httpx.RemoteProtocolError("peer closed", request=request))
    assert RetryPolicy.is_transient_error(httpx.ReadTimeout("slow", request=request))
    assert RetryPolicy.is_transient_error(ConnectionResetError())
    assert not RetryPolicy.is_transient_error(ValueError("bad input"))


def test_retry_after_in_seconds_and_as_http_date() -> None:
    assert retry_after_seconds({"Retry-After": "7"}) == 7
    assert retry_after_seconds({"retry-after": " 1.5 "}) == 1.5
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(20)
    assert retry_after_seconds({"Retry-After": "-3"}) == 0
    assert retry_after_seconds({"Retry-After": "tomorrow"}) is None
    assert retry_after_seconds({}) is None


def test_retry_after_lengthens_the_wait_but_never_past_max_delay() -> None:
    policy = RetryPolicy(initial_delay=1, max_delay=30, jitter=0)
    assert policy.wait_before_retry(1, retry_after=12) == 12
    assert policy.wait_before_retry(1, retry_after=600) == 30
    assert policy.wait_before_retry(3, retry_after=0.1) == 4
    assert policy.wait_before_retry(2) == 2
