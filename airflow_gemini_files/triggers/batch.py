"""The trigger a deferred GeminiBatchGenerateOperator runs in the triggerer: wait until its batch job ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.gemini import GeminiHook


class GeminiBatchJobTrigger(BaseTrigger):
    """
    Check a Gemini batch job with the async client until it ends, the wait fails, or the deadline passes.

    Its serialized form holds only the job name, the connection id, the poll interval and an absolute
    wall-clock deadline (``time.time()`` epoch seconds: the job's creation plus the task's timeout), so a
    restarted triggerer resumes the same wait and no secret lands in the metadata database.

    The first check comes :data:`~airflow_gemini_files.hooks.policy.JOB_FIRST_POLL` seconds after the
    trigger starts, then each wait is 1.5x longer, up to ``poll_interval``. Every job state is read by
    :func:`~airflow_gemini_files.hooks.policy.job_verdict` and a check's error by
    :class:`~airflow_gemini_files.hooks.policy.JobWait`, as in the operator's non-deferrable mode.

    Exactly one event is yielded: ``{"status": "done", "job", "state", "message"}`` once the job has ended
    (whatever its ending: the operator reads the results or raises), ``{"status": "timeout", "job",
    "state", "message"}`` when the deadline passed first, or ``{"status": "error", "job", "message",
    "error"}`` (from which :func:`~airflow_gemini_files.hooks.policy.error_from_event` rebuilds the
    exception). When a user kills the deferred task (Airflow 3.3+), :meth:`on_kill` cancels the job.

    :param job_name: ``batches/<id>``.
    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param poll_interval: Longest wait between checks, in seconds.
    :param end_time: Epoch seconds after which the wait ends with ``timeout``.
    """

    def __init__(self, job_name: str, gemini_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__()
        self.job_name = job_name
        self.gemini_conn_id = gemini_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and the primitive arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "gemini_conn_id": self.gemini_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check until the job ends or the deadline passes; yield exactly one event."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id)
        wait = policy.JobWait(self.job_name)
        schedule = policy.job_poll_schedule(self.poll_interval)
        checks = 0
        while True:
            remaining = self.end_time - time.time()
            if remaining <= 0:
                state = wait.state.removeprefix("JOB_STATE_")
                message = f"The deadline passed while batch job {self.job_name} was {state}."
                yield self._event("timeout", message, wait)
                return
            await asyncio.sleep(min(schedule.next(False), remaining))
            checks += 1
            try:
                job = await hook.aget_batch(self.job_name)
                verdict = wait.record(job.state)
            except Exception as error:
                try:
                    verdict = wait.record(error)
                except Exception as ending:  # the policy ended the wait
                    self.log.info("Check %d ended the wait: %s", checks, ending)
                    yield self._event("error", str(ending), wait, error=policy.error_to_event(ending))
                    return
            if verdict.finished:
                self.log.info("Check %d: %s.", checks, wait.progress())
                yield self._event("done", f"{wait.progress()}.", wait)
                return
            self.log.info("Check %d: %s.", checks, wait.progress())

    async def on_kill(self) -> None:
        """Cancel the job when a user kills the deferred task (mark failed, clear): no job runs on unseen."""
        await GeminiHook(gemini_conn_id=self.gemini_conn_id).acancel_batch(self.job_name)

    def _event(self, status: str, message: str, wait: policy.JobWait, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "job": self.job_name, "state": wait.state, "message": message, **extra}
        )
