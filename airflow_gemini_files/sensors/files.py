"""Sensor that waits until Gemini has processed files (state ACTIVE): poke, reschedule or deferrable."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_gemini_files.exceptions import (
    GeminiFileFailedError,
    GeminiFileNotUsableError,
    GeminiFilesError,
)
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators._context import files_label, set_map_index_label
from airflow_gemini_files.operators._fanout import fan_out
from airflow_gemini_files.operators._inputs import check_max_concurrency, coerce_files, dedupe, is_many
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.triggers.files import GeminiFileActiveTrigger, is_permanent

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context


class GeminiFileActiveSensor(BaseSensorOperator):
    """
    Wait until every file is ACTIVE; return the refreshed GeminiFileRef (a list for a list) as XCom.

    A FAILED file fails the task with Gemini's error message for it; a file that disappears or expires while
    waiting fails it too. Progress ("3 of 10 file(s) ACTIVE, 7 still PROCESSING") is logged on every poke.

    Modes: ``mode="poke"`` (holds a worker slot), ``mode="reschedule"``, or ``deferrable=True``: after one
    immediate check the wait moves to :class:`~airflow_gemini_files.triggers.files.GeminiFileActiveTrigger`
    in the triggerer (no worker slot held), with a wall-clock deadline ``timeout`` seconds away that
    survives triggerer restarts. ``deferrable`` defaults to ``[operators] default_deferrable``.

    In poke and reschedule modes a transient error while checking (network, 5xx after the hook's own
    retries) counts as "not yet"; :attr:`MAX_CONSECUTIVE_ERRORS` in a row fail the task.

    Mapped over files, each instance is labelled with its file's display name (context variable
    ``gemini_file_label``, the default ``map_index_template`` when the DAG sets none).

    :param files: GeminiFileRef(s), dicts or ``files/<id>`` names; an empty list succeeds at once with
        ``[]``, None (an upstream task pushed nothing) is an error. Templated.
    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param deferrable: Wait in the triggerer instead of a worker.
    :param poke_interval: Seconds between checks (the trigger backs off from it while nothing changes).
    :param timeout: Seconds to wait before failing with AirflowSensorTimeout.
    :param max_concurrency: File checks in flight at once.
    """

    template_fields: Sequence[str] = ("files", "gemini_conn_id")
    ui_color = "#e6f4ea"

    MAX_CONSECUTIVE_ERRORS: int = 5

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
        self._active: dict[str, GeminiFileRef] = {}
        self._consecutive_errors = 0

    @cached_property
    def hook(self) -> GeminiHook:
        """The hook, built from ``gemini_conn_id``."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id)
        hook.get_conn()  # read the connection once, not in every worker thread
        return hook

    def _refs(self) -> list[GeminiFileRef]:
        return dedupe(
            coerce_files(self.files, param="files", task_id=self.task_id, allow_empty=self.files is not None)
        )

    def _result(self, refs: list[GeminiFileRef], fresh: Mapping[str, GeminiFileRef]) -> Any:
        """Fresh refs in input order, keeping each input's ``source_uri``; one ref for one input."""
        merged = []
        for ref in refs:
            new = fresh[ref.name]
            if new.source_uri is None and ref.source_uri is not None:
                new = dataclasses.replace(new, source_uri=ref.source_uri)
            merged.append(new)
        return merged if is_many(self.files) else merged[0]

    def poke(self, context: Context) -> PokeReturnValue:
        refs = self._refs()
        if not refs:
            self.log.info("No files to wait for (an empty list).")
            return PokeReturnValue(is_done=True, xcom_value=[])
        set_map_index_label(context, files_label(refs))
        pending = [ref for ref in refs if ref.name not in self._active]
        outcomes = fan_out(
            self.hook.get_file,
            pending,
            max_concurrency=self.max_concurrency,
            log=self.log,
            action="file checks",
            log_progress=False,
        )
        errors: list[BaseException] = []
        latest: dict[str, GeminiFileRef] = dict(self._active)
        for outcome in outcomes:
            ref = outcome.item
            if isinstance(outcome.error, GeminiFileNotUsableError):
                raise GeminiFileNotUsableError(
                    f"{ref.name} ({ref.label}) is gone (deleted or expired) while waiting for it to become "
                    f"ACTIVE: {outcome.error}. Upload or register it again.",
                    file_name=ref.name,
                ) from outcome.error
            if outcome.error is not None:
                if is_permanent(outcome.error):
                    raise outcome.error
                errors.append(outcome.error)
                continue
            fresh = outcome.value
            assert fresh is not None
            if fresh.state == "FAILED":
                raise GeminiFileFailedError(
                    f"Gemini could not process {fresh.name} ({fresh.label}): "
                    f"{fresh.error or 'no reason given'}",
                    file_name=fresh.name,
                    error=fresh.error,
                )
            if fresh.is_expired():
                raise GeminiFileNotUsableError(
                    f"{fresh.name} ({fresh.label}) expired at {fresh.expiration_time} before turning ACTIVE. "
                    "Upload or register it again.",
                    file_name=fresh.name,
                )
            latest[fresh.name] = fresh
            if fresh.is_active:
                self._active[fresh.name] = fresh
        if errors:
            self._consecutive_errors += 1
            self.log.warning(
                "%d of %d file checks failed (%d consecutive): %s",
                len(errors),
                len(pending),
                self._consecutive_errors,
                errors[0],
            )
            if self._consecutive_errors >= self.MAX_CONSECUTIVE_ERRORS:
                raise GeminiFilesError(
                    f"Gave up after {self._consecutive_errors} consecutive failed checks: {errors[0]}"
                ) from errors[0]
        else:
            self._consecutive_errors = 0
        set_map_index_label(context, files_label([latest.get(ref.name, ref) for ref in refs]))
        done = sum(ref.name in self._active for ref in refs)
        self.log.info("%d of %d file(s) ACTIVE, %d still PROCESSING.", done, len(refs), len(refs) - done)
        if done < len(refs):
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._result(refs, self._active))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as timeout:  # Airflow's message names neither the files nor a fix
                waiting = [ref.name for ref in self._refs() if ref.name not in self._active]
                raise AirflowSensorTimeout(
                    f"{timeout} Not ACTIVE yet: {', '.join(waiting)[:1000]}. Raise the sensor's timeout "
                    "(videos and large PDFs can take minutes to process), or check the files' state with "
                    "GeminiHook.get_file."
                ) from timeout
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        pending = [ref.name for ref in self._refs()]
        self.log.info("Deferring: the triggerer waits up to %ss for %d file(s).", self.timeout, len(pending))
        self.defer(
            trigger=GeminiFileActiveTrigger(
                file_names=pending,
                gemini_conn_id=self.gemini_conn_id,
                poll_interval=self.poke_interval,
                end_time=time.time() + self.timeout,
            ),
            method_name="execute_complete",
            # A backstop only: the trigger's own deadline fires first with a clear message.
            timeout=timedelta(seconds=self.timeout + GeminiFileActiveTrigger.MAX_POLL_INTERVAL + 60),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger: rebuild refs from the event's plain dicts, or raise its error."""
        if not isinstance(event, Mapping) or "status" not in event:
            raise GeminiFilesError(f"GeminiFileActiveTrigger sent an unexpected event: {event!r}")
        refs = self._refs()
        set_map_index_label(context, files_label(refs))
        status, message = event["status"], str(event.get("message", ""))
        if status == "success":
            fresh = {ref.name: ref for ref in GeminiFileRef.coerce_many(event.get("files") or [])}
            missing = [ref.name for ref in refs if ref.name not in fresh]
            if missing:
                raise GeminiFilesError(f"GeminiFileActiveTrigger reported success without {missing}.")
            self.log.info("%s", message)
            set_map_index_label(context, files_label([fresh[ref.name] for ref in refs]))
            return self._result(refs, fresh)
        if status == "failed":
            raise GeminiFileFailedError(message, file_name=event.get("file_name"), error=event.get("error"))
        if status == "timeout":
            raise AirflowSensorTimeout(
                f"Sensor timed out after {self.timeout}s: {message}. Raise the sensor's timeout (videos and "
                "large PDFs can take minutes to process), or check the files' state with GeminiHook.get_file."
            )
        raise GeminiFilesError(message)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the Gemini files the sensor waited for, as inputs."""
        from airflow_gemini_files import lineage

        return lineage.wait_lineage(self._refs(), lineage.connection_base_url(self))
