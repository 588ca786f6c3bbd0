"""fan_out: bounded concurrency, results in input order, failures kept per item, cancellation."""

from __future__ import annotations

import logging
import threading
import time

from airflow_gemini_files.operators._fanout import fan_out

log = logging.getLogger("test")


def test_results_come_back_in_input_order_with_each_failure_kept():
    def work(item: int) -> int:
        time.sleep(0.01 * (5 - item))  # later items finish first
        if item == 2:
            raise ValueError("two is bad")
        return item * 10

    outcomes = fan_out(work, [0, 1, 2, 3, 4], max_concurrency=5, log=log, action="items")
    assert [o.value for o in outcomes] == [0, 10, None, 30, 40]
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    assert str(outcomes[2].error) == "two is bad"


def test_never_more_than_max_concurrency_in_flight():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def work(item: int) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1

    fan_out(work, list(range(12)), max_concurrency=4, log=log, action="items")
    assert state["max"] == 4


def test_stop_on_error_cancels_what_has_not_started():
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 0:
            raise RuntimeError("first fails")
        time.sleep(0.05)
        return item

    outcomes = fan_out(work, list(range(10)), max_concurrency=1, log=log, action="items", stop_on_error=True)
    assert started == [0]
    assert outcomes[0].started
    assert not outcomes[0].ok
    assert not any(o.started for o in outcomes[1:])


def test_empty_input_does_nothing():
    assert fan_out(lambda item: item, [], max_concurrency=3, log=log, action="items") == []
