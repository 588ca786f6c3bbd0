"""process_cached_property: one value per object and process; a forked child builds its own."""

from __future__ import annotations

import os

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
