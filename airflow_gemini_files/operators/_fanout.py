"""Run one blocking hook call per item on a bounded thread pool, keep every outcome, log progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from airflow.sdk.types import Logger

T = TypeVar("T")
R = TypeVar("R")

PROGRESS_EVERY_SECONDS = 5.0
"""Log progress at least this often while work is still running."""


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """What happened to one item: its result, or the exception it raised (``CancelledError`` if never run)."""

    item: T
    value: R | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the call returned without raising."""
        return self.error is None

    @property
    def started(self) -> bool:
        """Whether the call ran at all (False when cancelled after another item failed)."""
        return not isinstance(self.error, CancelledError)


def fan_out(
    func: Callable[[T], R],
    items: Sequence[T],
    *,
    max_concurrency: int,
    log: Logger,
    action: str,
    stop_on_error: bool = False,
    log_progress: bool = True,
) -> list[Outcome[T, R]]:
    """
    Call ``func(item)`` for every item, at most ``max_concurrency`` at a time; return outcomes in input order.

    Never raises for an item's failure: the caller decides (clean up, fail at the end, report each).
    With ``stop_on_error`` the first failure cancels the items not yet started. Progress ("3 of 10 <action>
    done, 1 failed") is logged every 10 % of the items or every few seconds, whichever comes first.
    ``log_progress=False`` keeps only the slow-going lines (for quick checks whose caller logs a summary).
    Retrying (429, 5xx) is the hook's job: this only bounds how many calls are in flight.
    """
    total = len(items)
    if total == 0:
        return []
    outcomes: list[Outcome[T, R] | None] = [None] * total
    workers = max(1, min(max_concurrency, total))
    step = max(1, total // 10)
    done = failed = 0
    last_log = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gemini-files") as pool:
        futures: dict[Future[R], int] = {pool.submit(func, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    outcomes[index] = Outcome(items[index], value=future.result())
                except CancelledError as error:
                    outcomes[index] = Outcome(items[index], error=error)
                    continue
                except Exception as error:
                    outcomes[index] = Outcome(items[index], error=error)
                    failed += 1
                    if stop_on_error:
                        for other in futures:
                            other.cancel()
                done += 1
                now = time.monotonic()
                regular = log_progress and (done == total or done % step == 0)
                if regular or now - last_log >= PROGRESS_EVERY_SECONDS:
                    log.info("%d of %d %s done (%d failed)", done, total, action, failed)
                    last_log = now
        finally:
            for other in futures:
                other.cancel()
    return [
        outcome if outcome is not None else Outcome(items[index], error=CancelledError())
        for index, outcome in enumerate(outcomes)
    ]
