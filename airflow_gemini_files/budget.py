"""Per-run budgets: tokens and estimated cost that every generate call of one DAG run draws from.

A :class:`RunBudget` (``max_total_tokens`` and/or ``max_cost`` in USD, as :mod:`airflow_gemini_files.pricing`
estimates it) holds across the mapped task instances, the tasks and the task retries of one DAG run.
Once it is spent, further generate calls fail (or skip, ``on_exceeded="skip"``) with
:class:`GeminiBudgetExceededError`, which names the budget, what was spent, by which tasks, and where
the records are.

**Where the state lives, and why there.** Every worker of the run must see what every other one spent,
and a retry must see what the failed try spent. XCom cannot hold it (Airflow clears a task instance's
XComs when it retries), the Task SDK cannot list Variables, and one shared counter would need a
read-modify-write that two workers can interleave (GCS's compare-and-swap by generation would serialise
every call of the run on one object, which GCS rate-limits to about one write a second). So each call
writes a record of its own to the :mod:`ledger <airflow_gemini_files.ledger>` (the Gemini connection's
extra ``ledger``: ``gs://...`` for workers on several machines), under
``budgets/<run prefix>/<budget name>/``, and whoever decides lists that prefix and sums: no record has
two writers, so there is no contention and nothing to lock.

**Admission, per call.** Before a call the task counts its input (``countTokens``: the prompt, the system
instruction, the files) and adds an output allowance (the request's ``max_output_tokens`` when set,
else the largest output (answer + thinking) any call of the run has recorded), prices the sum, writes
it as a *reservation*, then lists every record of the budget:

- what is spent (settled calls, and reservations whose lease has run out: a worker that died may have
  been billed) plus this reservation passes the limit: the reservation is removed and the call refused;
- else, what is spent plus every live reservation (calls in flight) plus this one fits: the call goes;
- else it waits: removes its reservation, sleeps a little (with jitter) and tries again, until the
  calls in flight have settled (or ``wait_timeout`` passed: then it is refused too).

After the call the reservation becomes the call's actual usage (tokens: ``totalTokenCount``; cost: the
price table's estimate); a call the API refused releases it; a call whose outcome is unknown (a dropped
connection) keeps it as spent.

Because each call writes before it reads, and GCS (and a local disk) shows a completed write to every
later listing, of two concurrent calls at least one sees the other's reservation: their sum is always
checked by someone. **The overshoot bound:** the run spends at most the limit plus, over the calls
admitted while the limit was near, the amount by which each call's actual usage exceeded its
reservation. That is 0 when the request sets ``max_output_tokens`` (the input is counted exactly; the
output, thinking included, is capped), and otherwise at most, per call in flight, its output beyond the
largest output the run had recorded. Nothing is ever spent past the limit by calls that started after it
was reached. On the low side, a refused call needed more than what was left, so the run stops within
one call's usage of the limit.

Before a large per-file fan-out, :meth:`BudgetTracker.check_estimate` refuses the whole fan-out when its
counted input alone would pass what is left (output not yet known: the estimate is a lower bound, so a
refusal is certain to be right). A batch job is one reservation (:meth:`BudgetTracker.reserve`) of its
counted input plus, when ``max_output_tokens`` is set, every request's output ceiling, at the batch
price, under a key that is the same for every try of the task (:meth:`BudgetTracker.job_key`): its lease
lasts as long as the job may, a retry that re-attaches to the job neither counts nor reserves again,
and when the results are in the reservation becomes the job's actual usage.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from airflow.sdk.exceptions import AirflowFailException

from airflow_gemini_files.exceptions import GeminiConnectionError, GeminiFilesError, GeminiInputError
from airflow_gemini_files.ledger import BUDGETS, Ledger, TaskKey, record_run
from airflow_gemini_files.pricing import PriceTable, TokenUsage

log = logging.getLogger(__name__)

OnExceeded = Literal["fail", "skip"]
ON_EXCEEDED: tuple[str, ...] = ("fail", "skip")

DEFAULT_LEASE = 30 * 60.0
"""Seconds a reservation stands for a call in flight; after that it counts as spent (its worker may have
died after the call was billed)."""

DEFAULT_WAIT_TIMEOUT = 10 * 60.0
"""Seconds a call waits for calls in flight to settle before it is refused."""

FIRST_PAUSE = 0.25
"""Seconds a waiting call sleeps first (times 0.5 to 1.5, at random); each wait is 1.5 times longer, up
to 5 s. Waiting calls see each other's reservations while they check: random pauses break the tie."""

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class GeminiBudgetExceededError(GeminiFilesError, AirflowFailException):
    """A run's budget has no room for a call; names the budget, the spend, the spenders and the ledger.

    Fails the task without retries: a retry would find the same spend.
    """

    def __init__(self, message: str, *, budget: str, on_exceeded: str = "fail") -> None:
        super().__init__(message)
        self.budget = budget
        self.on_exceeded = on_exceeded


# The budget -------------------------------------------------------------------------------------------
def _limit(name: str, value: Any, *, integer: bool) -> float | int | None:
    """A budget limit: None, or a positive finite number (an int for tokens); numeric text is accepted."""
    if value is None:
        return None
    example = "100000" if integer else "5.0"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise GeminiInputError(f"Budget {name}={value!r} is not a number; pass e.g. {name}={example}.")
    try:
        number = float(value)
    except ValueError:
        raise GeminiInputError(
            f"Budget {name}={value!r} is not a number; pass e.g. {name}={example}."
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise GeminiInputError(
            f"Budget {name}={value!r} must be a positive number (e.g. {name}={example}); remove it for no "
            "limit of that kind."
        )
    if integer:
        if number != int(number):
            raise GeminiInputError(
                f"Budget {name}={value!r} must be a whole number of tokens, e.g. {example}."
            )
        return int(number)
    return number


@dataclasses.dataclass(frozen=True)
class RunBudget:
    """
    A budget for one DAG run: ``max_total_tokens`` (``totalTokenCount`` summed over the run's calls)
    and/or ``max_cost`` (USD, estimated from the connection's price table). ``on_exceeded``: ``"fail"``
    the task (default) or ``"skip"`` it. ``name`` keeps several budgets of one run apart (letters,
    digits, ``-`` and ``_``); tasks that give the same name draw from the same budget.
    """

    max_total_tokens: int | None = None
    max_cost: float | None = None
    on_exceeded: OnExceeded = "fail"
    name: str = "run"

    def __post_init__(self) -> None:
        tokens = _limit("max_total_tokens", self.max_total_tokens, integer=True)
        cost = _limit("max_cost", self.max_cost, integer=False)
        if tokens is None and cost is None:
            raise GeminiInputError(
                "A budget needs max_total_tokens and/or max_cost, e.g. RunBudget(max_total_tokens=2_000_000) "
                "or RunBudget(max_cost=5.0) (USD); pass budget=None for no budget."
            )
        if self.on_exceeded not in ON_EXCEEDED:
            raise GeminiInputError(
                f"Budget on_exceeded={self.on_exceeded!r} must be 'fail' (the task fails) or 'skip' (the "
                "task is skipped)."
            )
        if not isinstance(self.name, str) or not self.name or not set(self.name) <= _NAME_CHARS:
            raise GeminiInputError(
                f"Budget name={self.name!r} must be lowercase letters, digits, '-' or '_' (e.g. 'run')."
            )
        object.__setattr__(self, "max_total_tokens", tokens)
        object.__setattr__(self, "max_cost", None if cost is None else float(cost))

    @classmethod
    def coerce(cls, value: Any) -> RunBudget | None:
        """A budget from a :class:`RunBudget`, a dict of its fields (e.g. a rendered template), or None."""
        if value is None or isinstance(value, RunBudget):
            return value
        if isinstance(value, str):  # a rendered template: "None", JSON, or a dict's repr
            text = value.strip()
            if text in ("", "None", "null"):
                return None
            try:
                value = json.loads(text)
            except ValueError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise GeminiInputError(
                        f"budget={text[:200]!r} is not a budget: render a dict such as "
                        '{"max_total_tokens": 100000} (or None).'
                    ) from None
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise GeminiInputError(
                    f"Budget {dict(value)!r}: unknown key(s) {unknown}; a budget takes max_total_tokens, "
                    "max_cost, on_exceeded and name."
                )
            return cls(**value)
        raise GeminiInputError(
            f"budget={value!r} is not a budget: pass RunBudget(max_total_tokens=..., max_cost=...), a dict "
            "of those fields, or None."
        )

    def describe(self) -> str:
        """``max_total_tokens=100000, max_cost=$5.00``."""
        parts = []
        if self.max_total_tokens is not None:
            parts.append(f"max_total_tokens={self.max_total_tokens}")
        if self.max_cost is not None:
            parts.append(f"max_cost=${self.max_cost:.2f}")
        return ", ".join(parts)

    def exceeds(self, tokens: int, cost: float) -> bool:
        """Whether spending ``tokens`` and ``cost`` in all would pass a limit."""
        if self.max_total_tokens is not None and tokens > self.max_total_tokens:
            return True
        return self.max_cost is not None and cost > self.max_cost + 1e-12


# What the records say --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BudgetState:
    """The sums of a budget's records at one moment."""

    spent_tokens: int = 0
    spent_cost: float = 0.0
    reserved_tokens: int = 0
    """Live reservations: calls in flight."""
    reserved_cost: float = 0.0
    calls: int = 0
    max_output: int = 0
    """The largest output (answer + thinking) of a settled call."""
    spenders: tuple[tuple[str, int, float], ...] = ()
    """``(task, tokens, cost)``, biggest first."""


def summarize(
    records: Sequence[tuple[str, Mapping[str, Any]]], *, now: float, exclude: str = ""
) -> BudgetState:
    """Sum budget records (``(key, record)``) as of ``now``, leaving out the record ``exclude``.

    A settled record counts as spent; a reservation counts as in flight until its ``lease_until``, and as
    spent after it. A record it cannot read counts as nothing (and is logged).
    """
    spent_tokens = reserved_tokens = calls = max_output = 0
    spent_cost = reserved_cost = 0.0
    by_task: dict[str, list[float]] = {}
    for key, record in records:
        if key == exclude:
            continue
        try:
            tokens = int(record["tokens"])
            cost = float(record.get("cost") or 0.0)
            state = record["state"]
        except (KeyError, TypeError, ValueError):
            log.warning("Ignoring an unreadable budget record %s.", key)
            continue
        if state == "reserved" and float(record.get("lease_until") or 0) > now:
            reserved_tokens += tokens
            reserved_cost += cost
            continue
        spent_tokens += tokens
        spent_cost += cost
        if state == "spent":
            calls += int(record.get("calls") or 1)
            max_output = max(max_output, int(record.get("output") or 0))
        task = str(record.get("where") or key.rsplit("/", 1)[-1])
        entry = by_task.setdefault(task, [0, 0.0])
        entry[0] += tokens
        entry[1] += cost
    spenders = sorted(((task, int(v[0]), v[1]) for task, v in by_task.items()), key=lambda s: (-s[1], s[0]))
    return BudgetState(
        spent_tokens, spent_cost, reserved_tokens, reserved_cost, calls, max_output, tuple(spenders)
    )


class Admission:
    """What a call may do: go, wait for the calls in flight, or be refused."""

    GO = "go"
    WAIT = "wait"
    REFUSE = "refuse"


def decide(budget: RunBudget, state: BudgetState, need_tokens: int, need_cost: float) -> str:
    """:class:`Admission` for a call that needs ``need_tokens`` / ``need_cost``, given the others' state."""
    if budget.exceeds(state.spent_tokens + need_tokens, state.spent_cost + need_cost):
        return Admission.REFUSE
    if budget.exceeds(
        state.spent_tokens + state.reserved_tokens + need_tokens,
        state.spent_cost + state.reserved_cost + need_cost,
    ):
        return Admission.WAIT
    return Admission.GO


# The tracker ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Reservation:
    """One admitted call's reservation (its record's key and what it reserved)."""

    key: str
    tokens: int
    cost: float


class BudgetTracker:
    """
    One task's view of a run budget: admit a call, settle it, record spend, check an estimate.

    :param budget: the budget.
    :param ledger: where the records are (the connection's extra ``ledger``).
    :param task: the task attempt (:meth:`TaskKey.from_context`).
    :param prices: the connection's price table (``hook.prices``).
    :param model: the model the calls use (its prices are needed when ``max_cost`` is set).
    :param batch: price the calls as Batch API calls.
    """

    def __init__(
        self,
        budget: RunBudget,
        ledger: Ledger,
        task: TaskKey,
        *,
        prices: PriceTable,
        model: str,
        batch: bool = False,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.budget = budget
        self.ledger = ledger
        self.task = task
        self.prices = prices
        self.model = model
        self.batch = batch
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.clock = clock
        self.sleep = sleep
        self.prefix = f"{BUDGETS}{task.run_prefix}/{budget.name}/"
        self.max_output_seen = 0
        if budget.max_cost is not None:
            prices.prices_for(model)  # a model the table does not price cannot be held to max_cost
        record_run(ledger, task)

    # Prices ---------------------------------------------------------------------------------------
    def cost(self, usage: TokenUsage) -> float:
        """The estimated cost of ``usage`` (0 when only tokens are budgeted and the model has no price)."""
        try:
            return self.prices.cost(self.model, usage, batch=self.batch)
        except GeminiInputError:
            if self.budget.max_cost is not None:
                raise
            return 0.0

    def output_allowance(self, max_output_tokens: int | None) -> int:
        """What a call's output is reserved at: its ``max_output_tokens``, else the largest output seen."""
        if (
            isinstance(max_output_tokens, int)
            and not isinstance(max_output_tokens, bool)
            and max_output_tokens > 0
        ):
            return max_output_tokens
        return self.max_output_seen

    # Records --------------------------------------------------------------------------------------
    def state(self, *, exclude: str = "") -> BudgetState:
        """The budget's sums now (leaving out ``exclude``)."""
        state = summarize(self.ledger.scan(self.prefix), now=self.clock(), exclude=exclude)
        self.max_output_seen = max(self.max_output_seen, state.max_output)
        return state

    def _write(self, key: str, state: str, tokens: int, cost: float, **extra: Any) -> None:
        self.ledger.put(
            key,
            {
                "state": state,
                "tokens": tokens,
                "cost": cost,
                "where": self.task.where(),
                "model": self.model,
                "pricing": "batch" if self.batch else "online",
                "at": self.clock(),
                **extra,
            },
        )

    def _new_key(self) -> str:
        return f"{self.prefix}{self.task.attempt}~{uuid.uuid4().hex[:12]}.json"

    # Calls ----------------------------------------------------------------------------------------
    def admit(
        self, input_tokens: int, *, max_output_tokens: int | None = None, what: str = ""
    ) -> Reservation:
        """
        Reserve room for a call with ``input_tokens`` counted input and its output allowance (see the
        module docstring); raise :class:`GeminiBudgetExceededError` when there is none. ``what`` names
        the call in messages.
        """
        allowance = self.output_allowance(max_output_tokens)
        usage = TokenUsage(
            prompt=int(input_tokens), candidates=allowance, total=int(input_tokens) + allowance, calls=1
        )
        return self.reserve(usage, what=what)

    def job_key(self, job: str) -> str:
        """The record of a job that outlives its task try (a batch job): the same key for every try, so
        a retry settles the reservation its earlier try made, and a re-submission replaces it."""
        return f"{self.prefix}job~{job}.json"

    def reserve(self, usage: TokenUsage, *, what: str = "", key: str | None = None) -> Reservation:
        """
        Reserve ``usage`` (priced as this tracker prices), under ``key`` (default: a new record), once it
        fits with what is spent and in flight: waits for calls in flight, and raises
        :class:`GeminiBudgetExceededError` when it cannot fit.
        """
        tokens = usage.total
        cost = self.cost(usage)
        deadline = self.clock() + self.wait_timeout
        pause = FIRST_PAUSE
        while True:
            record = key or self._new_key()
            self._write(record, "reserved", tokens, cost, lease_until=self.clock() + self.lease)
            try:
                state = self.state(exclude=record)
                verdict = decide(self.budget, state, tokens, cost)
            except BaseException:
                self.ledger.delete(record)
                raise
            if verdict == Admission.GO:
                return Reservation(record, tokens, cost)
            self.ledger.delete(record)
            if verdict == Admission.REFUSE or self.clock() >= deadline:
                raise self._exceeded(state, tokens, cost, what=what, waited=verdict == Admission.WAIT)
            if pause == FIRST_PAUSE:
                log.info(
                    "Budget %r: %d tokens are reserved by calls in flight; %s waits for them to settle.",
                    self.budget.name,
                    state.reserved_tokens,
                    what or "this call",
                )
            self.sleep(pause * (0.5 + random.random()))  # random: waiters must not retry in step
            pause = min(pause * 1.5, 5.0)

    def settle(self, reservation: Reservation, usage: TokenUsage) -> None:
        """Replace the reservation by the call's actual usage."""
        self.max_output_seen = max(self.max_output_seen, usage.output)
        self._write(
            reservation.key,
            "spent",
            usage.total,
            self.cost(usage),
            output=usage.output,
            calls=usage.calls or 1,
        )

    def release(self, reservation: Reservation) -> None:
        """Drop the reservation of a call that cost nothing (the API refused it)."""
        self.ledger.delete(reservation.key)

    def keep(self, reservation: Reservation) -> None:
        """Count the reservation as spent: the call's outcome is unknown (it may have been billed)."""
        self._write(reservation.key, "spent", reservation.tokens, reservation.cost, output=0, unknown=True)

    def record(self, usage: TokenUsage) -> None:
        """Record spend that had no reservation (e.g. a finished batch job's usage)."""
        self.max_output_seen = max(self.max_output_seen, usage.output)
        self._write(
            self._new_key(), "spent", usage.total, self.cost(usage), output=usage.output, calls=usage.calls
        )

    def check_estimate(self, usage: TokenUsage, *, what: str) -> None:
        """Refuse a job (a batch, a fan-out) whose estimated ``usage`` would pass what is left."""
        state = self.state()
        cost = self.cost(usage)
        if self.budget.exceeds(
            state.spent_tokens + state.reserved_tokens + usage.total,
            state.spent_cost + state.reserved_cost + cost,
        ):
            raise self._exceeded(state, usage.total, cost, what=what, estimate=True)
        log.info(
            "Budget %r (%s): %s needs at least %d tokens (~$%.4f); spent so far %d tokens (~$%.4f).",
            self.budget.name,
            self.budget.describe(),
            what,
            usage.total,
            cost,
            state.spent_tokens,
            state.spent_cost,
        )

    # Messages -------------------------------------------------------------------------------------
    def _exceeded(
        self,
        state: BudgetState,
        tokens: int,
        cost: float,
        *,
        what: str,
        waited: bool = False,
        estimate: bool = False,
    ) -> GeminiBudgetExceededError:
        spenders = "; ".join(f"{task} {t} tokens (~${c:.4f})" for task, t, c in state.spenders[:5]) or "none"
        need = "needs at least" if estimate else "would need"
        why = (
            f"calls in flight still held {state.reserved_tokens} tokens (~${state.reserved_cost:.4f}) after "
            f"{self.wait_timeout:.0f} s of waiting"
            if waited
            else "that would pass it"
        )
        message = (
            f"Budget {self.budget.name!r} ({self.budget.describe()}) of DAG run {self.task.dag_id} / "
            f"{self.task.run_id}: {state.spent_tokens} tokens (~${state.spent_cost:.4f}) spent in "
            f"{state.calls} call(s), {state.reserved_tokens} tokens reserved by calls in flight; "
            f"{what or 'this call'} in {self.task.where()} {need} {tokens} tokens (~${cost:.4f}), {why}. "
            f"Biggest spenders: {spenders}. Records: {self.ledger.where(self.prefix)}. Raise the budget, or "
            "let the run end without these calls."
        )
        return GeminiBudgetExceededError(
            message, budget=self.budget.name, on_exceeded=self.budget.on_exceeded
        )


def cost_nothing(error: BaseException) -> bool:
    """Whether a failed Gemini call was surely not billed: the API answered it with an error."""
    from google.genai import errors as genai_errors

    if isinstance(error, GeminiConnectionError):
        return False
    return isinstance(error, genai_errors.APIError | GeminiFilesError)
