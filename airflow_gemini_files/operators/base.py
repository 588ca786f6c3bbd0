"""What every Gemini task shares: the hook, argument checks, bounded fan-out, the grid label, failures.

:class:`GeminiBaseOperator` is the base of the operators; the sensor gets the same through
:class:`GeminiTaskMixin` (it derives from Airflow's ``BaseSensorOperator``). A new operator (batch mode,
say) derives from :class:`GeminiBaseOperator` and gets, without writing them again:

- ``self.hook``: one :class:`~airflow_gemini_files.hooks.gemini.GeminiHook` per task instance, its
  connection read once (not in every worker thread);
- ``self.fan_out(func, items, action=...)``: ``max_concurrency`` calls at once, every outcome kept;
- ``self.file_refs(value)``: a ``files``-like argument as de-duplicated refs, or an error naming it;
- ``self.raise_for_failures(outcomes, ...)``: roll back what the task created, then fail with the one
  error, or a summary naming every failed item;
- :func:`set_map_index_label`: the document's name instead of ``0, 1, 2`` in the grid.

Operators that call a model and take a ``budget`` (generate, batch) also derive from
:class:`GeminiBudgetMixin`: the budget checked when the DAG is parsed, the task's
:class:`~airflow_gemini_files.budget.BudgetTracker`, ``countTokens`` of each request, and fail-or-skip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar, cast

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from airflow_gemini_files.budget import DEFAULT_LEASE, BudgetTracker, GeminiBudgetExceededError, RunBudget
from airflow_gemini_files.exceptions import GeminiFilesError, GeminiInputError
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.ledger import TaskKey
from airflow_gemini_files.naming import printable
from airflow_gemini_files.operators._fanout import Outcome, fan_out
from airflow_gemini_files.refs import GeminiFileRef

if TYPE_CHECKING:
    from airflow.sdk import Context

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_CONCURRENCY = 8
"""Gemini calls one task makes at once, unless ``max_concurrency`` says otherwise."""

MAP_INDEX_LABEL_KEY = "gemini_file_label"
"""Context variable holding the display name(s) of the files a task works on."""

DEFAULT_MAP_INDEX_TEMPLATE = "{{ " + MAP_INDEX_LABEL_KEY + " }}"
"""The ``map_index_template`` a mapped task gets when its author set none: the file's display name."""

_MAX_MAP_INDEX = 250  # Airflow stores the rendered map index in a 250-character column.
_SUMMARY_ITEMS = 20


# Arguments ------------------------------------------------------------------------------------------
def is_many(value: Any) -> bool:
    """Whether an argument holds a list of items (a list, tuple or lazy XCom sequence) rather than one."""
    if isinstance(value, str | bytes | dict | GeminiFileRef):
        return False
    return hasattr(value, "__iter__") and not hasattr(value, "keys")


def reject_rendered_text(value: Any, *, param: str, task_id: str, expected: str) -> None:
    """Refuse a templated list or dict that Jinja rendered to its text (``"['a.pdf', 'b.pdf']"``)."""
    if isinstance(value, str) and value.lstrip().startswith(("[", "{", "(", "GeminiFileRef(")):
        raise GeminiInputError(
            f"Task {task_id!r}: {param} was rendered to the text {value[:200]!r} instead of {expected}. "
            "Pass the upstream task's output (e.g. files=upload.output) rather than a '{{ ... }}' string, "
            "or set render_template_as_native_obj=True on the DAG."
        )


def check_max_concurrency(value: Any, *, task_id: str) -> int:
    """Validate ``max_concurrency`` (a whole number of parallel calls, at least 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GeminiInputError(
            f"Task {task_id!r}: max_concurrency={value!r} is not a positive whole number: "
            "pass how many Gemini calls may run at once, e.g. max_concurrency=8."
        )
    return value


def flatten(items: Sequence[Any]) -> list[Any]:
    """Flatten one level of nested lists (a mapped upstream task pushes one list per map index)."""
    flat: list[Any] = []
    for item in items:
        flat.extend(item) if is_many(item) else flat.append(item)
    return flat


def dedupe(items: Sequence[T], key: Callable[[T], Any] = lambda item: item) -> list[T]:
    """Drop repeated items (by ``key``), keeping the first occurrence and the order.

    Every Gemini task treats a file or source listed twice as one: it is uploaded, registered, waited
    for, sent to the model or deleted once.
    """
    seen: set[Any] = set()
    unique: list[T] = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            unique.append(item)
    return unique


def is_templated(value: Any) -> bool:
    """Whether a value still holds a Jinja template (checked again once rendered)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_templated(item) for item in value.values())
    return False


# The grid label -----------------------------------------------------------------------------------
def map_index_label(refs: Sequence[GeminiFileRef]) -> str:
    """Display name of one file, or ``"first (+N more)"`` for several."""
    if not refs:
        return "no files"
    first = refs[0].label
    return first if len(refs) == 1 else f"{first} (+{len(refs) - 1} more)"


def states_summary(refs: Sequence[GeminiFileRef]) -> str:
    """``"3 ACTIVE, 2 PROCESSING"``: how many files are in each state."""
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.state or "UNKNOWN"] = counts.get(ref.state or "UNKNOWN", 0) + 1
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))


def set_map_index_label(context: Context | dict[str, Any], label: str) -> None:
    """
    Publish ``label`` as the context variable ``gemini_file_label`` and use it as the mapped task's name.

    Airflow renders ``map_index_template`` with the task's context after ``execute`` returns (or fails),
    so a mapped task shows the document instead of ``0, 1, 2``. An explicit ``map_index_template`` set by
    the DAG author always wins; they can use ``{{ gemini_file_label }}`` in it.
    """
    values = cast(dict[str, Any], context)
    values[MAP_INDEX_LABEL_KEY] = printable(label)[:_MAX_MAP_INDEX]
    ti = values.get("ti")
    map_index = getattr(ti, "map_index", None)
    if values.get("map_index_template") is None and isinstance(map_index, int) and map_index >= 0:
        values["map_index_template"] = DEFAULT_MAP_INDEX_TEMPLATE


# Shared by operators and the sensor ---------------------------------------------------------------
class GeminiTaskMixin:
    """The hook, file arguments, bounded fan-out and failure handling of every Gemini task."""

    task_id: str
    gemini_conn_id: str
    gcp_conn_id: str | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    log: Any
    prebuild_sdk_client: ClassVar[bool] = True
    """Build the SDK client with the hook (every item of the work calls it); False where items seldom do."""

    @cached_property
    def hook(self) -> GeminiHook:
        """The hook, built from ``gemini_conn_id`` (and ``gcp_conn_id``), its connection read once."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id, gcp_conn_id=self.gcp_conn_id)
        if self.prebuild_sdk_client:
            hook.get_conn()  # read the connection once, not in every worker thread
        else:
            _ = hook.settings  # the connection, read and checked once; no client (its TLS set-up costs CPU)
        return hook

    def file_refs(
        self, value: Any, *, param: str = "files", allow_empty: bool = False
    ) -> list[GeminiFileRef]:
        """
        A ``files``-like argument as refs, each file once: a GeminiFileRef, a dict, a ``files/<id>`` name,
        or a (nested) list of them. Raises :class:`GeminiInputError` naming the task, argument and value.
        """
        if is_many(value):
            value = list(value)
        if value is None or value == []:
            if allow_empty:
                return []
            raise GeminiInputError(
                f"Task {self.task_id!r}: {param}={value!r} names no Gemini file. Pass a GeminiFileRef, a "
                "list of them, dicts with a 'name', or 'files/<id>' names (for example the XCom of an "
                "upload, register or sensor task); if it comes from an upstream XCom, check that the "
                "upstream task pushed one."
            )
        reject_rendered_text(value, param=param, task_id=self.task_id, expected="file references")
        try:
            refs = GeminiFileRef.coerce_many(value)
        except (TypeError, ValueError) as error:
            raise GeminiInputError(f"Task {self.task_id!r}: bad {param}: {printable(error)}") from error
        unique = dedupe(refs, key=lambda ref: ref.name)
        if len(unique) < len(refs):
            self.log.info(
                "%s lists %d file(s) more than once: each is used once.", param, len(refs) - len(unique)
            )
        return unique

    def fan_out(
        self,
        func: Callable[[T], R],
        items: Sequence[T],
        *,
        action: str,
        stop_on_error: bool = False,
        log_progress: bool = True,
    ) -> list[Outcome[T, R]]:
        """Call ``func`` per item, ``max_concurrency`` at a time; every outcome, in input order.

        The hook is built (its connection read) first, once: a missing connection fails the task with one
        error, not one per item.
        """
        _ = self.hook
        return fan_out(
            func,
            items,
            max_concurrency=self.max_concurrency,
            log=self.log,
            action=action,
            stop_on_error=stop_on_error,
            log_progress=log_progress,
        )

    def raise_for_failures(
        self,
        outcomes: Sequence[Outcome[T, Any]],
        *,
        what: str,
        created: Sequence[GeminiFileRef] = (),
        after: str = "",
        label: Callable[[T], str] = str,
        single_as_is: bool = True,
    ) -> None:
        """
        If any item failed: delete what the task ``created`` (best effort), then raise.

        One failure is raised as it is (its message names the value and the fix; with ``single_as_is``);
        several become one :class:`GeminiFilesError` naming every failed item. ``after`` ends the message
        (e.g. what was rolled back).
        """
        if all(outcome.ok for outcome in outcomes):
            return
        failed = [outcome for outcome in outcomes if outcome.started and not outcome.ok]
        if created:
            self.hook.delete_files_quietly(created)
        if single_as_is and len(failed) == 1 and failed[0].error is not None:
            raise failed[0].error
        lines = "; ".join(
            f"{printable(label(outcome.item))}: {printable(outcome.error)}"
            for outcome in failed[:_SUMMARY_ITEMS]
        )
        more = f" (and {len(failed) - _SUMMARY_ITEMS} more)" if len(failed) > _SUMMARY_ITEMS else ""
        raise GeminiFilesError(
            f"{len(failed)} of {len(outcomes)} {what} failed: {lines}{more}. {after}".rstrip()
        )


class GeminiBaseOperator(GeminiTaskMixin, BaseOperator):
    """
    Base of the provider's operators: ``gemini_conn_id``, ``max_concurrency`` (checked when the DAG is
    parsed) and everything :class:`GeminiTaskMixin` gives.

    :param gemini_conn_id: Airflow connection of type ``gemini`` (the API key is its password).
    :param max_concurrency: Gemini calls in flight at once.
    """

    def __init__(
        self,
        *,
        gemini_conn_id: str = GeminiHook.default_conn_name,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gemini_conn_id = gemini_conn_id
        self.max_concurrency = check_max_concurrency(max_concurrency, task_id=self.task_id)


class GeminiBudgetMixin:
    """
    A ``budget`` argument (:class:`~airflow_gemini_files.budget.RunBudget`, a dict of its fields, or
    None) with one meaning for every operator that calls a model: checked when the DAG is parsed (unless
    templated, then once rendered), drawn from through the task's
    :class:`~airflow_gemini_files.budget.BudgetTracker`, and a stop that fails or skips the task.
    """

    task_id: str
    model: str
    system_instruction: str | None
    budget: RunBudget | Mapping[str, Any] | str | None
    hook: GeminiHook
    log: Any
    fan_out: Callable[..., list[Outcome[Any, Any]]]

    def set_budget(self, budget: RunBudget | Mapping[str, Any] | str | None) -> None:
        """Keep ``budget``; a bad one fails when the DAG is parsed (a templated one once rendered)."""
        if not is_templated(budget):
            RunBudget.coerce(budget)
        self.budget = budget

    def budget_tracker(
        self, context: Context, *, batch: bool = False, lease: float = DEFAULT_LEASE
    ) -> BudgetTracker | None:
        """The task's tracker of the rendered budget (None without one); ``batch`` prices at batch rates."""
        budget = RunBudget.coerce(self.budget)
        if budget is None:
            return None
        return BudgetTracker(
            budget,
            self.hook.require_ledger(f"Task {self.task_id!r}: the budget {budget.name!r}"),
            TaskKey.from_context(context),
            prices=self.hook.prices,
            model=self.model,
            batch=batch,
            lease=lease,
        )

    def count_input(self, contents: list[Any]) -> int:
        """``countTokens`` of a request: its contents, and the system instruction as text."""
        head: list[Any] = [self.system_instruction] if self.system_instruction else []
        return self.hook.count_tokens(model=self.model, contents=head + contents)

    def count_each(
        self, refs: Sequence[GeminiFileRef], contents: Callable[[GeminiFileRef], list[Any]]
    ) -> dict[str, int]:
        """The counted input of each file's request (``max_concurrency`` counts at once), by file name;
        a file whose count failed is left out (its call, if any, fails for the same reason)."""
        outcomes = self.fan_out(
            lambda ref: self.count_input(contents(ref)), refs, action="token counts", log_progress=False
        )
        counted = {o.item.name: o.value for o in outcomes if o.ok and isinstance(o.value, int)}
        self.log.info(
            "Counted %d input token(s) for %d of %d file(s).", sum(counted.values()), len(counted), len(refs)
        )
        return counted

    @staticmethod
    def budget_stop(error: GeminiBudgetExceededError) -> NoReturn:
        """Fail, or skip (``on_exceeded="skip"``), a task the budget stopped."""
        if error.on_exceeded == "skip":
            raise AirflowSkipException(str(error)) from error
        raise error
