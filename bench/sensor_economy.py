"""What waiting for ACTIVE costs (issue 5, item 4): API calls, noticing delay, worker slots.

Uploads ``--files`` small documents, each with its own processing delay on the Gemini emulator (staggered:
``--first-delay`` + i x ``--step`` seconds), and waits for them three ways, repeated:

- ``poke``: ``GeminiFileActiveSensor(mode="poke", poke_interval=P)``, ``execute()`` in this process (a
  worker slot held for the whole wait);
- ``deferred``: ``GeminiFileActiveSensor(deferrable=True)``: ``execute()`` makes one check and raises
  ``TaskDeferred`` (the worker slot is freed there); the ``GeminiFileActiveTrigger`` it hands over is then run
  with ``asyncio`` exactly as the triggerer runs it, and its event passed to ``execute_complete()``;
- a naive reference, computed: one get per file every P seconds until the last file is ACTIVE.

Per file: API calls (the emulator's ``get`` counter / files), and the delay from the moment it turned ACTIVE
(its create time + its processing delay, or the sensor's start if that is later) to the first poll that saw
it ACTIVE (the hook's ``get_file`` /
``aget_file`` are wrapped to time-stamp their results; the real calls still go to the emulator). Per run:
the delay from the last file turning ACTIVE to the sensor returning, and the worker-slot seconds.

    uv run python bench/sensor_economy.py [--files 20] [--first-delay 2] [--step 0.5] [--poke-interval 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EmulatorProcess, quiet_logs, summarize, task_context, write_json

if TYPE_CHECKING:
    from airflow_gemini_files.refs import GeminiFileRef


class ActiveSeen:
    """Wraps GeminiHook.get_file / aget_file to record when each file was first seen ACTIVE."""

    def __init__(self) -> None:
        self.first_active: dict[str, float] = {}
        self.calls = 0
        self._undo: list[Callable[[], None]] = []

    def _record(self, ref: GeminiFileRef) -> GeminiFileRef:
        self.calls += 1
        if ref.state == "ACTIVE":
            self.first_active.setdefault(ref.name, time.time())
        return ref

    def __enter__(self) -> ActiveSeen:
        from airflow_gemini_files.hooks.gemini import GeminiHook

        get_file, aget_file = GeminiHook.get_file, GeminiHook.aget_file
        recorder = self

        def timed_get(hook: GeminiHook, file: GeminiFileRef | str | dict[str, Any]) -> GeminiFileRef:
            return recorder._record(get_file(hook, file))

        async def timed_aget(hook: GeminiHook, file: GeminiFileRef | str | dict[str, Any]) -> GeminiFileRef:
            return recorder._record(await aget_file(hook, file))

        setattr(GeminiHook, "get_file", timed_get)  # noqa: B010 - mypy rejects assigning a method
        setattr(GeminiHook, "aget_file", timed_aget)  # noqa: B010
        self._undo.append(lambda: setattr(GeminiHook, "get_file", get_file))
        self._undo.append(lambda: setattr(GeminiHook, "aget_file", aget_file))
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in self._undo:
            undo()


def upload_staggered(
    emu: EmulatorProcess, count: int, first: float, step: float
) -> tuple[list[Any], dict[str, float]]:
    """Upload ``count`` files, file i with processing delay first + i*step; their refs and ready times."""
    from airflow_gemini_files.hooks.gemini import GeminiHook

    emu.reset()
    hook = GeminiHook()
    refs = []
    delays: dict[str, float] = {}
    for i in range(count):
        delay = first + i * step
        emu.configure(processing_delay=delay)
        ref = hook.upload_file(
            io.BytesIO(f"document {i}\n".encode() * 50),
            mime_type="text/plain",
            display_name=f"doc-{i:03d}.txt",
        )
        refs.append(ref)
        delays[ref.name] = delay
    emu.configure(processing_delay=0.0)
    ready = {}
    for file in emu.files():
        created = datetime.fromisoformat(file["createTime"].replace("Z", "+00:00")).timestamp()
        ready[file["name"]] = created + delays[file["name"]]
    assert all(ref.state == "PROCESSING" for ref in refs)
    return refs, ready


def _figures(
    emu: EmulatorProcess,
    seen: ActiveSeen,
    ready: dict[str, float],
    started: float,
    returned_at: float,
    slot_seconds: float,
) -> dict[str, Any]:
    """Noticing delays count from when the file turned ACTIVE, or from the sensor's start if later."""
    gets = emu.requests()["get"]
    notice = [seen.first_active[name] - max(at, started) for name, at in ready.items()]
    return {
        "gets": gets,
        "gets_per_file": gets / len(ready),
        "notice_median": summarize(notice).median,
        "notice_max": max(notice),
        "completion_delay": returned_at - max(max(ready.values()), started),
        "worker_slot_seconds": slot_seconds,
    }


def poke_once(emu: EmulatorProcess, files: int, first: float, step: float, interval: float) -> dict[str, Any]:
    from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

    refs, ready = upload_staggered(emu, files, first, step)
    before = emu.requests()["get"]
    sensor = GeminiFileActiveSensor(
        task_id="wait", files=refs, mode="poke", deferrable=False, poke_interval=interval, timeout=600
    )
    with ActiveSeen() as seen:
        start = time.time()
        result = sensor.execute(task_context("wait"))
        returned_at = time.time()
    assert len(result) == files
    assert all(ref.state == "ACTIVE" for ref in result)
    figures = _figures(emu, seen, ready, start, returned_at, returned_at - start)
    figures["gets"] -= before
    figures["gets_per_file"] = figures["gets"] / files
    return figures


def deferred_once(
    emu: EmulatorProcess, files: int, first: float, step: float, interval: float
) -> dict[str, Any]:
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

    refs, ready = upload_staggered(emu, files, first, step)
    before = emu.requests()["get"]
    sensor = GeminiFileActiveSensor(
        task_id="wait", files=refs, deferrable=True, poke_interval=interval, timeout=600
    )
    context = task_context("wait")
    with ActiveSeen() as seen:
        start = time.time()
        try:
            sensor.execute(context)
            raise AssertionError("the sensor did not defer")
        except TaskDeferred as deferred:
            defer_seconds = time.time() - start
            trigger = deferred.trigger
            classpath, kwargs = trigger.serialize()

        async def first_event() -> Any:
            async for event in trigger.run():
                return event.payload
            raise AssertionError("the trigger yielded nothing")

        payload = asyncio.run(first_event())
        event_at = time.time()
        resumed = time.time()
        result = sensor.execute_complete(context, payload)
        complete_seconds = time.time() - resumed
    assert payload["status"] == "success", payload
    assert len(result) == files
    assert all(ref.state == "ACTIVE" for ref in result)
    figures = _figures(emu, seen, ready, start, event_at, defer_seconds + complete_seconds)
    figures["gets"] -= before
    figures["gets_per_file"] = figures["gets"] / files
    figures["defer_seconds"] = defer_seconds
    figures["execute_complete_seconds"] = complete_seconds
    figures["trigger_kwargs"] = sorted(kwargs)
    figures["trigger_classpath"] = classpath
    return figures


def naive_gets_per_file(files: int, first: float, step: float, interval: float) -> float:
    """One get per file every ``interval`` s until the last file is ACTIVE (first poll at t=0)."""
    last = first + (files - 1) * step
    return float(math.ceil(last / interval) + 1)


def run(
    files: int = 20, first: float = 2.0, step: float = 0.5, interval: float = 2.0, runs: int = 3
) -> dict[str, Any]:
    quiet_logs()
    out: dict[str, Any] = {
        "files": files,
        "delays": f"{first:g} s + i x {step:g} s (up to {first + (files - 1) * step:g} s)",
        "poke_interval": interval,
        "naive_gets_per_file": naive_gets_per_file(files, first, step, interval),
    }
    with EmulatorProcess() as emu:
        emu.connection_env()
        print(f"sensor economy: {files} files, processing delays {out['delays']}, poke_interval={interval} s")
        for mode, once in (("poke", poke_once), ("deferred", deferred_once)):
            results = []
            for i in range(runs):
                r = once(emu, files, first, step, interval)
                results.append(r)
                print(
                    f"  {mode} run {i + 1}/{runs}: {r['gets_per_file']:.2f} gets/file, notice median "
                    f"{r['notice_median']:.2f} s max {r['notice_max']:.2f} s, "
                    f"done {r['completion_delay']:.2f} s after the last file, "
                    f"worker slot {r['worker_slot_seconds']:.2f} s"
                )
            keys = ("gets_per_file", "notice_median", "notice_max", "completion_delay", "worker_slot_seconds")
            out[mode] = {key: summarize([r[key] for r in results]).to_dict() for key in keys}
            out[mode]["runs"] = results
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--first-delay", type=float, default=2.0)
    parser.add_argument("--step", type=float, default=0.5)
    parser.add_argument("--poke-interval", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.files, args.first_delay, args.step, args.poke_interval, args.runs)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
