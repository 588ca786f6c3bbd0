"""Operator that asks a Gemini model about files in the Files API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.budget import (
    BudgetTracker,
    GeminiBudgetExceededError,
    Reservation,
    RunBudget,
    cost_nothing,
)
from airflow_gemini_files.exceptions import (
    GeminiFileGoneError,
    GeminiFilesError,
    GeminiInputError,
)
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.policy import FileVerdict
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
    is_many,
    map_index_label,
    set_map_index_label,
)
from airflow_gemini_files.pricing import (
    TokenUsage,
    sum_usage,
    usage_from_dict,
    usage_from_response,
    usage_report,
)
from airflow_gemini_files.refs import GeminiFileRef

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

USAGE_XCOM_KEY = "usage"
"""XCom key of the token usage summed over the calls the task made, with the estimated cost
(:func:`airflow_gemini_files.pricing.usage_report`)."""

USAGE_BY_CALL_XCOM_KEY = "usage_by_call"
"""XCom key of the usage of each call: ``[{"files": [...], "label": ..., <usage report>}]`` (with
``per_file``, one entry per document)."""

ERRORS_XCOM_KEY = "errors"
"""XCom key of the per-file errors of a ``per_file`` run: ``[{"file", "display_name", "error"}]``."""


class GeminiGenerateContentOperator(GeminiBudgetMixin, GeminiBaseOperator):
    """
    Ask a Gemini model about files; return the text, or the parsed JSON when a schema or JSON is asked for.

    The prompt comes first, then the files in the order given, each preceded by a text part
    ``<<<File: display name>>>`` so the model can tell them apart (``label_files=False`` turns it off).
    The model name is checked first (:meth:`~airflow_gemini_files.hooks.gemini.GeminiHook.check_model`):
    an unknown name fails the task at once, without retries, naming the close model names.
    Before the model is called every file is fetched again: files that are not ACTIVE, have FAILED, have
    expired (or will within a minute) or are gone are refused with an error naming them, the error every
    other task gives for the same file (see :mod:`airflow_gemini_files.hooks.policy`). A file listed
    twice is sent once.

    With ``response_schema`` (a JSON schema dict, or a pydantic model class) the model is asked for JSON,
    and the reply is parsed and validated; a pydantic reply is returned as a plain dict.

    Token usage (prompt, cached, answer, thinking tokens) and its estimated cost (the connection's price
    table, :mod:`airflow_gemini_files.pricing`) go to the XCom key ``usage`` (summed over the task's calls)
    and ``usage_by_call`` (one entry per call: per document with ``per_file``).

    With a ``budget`` (:class:`~airflow_gemini_files.budget.RunBudget`: ``max_total_tokens`` and/or
    ``max_cost``) every call draws from a budget shared by the whole DAG run, across mapped tasks and
    retries (records in the connection's extra ``ledger``): each call's input is counted first
    (``countTokens``) and reserved with its output allowance; a call the budget has no room for fails the
    task (or skips it, ``on_exceeded="skip"``) with an error naming the budget, the spend and the
    spenders. With ``per_file`` the whole fan-out's input is counted before any call, and a fan-out whose
    input alone would pass what is left is refused at once. See :mod:`airflow_gemini_files.budget`.

    With a list of files and ``per_file=True`` the prompt is sent once per file (``max_concurrency`` calls at
    once) and the result is a list aligned with the (distinct) files. Each file's failure is collected rather
    than hiding the others: the errors go to XCom key ``errors``, and with ``fail_on_error`` (the default) the
    task fails once all calls have finished; with ``fail_on_error=False`` it succeeds and failed entries are
    None.

    Mapped over files (``.partial(...).expand(files=sensor.output)``) each task instance is labelled with its
    document's display name (the ``gemini_file_label`` context variable, used as ``map_index_template``
    unless the DAG sets its own).

    :param model: Model name, e.g. ``gemini-2.5-flash``. Templated.
    :param prompt: The question. Templated; an empty prompt is an error.
    :param files: GeminiFileRef(s), dicts or ``files/<id>`` names; None for a text-only prompt. An empty
        list is an error, except with ``per_file`` (then the result is an empty list). Templated.
    :param system_instruction: System instruction text. Templated.
    :param generation_config: Extra ``GenerateContentConfig`` fields (``temperature``,
        ``max_output_tokens``, ``response_mime_type``, ...). Templated.
    :param response_schema: JSON schema (dict) or pydantic model class of the expected JSON reply.
    :param label_files: Precede each file with ``<<<File: display name>>>``.
    :param per_file: One call per file instead of one call with all files.
    :param fail_on_error: With ``per_file``, fail the task if any file's call failed (after all have run);
        False returns None for those files instead. A single call always fails on error.
    :param max_concurrency: Calls in flight at once (``per_file``) and parallel file refreshes.
    :param budget: A :class:`~airflow_gemini_files.budget.RunBudget`, a dict of its fields, or None (no
        budget). Templated (a rendered dict, or ``"None"``, is read back).
    """

    template_fields: Sequence[str] = (
        "model",
        "prompt",
        "files",
        "system_instruction",
        "generation_config",
        "budget",
        "gemini_conn_id",
    )
    template_fields_renderers = {"prompt": "md", "system_instruction": "md", "generation_config": "json"}
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        model: str,
        prompt: str,
        files: Any = None,
        system_instruction: str | None = None,
        generation_config: Mapping[str, Any] | None = None,
        response_schema: Mapping[str, Any] | type | None = None,
        label_files: bool = True,
        per_file: bool = False,
        fail_on_error: bool = True,
        budget: RunBudget | Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.set_budget(budget)
        self.model = model
        self.prompt = prompt
        self.files = files
        self.system_instruction = system_instruction
        self.generation_config = generation_config
        self.response_schema = check_response_schema(response_schema, task_id=self.task_id)
        self.label_files = label_files
        self.per_file = per_file
        self.fail_on_error = fail_on_error

    # Inputs ---------------------------------------------------------------------------------------
    def _check_arguments(self) -> None:
        check_request(self.prompt, self.model, self.generation_config, task_id=self.task_id)

    def _refresh(self, refs: list[GeminiFileRef]) -> list[GeminiFileRef | GeminiFilesError]:
        """Fetch each file again; the fresh ref, or the error saying why it cannot be sent to the model."""
        outcomes = self.fan_out(self.hook.get_file, refs, action="file checks", log_progress=False)
        fresh: list[GeminiFileRef | GeminiFilesError] = []
        for outcome in outcomes:
            ref, error = outcome.item, outcome.error
            if outcome.ok and outcome.value is not None:
                value = outcome.value
                verdict = policy.file_verdict(value, margin=policy.USE_EXPIRY_MARGIN)
                fresh.append(value if verdict is FileVerdict.USABLE else policy.verdict_error(value, verdict))
            elif isinstance(error, GeminiFileGoneError):
                fresh.append(policy.gone_error(ref))
            elif error is not None and (isinstance(error, GeminiInputError) or not self.per_file):
                raise error  # a bad key or connection fails every file alike
            else:
                fresh.append(GeminiFilesError(f"Could not fetch {policy.describe(ref)}: {printable(error)}"))
        return fresh

    # The call -------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return request_config(self.generation_config, self.system_instruction, self.response_schema)

    def _contents(self, refs: Sequence[GeminiFileRef]) -> list[Any]:
        return request_contents(self.prompt, refs, label_files=self.label_files)

    @cached_property
    def _reader(self) -> ReplyReader:
        json_reply = self._config().get("response_mime_type") == JSON_MIME_TYPE
        return ReplyReader(self.model, self.response_schema, json_reply=json_reply)

    def _generate(self, refs: Sequence[GeminiFileRef], counted: int | None = None) -> tuple[Any, TokenUsage]:
        config = self._config()
        label = map_index_label(refs) if refs else "the prompt"
        reservation: Reservation | None = None
        if self._tracker is not None:
            tokens = self.count_input(self._contents(refs)) if counted is None else counted
            reservation = self._tracker.admit(
                tokens, max_output_tokens=config.get("max_output_tokens"), what=f"the call for {label}"
            )
        try:
            response = self.hook.generate_content(
                model=self.model, contents=self._contents(refs), config=config or None
            )
        except BaseException as error:
            if reservation is not None and self._tracker is not None:
                if cost_nothing(error):
                    self._tracker.release(reservation)
                else:
                    self._tracker.keep(reservation)
            raise
        usage = usage_from_response(response)
        if reservation is not None and self._tracker is not None:
            self._tracker.settle(reservation, usage)
        report = usage_report(self.model, usage, prices=self.hook.prices)
        self._lineage_calls.append((list(refs), report))
        self.log.info(
            "Usage for %s: %d prompt token(s) (%d cached) + %d answer + %d thinking = %d, ~$%s.",
            label,
            usage.prompt,
            usage.cached,
            usage.candidates,
            usage.thoughts,
            usage.total,
            "?" if report["estimated_cost"] is None else f"{report['estimated_cost']:.6f}",
        )
        return self._reader.read(response), usage

    def _push_usage(self, context: Context) -> None:
        """XCom ``usage`` (the task's total) and ``usage_by_call``."""
        calls = self._lineage_calls
        total = sum_usage(usage_from_dict(report) for _, report in calls)
        context["ti"].xcom_push(
            key=USAGE_XCOM_KEY, value=usage_report(self.model, total, prices=self.hook.prices)
        )
        context["ti"].xcom_push(
            key=USAGE_BY_CALL_XCOM_KEY,
            value=[
                {
                    "files": [ref.name for ref in refs],
                    "label": map_index_label(refs) if refs else None,
                    **report,
                }
                for refs, report in calls
            ],
        )

    # Execute --------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        self._lineage_calls: list[tuple[list[GeminiFileRef], dict[str, Any]]] = []
        self._tracker: BudgetTracker | None = None
        self._check_arguments()
        self.hook.check_model(self.model)  # a typo fails here, before any file is looked at
        self._tracker = self.budget_tracker(context)
        many = is_many(self.files)
        if self.files is None and self.per_file:
            raise GeminiInputError(f"Task {self.task_id!r}: per_file=True needs files (got None).")
        refs = self.file_refs(self.files, allow_empty=True)
        if many and not refs:
            if not self.per_file:
                raise GeminiInputError(
                    f"Task {self.task_id!r}: files is an empty list, so the model would answer without any "
                    "document. Check the upstream task found files, or pass files=None for a prompt alone."
                )
            self.log.info("No files: nothing to ask the model.")
            self._push_usage(context)
            context["ti"].xcom_push(key=ERRORS_XCOM_KEY, value=[])
            return []
        set_map_index_label(context, map_index_label(refs) if refs else "prompt only")
        fresh = self._refresh(refs)
        problems = [item for item in fresh if isinstance(item, GeminiFilesError)]
        usable = [item for item in fresh if isinstance(item, GeminiFileRef)]
        if usable:
            set_map_index_label(context, map_index_label(usable))
        if problems and (self.fail_on_error or not self.per_file):
            raise policy.first_error(problems)

        if not self.per_file:
            self.log.info("Asking %s about %d file(s).", self.model, len(usable))
            try:
                result, _ = self._generate(usable)
            except GeminiBudgetExceededError as error:
                self.budget_stop(error)
            finally:
                self._push_usage(context)
            return result

        self.log.info(
            "Asking %s about %d file(s), one call each, %d at a time.",
            self.model,
            len(refs),
            self.max_concurrency,
        )
        counted = self._check_fan_out(context, usable)
        outcomes = self.fan_out(
            lambda ref: self._generate([ref], counted.get(ref.name)), usable, action="generate calls"
        )
        by_name = {outcome.item.name: outcome for outcome in outcomes}
        results: list[Any] = []
        errors: list[dict[str, str]] = []
        budget_errors: list[GeminiBudgetExceededError] = []
        for ref, item in zip(refs, fresh, strict=True):
            outcome = by_name.get(ref.name) if isinstance(item, GeminiFileRef) else None
            if outcome is not None and outcome.ok and outcome.value is not None:
                results.append(outcome.value[0])
                continue
            if outcome is not None and isinstance(outcome.error, GeminiBudgetExceededError):
                budget_errors.append(outcome.error)
            message = (
                str(item) if isinstance(item, GeminiFilesError) else str(outcome.error if outcome else "")
            )
            label = item.label if isinstance(item, GeminiFileRef) else ref.label
            errors.append({"file": ref.name, "display_name": label, "error": printable(message)})
            results.append(None)
        self._push_usage(context)
        context["ti"].xcom_push(key=ERRORS_XCOM_KEY, value=errors)
        if errors:
            summary = f"{len(errors)} of {len(refs)} generate call(s) failed: " + "; ".join(
                f"{error['file']} ({error['display_name']}): {error['error']}" for error in errors[:20]
            )
            if self.fail_on_error and len(budget_errors) < len(errors):
                raise GeminiFilesError(summary)
            if budget_errors:
                stopped = len(budget_errors)
                if budget_errors[0].on_exceeded == "fail" or stopped == len(refs):
                    self.budget_stop(budget_errors[0])
                self.log.warning(
                    "The budget stopped %d of %d call(s); their results are None.", stopped, len(refs)
                )
            else:
                self.log.warning("%s. Their results are None; see XCom %r.", summary, ERRORS_XCOM_KEY)
        return results if many else results[0]

    def _check_fan_out(self, context: Context, refs: Sequence[GeminiFileRef]) -> dict[str, int]:
        """With a budget: count each file's input before any call; refuse a fan-out that cannot fit."""
        tracker = self._tracker
        if tracker is None or not refs:
            return {}
        counted = self.count_each(refs, lambda ref: self._contents([ref]))
        total = sum(counted.values())
        try:
            tracker.check_estimate(
                TokenUsage(prompt=total, total=total, calls=len(refs)),
                what=f"the fan-out over {len(refs)} file(s) (input alone)",
            )
        except GeminiBudgetExceededError as error:
            self._push_usage(context)
            context["ti"].xcom_push(key=ERRORS_XCOM_KEY, value=[])
            self.budget_stop(error)
        return counted

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the files in, one model response per answered call out, model and token usage."""
        from airflow_gemini_files import lineage

        calls = getattr(self, "_lineage_calls", [])
        return lineage.generation_lineage(
            files=self.file_refs(self.files, allow_empty=True),
            answered=[files for files, _ in calls],
            model=self.model,
            response_schema=self.response_schema,
            usage=usage_report(
                self.model, sum_usage(usage_from_dict(report) for _, report in calls), prices=self.hook.prices
            )
            if calls
            else None,
            base_url=lineage.connection_base_url(self),
        )
