"""Operator that deletes orphaned Gemini files: this provider's files no running DAG run still needs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_gemini_files import sweep
from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.ledger import RunRecord, read_file_records, read_runs
from airflow_gemini_files.naming import printable
from airflow_gemini_files.operators.base import GeminiBaseOperator, is_templated

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_gemini_files.refs import GeminiFileRef


def _dry_run_flag(value: Any, task_id: str) -> bool:
    """``dry_run`` as a bool: a bool, or the text Jinja renders one to; anything else is refused."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("true", "false"):
        return text == "true"
    raise GeminiInputError(
        f"Task {task_id!r}: dry_run={value!r} is neither True nor False; pass a bool, or a template that "
        "renders to one such as '{{ params.dry_run }}'."
    )


def utcnow() -> datetime:
    """The sweep's clock (the age of a file is measured against it)."""
    return datetime.now(UTC)


class GeminiSweepFilesOperator(GeminiBaseOperator):
    """
    Delete the Gemini files this provider created that no running DAG run still needs; return a report.

    Which files those are is decided in :mod:`airflow_gemini_files.sweep`: uploads (and batch input
    files) carry their run in their name; registered files and batch results are traced through the
    ledger (the connection's extra ``ledger``), including registrations whose task was killed before it
    could report them. A file of a queued or running DAG run is never deleted; a file of a finished run
    is; a file whose run is unknown is deleted once older than ``max_age_hours``. Files not created by
    this provider are never touched.

    With ``dry_run`` nothing is deleted and the report lists what would be. The report (the return value,
    also logged) has ``scanned``, ``deleted`` (or ``would_delete``: one entry per file with its size,
    run, how it was traced and why), ``kept`` (counts by reason), ``freed_bytes`` and ``errors``. If a
    delete fails, every other file is still tried and then the task fails naming the ones left.

    :param max_age_hours: Required: files whose run is unknown are deleted once older than this (hours,
        or a timedelta). Set it above your longest DAG run when the connection has no ledger.
    :param dry_run: Report only; delete nothing. Templated (e.g. ``"{{ params.dry_run }}"``): a bool, or
        ``"True"`` / ``"False"`` as Jinja renders one.
    """

    template_fields: Sequence[str] = ("gemini_conn_id", "dry_run_setting")
    ui_color = "#fce8e6"

    def __init__(
        self, *, max_age_hours: float | timedelta, dry_run: bool | str = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.max_age = sweep.check_max_age(max_age_hours)
        self.dry_run_setting = dry_run  # not self.dry_run: BaseOperator.dry_run() is a method
        if not is_templated(dry_run):
            _dry_run_flag(dry_run, self.task_id)

    @property
    def report_only(self) -> bool:
        """Whether this sweep only reports (``dry_run``, rendered)."""
        return _dry_run_flag(self.dry_run_setting, self.task_id)

    def _run_state(self, context: Context, run: RunRecord) -> str:
        """Ask Airflow (through the Task SDK) whether ``run`` is queued or running, finished, or unknown."""
        ti = context["ti"]
        live = ti.get_dr_count(dag_id=run.dag_id, run_ids=[run.run_id], states=sorted(sweep.LIVE_STATES))
        known = ti.get_dr_count(dag_id=run.dag_id, run_ids=[run.run_id])
        return sweep.run_state_from_counts(int(live), int(known))

    def execute(self, context: Context) -> dict[str, Any]:
        self._lineage_deleted: list[GeminiFileRef] = []
        hook = self.hook
        ledger = hook.ledger
        runs = read_runs(ledger) if ledger is not None else {}
        records = read_file_records(ledger) if ledger is not None else []
        if ledger is None:
            self.log.warning(
                "Gemini connection %r has no ledger: registered files cannot be traced and runs are known "
                "by age only (max age %s).",
                self.gemini_conn_id,
                self.max_age,
            )
        files = list(hook.list_files())
        verdicts = sweep.plan(
            files,
            runs=runs,
            records=records,
            run_state=lambda run: self._run_state(context, run),
            now=utcnow(),
            max_age=self.max_age,
        )
        doomed = [verdict for verdict in verdicts if verdict.delete]
        kept: dict[str, int] = {}
        for verdict in verdicts:
            if not verdict.delete:
                kept[verdict.rule] = kept.get(verdict.rule, 0) + 1
        self.log.info(
            "Scanned %d file(s), %d run record(s) and %d file record(s): %d orphan(s) (%d bytes)%s.",
            len(files),
            len(runs),
            len(records),
            len(doomed),
            sum(v.file.size_bytes or 0 for v in doomed),
            "; dry run: nothing is deleted" if self.report_only else "",
        )
        for verdict in doomed:
            self.log.info(
                "%s %s: %s.",
                "Would delete" if self.report_only else "Deleting",
                verdict.file.name,
                printable(verdict.reason),
            )
        report: dict[str, Any] = {
            "dry_run": self.report_only,
            "max_age_hours": self.max_age.total_seconds() / 3600,
            "scanned": len(files),
            "kept": kept,
            "errors": [],
        }
        if self.report_only:
            report["would_delete"] = [verdict.as_dict() for verdict in doomed]
            report["freed_bytes"] = 0
            return report
        outcomes = self.fan_out(lambda verdict: hook.delete_file(verdict.file), doomed, action="deletes")
        deleted = [outcome.item for outcome in outcomes if outcome.ok]
        self._lineage_deleted = [outcome.item.file for outcome in outcomes if outcome.ok and outcome.value]
        report["deleted"] = [verdict.as_dict() for verdict in deleted]
        report["freed_bytes"] = sum(verdict.file.size_bytes or 0 for verdict in deleted)
        report["errors"] = [
            {"file": outcome.item.file.name, "error": printable(outcome.error)}
            for outcome in outcomes
            if not outcome.ok
        ]
        self.log.info("Deleted %d orphan(s), %d bytes freed.", len(deleted), report["freed_bytes"])
        self.raise_for_failures(
            outcomes,
            what="deletes",
            after=f"Deleted {len(deleted)}; the next sweep tries the others again.",
            label=lambda verdict: verdict.file.name,
            single_as_is=False,
        )
        return report

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the files this sweep deleted, as outputs with the lifecycle state change DROP.

        A dry run, and the files it only listed, report nothing: listing reads no file's content."""
        from airflow_gemini_files import lineage

        return lineage.deletion_lineage(
            getattr(self, "_lineage_deleted", []), lineage.connection_base_url(self)
        )
