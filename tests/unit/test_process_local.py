"""process_cached_property: one value per object and process; a forked child builds its own."""

from __future__ import annotations

import os
import threading
import time

from airflow_gemini_files.hooks.process_local import process_cached_property


class Holder:
    def __init__(self) -> None:
        self.built = 0

    @process_cached_property
    def client(self) -> tuple[int, int]:
        """A stand-in for an HTTP client: which build, in which process."""
        self.built += 1
        return (self.built, os.getpid())


def test_value_is_built_once_per_process(monkeypatch):
    holder = Holder()
    first = holder.client
    assert holder.client is first
    assert Holder.client.cached(holder) is first
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as seen from a forked child
    assert Holder.client.cached(holder) is None
    child = holder.client
    assert child is not first
    assert holder.client is child
    assert holder.built == 2


def test_set_and_delete_apply_to_this_process():
    holder, other = Holder(), Holder()
    holder.client = (42, os.getpid())
    assert holder.client == (42, os.getpid())
    assert holder.built == 0
    assert Holder.client.cached(other) is None  # per object
    del holder.client
    assert Holder.client.cached(holder) is None
    assert holder.client == (1, os.getpid())
    assert Holder.client.__doc__ == "A stand-in for an HTTP client: which build, in which process."


class SlowHolder:
    def __init__(self) -> None:
        self.built: list[object] = []

    @process_cached_property
    def client(self) -> object:
        """Building takes a while, as a genai.Client reading credentials does."""
        time.sleep(0.05)
        value = object()
        self.built.append(value)
        return value


def test_threads_that_ask_at_once_share_one_build():
    # The fan-out's threads share one hook: each must get the client every other thread uses (a second
    # genai.Client, dropped, would close the HTTP pool under the thread that built it).
    holder = SlowHolder()
    start = threading.Barrier(8)
    seen: list[object] = []

    def use() -> None:
        start.wait()
        seen.append(holder.client)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(holder.built) == 1
    assert seen == holder.built * 8
