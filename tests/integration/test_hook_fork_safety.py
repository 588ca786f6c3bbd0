"""The hook's cached HTTP clients belong to one process: a forked child never uses its parent's connections.

Celery's prefork pool and Airflow's task supervisor both fork. A keep-alive connection pooled by a client
that was built before a fork would be shared by two processes, which then interleave requests and read
each other's responses on one socket. The Gemini emulator serves each TCP connection on a thread of its
own (``ThreadingHTTPServer``; thread names are never reused), so the thread that logged a request tells
which connection carried it.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from airflow_gemini_files.hooks.gemini import GeminiHook

SAMPLES = resources.files("airflow_gemini_files.samples")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (Celery's prefork pool)")


class RequestLog(logging.Handler):
    """The emulator's request log lines, each with the name of the thread (connection) that served it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if " -> " in record.getMessage():  # one line per answered request: "METHOD path -> status"
            with self._lock:
                self.lines.append((str(record.threadName), record.getMessage()))

    def connections(self, start: int = 0, end: int | None = None) -> set[str]:
        with self._lock:
            return {thread for thread, _ in self.lines[start:end]}


@pytest.fixture
def request_log() -> Iterator[RequestLog]:
    logger = logging.getLogger("airflow_gemini_files.emulator.server")
    handler, level = RequestLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_in_fork(work: object, error_file: Path) -> int:
    """Run ``work()`` in a forked child (as a prefork worker would); return its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            work()  # type: ignore[operator]
            status = 0
        except BaseException:
            error_file.write_text(traceback.format_exc())
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_forked_child_never_sends_over_its_parents_connections(
    gemini_emulator, gemini_connection, request_log, tmp_path
):
    hook = GeminiHook(gemini_conn_id=gemini_connection)
    # The parent builds and uses both of the hook's Gemini clients: the SDK client (get, list, delete)
    # and the upload client; each keeps its connection open in its pool.
    parent_ref = hook.upload_file(str(SAMPLES.joinpath("meeting_notes_de.md")))
    assert hook.get_file(parent_ref).name == parent_ref.name
    parent_connections = request_log.connections()
    before_fork = len(request_log.lines)

    def child() -> None:
        ref = hook.upload_file(str(SAMPLES.joinpath("orders_2026-11.csv")))
        assert hook.get_file(ref).name == ref.name
        assert hook.delete_file(ref)

    assert run_in_fork(child, tmp_path / "child-error.txt") == 0, (tmp_path / "child-error.txt").read_text()
    child_lines = request_log.lines[before_fork:]
    assert {line.split()[0] for _, line in child_lines} >= {"POST", "GET", "DELETE"}, child_lines
    shared = request_log.connections(before_fork) & parent_connections
    assert not shared, f"the child sent requests over its parent's connections: {child_lines}"
    # The parent's own clients are intact and still use its pooled connections.
    after_child = len(request_log.lines)
    assert hook.get_file(parent_ref).name == parent_ref.name
    assert hook.delete_file(parent_ref)
    assert request_log.connections(after_child) <= parent_connections
    assert gemini_emulator.files() == []
