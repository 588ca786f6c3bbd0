"""Per-run budgets: the limits and their bad values, the sums of the records, admission, and the bound."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

import pytest

from airflow_gemini_files.budget import (
    Admission,
    BudgetState,
    BudgetTracker,
    GeminiBudgetExceededError,
    RunBudget,
    decide,
    summarize,
)
from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.ledger import LocalLedger, TaskKey
from airflow_gemini_files.pricing import DEFAULT_PRICES, TokenUsage, UnknownModelPriceError


def task(task_id: str = "analyse", map_index: int = -1, try_number: int = 1) -> TaskKey:
    return TaskKey("nightly", "scheduled__2026-11-29", "af0123456789ab", task_id, map_index, try_number)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(ledger: Any, budget: RunBudget, **kwargs: Any) -> BudgetTracker:
    # A fake clock that a wait moves on: a call that waits when it should not fails at its wait timeout.
    clock = kwargs.setdefault("clock", Clock())
    if isinstance(clock, Clock):
        kwargs.setdefault("sleep", lambda seconds: setattr(clock, "now", clock.now + seconds))
    kwargs.setdefault("task", task())
    return BudgetTracker(budget, ledger, prices=DEFAULT_PRICES, model="gemini-2.5-flash", **kwargs)


@pytest.fixture
def ledger(tmp_path: Any) -> LocalLedger:
    return LocalLedger(str(tmp_path / "ledger"))


# The budget --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_total_tokens": -5}, r"max_total_tokens=-5 must be a positive number"),
        ({"max_total_tokens": 0}, r"max_total_tokens=0 must be a positive number"),
        ({"max_total_tokens": 1.5}, r"max_total_tokens=1.5 must be a whole number"),
        ({"max_total_tokens": "lots"}, r"max_total_tokens='lots' is not a number"),
        ({"max_total_tokens": True}, r"max_total_tokens=True is not a number"),
        ({"max_cost": -1}, r"max_cost=-1 must be a positive number"),
        ({"max_cost": math.inf}, r"max_cost=inf must be a positive number"),
        ({"max_cost": math.nan}, r"max_cost=nan must be a positive number"),
        ({"max_cost": "five dollars"}, r"max_cost='five dollars' is not a number"),
        ({"max_cost": [5]}, r"max_cost=\[5\] is not a number"),
        ({}, r"needs max_total_tokens and/or max_cost"),
        ({"max_cost": 1, "on_exceeded": "warn"}, r"on_exceeded='warn' must be 'fail'"),
        ({"max_cost": 1, "name": "My Budget"}, r"name='My Budget' must be lowercase"),
        ({"max_cost": 1, "name": ""}, r"name='' must be lowercase"),
        ({"max_total_tokens": "many"}, r"pass e\.g\. max_total_tokens=100000\."),
        ({"max_cost": "lots"}, r"pass e\.g\. max_cost=5\.0\."),
    ],
)
def test_a_bad_budget_is_refused_naming_the_value(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(GeminiInputError, match=message):
        RunBudget(**fields)


def test_numeric_text_from_a_rendered_template_is_a_number() -> None:
    budget = RunBudget(max_total_tokens="100000", max_cost="2.5")  # type: ignore[arg-type]
    assert (budget.max_total_tokens, budget.max_cost) == (100000, 2.5)
    assert budget.describe() == "max_total_tokens=100000, max_cost=$2.50"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("None", None),
        ("", None),
        ("null", None),
        ('{"max_total_tokens": 10}', RunBudget(max_total_tokens=10)),
        ("{'max_cost': 1.5, 'on_exceeded': 'skip'}", RunBudget(max_cost=1.5, on_exceeded="skip")),
        ({"max_cost": 2}, RunBudget(max_cost=2.0)),
    ],
)
def test_a_budget_is_read_from_what_a_template_renders(value: Any, expected: RunBudget | None) -> None:
    assert RunBudget.coerce(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"max_tokens": 10}, r"unknown key\(s\) \['max_tokens'\]"),
        ("max_cost=5", r"is not a budget"),
        (5, r"budget=5 is not a budget"),
    ],
)
def test_what_is_no_budget_is_refused(value: Any, message: str) -> None:
    with pytest.raises(GeminiInputError, match=message):
        RunBudget.coerce(value)


# The sums ---------------------------------------------------------------------------------------------
def test_spent_records_count_live_reservations_are_in_flight_and_lapsed_ones_are_spent() -> None:
    records = [
        ("a", {"state": "spent", "tokens": 100, "cost": 0.1, "output": 30, "where": "t[0] (try 1)"}),
        ("b", {"state": "spent", "tokens": 50, "cost": 0.05, "output": 70, "where": "t[1] (try 1)"}),
        (
            "c",
            {"state": "reserved", "tokens": 40, "cost": 0.04, "lease_until": 11.0, "where": "t[2] (try 1)"},
        ),
        (
            "d",
            {"state": "reserved", "tokens": 7, "cost": 0.007, "lease_until": 10.0, "where": "t[3] (try 1)"},
        ),
        ("e", {"state": "spent", "tokens": 1000, "cost": 1.0, "where": "mine"}),
        ("f", {"tokens": "many"}),
    ]
    state = summarize(records, now=10.0, exclude="e")
    assert (state.spent_tokens, state.reserved_tokens, state.calls, state.max_output) == (157, 40, 2, 70)
    assert state.spent_cost == pytest.approx(0.157)
    assert state.spenders[0] == ("t[0] (try 1)", 100, 0.1)
    assert [name for name, _, _ in state.spenders] == ["t[0] (try 1)", "t[1] (try 1)", "t[3] (try 1)"]


@pytest.mark.parametrize(
    ("spent", "reserved", "need", "expected"),
    [
        (0, 0, 100, Admission.GO),
        (900, 0, 100, Admission.GO),  # exactly at the limit still fits
        (901, 0, 100, Admission.REFUSE),
        (800, 100, 100, Admission.GO),
        (800, 101, 100, Admission.WAIT),  # room once the calls in flight settle below their reservation
        (1000, 0, 0, Admission.GO),
        (1000, 0, 1, Admission.REFUSE),
    ],
)
def test_a_call_goes_waits_or_is_refused_by_tokens(
    spent: int, reserved: int, need: int, expected: str
) -> None:
    state = BudgetState(spent_tokens=spent, reserved_tokens=reserved)
    assert decide(RunBudget(max_total_tokens=1000), state, need, 0.0) == expected


def test_either_limit_stops_a_call() -> None:
    budget = RunBudget(max_total_tokens=1000, max_cost=1.0)
    assert decide(budget, BudgetState(spent_tokens=10, spent_cost=0.99), 10, 0.02) == Admission.REFUSE
    assert decide(budget, BudgetState(spent_tokens=995, spent_cost=0.1), 10, 0.0) == Admission.REFUSE
    assert decide(budget, BudgetState(spent_cost=0.5, reserved_cost=0.5), 1, 0.01) == Admission.WAIT
    assert decide(budget, BudgetState(spent_cost=0.99), 1, 0.01) == Admission.GO


# The tracker ------------------------------------------------------------------------------------------
def test_a_call_reserves_settles_and_the_next_task_sees_it(ledger: LocalLedger) -> None:
    budget = RunBudget(max_total_tokens=1000)
    first = tracker(ledger, budget, task=task(map_index=0))
    reservation = first.admit(300, max_output_tokens=100)
    assert reservation.tokens == 400
    assert tracker(ledger, budget, task=task(map_index=1)).state().reserved_tokens == 400
    first.settle(reservation, TokenUsage(prompt=300, candidates=50, thoughts=20, total=370, calls=1))
    state = tracker(ledger, budget, task=task(map_index=1)).state()
    assert (state.spent_tokens, state.reserved_tokens, state.calls, state.max_output) == (370, 0, 1, 70)
    # the run's largest output is the allowance of a call that sets no max_output_tokens
    other = tracker(ledger, budget, task=task(map_index=1))
    other.state()
    assert other.output_allowance(None) == 70
    assert other.output_allowance(500) == 500


def test_a_retry_sees_what_its_failed_try_spent(ledger: LocalLedger) -> None:
    budget = RunBudget(max_total_tokens=1000)
    first_try = tracker(ledger, budget, task=task(try_number=1))
    first_try.settle(
        first_try.admit(600, max_output_tokens=100), TokenUsage(prompt=600, candidates=100, total=700)
    )
    retry = tracker(ledger, budget, task=task(try_number=2))
    with pytest.raises(GeminiBudgetExceededError) as caught:
        retry.admit(300, max_output_tokens=100, what="the call for b.pdf")
    message = str(caught.value)
    assert "Budget 'run' (max_total_tokens=1000) of DAG run nightly / scheduled__2026-11-29" in message
    assert "700 tokens (~$0.0004) spent in 1 call(s)" in message
    assert "the call for b.pdf in analyse (try 2) would need 400 tokens" in message
    assert "Biggest spenders: analyse (try 1) 700 tokens" in message
    assert f"Records: {ledger.root}/budgets/af0123456789ab/run/" in message
    assert caught.value.budget == "run"
    assert tracker(ledger, budget).state().reserved_tokens == 0  # the refused call left no reservation


def test_a_refused_api_call_releases_its_reservation_and_an_unknown_outcome_keeps_it(
    ledger: LocalLedger,
) -> None:
    budget = RunBudget(max_total_tokens=1000)
    one = tracker(ledger, budget)
    one.release(one.admit(300, max_output_tokens=100))
    assert one.state() == BudgetState()
    one.keep(one.admit(300, max_output_tokens=100))
    assert (one.state().spent_tokens, one.state().reserved_tokens) == (400, 0)


def test_a_call_waits_for_calls_in_flight_and_goes_when_they_settle_below_their_reservation(
    ledger: LocalLedger,
) -> None:
    budget = RunBudget(max_total_tokens=1000)
    in_flight = tracker(ledger, budget, task=task(map_index=0))
    reservation = in_flight.admit(500, max_output_tokens=400)  # 900 reserved
    waits: list[float] = []

    def settle_while_waiting(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            in_flight.settle(reservation, TokenUsage(prompt=500, candidates=100, total=600))

    waiting = tracker(ledger, budget, task=task(map_index=1), sleep=settle_while_waiting)
    admitted = waiting.admit(300, max_output_tokens=100)
    assert len(waits) == 2
    assert admitted.tokens == 400
    assert waiting.state(exclude=admitted.key).spent_tokens == 600


def test_a_call_stops_waiting_after_the_wait_timeout_and_says_why(ledger: LocalLedger) -> None:
    clock = Clock()
    budget = RunBudget(max_total_tokens=1000)
    tracker(ledger, budget, task=task(map_index=0), clock=clock).admit(500, max_output_tokens=400)

    def pass_time(seconds: float) -> None:
        clock.now += 60

    waiting = tracker(ledger, budget, task=task(map_index=1), clock=clock, sleep=pass_time, wait_timeout=300)
    with pytest.raises(
        GeminiBudgetExceededError, match=r"calls in flight still held 900 tokens .* after 300 s"
    ):
        waiting.admit(300, max_output_tokens=100)


def test_a_reservation_whose_lease_ran_out_counts_as_spent(ledger: LocalLedger) -> None:
    clock = Clock()
    budget = RunBudget(max_total_tokens=1000)
    tracker(ledger, budget, task=task(map_index=0), clock=clock, lease=60).admit(500, max_output_tokens=400)
    clock.now += 61  # its worker died: the call may have been billed
    late = tracker(ledger, budget, task=task(map_index=1), clock=clock)
    assert (late.state().spent_tokens, late.state().reserved_tokens) == (900, 0)
    with pytest.raises(GeminiBudgetExceededError):
        late.admit(200, max_output_tokens=0)  # refused at once, no waiting on a dead worker


def test_a_cost_budget_prices_the_reservation_and_needs_a_priced_model(ledger: LocalLedger) -> None:
    budget = RunBudget(max_cost=0.001)
    one = tracker(ledger, budget)
    reservation = one.admit(1000, max_output_tokens=100)  # 1000 x 0.30 + 100 x 2.50 per million
    assert reservation.cost == pytest.approx(0.00055)
    one.settle(reservation, TokenUsage(prompt=1000, candidates=100, total=1100, calls=1))
    assert one.state().spent_cost == pytest.approx(0.00055)
    with pytest.raises(GeminiBudgetExceededError, match=r"max_cost=\$0.00.*\(~\$0.0006\) spent in 1 call"):
        one.admit(1000, max_output_tokens=100)  # 0.00055 + 0.00055 would pass 0.001
    assert one.admit(1000, max_output_tokens=1).cost == pytest.approx(0.0003025)  # 0.00055 + that fits
    with pytest.raises(UnknownModelPriceError, match="my-model"):
        BudgetTracker(budget, ledger, task(), prices=DEFAULT_PRICES, model="my-model")
    # a token budget does not need a price
    BudgetTracker(RunBudget(max_total_tokens=10), ledger, task(), prices=DEFAULT_PRICES, model="my-model")


def test_an_estimate_that_alone_passes_what_is_left_is_refused(ledger: LocalLedger) -> None:
    budget = RunBudget(max_total_tokens=1000)
    one = tracker(ledger, budget)
    one.record(TokenUsage(prompt=400, total=400, calls=2))
    one.check_estimate(TokenUsage(prompt=600, total=600), what="the batch job")
    with pytest.raises(
        GeminiBudgetExceededError, match=r"the batch job in analyse \(try 1\) needs at least 601"
    ):
        one.check_estimate(TokenUsage(prompt=601, total=601), what="the batch job")
    assert one.state().calls == 2


def test_eight_tasks_at_once_never_pass_the_limit_and_stop_within_one_call_of_it(ledger: LocalLedger) -> None:
    """The module's bound: with max_output_tokens set, a reservation is never below the actual usage."""
    limit = 20_000
    budget = RunBudget(max_total_tokens=limit)
    rng = random.Random(7)
    sizes = [rng.randint(200, 900) for _ in range(200)]
    lock = threading.Lock()
    largest = max(sizes) + 100

    def worker(index: int) -> None:  # waiting calls back off at random, as in production (100x faster)
        mine = tracker(
            ledger,
            budget,
            task=task(map_index=index),
            clock=time.time,
            sleep=lambda seconds: time.sleep(seconds / 100),
        )
        while True:
            with lock:
                if not sizes:
                    return
                size = sizes.pop()
            try:
                reservation = mine.admit(size, max_output_tokens=100)
            except GeminiBudgetExceededError:
                continue
            output = rng.randint(1, 100)
            mine.settle(reservation, TokenUsage(prompt=size, candidates=output, total=size + output))

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = tracker(ledger, budget).state().spent_tokens
    assert spent <= limit
    assert spent > limit - largest


def test_a_name_may_use_every_allowed_character() -> None:
    name = "abcdefghijklmnopqrstuvwxyz0123456789_-"
    assert RunBudget(max_cost=1, name=name).name == name


def test_a_cost_exactly_at_the_limit_still_fits() -> None:
    budget = RunBudget(max_cost=1.0)
    assert decide(budget, BudgetState(spent_cost=0.5), 0, 0.5) == Admission.GO
    assert decide(budget, BudgetState(spent_cost=0.5), 0, 0.5000001) == Admission.REFUSE


def test_the_sums_read_every_record_whatever_it_lacks() -> None:
    records = [
        ("budgets/p/run/junk.json", {"tokens": "many"}),  # unreadable: skipped, the others still count
        ("budgets/p/run/1~a.json", {"state": "spent", "tokens": 10}),  # no cost, output, where
        ("budgets/p/run/1~b.json", {"state": "reserved", "tokens": 5, "cost": 0.5}),  # no lease: lapsed
        ("budgets/p/run/2~c.json", {"state": "reserved", "tokens": 3, "cost": 0.25, "lease_until": 11}),
        ("budgets/p/run/2~d.json", {"state": "reserved", "tokens": 4, "cost": 0.25, "lease_until": 11}),
        ("budgets/p/run/3~g.json", {"state": "spent", "tokens": 50, "cost": 0.0, "where": "u (try 1)"}),
        ("budgets/p/run/3~e.json", {"state": "spent", "tokens": 20, "cost": 0.1, "where": "t (try 1)"}),
        ("budgets/p/run/3~f.json", {"state": "spent", "tokens": 30, "cost": 0.2, "where": "t (try 1)"}),
    ]
    state = summarize(records, now=10.0)
    assert (state.spent_tokens, state.reserved_tokens) == (115, 7)
    assert state.spent_cost == pytest.approx(0.8)
    assert state.reserved_cost == pytest.approx(0.5)
    assert (state.calls, state.max_output) == (4, 0)
    # biggest spender first, by tokens, then by name; a record without "where" is named by its key
    assert state.spenders == (
        ("t (try 1)", 50, pytest.approx(0.3)),
        ("u (try 1)", 50, 0.0),
        ("1~a.json", 10, 0.0),
        ("1~b.json", 5, 0.5),
    )


def test_the_first_allowance_is_no_output_and_zero_max_output_tokens_means_unset(ledger: LocalLedger) -> None:
    budget = RunBudget(max_total_tokens=1000)
    fresh = tracker(ledger, budget)
    assert fresh.output_allowance(None) == 0
    fresh.settle(fresh.admit(10), TokenUsage(prompt=10, candidates=70, total=80))
    assert fresh.output_allowance(0) == 70


def test_records_say_what_a_call_reserved_and_cost_and_with_which_model(ledger: LocalLedger) -> None:
    budget = RunBudget(max_cost=1.0)
    online = tracker(ledger, budget)
    reservation = online.admit(1000, max_output_tokens=100)
    assert online.state().reserved_cost == pytest.approx(0.00055)
    record = dict(ledger.scan(online.prefix))[reservation.key]
    assert (record["state"], record["model"], record["pricing"], record["where"]) == (
        "reserved",
        "gemini-2.5-flash",
        "online",
        "analyse (try 1)",
    )
    assert record["at"] == 1_000_000.0
    batch = tracker(ledger, budget, task=task(map_index=1), batch=True)
    assert batch.admit(1000, max_output_tokens=100).cost == pytest.approx(0.000275)  # half price
    assert [r["pricing"] for _, r in ledger.scan(batch.prefix)].count("batch") == 1


def test_a_token_budget_with_an_unpriced_model_records_no_cost(ledger: LocalLedger) -> None:
    budget = RunBudget(max_total_tokens=1000)
    one = BudgetTracker(budget, ledger, task(), prices=DEFAULT_PRICES, model="my-model")
    reservation = one.admit(100, max_output_tokens=10)
    assert reservation.cost == 0.0
    one.settle(reservation, TokenUsage(prompt=100, candidates=10, total=110))
    assert (one.state().spent_tokens, one.state().spent_cost) == (110, 0.0)


def test_an_unknown_outcome_counts_its_reservation_as_one_call_with_no_output(ledger: LocalLedger) -> None:
    one = tracker(ledger, RunBudget(max_cost=1.0))
    reservation = one.admit(1000, max_output_tokens=100)
    one.keep(reservation)
    state = one.state()
    assert (state.spent_tokens, state.calls, state.max_output, state.reserved_tokens) == (1100, 1, 0, 0)
    assert state.spent_cost == pytest.approx(0.00055)
    assert dict(ledger.scan(one.prefix))[reservation.key]["unknown"] is True


def test_recorded_spend_counts_its_cost_calls_and_output(ledger: LocalLedger) -> None:
    one = tracker(ledger, RunBudget(max_cost=1.0))
    one.record(TokenUsage(prompt=1000, candidates=60, thoughts=40, total=1100, calls=3))
    state = tracker(ledger, RunBudget(max_cost=1.0)).state()
    assert (state.spent_tokens, state.calls, state.max_output) == (1100, 3, 100)
    assert state.spent_cost == pytest.approx(0.00055)


def test_an_estimate_counts_the_calls_in_flight(ledger: LocalLedger) -> None:
    tracker(ledger, RunBudget(max_total_tokens=1000, max_cost=1.0)).admit(300, max_output_tokens=100)
    other = tracker(ledger, RunBudget(max_total_tokens=1000, max_cost=1.0), task=task(map_index=1))
    other.check_estimate(TokenUsage(prompt=600, total=600), what="the fan-out")
    with pytest.raises(GeminiBudgetExceededError, match="400 tokens reserved by calls in flight"):
        other.check_estimate(TokenUsage(prompt=601, total=601), what="the fan-out")
    by_cost = tracker(ledger, RunBudget(max_cost=0.0005, name="cost"), task=task(map_index=2))
    by_cost.admit(1000, max_output_tokens=0)  # 0.0003 reserved
    with pytest.raises(GeminiBudgetExceededError) as caught:
        by_cost.check_estimate(TokenUsage(prompt=1000, total=1000), what="the fan-out")
    message = str(caught.value)
    assert "needs at least 1000 tokens (~$0.0003), that would pass it." in message
    assert "Biggest spenders: none." in message  # nothing spent yet: the reservation is in flight


def test_a_refusal_says_it_would_pass_the_budget_and_carries_skip(ledger: LocalLedger) -> None:
    budget = RunBudget(max_total_tokens=100, on_exceeded="skip")
    for index in range(6):
        one = tracker(ledger, budget, task=task(map_index=index))
        one.settle(one.admit(10, max_output_tokens=1), TokenUsage(prompt=10, total=10 + index))
    with pytest.raises(GeminiBudgetExceededError) as caught:
        tracker(ledger, budget).admit(50, max_output_tokens=1)
    message = str(caught.value)
    assert "would need 51 tokens (~$0.0000), that would pass it." in message
    assert "calls in flight still held" not in message
    # the five biggest spenders, biggest first
    assert "Biggest spenders: analyse[5] (try 1) 15 tokens" in message
    assert "analyse[1] (try 1)" in message
    assert "analyse[0] (try 1)" not in message
    assert caught.value.on_exceeded == "skip"


def test_a_failed_check_leaves_no_reservation(ledger: LocalLedger) -> None:
    class Broken(LocalLedger):
        def scan(self, prefix: str) -> Any:
            raise OSError("disk gone")

    broken = tracker(Broken(str(ledger.root)), RunBudget(max_total_tokens=1000))
    with pytest.raises(OSError, match="disk gone"):
        broken.admit(10)
    assert list(LocalLedger.scan(broken.ledger, broken.prefix)) == []


def test_waiting_calls_back_off_at_random_and_log_once(
    ledger: LocalLedger, caplog: pytest.LogCaptureFixture
) -> None:
    budget = RunBudget(max_total_tokens=1000)
    tracker(ledger, budget, task=task(map_index=0)).admit(500, max_output_tokens=400)  # never settles
    clock = Clock()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    waiting = tracker(ledger, budget, task=task(map_index=1), clock=clock, sleep=sleep, wait_timeout=60)
    with (
        caplog.at_level("INFO", logger="airflow_gemini_files.budget"),
        pytest.raises(GeminiBudgetExceededError, match="after 60 s of waiting"),
    ):
        waiting.admit(300, max_output_tokens=100)
    assert 0.125 <= waits[0] <= 0.375  # 0.25 s, times 0.5 to 1.5
    pauses = [0.25 * 1.5**n for n in range(len(waits))]
    for waited, pause in zip(waits, pauses, strict=True):
        assert 0.5 * min(pause, 5.0) <= waited <= 1.5 * min(pause, 5.0)
    assert len(waits) > 10  # it reached the 5 s cap (checked above) and kept waiting
    logged = [r.getMessage() for r in caplog.records if "waits for them to settle" in r.getMessage()]
    assert logged == [
        "Budget 'run': 900 tokens are reserved by calls in flight; this call waits for them to settle."
    ]
