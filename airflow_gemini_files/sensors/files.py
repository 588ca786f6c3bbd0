"""Sensor that waits until Gemini has processed files (state ACTIVE): poke, reschedule or deferrable."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_gemini_files.exceptions import GeminiFilesError, GeminiWaitTimeoutError
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.hooks.policy import ActiveWait
from airflow_gemini_files.operators.base import (
    GeminiTaskMixin,
    check_max_concurrency,
    is_many,
    map_index_label,
    set_map_index_label,
)
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.triggers.files import GeminiFileActiveTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

RETRY_CHECK_WAIT = 10.0
"""In reschedule mode, seconds at most between the repeated checks of one try after a failed check."""


class GeminiFileActiveSensor(GeminiTaskMixin, BaseSensorOperator):
    """
    Wait until every file is ACTIVE; return the refreshed GeminiFileRef (a list for a list) as XCom.

    How the wait ends is decided once, in :class:`~airflow_gemini_files.hooks.policy.ActiveWait`, for every
    mode alike and for ``GeminiHook.wait_for_active``: a FAILED file fails the task with Gemini's message
    (no retries); a file that is deleted or expires while waiting fails it too (no retries: it will not
    come back); an error no poll can fix (a rejected API key) fails it at once; transient errors (network,
    5xx after the hook's own retries) count as "not yet" until
    :data:`~airflow_gemini_files.hooks.policy.MAX_CONSECUTIVE_POLL_FAILURES` checks in a row failed; and
    the timeout raises :class:`~airflow_gemini_files.exceptions.GeminiWaitTimeoutError` (an
    ``AirflowSensorTimeout``) naming the files. Progress ("3 of 10 file(s) ACTIVE, 7 still PROCESSING") is
    logged on every check. A file listed twice is waited for once.

    Modes: ``mode="poke"`` (holds a worker slot), ``mode="reschedule"`` (each check is a new try of the
    task, so a failed check is repeated within the try, at most every :data:`RETRY_CHECK_WAIT` seconds,
    until it succeeds or the tolerance is spent), or ``deferrable=True``: after one check the wait moves
    to :class:`~airflow_gemini_files.triggers.files.GeminiFileActiveTrigger` in the triggerer (no worker
    slot held), whose first poll comes one ``poke_interval`` after that check, and whose wall-clock
    deadline ``timeout`` seconds away survives triggerer restarts. ``deferrable`` defaults to
    ``[operators] default_deferrable``.

    Mapped over files, each instance is labelled with its file's display name (context variable
    ``gemini_file_label``, the default ``map_index_template`` when the DAG sets none).

    :param files: GeminiFileRef(s), dicts or ``files/<id>`` names; an empty list succeeds at once with
        ``[]``, None (an upstream task pushed nothing) is an error. Templated.
    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param deferrable: Wait in the triggerer instead of a worker.
    :param poke_interval: Seconds between checks (the trigger backs off from it while nothing changes).
    :param timeout: Seconds to wait before failing with GeminiWaitTimeoutError.
    :param max_concurrency: File checks in flight at once.
    """

    template_fields: Sequence[str] = ("files", "gemini_conn_id")
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        files: Any,
        gemini_conn_id: str = GeminiHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: timedelta | float = 10.0,
        timeout: timedelta | float = 60 * 60.0,
        max_concurrency: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.files = files
        self.gemini_conn_id = gemini_conn_id
        self.deferrable = deferrable
        self.max_concurrency = check_max_concurrency(max_concurrency, task_id=self.task_id)
        self._wait: ActiveWait | None = None
        self._last_check: float | None = None

    def _refs(self) -> list[GeminiFileRef]:
        return self.file_refs(self.files, allow_empty=self.files is not None)

    def _result(self, refs: list[GeminiFileRef], fresh: Mapping[str, GeminiFileRef]) -> Any:
        """Fresh refs in input order, keeping each input's ``source_uri``; one ref for one input."""
        merged = []
        for ref in refs:
            new = fresh[ref.name]
            if new.source_uri is None and ref.source_uri is not None:
                new = dataclasses.replace(new, source_uri=ref.source_uri)
            merged.append(new)
        return merged if is_many(self.files) else merged[0]

    def _check(self, wait: ActiveWait) -> bool:
        """One check of every pending file, recorded in ``wait`` (which raises what ends the wait)."""
        pending = wait.pending
        outcomes = self.fan_out(self.hook.get_file, pending, action="file checks", log_progress=False)
        self._last_check = time.time()
        answers: dict[str, GeminiFileRef | BaseException] = {}
        for outcome in outcomes:
            answer = outcome.value if outcome.ok else outcome.error
            if answer is not None:
                answers[outcome.item.name] = answer
        return wait.record(answers)

    def poke(self, context: Context) -> PokeReturnValue:
        refs = self._refs()
        if not refs:
            self.log.info("No files to wait for (an empty list).")
            return PokeReturnValue(is_done=True, xcom_value=[])
        set_map_index_label(context, map_index_label(refs))
        if self._wait is None:  # kept between pokes in poke mode; each reschedule starts a new one
            self._wait = ActiveWait(refs)
        wait = self._wait
        self._check(wait)
        while self.reschedule and wait.failures and not wait.done:
            time.sleep(min(self.poke_interval, RETRY_CHECK_WAIT))  # nothing survives a reschedule to count
            self._check(wait)
        set_map_index_label(context, map_index_label([wait.latest[ref.name] for ref in refs]))
        self.log.info("%s.", wait.progress())
        if not wait.done:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._result(refs, wait.active))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as timeout:
                if isinstance(timeout, GeminiWaitTimeoutError) or self._wait is None:
                    raise
                raise self._wait.timeout_error(self.timeout) from timeout
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        assert self._wait is not None
        pending = self._wait.pending
        self.log.info("Deferring: the triggerer waits up to %ss for %d file(s).", self.timeout, len(pending))
        self.defer(
            trigger=GeminiFileActiveTrigger(
                file_names=[ref.name for ref in pending],
                gemini_conn_id=self.gemini_conn_id,
                poll_interval=self.poke_interval,
                end_time=time.time() + self.timeout,
                labels={ref.name: ref.label for ref in pending if ref.label != ref.name},
                last_check=self._last_check,
            ),
            method_name="execute_complete",
            # A backstop only: the trigger's own deadline fires first with a clear message.
            timeout=timedelta(seconds=self.timeout + policy.MAX_POLL_INTERVAL + 60),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger: rebuild refs from the event's plain dicts, or raise its error."""
        if not isinstance(event, Mapping) or "status" not in event:
            raise GeminiFilesError(f"GeminiFileActiveTrigger sent an unexpected event: {event!r}")
        refs = self._refs()
        set_map_index_label(context, map_index_label(refs))
        status = event["status"]
        if status == "success":
            fresh = {ref.name: ref for ref in GeminiFileRef.coerce_many(event.get("files") or [])}
            missing = [ref.name for ref in refs if ref.name not in fresh]
            if missing:
                raise GeminiFilesError(f"GeminiFileActiveTrigger reported success without {missing}.")
            self.log.info("%s", event.get("message", ""))
            set_map_index_label(context, map_index_label([fresh[ref.name] for ref in refs]))
            return self._result(refs, fresh)
        if status == "timeout":
            pending = GeminiFileRef.coerce_many(event.get("pending") or [])
            raise policy.timeout_error(pending, total=len(refs), timeout=self.timeout)
        if status == "error" and isinstance(event.get("error"), Mapping):
            raise policy.error_from_event(event["error"])
        raise GeminiFilesError(f"GeminiFileActiveTrigger sent an unexpected event: {event!r}")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the Gemini files the sensor waited for, as inputs."""
        from airflow_gemini_files import lineage

        return lineage.wait_lineage(self._refs(), lineage.connection_base_url(self))
