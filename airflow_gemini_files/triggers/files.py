"""The trigger a deferred GeminiFileActiveSensor runs in the triggerer: poll files until they are ACTIVE."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.exceptions import AirflowNotFoundException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_gemini_files.exceptions import GeminiFileNotUsableError, GeminiInputError
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.refs import GeminiFileRef

_PERMANENT_HTTP_CODES = frozenset({400, 401, 403, 404})


def is_permanent(error: BaseException) -> bool:
    """Whether polling again cannot help: bad input, a missing connection, a rejected key or request."""
    if isinstance(error, GeminiInputError | AirflowNotFoundException):
        return True
    code = getattr(error, "code", None)
    return isinstance(code, int) and code in _PERMANENT_HTTP_CODES


class GeminiFileActiveTrigger(BaseTrigger):
    """
    Poll Gemini files with the async client until all are ACTIVE, one FAILED, or the deadline passes.

    Its serialized form holds only the file names, the connection id, the poll interval and an absolute
    wall-clock deadline (``time.time()`` epoch seconds, fixed when the sensor first deferred), so a restarted
    triggerer resumes the same wait and no secret ever lands in the metadata database.

    While nothing changes the interval grows by half after each poll up to :attr:`MAX_POLL_INTERVAL`; it
    drops back to ``poll_interval`` when a file turns ACTIVE. Transient errors (network, 5xx after the
    hook's own retries) are logged and ridden out; :attr:`MAX_CONSECUTIVE_ERRORS` in a row, or one
    permanent error (bad key, missing connection), end the wait.

    Exactly one event is yielded, with a primitive payload: ``status`` (``success``, ``failed``,
    ``timeout`` or ``error``), ``message``, ``files`` (the refreshed files as plain dicts, on success),
    ``pending`` (names not yet ACTIVE) and, for ``failed``, ``file_name`` and ``error``.

    :param file_names: ``files/<id>`` names to wait for.
    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param poll_interval: Seconds between polls at first.
    :param end_time: Epoch seconds after which the wait ends with ``timeout``.
    """

    MAX_POLL_INTERVAL: float = 60.0
    BACKOFF_FACTOR: float = 1.5
    MAX_CONSECUTIVE_ERRORS: int = 5
    POLL_CONCURRENCY: int = 16

    def __init__(
        self, file_names: Sequence[str], gemini_conn_id: str, poll_interval: float, end_time: float
    ) -> None:
        super().__init__()
        self.file_names = list(file_names)
        self.gemini_conn_id = gemini_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and the four primitive arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "file_names": self.file_names,
                "gemini_conn_id": self.gemini_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until a terminal condition; yield exactly one event."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id)
        names = list(dict.fromkeys(self.file_names))
        active: dict[str, GeminiFileRef] = {}
        semaphore = asyncio.Semaphore(self.POLL_CONCURRENCY)
        interval = self.poll_interval
        consecutive_errors = 0
        polls = 0

        async def fetch(name: str) -> GeminiFileRef:
            async with semaphore:
                return await hook.aget_file(name)

        while True:
            pending = [name for name in names if name not in active]
            polls += 1
            results = await asyncio.gather(*(fetch(name) for name in pending), return_exceptions=True)
            progressed = False
            transient: list[BaseException] = []
            for name, result in zip(pending, results, strict=True):
                if isinstance(result, GeminiFileNotUsableError):
                    yield self._failed(name, f"{name} is gone (deleted or expired) while waiting: {result}")
                    return
                if isinstance(result, BaseException):
                    if is_permanent(result):
                        yield self._event(
                            "error", f"Polling {name} failed and cannot succeed: {result}", active
                        )
                        return
                    transient.append(result)
                    continue
                if result.state == "FAILED":
                    yield self._failed(
                        name,
                        f"{name} ({result.label}) FAILED processing: {result.error or 'no reason given'}",
                        error=result.error,
                    )
                    return
                if result.is_expired():
                    yield self._failed(name, f"{name} ({result.label}) expired before it became ACTIVE.")
                    return
                if result.is_active:
                    active[name] = result
                    progressed = True

            if transient:
                consecutive_errors += 1
                self.log.warning(
                    "Poll %d: %d of %d file checks failed (%d consecutive failed polls): %s",
                    polls,
                    len(transient),
                    len(pending),
                    consecutive_errors,
                    transient[0],
                )
                if consecutive_errors >= self.MAX_CONSECUTIVE_ERRORS:
                    yield self._event(
                        "error",
                        f"Gave up after {consecutive_errors} consecutive failed polls; last: {transient[0]}",
                        active,
                    )
                    return
            else:
                consecutive_errors = 0

            if len(active) == len(names):
                self.log.info("All %d file(s) are ACTIVE after %d poll(s).", len(names), polls)
                yield TriggerEvent(
                    {
                        "status": "success",
                        "message": f"All {len(names)} file(s) are ACTIVE.",
                        "files": [active[name].to_dict() for name in names],
                        "pending": [],
                    }
                )
                return

            self.log.info(
                "%d of %d file(s) ACTIVE, %d still PROCESSING.",
                len(active),
                len(names),
                len(names) - len(active),
            )
            remaining = self.end_time - time.time()
            if remaining <= 0:
                yield self._event(
                    "timeout",
                    f"{len(names) - len(active)} of {len(names)} file(s) were not ACTIVE by the deadline: "
                    + ", ".join(name for name in names if name not in active)[:1000],
                    active,
                )
                return
            if progressed:
                interval = self.poll_interval
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * self.BACKOFF_FACTOR, max(self.MAX_POLL_INTERVAL, self.poll_interval))

    def _event(self, status: str, message: str, active: dict[str, GeminiFileRef]) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "message": message,
                "files": [],
                "pending": [name for name in self.file_names if name not in active],
            }
        )

    def _failed(self, name: str, message: str, error: str | None = None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": "failed",
                "message": message,
                "files": [],
                "pending": [],
                "file_name": name,
                "error": error,
            }
        )
