"""stats()["peak_in_flight"]: the most requests of one operation the emulator served at once.

What a concurrency cap (an Airflow pool, ``max_concurrency``) must bound; the Celery system tests assert
on it.
"""

from __future__ import annotations

import threading
import time

from google import genai

from airflow_gemini_files.emulator import GeminiEmulator


def test_peak_counts_overlapping_requests_per_operation(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    name = client.files.upload(file=__file__, config={"mime_type": "text/x-python"}).name
    assert name is not None
    for _ in range(3):  # one after another: never more than one at once
        client.files.list()
    # Four gets released together, each held 3 s by the emulator: all four are in flight at once.
    gemini_emulator.inject_faults("get", latency=3.0)
    barrier = threading.Barrier(4)
    names: list[str | None] = []

    def get() -> None:
        barrier.wait()
        names.append(client.files.get(name=name).name)

    threads = [threading.Thread(target=get) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert names == [name] * 4
    peaks = gemini_emulator.stats()["peak_in_flight"]
    assert peaks["get"] == 4
    assert peaks["list"] == 1
    assert peaks["upload_start"] == 1
    assert peaks["upload_chunk"] == 1
    # A client has its answer a moment before the handler is done: wait until none is served, then a
    # reset starts the peaks from nothing.
    deadline = time.monotonic() + 10
    while gemini_emulator.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gemini_emulator.stats()["in_flight"] == {}
    gemini_emulator.reset()
    assert gemini_emulator.stats()["peak_in_flight"] == {}
