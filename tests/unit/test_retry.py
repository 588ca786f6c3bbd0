"""How long to wait before another try: connection extras, backoff, RetryInfo and Retry-After, the budget."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest
from google.genai import errors, types

from airflow_gemini_files.hooks.retry import (
    RetryBudget,
    RetryPolicy,
    acall_with_retries,
    call_with_retries,
    retry_after_seconds,
    retry_info_delay,
    server_delay,
)


def test_defaults_retry_the_sdk_statuses_five_times() -> None:
    policy = RetryPolicy.from_connection_extra({})
    assert (policy.attempts, policy.initial_delay, policy.max_delay, policy.max_total_wait) == (5, 1, 30, 180)
    assert sorted(policy.statuses) == [408, 429, 500, 502, 503, 504]
    assert not policy.is_retryable_status(400)
    assert not policy.is_retryable_status(403)


def test_extra_values_may_be_strings_from_the_connection_form() -> None:
    extra = {
        "retry_attempts": "3",
        "retry_initial_delay": "0.5",
        "retry_max_delay": 10,
        "retry_max_total_wait": "45",
        "base_url": "x",
    }
    policy = RetryPolicy.from_connection_extra(extra)
    assert (policy.attempts, policy.initial_delay, policy.max_delay, policy.max_total_wait) == (
        3,
        0.5,
        10,
        45,
    )


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
        ({"retry_max_total_wait": "-1"}, ["retry_max_total_wait", ">= 0"]),
    ],
)
def test_bad_extra_names_the_key_and_the_fix(extra: dict, names: list[str]) -> None:
    with pytest.raises(ValueError, match="Gemini connection extra") as info:
        RetryPolicy.from_connection_extra(extra)
    for name in names:
        assert name in str(info.value)


def test_the_sdk_tries_once_so_our_loop_decides() -> None:
    options = RetryPolicy.sdk_options()
    assert isinstance(options, types.HttpRetryOptions)
    assert options.attempts == 1
    types.HttpOptions(retry_options=options)  # the SDK accepts it as client options


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


def test_a_server_delay_lengthens_the_wait_even_past_max_delay() -> None:
    policy = RetryPolicy(initial_delay=1, max_delay=30, jitter=0)
    assert policy.wait_before_retry(1, server_delay=12) == 12
    assert policy.wait_before_retry(1, server_delay=600) == 600  # the total wait caps it (RetryBudget)
    assert policy.wait_before_retry(3, server_delay=0.1) == 4
    assert policy.wait_before_retry(2) == 2


def _rate_limited(delay: str | None, retry_after: str | None = None) -> errors.APIError:
    details: list = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []}]
    if delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    body = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": details}}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    response = httpx.Response(429, json=body, headers=headers)
    return errors.ClientError(429, body, response)


@pytest.mark.parametrize(
    ("delay", "retry_after", "seconds"),
    [
        ("47s", None, 47),
        ("0.5s", "1", 0.5),  # RetryInfo is the precise value: it wins over the rounded header
        ("1.000340012s", None, 1.000340012),
        (None, "7", 7),
        (None, None, None),
        ("soon", "3", 3),  # a RetryInfo that cannot be read says nothing: the header speaks
        ("-2s", None, 0),
    ],
)
def test_server_delay_reads_retry_info_then_retry_after(delay, retry_after, seconds) -> None:
    assert server_delay(_rate_limited(delay, retry_after)) == seconds


def test_server_delay_of_a_raw_http_response_and_of_other_errors() -> None:
    body = {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]}}
    assert server_delay(httpx.Response(429, json=body)) == 2
    assert server_delay(httpx.Response(503, headers={"Retry-After": "5"}, text="busy")) == 5
    assert server_delay(httpx.Response(503, text="not json")) is None
    assert server_delay(ConnectionResetError()) is None
    assert server_delay(errors.ServerError(503, {"error": {"code": 503}}, None)) is None


def test_retry_info_as_a_seconds_and_nanos_object() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": {"seconds": 3, "nanos": 5e8}}
    assert retry_info_delay({"error": {"details": [info]}}) == 3.5
    assert retry_info_delay({"details": [info]}) == 3.5
    assert retry_info_delay({"error": {"details": "x"}}) is None
    assert retry_info_delay(None) is None


def test_the_budget_counts_attempts_and_gives_up_before_passing_the_total_wait() -> None:
    budget = RetryBudget(RetryPolicy(attempts=5, initial_delay=1, max_total_wait=20, jitter=0))
    assert budget.next_wait() == 1
    assert budget.next_wait(server_delay=10) == 10
    assert budget.next_wait(server_delay=10) is None  # 11 waited, 10 more would make 21 > 20
    assert "the server asks to wait 10.0 s would pass retry_max_total_wait=20 s" in budget.refusal
    assert (budget.retries, budget.waited) == (2, 11)
    assert budget.next_wait() == 4  # its own backoff still fits
    assert budget.next_wait() is None  # 8 s more would make 23 s
    assert budget.refusal == "8.0 s more would pass retry_max_total_wait=20 s (15.0 s waited already)"

    roomy = RetryBudget(RetryPolicy(attempts=3, initial_delay=1, jitter=0))
    assert [roomy.next_wait(), roomy.next_wait(), roomy.next_wait()] == [1, 2, None]
    assert roomy.refusal == "all 3 attempts used"


def test_call_with_retries_waits_what_the_server_asks_and_raises_the_last_error() -> None:
    policy = RetryPolicy(attempts=4, initial_delay=0.1, max_delay=1, jitter=0)
    answers = [_rate_limited("2.5s"), _rate_limited(None, "3"), "done"]
    waits: list[float] = []

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert call_with_retries(call, policy=policy, what="test", sleep=waits.append) == "done"
    assert waits == [2.5, 3]

    refused = errors.ClientError(400, {"error": {"code": 400, "message": "bad"}}, None)
    calls = []

    def bad() -> None:
        calls.append(1)
        raise refused

    with pytest.raises(errors.ClientError) as info:
        call_with_retries(bad, policy=policy, what="test", sleep=waits.append)
    assert info.value is refused
    assert len(calls) == 1, "a refusal is not retried"


def test_a_call_that_creates_something_is_repeated_only_when_nothing_happened(caplog) -> None:
    policy = RetryPolicy(attempts=4, initial_delay=0.1, max_delay=1, jitter=0)
    waits: list[float] = []
    answers: list = [_rate_limited("1s"), httpx.ConnectError("refused"), "created"]

    def create() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert call_with_retries(create, policy=policy, what="create", sleep=waits.append, idempotent=False) == (
        "created"
    )
    assert waits == [1, 0.2]

    def unavailable() -> None:
        raise errors.ServerError(503, {"error": {"code": 503, "status": "UNAVAILABLE"}}, None)

    with pytest.raises(errors.ServerError):
        call_with_retries(unavailable, policy=policy, what="create", sleep=waits.append, idempotent=False)
    assert waits == [1, 0.2]
    assert "create failed (503 UNAVAILABLE); not repeated: the call may have taken effect." in caplog.text


def test_acall_with_retries_uses_the_async_sleep() -> None:
    import asyncio

    policy = RetryPolicy(attempts=3, initial_delay=0.1, max_delay=1, jitter=0, max_total_wait=5)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def always_limited() -> None:
        raise _rate_limited("4s")

    with pytest.raises(errors.ClientError):
        asyncio.run(acall_with_retries(always_limited, policy=policy, what="test", sleep=sleep))
    assert waits == [4], "the second 4 s would pass the 5 s total"


def test_the_details_of_the_error_come_before_its_response_body() -> None:
    def body(delay: str) -> dict:
        info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
        return {"error": {"code": 429, "details": [info]}}

    assert server_delay(errors.ClientError(429, body("2.5s"), None)) == 2.5  # no response at all
    assert server_delay(errors.ClientError(429, body("2s"), httpx.Response(429, json=body("5s")))) == 2


@pytest.mark.parametrize(
    ("value", "seconds"), [({"nanos": 5e8}, 0.5), ({"seconds": 3}, 3), ({"seconds": "x"}, None), (7, None)]
)
def test_a_duration_object_may_leave_out_either_part(value, seconds) -> None:
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": value}
    assert retry_info_delay({"error": {"details": [info]}}) == seconds


def test_the_total_wait_may_be_reached_exactly() -> None:
    budget = RetryBudget(RetryPolicy(attempts=5, initial_delay=1, max_delay=1, max_total_wait=2, jitter=0))
    assert [budget.next_wait(), budget.next_wait(), budget.next_wait()] == [1, 1, None]


def test_each_retry_and_the_give_up_are_logged_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="airflow_gemini_files.hooks.retry")
    policy = RetryPolicy(attempts=3, initial_delay=0.5, max_delay=1, jitter=0)
    failures: list[Exception] = [
        _rate_limited("2.5s"),
        ConnectionResetError("reset by peer"),
        _rate_limited(None),
    ]

    def call() -> None:
        raise failures.pop(0)

    with pytest.raises(errors.ClientError):
        call_with_retries(call, policy=policy, what="files.get files/a", sleep=lambda seconds: None)
    assert [record.getMessage() for record in caplog.records] == [
        "files.get files/a failed (429 RESOURCE_EXHAUSTED); retry 1 of 2 in 2.5 s (the server asked for "
        "2.5 s).",
        "files.get files/a failed (ConnectionResetError: reset by peer); retry 2 of 2 in 1.0 s.",
        "files.get files/a failed (429 RESOURCE_EXHAUSTED); giving up: all 3 attempts used.",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": True}, "retry attempts must be an integer >= 1 (1 = no retries), got True"),
        ({"attempts": 0}, "retry attempts must be an integer >= 1 (1 = no retries), got 0"),
        ({"jitter": True}, "retry jitter must be a number >= 0 (seconds), got True"),
        ({"max_total_wait": -1}, "retry max_total_wait must be a number >= 0 (seconds), got -1"),
        ({"exp_base": 0.5}, "retry exp_base must be >= 1 so delays never shrink, got 0.5"),
        ({"initial_delay": 5, "max_delay": 2}, "retry max_delay (2) must be >= initial_delay (5)"),
    ],
)
def test_a_policy_refuses_bad_values_naming_them(kwargs, message) -> None:
    with pytest.raises(ValueError, match=r"^retry ") as error:
        RetryPolicy(**kwargs)
    assert str(error.value) == message


def test_a_constant_backoff_is_allowed_and_the_statuses_are_a_frozenset() -> None:
    policy = RetryPolicy(exp_base=1, initial_delay=2, jitter=0, statuses=[503])  # type: ignore[arg-type]
    assert list(policy.delays()) == [2, 2, 2, 2]
    assert policy.statuses == frozenset({503})


def test_bad_retry_extras_say_how_to_fix_them() -> None:
    with pytest.raises(ValueError, match=r"^Invalid retry settings") as error:
        RetryPolicy.from_connection_extra({"retry_attempts": 0})
    assert str(error.value) == (
        "Invalid retry settings in the Gemini connection extra (retry attempts must be an integer >= 1 (1 = "
        "no retries), got 0). Fix the extra keys retry_attempts (integer >= 1), retry_initial_delay, "
        "retry_max_delay and retry_max_total_wait (seconds >= 0, max >= initial), or remove them to use the "
        "defaults (5, 1, 30, 180)."
    )
