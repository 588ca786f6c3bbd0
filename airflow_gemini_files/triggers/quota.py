"""The trigger a deferred upload runs while it waits for room in the project's 20 GB of file storage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.quota import upload_refusal


class GeminiStorageQuotaTrigger(BaseTrigger):
    """
    Poll the project's Files API storage until ``needed_bytes`` more fit under the quota, or the deadline.

    Serialized as primitives only (connection id, bytes, what is being uploaded, poll interval, an
    absolute deadline in epoch seconds), so a restarted triggerer resumes the same wait. Yields one event:
    ``{"status": "fits", "usage": ...}``, or ``{"status": "timeout", "message": ...}`` naming the usage
    and the biggest holders, or ``{"status": "error", "message": ...}`` when the storage could not be read
    five times in a row.

    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param needed_bytes: Bytes the upload adds.
    :param what: The upload, for messages (e.g. ``"upload of 3 file(s)"``).
    :param poll_interval: Seconds between looks at the storage.
    :param end_time: Epoch seconds after which the wait ends with ``timeout``.
    """

    MAX_FAILED_POLLS = 5

    def __init__(
        self, gemini_conn_id: str, needed_bytes: int, what: str, poll_interval: float, end_time: float
    ) -> None:
        super().__init__()
        self.gemini_conn_id = gemini_conn_id
        self.needed_bytes = int(needed_bytes)
        self.what = what
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and the primitive arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "gemini_conn_id": self.gemini_conn_id,
                "needed_bytes": self.needed_bytes,
                "what": self.what,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id)
        failures = 0
        while True:
            try:
                usage = await hook.afiles_usage()
            except Exception as err:
                failures += 1
                if failures >= self.MAX_FAILED_POLLS or time.time() >= self.end_time:
                    message = (
                        f"Could not read the Gemini project's file storage {failures} time(s) in a row while "
                        f"waiting for room for the {self.what}: {type(err).__name__}: {err}"
                    )
                    yield TriggerEvent({"status": "error", "message": message})
                    return
            else:
                failures = 0
                refusal = upload_refusal(usage, self.needed_bytes, what=self.what)
                if refusal is None:
                    yield TriggerEvent({"status": "fits", "usage": usage.as_dict()})
                    return
                if time.time() >= self.end_time:
                    yield TriggerEvent(
                        {"status": "timeout", "message": f"Waited in vain for room: {refusal}"}
                    )
                    return
            await asyncio.sleep(max(0.0, min(self.poll_interval, self.end_time - time.time())))
