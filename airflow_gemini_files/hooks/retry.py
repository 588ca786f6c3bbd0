"""How long to wait before another try, for every call the provider makes: SDK calls, uploads, GCS reads.

One policy (:class:`RetryPolicy`, from the Gemini connection's extras) and one rule: the next try waits
the exponential backoff with jitter, or longer when the server asked for more (``RetryInfo.retryDelay``
in the error details, else a ``Retry-After`` header: :func:`server_delay`), and a call gives up when its
attempts are used or when the next wait would take the time spent waiting past ``max_total_wait``
(:class:`RetryBudget`). :func:`call_with_retries` / :func:`acall_with_retries` apply it to one SDK call;
the google-genai client's own retries are off (:meth:`RetryPolicy.sdk_options`), because they ignore
``RetryInfo`` and ``Retry-After`` and differ between SDK versions.

Which errors are worth another try is decided in :mod:`airflow_gemini_files.hooks.policy`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_gemini_files.hooks.policy import (
    RETRYABLE_STATUSES,
    is_network_error,
    is_transient,
    was_not_processed,
)
from airflow_gemini_files.naming import printable

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_TOTAL_WAIT = 180.0
"""Seconds one call may spend waiting between its tries, in total (extra ``retry_max_total_wait``)."""

if TYPE_CHECKING:
    from google.genai import types

_EXTRA_KEYS = {
    "retry_attempts": "attempts",
    "retry_initial_delay": "initial_delay",
    "retry_max_delay": "max_delay",
    "retry_max_total_wait": "max_total_wait",
}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d*)?|-?\.\d+)s\s*$")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, as the SDK's `HttpRetryOptions` describe it, plus a total cap.

    `attempts` counts the first try too (1 = never retry). The n-th retry waits
    `min(max_delay, initial_delay * exp_base ** (n - 1) + uniform(0, jitter))` seconds (the formula of
    tenacity's `wait_exponential_jitter`), or what the server asked for when that is longer. The waits of
    one call add up to at most `max_total_wait` seconds: a call whose next wait would pass it gives up.
    """

    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0
    max_total_wait: float = DEFAULT_MAX_TOTAL_WAIT
    exp_base: float = 2.0
    jitter: float = 1.0
    statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(
                f"retry attempts must be an integer >= 1 (1 = no retries), got {self.attempts!r}"
            )
        for name in ("initial_delay", "max_delay", "max_total_wait", "exp_base", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"retry {name} must be a number >= 0 (seconds), got {value!r}")
        if self.exp_base < 1:
            raise ValueError(f"retry exp_base must be >= 1 so delays never shrink, got {self.exp_base!r}")
        if self.max_delay < self.initial_delay:
            raise ValueError(
                f"retry max_delay ({self.max_delay!r}) must be >= initial_delay ({self.initial_delay!r})"
            )
        object.__setattr__(self, "statuses", frozenset(self.statuses))

    @classmethod
    def from_connection_extra(cls, extra: Mapping[str, Any] | None) -> RetryPolicy:
        """Build the policy from a Gemini connection's extra.

        Reads `retry_attempts` (default 5, counting the first try), `retry_initial_delay` (default 1 s),
        `retry_max_delay` (default 30 s) and `retry_max_total_wait` (default 180 s); other keys are
        ignored. Values may be numbers or numeric strings (the connection form stores strings).
        """
        kwargs: dict[str, Any] = {}
        for key, attr in _EXTRA_KEYS.items():
            value = number_extra(key, (extra or {}).get(key), integer=attr == "attempts")
            if value is not None:
                kwargs[attr] = value
        try:
            return cls(**kwargs)
        except ValueError as err:
            raise ValueError(
                f"Invalid retry settings in the Gemini connection extra ({err}). Fix the extra keys "
                "retry_attempts (integer >= 1), retry_initial_delay, retry_max_delay and "
                "retry_max_total_wait (seconds >= 0, max >= initial), or remove them to use the defaults "
                f"(5, 1, 30, {DEFAULT_MAX_TOTAL_WAIT:g})."
            ) from None

    @staticmethod
    def sdk_options() -> types.HttpRetryOptions:
        """The google-genai client's own retry options: one try, so :func:`call_with_retries` decides.

        ``attempts=1`` (not None) also stops the SDK's implicit retry of dropped aiohttp connections.
        """
        from google.genai import types

        return types.HttpRetryOptions(attempts=1)

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds of backoff before retry number `retry_number` (1 = the first retry)."""
        if retry_number < 1:
            raise ValueError(f"retry_number starts at 1, got {retry_number}")
        noise = (rng or random).uniform(0, self.jitter) if self.jitter else 0.0
        try:
            base = self.initial_delay * self.exp_base ** (retry_number - 1)
        except OverflowError:
            base = self.max_delay
        return max(0.0, min(self.max_delay, base + noise))

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The backoff before each retry: `attempts - 1` values, then the generator ends."""
        for number in range(1, self.attempts):
            yield self.delay(number, rng)

    def is_retryable_status(self, status: int) -> bool:
        """True when an HTTP status is worth another try under this policy."""
        return status in self.statuses

    @staticmethod
    def is_transient_error(exc: BaseException) -> bool:
        """True for connection-level failures (refused, reset, dropped, timed out); see the policy module."""
        return is_network_error(exc)

    def wait_before_retry(self, retry_number: int, server_delay: float | None = None) -> float:
        """The wait before retry `retry_number`: the backoff, or the server's requested delay if longer."""
        wait = self.delay(retry_number)
        return max(wait, server_delay) if server_delay is not None else wait


class RetryBudget:
    """The retries of one call: how long to wait before the next try, or that the call must give up.

    Create one per call (or per run of failures that made no progress); :meth:`next_wait` counts each
    retry and the time waited, under the policy's `attempts` and `max_total_wait`.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retries = 0
        self.waited = 0.0
        self.refusal = ""
        """Why :meth:`next_wait` last said give up (for the log)."""

    def next_wait(self, server_delay: float | None = None) -> float | None:
        """Seconds to wait before the next try, or None when the call must give up now.

        ``server_delay`` is what the server asked for (:func:`server_delay`). A wait that would take the
        call's total past ``max_total_wait`` gives up at once: waiting less than the server asked is no use.
        """
        if self.retries + 1 >= self.policy.attempts:
            self.refusal = f"all {self.policy.attempts} attempts used"
            return None
        wait = self.policy.wait_before_retry(self.retries + 1, server_delay)
        if self.waited + wait > self.policy.max_total_wait:
            asked = f"the server asks to wait {wait:.1f} s" if wait == server_delay else f"{wait:.1f} s more"
            self.refusal = (
                f"{asked} would pass retry_max_total_wait={self.policy.max_total_wait:g} s "
                f"({self.waited:.1f} s waited already)"
            )
            return None
        self.retries += 1
        self.waited += wait
        return wait


# What the server asked for -------------------------------------------------------------------------------
def server_delay(problem: Any) -> float | None:
    """Seconds the server asked to wait before another try, or None when it asked nothing.

    ``problem`` is an SDK error (``google.genai.errors.APIError``) or an HTTP response (httpx). Read
    from ``RetryInfo.retryDelay`` in the error's details first (the API's own, precise value), else from
    the ``Retry-After`` header.
    """
    body = getattr(problem, "details", None)
    response = problem if hasattr(problem, "status_code") else getattr(problem, "response", None)
    if body is None and response is not None:
        body = _json_body(response)
    delay = retry_info_delay(body)
    if delay is not None:
        return delay
    headers = getattr(response, "headers", None)
    return retry_after_seconds(headers) if headers is not None else None


def retry_info_delay(body: Any) -> float | None:
    """``RetryInfo.retryDelay`` (seconds) in an error body ``{"error": {"details": [...]}}``, or None."""
    error = body.get("error", body) if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, Mapping) and detail.get("@type") == _RETRY_INFO:
            return _duration_seconds(detail.get("retryDelay"))
    return None


def _duration_seconds(value: Any) -> float | None:
    """A protobuf Duration as JSON (``"47s"``, ``"0.5s"``) or as ``{"seconds", "nanos"}``; None if neither."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        return max(0.0, float(match.group(1))) if match else None
    if isinstance(value, Mapping):
        try:
            return max(0.0, float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9)
        except (TypeError, ValueError):
            return None
    return None


def _json_body(response: Any) -> Any:
    try:
        text = response.text
    except Exception:  # a streamed body not read, or no text at all
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date); None if absent or bad."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# One call, retried ---------------------------------------------------------------------------------------
def _wait_after(error: Exception, budget: RetryBudget, what: str, idempotent: bool) -> float | None:
    """The wait before retrying ``what`` after ``error``, or None (logged) when it must not be retried."""
    if not is_transient(error):
        return None
    reason = _describe(error)
    if not idempotent and not was_not_processed(error):
        log.warning("%s failed (%s); not repeated: the call may have taken effect.", what, reason)
        return None
    asked = server_delay(error)
    wait = budget.next_wait(asked)
    if wait is None:
        log.warning("%s failed (%s); giving up: %s.", what, reason, budget.refusal)
        return None
    because = f" (the server asked for {asked:g} s)" if asked else ""
    log.warning(
        "%s failed (%s); retry %d of %d in %.1f s%s.",
        what,
        reason,
        budget.retries,
        budget.policy.attempts - 1,
        wait,
        because,
    )
    return wait


def call_with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], Any] = time.sleep,
    idempotent: bool = True,
) -> T:
    """Call ``fn()``, retrying transient failures under ``policy``; the last error is raised as it came.

    Transient means :func:`~airflow_gemini_files.hooks.policy.is_transient` (408, 429 other than a full
    storage quota, 5xx, dropped connections). A call that creates something (``idempotent=False``) is
    repeated only after failures that prove nothing happened
    (:func:`~airflow_gemini_files.hooks.policy.was_not_processed`). ``what`` names the call in the log;
    ``sleep`` waits.
    """
    budget = RetryBudget(policy)
    while True:
        try:
            return fn()
        except Exception as error:
            wait = _wait_after(error, budget, what, idempotent)
            if wait is None:
                raise
        sleep(wait)


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    idempotent: bool = True,
) -> T:
    """:func:`call_with_retries` for a coroutine function (the SDK's async client)."""
    budget = RetryBudget(policy)
    while True:
        try:
            return await fn()
        except Exception as error:
            wait = _wait_after(error, budget, what, idempotent)
            if wait is None:
                raise
        await sleep(wait)


def _describe(error: BaseException) -> str:
    code = getattr(error, "code", None)
    if isinstance(code, int):
        status = getattr(error, "status", None) or ""
        return f"{code} {status}".strip()
    return f"{type(error).__name__}: {printable(str(error))[:200]}"


def number_extra(key: str, raw: Any, *, integer: bool, example: str | None = None) -> float | int | None:
    """A connection extra's number (the form stores strings): None when unset, else a ValueError naming it."""
    if raw is None or raw == "":
        return None
    kind = "an integer" if integer else "a number of seconds"
    example = example or ("5" if integer else "1.5")
    if isinstance(raw, bool):
        raise ValueError(f"Gemini connection extra {key}={raw!r} must be {kind}, not a boolean.")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise ValueError(
            f"Gemini connection extra {key}={raw!r} is not {kind}. Set it to e.g. {example} or remove it "
            "to use the default."
        ) from None
    if integer:
        if not number.is_integer():
            raise ValueError(
                f"Gemini connection extra {key}={raw!r} must be a whole number such as {example}."
            )
        return int(number)
    return number
