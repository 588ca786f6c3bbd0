"""Backoff shared by the Gemini client (via the SDK), our resumable upload and GCS reads: how long to wait.

Which errors are worth another try is decided in :mod:`airflow_gemini_files.hooks.policy`.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.hooks.policy import RETRYABLE_STATUSES, is_network_error

if TYPE_CHECKING:
    from google.genai import types

_EXTRA_KEYS = {
    "retry_attempts": "attempts",
    "retry_initial_delay": "initial_delay",
    "retry_max_delay": "max_delay",
}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, as the SDK's `HttpRetryOptions` describe it.

    `attempts` counts the first try too (1 = never retry). The n-th retry waits
    `min(max_delay, initial_delay * exp_base ** (n - 1) + uniform(0, jitter))` seconds,
    the formula tenacity's `wait_exponential_jitter` (used by the SDK) applies, so the
    SDK's own calls and our chunk uploads back off alike.
    """

    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0
    exp_base: float = 2.0
    jitter: float = 1.0
    statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(
                f"retry attempts must be an integer >= 1 (1 = no retries), got {self.attempts!r}"
            )
        for name in ("initial_delay", "max_delay", "exp_base", "jitter"):
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

        Reads `retry_attempts` (default 5, counting the first try), `retry_initial_delay`
        (default 1 s) and `retry_max_delay` (default 30 s); other keys are ignored.
        Values may be numbers or numeric strings (the connection form stores strings).
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
                "retry_attempts (integer >= 1), retry_initial_delay and retry_max_delay (seconds >= 0, "
                "max >= initial), or remove them to use the defaults (5, 1, 30)."
            ) from None

    def to_sdk(self) -> types.HttpRetryOptions:
        """The same policy as the SDK's `HttpRetryOptions` (for `genai.Client(http_options=...)`)."""
        from google.genai import types

        return types.HttpRetryOptions(
            attempts=self.attempts,
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            exp_base=self.exp_base,
            jitter=self.jitter,
            http_status_codes=sorted(self.statuses),
        )

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry)."""
        if retry_number < 1:
            raise ValueError(f"retry_number starts at 1, got {retry_number}")
        noise = (rng or random).uniform(0, self.jitter) if self.jitter else 0.0
        try:
            base = self.initial_delay * self.exp_base ** (retry_number - 1)
        except OverflowError:
            base = self.max_delay
        return max(0.0, min(self.max_delay, base + noise))

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits before each retry: `attempts - 1` values, then the generator ends."""
        for number in range(1, self.attempts):
            yield self.delay(number, rng)

    def is_retryable_status(self, status: int) -> bool:
        """True when an HTTP status is worth another try under this policy."""
        return status in self.statuses

    @staticmethod
    def is_transient_error(exc: BaseException) -> bool:
        """True for connection-level failures (refused, reset, dropped, timed out); see the policy module."""
        return is_network_error(exc)

    def wait_before_retry(self, retry_number: int, retry_after: float | None = None) -> float:
        """The wait for retry `retry_number`, honouring a server's `Retry-After` up to `max_delay`."""
        wait = self.delay(retry_number)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


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
