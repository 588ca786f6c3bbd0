"""Operator that analyses documents through the Gemini Batch API: one paid job, one result per document."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

from airflow_gemini_files import naming
from airflow_gemini_files.budget import (
    BudgetTracker,
    GeminiBudgetExceededError,
    Reservation,
    RunBudget,
    cost_nothing,
)
from airflow_gemini_files.exceptions import (
    GeminiBatchDocumentsError,
    GeminiFileGoneError,
    GeminiFilesError,
    GeminiInputError,
)
from airflow_gemini_files.gcs_uri import parse_gs_uri
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.gemini import BATCH_METHOD
from airflow_gemini_files.hooks.policy import JobVerdict
from airflow_gemini_files.naming import printable
from airflow_gemini_files.operators._generation import (
    JSON_MIME_TYPE,
    ReplyReader,
    check_request,
    check_response_schema,
    request_config,
    request_contents,
)
from airflow_gemini_files.operators.base import (
    GeminiBaseOperator,
    GeminiBudgetMixin,
    set_map_index_label,
)
from airflow_gemini_files.pricing import PriceTable, TokenUsage, cost_report, usage_from_response
from airflow_gemini_files.refs import GeminiFileRef

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from google.genai import types

MiB = 1024 * 1024

DEFAULT_TIMEOUT = 24 * 3600.0
"""Seconds a batch job may take from its creation (the Batch API's target turnaround)."""

MAX_TIMEOUT = 48 * 3600.0
"""Jobs not done 48 hours after their creation expire: a longer timeout would never be reached."""

INLINE_MAX_BYTES = 2 * MiB
"""Batches whose requests take at most this many bytes are sent inline, larger ones as a JSONL file.

The API takes inline batches up to 20 MB, but an inline job's results come back inside the job itself,
which the SDK reads whole on every ``batches.get``; a file's results are streamed. 2 MiB keeps both the
request and the results of an inline job small in the worker and the triggerer."""

NOT_SENT_XCOM_KEY = "not_sent"
"""XCom key of the documents the task did not send, by key, with the reason (only when there are some)."""

MANIFEST_NAME = f"{naming.MANIFEST_KEY}.json"
"""The object every batch writes beside its documents' results."""

WRITE_CHUNK = 256
"""Results parsed, validated and written to GCS per round (``max_concurrency`` writes at a time)."""


@dataclass
class _Tally:
    """What a batch produced, document by document; per-document lines go to temporary files. Token
    usage is priced at the Batch API's rates of ``prices`` for ``model``."""

    documents: int
    model: str
    prices: PriceTable
    succeeded: int = 0
    failed: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    unreadable_count: int = 0
    results: IO[bytes] = field(default_factory=lambda: tempfile.TemporaryFile())  # noqa: SIM115
    failures: IO[bytes] = field(default_factory=lambda: tempfile.TemporaryFile())  # noqa: SIM115
    examples: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    def priced(self, usage: TokenUsage) -> dict[str, Any]:
        """A document's ``usage`` entry: its token counts and ``estimated_cost`` at batch prices."""
        cost = cost_report(self.model, usage, batch=True, prices=self.prices)["estimated"]
        return {**usage.counts(), "estimated_cost": cost}

    def cost(self) -> dict[str, Any]:
        """The ``cost`` of everything tallied (as the online manifest's): estimate, pricing, its date."""
        return cost_report(self.model, self.usage, batch=True, prices=self.prices)

    def totals(self) -> dict[str, Any]:
        """The ``usage`` of the manifest and XCom: the summed counts, ``calls`` and ``estimated_cost``."""
        return {**self.usage.counts(), "calls": self.usage.calls, "estimated_cost": self.cost()["estimated"]}

    def success(self, entry: dict[str, Any], usage: TokenUsage) -> None:
        self.succeeded += 1
        self.usage += usage
        self.results.write(_line(entry))

    def failure(
        self, ref: GeminiFileRef, key: str, stage: str, reason: str, usage: TokenUsage | None = None
    ) -> None:
        self.failed += 1
        entry = {"document": key, "gemini_file": ref.name, "source_uri": ref.source_uri, "stage": stage}
        if usage is not None:  # a reply that was paid for, though unusable
            self.usage += usage
        shown = self.priced(usage) if usage is not None else None
        self.failures.write(_line({**entry, "reason": reason, "usage": shown}))
        if len(self.examples) < 10:
            self.examples.append(f"{key} ({ref.name}): {reason.rstrip('. ')}")
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def unreadable_line(self, number: int, problem: str, text: bytes | str) -> None:
        self.unreadable_count += 1
        if len(self.unreadable) < 100:
            shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            self.unreadable.append({"line": number, "problem": problem, "text": printable(shown[:200])})

    def close(self) -> None:
        self.results.close()
        self.failures.close()


def _line(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class GeminiBatchGenerateOperator(GeminiBudgetMixin, GeminiBaseOperator):
    """
    Ask a Gemini model about each document through the Batch API (half the online price): one request
    per file in one job, results written to GCS as one JSON per document plus ``_manifest.json``.

    **Submitting.** Each document gets a key (its file's base name, unique in the batch: see
    :func:`~airflow_gemini_files.naming.document_keys`), and its request asks ``prompt`` about that one
    file (after a ``<<<File: display name>>>`` label), with ``system_instruction``,
    ``generation_config`` and ``response_schema`` as in
    :class:`~airflow_gemini_files.operators.generate.GeminiGenerateContentOperator`. The requests are
    written as JSONL to a temporary file (never whole in memory); up to :data:`INLINE_MAX_BYTES` they are
    sent inline, larger batches as a JSONL file uploaded through the Files API. Before that, each file is
    checked (:func:`~airflow_gemini_files.hooks.policy.batch_file_problem`): a file that is not ACTIVE,
    has FAILED, is gone, or expires before the job's deadline (creation + ``timeout``) is a failed
    document, named in the manifest, and not sent. A ref that already says ACTIVE with its expiry (a
    sensor's, an upload's) is judged as it is, without an API call per file; a file that vanished since
    then comes back as that document's error from the job. The task refuses to submit only when those
    failures already exceed ``max_failed_fraction``, or when there is no file.

    **Waiting.** The job is created in ``execute``; with ``deferrable`` (the default) the wait moves to
    :class:`~airflow_gemini_files.triggers.batch.GeminiBatchJobTrigger` (no worker slot while the job
    runs), else the worker checks with the same rules. Every job state is handled
    (:func:`~airflow_gemini_files.hooks.policy.job_verdict`). A job still unfinished ``timeout`` seconds
    after its creation is cancelled and the task fails, saying so.

    **Results.** The results (a streamed file, or the job's inline responses) are mapped back by key,
    whatever their order; each answer is parsed (and validated against ``response_schema``) and written
    to ``<results_uri><key>.json``. ``<results_uri>_manifest.json`` holds the job's name and state, the
    counts, each failed document with its reason, each result with its token usage, the token totals
    (``usage``: ``prompt``, ``cached``, ``candidates``, ``thoughts``, ..., ``total``, ``calls`` and
    ``estimated_cost``) and ``cost`` (the estimate at the Batch API's prices of the connection's price
    table, with its date: :func:`~airflow_gemini_files.pricing.cost_report`). XCom gets a small summary:
    ``batch``, ``state``, ``documents``, ``succeeded``, ``failed``, ``results_uri``, ``manifest_uri``,
    ``usage``, ``cost``. Once the results are in GCS the task deletes what it created: the input file,
    the results file and the job.

    **Failing.** After writing what succeeded (and the manifest), the task fails when the job FAILED,
    EXPIRED or was CANCELLED (:class:`~airflow_gemini_files.exceptions.GeminiBatchJobError`; a retry
    submits a new job), when more than ``max_failed_fraction`` of the documents failed, or when result
    lines did not parse (:class:`~airflow_gemini_files.exceptions.GeminiBatchDocumentsError`, not
    retried).

    **Budget.** With a ``budget`` (:class:`~airflow_gemini_files.budget.RunBudget`, as for the generate
    operator: ``max_total_tokens`` and/or ``max_cost``, shared by every task and retry of the DAG run,
    records in the connection's extra ``ledger``) each request's input is counted (``countTokens``,
    ``max_concurrency`` at once) before anything is uploaded or created; the job is estimated at the
    Batch API's prices as that input plus, when ``generation_config`` sets ``max_output_tokens``, every
    request's output ceiling, and a job that would pass what the run has left fails the task (or skips
    it, ``on_exceeded="skip"``) with an error naming the budget, the estimate, the spend and the
    spenders; nothing is created on Gemini. An admitted job's estimate stays reserved while it runs (other
    tasks of the run see it), and once its results are in it is replaced by the job's actual usage. A
    retry that re-attaches to the job does not count again.

    **Retries and kills.** The job's display name is deterministic (DAG run in its deployment, task, map
    index: :func:`~airflow_gemini_files.naming.batch_display_name`), so a retried task re-attaches to the
    job its earlier try created instead of paying for a second one (a job that ended without results is
    deleted and submitted again). ``on_kill`` (and the trigger's, Airflow 3.3+) cancels the job. What a
    killed try left (job, input file, results file) is found by the next try, or by
    ``GeminiDeleteFilesOperator(delete_run_uploads=True)``, which cancels the run's jobs before deleting
    any file.

    :param model: Model name, e.g. ``gemini-2.5-flash`` (checked with one ``models.get`` first). Templated.
    :param prompt: The question asked about each document. Templated.
    :param files: GeminiFileRef(s), dicts or ``files/<id>`` names (e.g. a sensor's or register task's
        output). Templated.
    :param results_uri: ``gs://bucket/prefix/`` (ending with ``/``) for the results and the manifest.
        Templated.
    :param system_instruction: System instruction text. Templated.
    :param generation_config: Extra ``GenerateContentConfig`` fields (``temperature``, ...). Templated.
    :param response_schema: JSON schema (dict) or pydantic model class of each expected JSON reply.
    :param deferrable: Wait for the job in the triggerer (default) rather than in a worker.
    :param poll_interval: Longest wait between checks of the job, in seconds (the first comes after 5 s).
    :param timeout: Seconds (or a timedelta) the job may take from its creation; at most 48 hours.
    :param max_failed_fraction: Fraction of the documents (0 to 1) that may fail without failing the task.
    :param gcp_conn_id: GCP connection for writing the results (default: ``google_cloud_default`` if
        defined, else Application Default Credentials).
    :param max_concurrency: File checks, token counts and result writes in flight at once.
    :param budget: A :class:`~airflow_gemini_files.budget.RunBudget`, a dict of its fields, or None (no
        budget). Templated (a rendered dict, or ``"None"``, is read back).
    """

    template_fields: Sequence[str] = (
        "model",
        "prompt",
        "files",
        "results_uri",
        "system_instruction",
        "generation_config",
        "budget",
        "gemini_conn_id",
        "gcp_conn_id",
    )
    template_fields_renderers = {"prompt": "md", "system_instruction": "md", "generation_config": "json"}
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        model: str,
        prompt: str,
        files: Any,
        results_uri: str,
        system_instruction: str | None = None,
        generation_config: Mapping[str, Any] | None = None,
        response_schema: Mapping[str, Any] | type | None = None,
        deferrable: bool = True,
        poll_interval: timedelta | float = 60.0,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        max_failed_fraction: float = 0.0,
        gcp_conn_id: str | None = None,
        budget: RunBudget | Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.set_budget(budget)
        self.model = model
        self.prompt = prompt
        self.files = files
        self.results_uri = results_uri
        self.system_instruction = system_instruction
        self.generation_config = generation_config
        self.response_schema = check_response_schema(response_schema, task_id=self.task_id)
        self.deferrable = deferrable
        self.poll_interval = self._seconds("poll_interval", poll_interval, maximum=None)
        self.timeout = self._seconds("timeout", timeout, maximum=MAX_TIMEOUT)
        if (
            isinstance(max_failed_fraction, bool)
            or not isinstance(max_failed_fraction, int | float)
            or not 0 <= max_failed_fraction <= 1
        ):
            raise GeminiInputError(
                f"Task {self.task_id!r}: max_failed_fraction={max_failed_fraction!r} must be a number from 0 "
                "(no document may fail) to 1 (any may)."
            )
        self.max_failed_fraction = float(max_failed_fraction)
        self.gcp_conn_id = gcp_conn_id
        self._job_name: str | None = None
        self._lineage_sent: list[GeminiFileRef] = []
        self._lineage_results: list[str] = []
        self._lineage_manifest: str | None = None
        self._lineage_usage: dict[str, int] = {}

    def _seconds(self, name: str, value: Any, *, maximum: float | None) -> float:
        seconds = value.total_seconds() if isinstance(value, timedelta) else value
        ok = not isinstance(seconds, bool) and isinstance(seconds, int | float) and seconds > 0
        if not ok or (maximum is not None and seconds > maximum):
            limit = f" and at most {maximum:g} (jobs expire 48 hours after creation)" if maximum else ""
            raise GeminiInputError(
                f"Task {self.task_id!r}: {name}={value!r} must be a positive number of seconds (or a "
                f"timedelta){limit}."
            )
        return float(seconds)

    # Inputs ---------------------------------------------------------------------------------------
    def _check_arguments(self) -> tuple[str, str]:
        """Validate the rendered arguments; the results bucket and prefix."""
        check_request(self.prompt, self.model, self.generation_config, task_id=self.task_id)
        return self._results_location()

    def _results_location(self) -> tuple[str, str]:
        uri = self.results_uri
        example = "e.g. 'gs://my-bucket/results/{{ ds }}/'"
        if not isinstance(uri, str) or not uri.startswith("gs://") or not uri.endswith("/"):
            raise GeminiInputError(
                f"Task {self.task_id!r}: results_uri={uri!r} is not a 'gs://bucket/prefix/' URI ({example}); "
                "it must end with '/', since one object per document is written under it."
            )
        bucket, manifest = parse_gs_uri(uri + MANIFEST_NAME)
        return bucket, manifest.removesuffix(MANIFEST_NAME)

    def _documents(self) -> tuple[list[GeminiFileRef], list[str]]:
        refs = self.file_refs(self.files, allow_empty=True)
        if not refs:
            raise GeminiInputError(
                f"Task {self.task_id!r}: files={self.files!r} names no document, so there is nothing to "
                "submit. Check that the upstream task found documents, or skip this task when there are none."
            )
        return refs, naming.document_keys(refs)

    @cached_property
    def _config(self) -> dict[str, Any]:
        return request_config(self.generation_config, self.system_instruction, self.response_schema)

    @cached_property
    def _reader(self) -> ReplyReader:
        json_reply = self._config.get("response_mime_type") == JSON_MIME_TYPE
        return ReplyReader(self.model, self.response_schema, json_reply=json_reply)

    def _tally(self, documents: int) -> _Tally:
        return _Tally(documents=documents, model=self.model, prices=self.hook.prices)

    def _uri(self, location: tuple[str, str], name: str) -> str:
        return f"gs://{location[0]}/{location[1]}{name}"

    # Execute --------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        location = self._check_arguments()
        refs, keys = self._documents()
        set_map_index_label(context, f"{len(refs)} document(s)")
        model = self.hook.check_model(self.model, method=BATCH_METHOD)
        tracker = self._budget_tracker(context)
        display_name = naming.batch_display_name(context)
        job = self._earlier_job(context, display_name) if context["ti"].try_number > 1 else None
        skipped: dict[str, str] = {}
        if job is None:
            deadline = datetime.now(UTC) + timedelta(seconds=self.timeout)
            skipped = self._check_files(refs, keys, deadline)
            sendable = [(ref, key) for ref, key in zip(refs, keys, strict=True) if key not in skipped]
            if len(skipped) > self.max_failed_fraction * len(refs) or not sendable:
                return self._finish_unsent(context, location, refs, keys, skipped)
            reservation = self._reserve(tracker, sendable, display_name) if tracker else None
            try:
                job = self._submit(context, model, sendable, display_name)
            except BaseException as error:
                if tracker is not None and reservation is not None and cost_nothing(error):
                    tracker.release(reservation)
                raise
            if skipped:  # kept across the deferral (Airflow keeps a deferred task's XCom), for _finish
                context["ti"].xcom_push(key=NOT_SENT_XCOM_KEY, value=skipped)
        self._job_name = str(job.name)
        return self._follow(context, job, skipped)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger: read the results of the ended job, or handle the timeout or error."""
        if not isinstance(event, Mapping) or "status" not in event or not event.get("job"):
            raise GeminiFilesError(f"GeminiBatchJobTrigger sent an unexpected event: {event!r}")
        self._job_name = str(event["job"])
        ti = context["ti"]
        skipped = ti.xcom_pull(task_ids=ti.task_id, key=NOT_SENT_XCOM_KEY, map_indexes=ti.map_index)
        self.log.info("%s", event.get("message", ""))
        if event["status"] == "error" and isinstance(event.get("error"), Mapping):
            raise policy.error_from_event(event["error"])
        if event["status"] == "timeout":
            return self._timed_out(context, self._job_name, event.get("state"), dict(skipped or {}))
        if event["status"] != "done":
            raise GeminiFilesError(f"GeminiBatchJobTrigger sent an unexpected event: {event!r}")
        return self._finish(context, self.hook.get_batch(self._job_name), dict(skipped or {}))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the Gemini files sent in; each result object written and the manifest out; the
        model and the batch's token usage."""
        from airflow_gemini_files import lineage

        return lineage.batch_lineage(
            files=getattr(self, "_lineage_sent", []),
            results=getattr(self, "_lineage_results", []),
            manifest=getattr(self, "_lineage_manifest", None),
            model=self.model,
            response_schema=self.response_schema,
            usage=getattr(self, "_lineage_usage", None) or None,
            base_url=lineage.connection_base_url(self),
        )

    def on_kill(self) -> None:
        """Cancel the job this task created or re-attached to, so no paid job runs on unseen."""
        if self._job_name:
            self.hook.cancel_batch(self._job_name)

    # Budget ---------------------------------------------------------------------------------------
    def _budget_tracker(self, context: Context) -> BudgetTracker | None:
        """The run budget's tracker at batch prices; a reservation lasts as long as the job may run."""
        return self.budget_tracker(context, batch=True, lease=self.timeout + self.poll_interval + 120)

    def _reserve(
        self, tracker: BudgetTracker, sendable: Sequence[tuple[GeminiFileRef, str]], display_name: str
    ) -> Reservation:
        """Count the requests' input and reserve the job's estimate; refuse a job the budget cannot hold."""
        refs = [ref for ref, _ in sendable]
        counted = sum(self.count_each(refs, self._contents).values())
        ceiling = self._config.get("max_output_tokens")
        capped = isinstance(ceiling, int) and not isinstance(ceiling, bool) and ceiling > 0
        output = ceiling * len(refs) if isinstance(ceiling, int) and capped else 0
        estimate = TokenUsage(prompt=counted, candidates=output, total=counted + output, calls=len(refs))
        what = f"the batch job of {len(refs)} document(s) ({counted} input token(s) counted, " + (
            f"plus max_output_tokens={ceiling} per document)"
            if capped
            else "input alone: set max_output_tokens to count the output too)"
        )
        try:
            reservation = tracker.reserve(estimate, what=what, key=tracker.job_key(display_name))
        except GeminiBudgetExceededError as error:
            self.log.error("Not submitting the batch job: %s", error)
            self.budget_stop(error)
        self.log.info(
            "Budget %r: reserved %d token(s) (~$%.4f at batch prices) for %s.",
            tracker.budget.name,
            reservation.tokens,
            reservation.cost,
            what,
        )
        return reservation

    def _settle_budget(self, context: Context, usage: Mapping[str, Any] | None) -> None:
        """Replace the job's reservation by its actual usage (the manifest's ``usage``)."""
        tracker = self._budget_tracker(context)
        if tracker is None:
            return
        values = usage or {}
        spent = TokenUsage(
            **{name: int(values.get(name) or 0) for name in TokenUsage().counts()},
            calls=int(values.get("calls") or 0),
        )
        key = tracker.job_key(naming.batch_display_name(context))
        tracker.settle(Reservation(key, spent.total, 0.0), spent)
        self.log.info("Budget %r: the batch job spent %d token(s).", tracker.budget.name, spent.total)

    # Submitting -----------------------------------------------------------------------------------
    def _earlier_job(self, context: Context, display_name: str) -> types.BatchJob | None:
        """The job an earlier try of this task created: re-attach to it, unless it ended without results
        (then it is deleted, with its input, and a new one is submitted)."""
        found = [job for job in self.hook.list_batches() if job.display_name == display_name]
        if not found:
            return None
        newest = datetime.min.replace(tzinfo=UTC)
        job = max(found, key=lambda job: job.create_time or newest)
        verdict = policy.job_verdict(job.state)
        if verdict in (JobVerdict.RUNNING, JobVerdict.SUCCEEDED):
            self.log.info(
                "Found batch job %s (%s) from an earlier try of this task: re-attaching to it instead of "
                "paying for a second job.",
                job.name,
                policy.job_state_name(job.state),
            )
            return self.hook.get_batch(str(job.name))  # a listing leaves inline results out
        self.log.info(
            "Batch job %s of an earlier try ended %s without results: deleting it and submitting again.",
            job.name,
            policy.job_state_name(job.state),
        )
        self.hook.delete_batch(str(job.name))
        self.hook.delete_files_quietly([naming.batch_input_file_id(context)])
        return None

    def _check_files(
        self, refs: Sequence[GeminiFileRef], keys: Sequence[str], deadline: datetime
    ) -> dict[str, str]:
        """Why each document that must not be sent cannot be, by key. Refs that say ACTIVE with an expiry
        are judged as they are; the others are fetched first."""
        known = {ref.name for ref in refs if ref.state == "ACTIVE" and ref.expiration_time is not None}
        unknown = [ref for ref in refs if ref.name not in known]
        fresh: dict[str, GeminiFileRef | GeminiFilesError] = {}
        if unknown:
            self.log.info("Fetching %d file(s) whose state is not known to be ACTIVE.", len(unknown))
            for outcome in self.fan_out(
                self.hook.get_file, unknown, action="file checks", log_progress=False
            ):
                if outcome.ok and outcome.value is not None:
                    fresh[outcome.item.name] = outcome.value
                elif isinstance(outcome.error, GeminiFileGoneError):
                    fresh[outcome.item.name] = policy.gone_error(outcome.item)
                elif outcome.error is not None:
                    raise outcome.error  # a bad key, the network: every file alike
        problems: dict[str, str] = {}
        for ref, key in zip(refs, keys, strict=True):
            current = fresh.get(ref.name, ref)
            problem = current if isinstance(current, GeminiFilesError) else None
            if problem is None:
                assert isinstance(current, GeminiFileRef)
                problem = policy.batch_file_problem(current, deadline=deadline)
            if problem is not None:
                problems[key] = printable(problem)
        if problems:
            self.log.warning(
                "%d of %d document(s) will not be sent: %s",
                len(problems),
                len(refs),
                "; ".join(f"{key}: {reason}" for key, reason in list(problems.items())[:10]),
            )
        return problems

    def _submit(
        self, context: Context, model: str, sendable: Sequence[tuple[GeminiFileRef, str]], display_name: str
    ) -> types.BatchJob:
        """Write the requests as JSONL (streamed to disk), then create the job inline or from a file."""
        with tempfile.TemporaryFile() as jsonl:
            for ref, key in sendable:
                request = self.hook.batch_request(contents=self._contents(ref), config=self._config or None)
                jsonl.write(_line({"key": key, "request": request}))
            size = jsonl.tell()
            if size <= INLINE_MAX_BYTES:
                self.log.info(
                    "Submitting %d request(s) inline (%.2f MiB) to %s as %s.",
                    len(sendable),
                    size / MiB,
                    model,
                    display_name,
                )
                inline = [
                    {
                        "contents": self._contents(ref),
                        "config": self._config or None,
                        "metadata": {"key": key},
                    }
                    for ref, key in sendable
                ]
                return self.hook.create_batch(model=model, src=inline, display_name=display_name)
            self.log.info(
                "Uploading the %d request(s) (%.1f MiB of JSONL) and submitting them to %s as %s.",
                len(sendable),
                size / MiB,
                model,
                display_name,
            )
            jsonl.seek(0)
            source = self.hook.upload_file(
                jsonl,
                mime_type="application/jsonl",
                display_name=f"{display_name}-input.jsonl",
                name=naming.batch_input_file_id(context),
                size=size,
                on_exists="replace",
            )
        try:
            return self.hook.create_batch(model=model, src=source.name, display_name=display_name)
        except BaseException:
            self.hook.delete_files_quietly([source])
            raise

    def _contents(self, ref: GeminiFileRef) -> list[Any]:
        return request_contents(self.prompt, [ref])

    # Waiting --------------------------------------------------------------------------------------
    def _follow(self, context: Context, job: types.BatchJob, skipped: dict[str, str]) -> Any:
        """Finish an ended job now; else defer to the trigger, or check from the worker."""
        name = str(job.name)
        created = job.create_time or datetime.now(UTC)
        end_time = created.timestamp() + self.timeout
        if policy.job_verdict(job.state).finished:
            return self._finish(context, job, skipped)
        if self.deferrable:
            from airflow_gemini_files.triggers.batch import GeminiBatchJobTrigger

            remaining = max(0.0, end_time - time.time())
            self.log.info("Deferring: the triggerer waits up to %.0f s for batch job %s.", remaining, name)
            self.defer(
                trigger=GeminiBatchJobTrigger(
                    job_name=name,
                    gemini_conn_id=self.gemini_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=end_time,
                ),
                method_name="execute_complete",
                # A backstop only: the trigger's own deadline fires first with a clear message.
                timeout=timedelta(seconds=remaining + self.poll_interval + 60),
            )
        wait = policy.JobWait(name)
        schedule = policy.job_poll_schedule(self.poll_interval)
        while True:
            remaining = end_time - time.time()
            if remaining <= 0:
                return self._timed_out(context, name, wait.state, skipped)
            time.sleep(min(schedule.next(False), remaining))
            try:
                job = self.hook.get_batch(name)
            except Exception as error:
                wait.record(error)  # raises what ends the wait; else tolerated
                continue
            if wait.record(job.state).finished:
                return self._finish(context, job, skipped)
            self.log.info("%s.", wait.progress())

    def _timed_out(self, context: Context, name: str, state: Any, skipped: dict[str, str]) -> Any:
        """Cancel a job still unfinished after the timeout, write the manifest, and fail saying so. A job
        that ended by itself meanwhile is finished as any other."""
        try:
            cancelled = self.hook.cancel_batch(name)
            job = self.hook.end_batch(name)
        except Exception as error:
            self.log.error("Could not end batch job %s after its timeout: %s", name, error)
            raise policy.job_timeout_error(name, state, timeout=self.timeout, cancelled=False) from error
        if not cancelled:
            self.log.info("Batch job %s ended by itself just as its timeout passed.", name)
            return self._finish(context, job, skipped)
        still = policy.job_state_name(state).removeprefix("JOB_STATE_")
        reason = f"batch job {name} was still {still} after the timeout and was cancelled"
        self._finish(context, job, skipped, reason=reason, raise_errors=False)
        raise policy.job_timeout_error(name, state, timeout=self.timeout, cancelled=True)

    # Results --------------------------------------------------------------------------------------
    def _finish(
        self,
        context: Context,
        job: types.BatchJob,
        skipped: dict[str, str],
        *,
        reason: str | None = None,
        raise_errors: bool = True,
    ) -> dict[str, Any]:
        """Write the results and the manifest, delete what the task created, then fail or summarise."""
        location = self._check_arguments()
        refs, keys = self._documents()
        name = str(job.name)
        state = policy.job_state_name(job.state)
        verdict = policy.job_verdict(job.state)
        by_key = dict(zip(keys, refs, strict=True))
        tally = self._tally(len(refs))
        self._lineage_sent = [ref for key, ref in by_key.items() if key not in skipped]
        self._lineage_results, self._lineage_manifest, self._lineage_usage = [], None, {}
        try:
            for key, why in skipped.items():
                if key in by_key:
                    tally.failure(by_key[key], key, "not sent", why)
            answered: set[str] = set(skipped)
            recovered = None
            if verdict is JobVerdict.SUCCEEDED and reason is None:
                recovered = self._split(job, location, by_key, answered, tally)
                missing = "Gemini returned no result for it" + (
                    "" if not skipped else " (or an earlier try left it out of the job)"
                )
            else:
                missing = reason or str(policy.job_error(name, state))
            if recovered is None:
                for key, ref in by_key.items():
                    if key not in answered:
                        tally.failure(ref, key, "batch", missing)
                summary, examples = self._write_manifest(location, job, tally)
            else:
                summary, examples = recovered, f"see {recovered['manifest_uri']}"
        finally:
            tally.close()
        self._settle_budget(context, summary.get("usage"))
        self.hook.delete_batch(name)
        self.hook.delete_files_quietly([naming.batch_input_file_id(context)])
        self.log.info(
            "Batch job %s %s: %d of %d document(s) succeeded, %d failed; results in %s.",
            name,
            state,
            summary["succeeded"],
            summary["documents"],
            summary["failed"],
            summary["results_uri"],
        )
        if raise_errors:
            self._raise_for(summary, verdict, name, state, examples)
        return summary

    def _raise_for(
        self, summary: dict[str, Any], verdict: JobVerdict, name: str, state: str, examples: str
    ) -> None:
        """Fail the task for a job that ended without results, unreadable results, or too many failures."""
        manifest = summary["manifest_uri"]
        if verdict is not JobVerdict.SUCCEEDED:
            error = policy.job_error(name, state)
            error.args = (f"{error} The manifest lists every document: {manifest}.",)
            raise error
        if summary["unreadable_lines"]:
            raise GeminiBatchDocumentsError(
                f"{summary['unreadable_lines']} line(s) of batch job {name}'s results could not be read "
                f"({examples}); their documents count as failed. Every readable result is stored; "
                f"the manifest names the lines: {manifest}."
            )
        if summary["failed"] > self.max_failed_fraction * summary["documents"]:
            raise GeminiBatchDocumentsError(
                f"{summary['failed']} of {summary['documents']} document(s) failed, more than "
                f"max_failed_fraction={self.max_failed_fraction:g} allows: {examples}. The other "
                f"results are stored; the manifest names every failure and its reason: {manifest}."
            )

    def _results(self, job: types.BatchJob) -> Iterator[tuple[int, Any]]:
        """Each result line as ``(line number, parsed dict)``, or ``(line number, bytes)`` when it does not
        parse: streamed from the results file, or the job's inline responses."""
        dest = job.dest
        if dest is not None and dest.file_name:
            with tempfile.TemporaryFile() as results:
                self.hook.download_file(dest.file_name, results)
                self.log.info("Downloaded %s (%.1f MiB).", dest.file_name, results.tell() / MiB)
                results.seek(0)
                for number, raw in enumerate(results, 1):
                    if not raw.strip():
                        continue
                    try:
                        yield number, json.loads(raw)
                    except ValueError:
                        yield number, raw
            return
        for number, inlined in enumerate((dest.inlined_responses if dest else None) or [], 1):
            item: dict[str, Any] = {"metadata": inlined.metadata}
            if inlined.error is not None:
                item["error"] = inlined.error.model_dump(exclude_none=True)
            else:
                item["response"] = inlined.response
            yield number, item

    def _split(
        self,
        job: types.BatchJob,
        location: tuple[str, str],
        by_key: Mapping[str, GeminiFileRef],
        answered: set[str],
        tally: _Tally,
    ) -> dict[str, Any] | None:
        """Write one result object per answered document; None, or the summary of a manifest an earlier
        try already wrote for this job when its results file is gone."""
        name = str(job.name)
        pending: list[tuple[str, bytes, dict[str, Any], TokenUsage]] = []
        try:
            for number, item in self._results(job):
                self._read_result(number, item, by_key, answered, tally, name, pending)
                if len(pending) >= WRITE_CHUNK:
                    self._write_results(location, pending, tally)
        except GeminiFileGoneError as error:
            recovered = self._manifest_of(location, name)
            if recovered is None:
                raise
            self.log.info("The results file of %s is gone (%s), but %s holds them.", name, error, location)
            return recovered
        self._write_results(location, pending, tally)
        return None

    def _read_result(
        self,
        number: int,
        item: Any,
        by_key: Mapping[str, GeminiFileRef],
        answered: set[str],
        tally: _Tally,
        job_name: str,
        pending: list[tuple[str, bytes, dict[str, Any], TokenUsage]],
    ) -> None:
        if isinstance(item, bytes):
            tally.unreadable_line(number, "not valid JSON", item)
            return
        if not isinstance(item, dict):
            tally.unreadable_line(number, "not a JSON object", json.dumps(item)[:200])
            return
        metadata = item.get("metadata") if isinstance(item.get("metadata"), Mapping) else {}
        key = item.get("key", metadata.get("key") if metadata else None)
        if not isinstance(key, str) or key not in by_key:
            tally.unreadable_line(
                number, f"no key of this task's documents ({key!r})", json.dumps(item)[:200]
            )
            return
        if key in answered:
            self.log.warning("Batch job %s returned %s twice; keeping the first result.", job_name, key)
            return
        answered.add(key)
        ref = by_key[key]
        if item.get("error") is not None or item.get("response") is None:
            tally.failure(ref, key, "batch", policy.request_error_reason(item.get("error")))
            return
        from google.genai import types

        response = item["response"]
        try:
            if not isinstance(response, types.GenerateContentResponse):
                response = types.GenerateContentResponse.model_validate(response)
        except ValueError as error:
            answered.discard(key)
            problem = f"not a GenerateContentResponse: {printable(error)}"[:300]
            tally.unreadable_line(number, problem, json.dumps(item)[:200])
            return
        usage = usage_from_response(response)
        try:
            value = self._reader.read(response)
        except GeminiFilesError as error:
            tally.failure(ref, key, "batch", printable(error), usage)
            return
        result = {
            "document": key,
            "gemini_file": ref.name,
            "source_uri": ref.source_uri,
            "mime_type": ref.mime_type,
            "model": self.model,
            "batch": job_name,
            "result": value,
            "usage": tally.priced(usage),
        }
        payload = json.dumps(result, ensure_ascii=False, indent=2).encode()
        entry = {"document": key, "gemini_file": ref.name, "source_uri": ref.source_uri}
        entry["usage"] = result["usage"]
        pending.append((key, payload, entry, usage))

    def _write_results(
        self,
        location: tuple[str, str],
        pending: list[tuple[str, bytes, dict[str, Any], TokenUsage]],
        tally: _Tally,
    ) -> None:
        if not pending:
            return

        def write(item: tuple[str, bytes, dict[str, Any], TokenUsage]) -> str:
            return self.hook.write_gcs_object(self._uri(location, f"{item[0]}.json"), item[1])

        outcomes = self.fan_out(write, list(pending), action="result writes", log_progress=False)
        for outcome in outcomes:
            if not outcome.ok:
                assert outcome.error is not None
                raise outcome.error  # GCS refused a write: every other write would fail alike
            _, _, entry, usage = outcome.item
            tally.success({**entry, "result": outcome.value}, usage)
            self._lineage_results.append(str(outcome.value))
        pending.clear()
        self.log.info("%d result(s) written to %s so far.", tally.succeeded, self._uri(location, ""))

    # The manifest ---------------------------------------------------------------------------------
    def _write_manifest(
        self, location: tuple[str, str], job: types.BatchJob | None, tally: _Tally
    ) -> tuple[dict[str, Any], str]:
        """Stream ``_manifest.json`` to GCS; the XCom summary, and examples of failures for a message."""
        state = policy.job_state_name(job.state) if job is not None else None
        manifest_uri = self._uri(location, MANIFEST_NAME)
        header: dict[str, Any] = {
            "batch": str(job.name) if job is not None else None,
            "display_name": job.display_name if job is not None else None,
            "state": state,
            "model": self.model,
            "created": job.create_time.isoformat() if job is not None and job.create_time else None,
            "ended": job.end_time.isoformat() if job is not None and job.end_time else None,
            "results_uri": self._uri(location, ""),
            "documents": tally.documents,
            "succeeded": tally.succeeded,
            "failed": tally.failed,
            "usage": tally.totals(),
            "cost": tally.cost(),
            "unreadable_lines": tally.unreadable,
            "unreadable_line_count": tally.unreadable_count,
            "written_at": datetime.now(UTC).isoformat(),
        }
        with self.hook.open_gcs_writer(manifest_uri) as out:
            out.write(json.dumps(header, indent=1, ensure_ascii=False)[:-2].encode())
            for field_name, lines in (("failures", tally.failures), ("results", tally.results)):
                out.write(f',\n "{field_name}": [\n'.encode())
                lines.seek(0)
                first = True
                for line in lines:
                    out.write(line[:-1] if first else b",\n" + line[:-1])
                    first = False
                out.write(b"\n ]")
            out.write(b"\n}\n")
        self._lineage_manifest = manifest_uri
        self._lineage_usage = tally.usage.as_dict()
        if tally.unreadable:  # what the task fails for first (see _raise_for)
            examples = "; ".join(f"line {u['line']}: {u['problem']}" for u in tally.unreadable[:5])
        elif len(tally.reasons) == 1 and tally.failed > 1:
            [(reason, count)] = tally.reasons.items()
            examples = f"all {count} for the same reason: {reason.rstrip('. ')}"
        else:
            examples = "; ".join(tally.examples)
        summary = {
            "batch": header["batch"],
            "state": state,
            "documents": tally.documents,
            "succeeded": tally.succeeded,
            "failed": tally.failed,
            "results_uri": header["results_uri"],
            "manifest_uri": manifest_uri,
            "usage": header["usage"],
            "cost": header["cost"],
            "unreadable_lines": tally.unreadable_count,
        }
        return summary, examples

    def _manifest_of(self, location: tuple[str, str], job_name: str) -> dict[str, Any] | None:
        """The summary of the manifest an earlier try wrote for ``job_name``, if there is one."""
        data = self.hook.read_gcs_object(self._uri(location, MANIFEST_NAME))
        try:
            manifest = json.loads(data) if data else None
        except ValueError:
            return None
        if not isinstance(manifest, dict) or manifest.get("batch") != job_name:
            return None
        return {
            "batch": job_name,
            "state": manifest.get("state"),
            "documents": manifest.get("documents"),
            "succeeded": manifest.get("succeeded"),
            "failed": manifest.get("failed"),
            "results_uri": manifest.get("results_uri"),
            "manifest_uri": self._uri(location, MANIFEST_NAME),
            "usage": manifest.get("usage"),
            "cost": manifest.get("cost"),
            "unreadable_lines": manifest.get("unreadable_line_count", 0),
        }

    def _finish_unsent(
        self,
        context: Context,
        location: tuple[str, str],
        refs: Sequence[GeminiFileRef],
        keys: Sequence[str],
        skipped: dict[str, str],
    ) -> dict[str, Any]:
        """No job: write the manifest naming every document that could not be sent, then refuse (or, when
        ``max_failed_fraction`` allows it, succeed with nothing analysed)."""
        tally = self._tally(len(refs))
        others = (
            "not sent: no batch was submitted, since too many other documents cannot be sent"
            if skipped
            else "not sent"
        )
        try:
            for ref, key in zip(refs, keys, strict=True):
                if key in skipped:
                    tally.failure(ref, key, "not sent", skipped[key])
            for ref, key in zip(refs, keys, strict=True):
                if key not in skipped:
                    tally.failure(ref, key, "not sent", others)
            summary, examples = self._write_manifest(location, None, tally)
        finally:
            tally.close()
        if len(skipped) > self.max_failed_fraction * len(refs):
            raise GeminiBatchDocumentsError(
                f"Did not submit a batch: {len(skipped)} of {len(refs)} document(s) cannot be sent, more "
                f"than max_failed_fraction={self.max_failed_fraction:g} allows: {examples}. Manifest: "
                f"{summary['manifest_uri']}."
            )
        self.log.warning("No document can be sent (%s); no batch job was created.", examples)
        return summary
