"""The trigger a deferred GeminiFileActiveSensor runs in the triggerer: poll files until they are ACTIVE."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.hooks.policy import ActiveWait, PollSchedule
from airflow_gemini_files.refs import GeminiFileRef


class GeminiFileActiveTrigger(BaseTrigger):
    """
    Poll Gemini files with the async client until all are ACTIVE, the wait fails, or the deadline passes.

    Its serialized form holds only primitives: the file names (and their display names, for messages),
    the connection id, the poll interval, an absolute wall-clock deadline (``time.time()`` epoch seconds,
    fixed when the sensor first deferred) and the time of the sensor's last check. A restarted triggerer
    resumes the same wait; no secret ever lands in the metadata database.

    The first poll comes one ``poll_interval`` after ``last_check`` (the sensor has just looked). While
    nothing changes the interval grows by half after each poll up to
    :data:`~airflow_gemini_files.hooks.policy.MAX_POLL_INTERVAL`, and drops back to ``poll_interval`` when a
    file turns ACTIVE. What ends the wait is decided by
    :class:`~airflow_gemini_files.hooks.policy.ActiveWait`, as for the sensor in every other mode.

    Exactly one event is yielded, with a primitive payload: ``status`` (``success``, ``timeout`` or
    ``error``), ``message``, ``files`` (the refreshed files as plain dicts, on success), ``pending`` (the
    latest state of the files not yet ACTIVE, as plain dicts) and, for ``error``, ``error`` (from which
    :func:`~airflow_gemini_files.hooks.policy.error_from_event` rebuilds the same exception).

    :param file_names: ``files/<id>`` names to wait for.
    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param poll_interval: Seconds between polls at first.
    :param end_time: Epoch seconds after which the wait ends with ``timeout``.
    :param labels: Display names of the files, by name (for messages only).
    :param last_check: Epoch seconds of the sensor's check just before it deferred.
    """

    MAX_POLL_INTERVAL: float = policy.MAX_POLL_INTERVAL
    POLL_CONCURRENCY: int = 16

    def __init__(
        self,
        file_names: Sequence[str],
        gemini_conn_id: str,
        poll_interval: float,
        end_time: float,
        labels: Mapping[str, str] | None = None,
        last_check: float | None = None,
    ) -> None:
        super().__init__()
        self.file_names = list(file_names)
        self.gemini_conn_id = gemini_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)
        self.labels = dict(labels or {})
        self.last_check = float(last_check) if last_check is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and the primitive arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "file_names": self.file_names,
                "gemini_conn_id": self.gemini_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "labels": self.labels,
                "last_check": self.last_check,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until a terminal condition; yield exactly one event."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id)
        wait = ActiveWait(
            [GeminiFileRef(name=name, display_name=self.labels.get(name)) for name in self.file_names]
        )
        schedule = PollSchedule(self.poll_interval, cap=self.MAX_POLL_INTERVAL)
        semaphore = asyncio.Semaphore(self.POLL_CONCURRENCY)
        polls = 0

        async def fetch(ref: GeminiFileRef) -> GeminiFileRef:
            async with semaphore:
                return await hook.aget_file(ref)

        if self.last_check is not None:  # the sensor checked just before deferring: wait out the interval
            pause = min(self.last_check + self.poll_interval - time.time(), self.end_time - time.time())
            if pause > 0:
                await asyncio.sleep(pause)
        while True:
            pending = wait.pending
            polls += 1
            results = await asyncio.gather(*(fetch(ref) for ref in pending), return_exceptions=True)
            try:
                progressed = wait.record(
                    {ref.name: result for ref, result in zip(pending, results, strict=True)}
                )
            except Exception as error:  # the policy ended the wait
                self.log.info("Poll %d ended the wait: %s", polls, error)
                yield self._event("error", str(error), wait, error=policy.error_to_event(error))
                return
            if wait.done:
                self.log.info("All %d file(s) are ACTIVE after %d poll(s).", len(wait.files), polls)
                yield TriggerEvent(
                    {
                        "status": "success",
                        "message": f"All {len(wait.files)} file(s) are ACTIVE.",
                        "files": [ref.to_dict() for ref in wait.result()],
                        "pending": [],
                    }
                )
                return
            self.log.info("Poll %d: %s.", polls, wait.progress())
            remaining = self.end_time - time.time()
            if remaining <= 0:
                yield self._event("timeout", "The deadline passed with files not ACTIVE.", wait)
                return
            await asyncio.sleep(min(schedule.next(progressed), remaining))

    def _event(self, status: str, message: str, wait: ActiveWait, **extra: Any) -> TriggerEvent:
        pending = [ref.to_dict() for ref in wait.pending]
        return TriggerEvent({"status": status, "message": message, "files": [], "pending": pending, **extra})
