"""Batch mode at nightly scale (issue 11): 10,000 documents in one batch job; 500 documents batch vs online.

    uv run python bench/batch_scale.py [--docs 10000] [--compare 500] [--json out.json]

Both parts run ``GeminiBatchGenerateOperator`` as Airflow runs it deferred: ``execute`` in this process
(the worker) until it raises TaskDeferred, ``GeminiBatchJobTrigger.run()`` in an asyncio loop (the
triggerer), then ``execute_complete`` in this process again, against ``gemini-files-emulator`` and a GCS
emulator, each in its own process. Figures:

- API calls: what the Gemini emulator counted for the task, split into the job's status checks
  (``batch_get`` while the trigger waited: "polls") and everything else;
- worker peak RSS above its baseline (the RSS just before ``execute``, the documents' refs already in
  memory), sampled every 5 ms while the worker builds the input and while it splits the results;
- worker-slot seconds while the job ran: the time the worker was busy between the job's creation (when
  ``GeminiHook.create_batch`` returned) and its end (the trigger's event), i.e. what ``execute`` still did
  after creating the job plus any overlap of ``execute_complete`` with the running job (none: it starts on
  the event), next to the time it was busy submitting and collecting;
- wall time on the emulator, from ``execute`` to ``execute_complete``'s return.

The comparison runs the same documents through ``GeminiGenerateContentOperator(per_file=True)`` and
prices both from their token counts with the provider's own price table (``airflow_gemini_files.pricing``:
Gemini 2.5 Flash, the batch rate for the batch run). The GCS emulator is gcp-storage-emulator in memory,
started with its metadata rewrite on every object switched off (it rewrites the whole bucket index per
object, which makes 10,000 result objects take hours; real GCS has no such cost). Writes
``bench/results/batch_scale.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS_DIR,
    EmulatorProcess,
    _free_port,
    machine_info,
    quiet_logs,
    task_context,
    write_json,
)

from airflow_gemini_files.pricing import PRICES_AS_OF, TokenUsage, estimate_cost

MODEL = "gemini-2.5-flash"
BUCKET = "bench-batch"
SCHEMA = {
    "type": "object",
    "properties": {
        "document_type": {"type": "string", "enum": ["invoice", "contract", "letter", "other"]},
        "summary": {"type": "string"},
        "total": {"type": "number"},
    },
    "required": ["document_type", "summary"],
}
PROMPT = "Classify this document, summarise it in one sentence and give its total amount if it has one."
_GCS_WITHOUT_INDEX_REWRITES = (
    "import sys; import gcp_storage_emulator.storage as s; "
    "s.Storage._write_config_to_file = lambda self: None; "
    "from gcp_storage_emulator.__main__ import main; main(sys.argv[1:])"
)


# Emulators -------------------------------------------------------------------------------------------
@contextmanager
def gcs_process() -> Iterator[str]:
    """gcp-storage-emulator in memory in its own process; sets STORAGE_EMULATOR_HOST and the connection."""
    import urllib.request

    port = _free_port()
    host = f"http://127.0.0.1:{port}"
    args = ["start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _GCS_WITHOUT_INDEX_REWRITES, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{host}/storage/v1/b?project=bench", timeout=2):
                    break
            except OSError:
                time.sleep(0.05)
        os.environ["STORAGE_EMULATOR_HOST"] = host
        anonymous = {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}
        os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps(anonymous)
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class RssSampler:
    """Peak RSS of this process (VmRSS, sampled every 5 ms) while a ``with`` block runs."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()

    @staticmethod
    def now_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self.now_mib())
            self._stop.wait(0.005)

    def __enter__(self) -> RssSampler:
        self.peak_mib = self.now_mib()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self.now_mib())


# Documents ---------------------------------------------------------------------------------------------
def upload_documents(n: int) -> list[Any]:
    """``n`` small ACTIVE text documents in the Gemini emulator (distinct content), as refs."""
    from airflow_gemini_files.hooks.gemini import GeminiHook

    hook = GeminiHook()
    hook.get_conn()

    def one(i: int) -> Any:
        text = f"Invoice INV-{i:06d} from Northwind Traders. Total {i % 997 + 10}.00 EUR, due in 30 days.\n"
        return hook.upload_file(
            io.BytesIO(text.encode() * 8), mime_type="text/plain", display_name=f"inv-{i}.txt"
        )

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(n)))


# Runs --------------------------------------------------------------------------------------------------
def calls_between(emu: EmulatorProcess, action: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    before = emu.requests()
    value = action()
    after = emu.requests()
    return value, {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


@contextmanager
def job_creation_times() -> Iterator[list[float]]:
    """perf_counter() each time ``GeminiHook.create_batch`` returns a job, while the block runs."""
    from airflow_gemini_files.hooks.gemini import GeminiHook

    created: list[float] = []
    original = GeminiHook.create_batch

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        job = original(self, *args, **kwargs)
        created.append(time.perf_counter())
        return job

    GeminiHook.create_batch = timed  # type: ignore[method-assign]
    try:
        yield created
    finally:
        GeminiHook.create_batch = original  # type: ignore[method-assign]


def run_batch(emu: EmulatorProcess, refs: list[Any], prefix: str) -> dict[str, Any]:
    """The batch task as Airflow runs it deferred; its calls, worker time, RSS and results."""
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_gemini_files.operators.batch import GeminiBatchGenerateOperator

    op = GeminiBatchGenerateOperator(
        task_id=f"batch_{prefix.strip('/')}",
        model=MODEL,
        prompt=PROMPT,
        files=refs,
        results_uri=f"gs://{BUCKET}/{prefix}",
        response_schema=SCHEMA,
        poll_interval=10,
    )
    context = task_context(op.task_id, run_id=f"bench-{prefix.strip('/')}")
    gc.collect()
    baseline = RssSampler.now_mib()
    before = emu.requests()
    started = time.perf_counter()
    with RssSampler() as submit_rss, job_creation_times() as created:
        try:
            op.execute(context)
            raise RuntimeError("the batch task did not defer")
        except TaskDeferred as deferral:
            deferred = deferral
    submitted = time.perf_counter()
    if len(created) != 1:
        raise RuntimeError(f"the batch task created {len(created)} jobs, not 1")
    at_defer = emu.requests()

    async def wait() -> dict[str, Any]:
        async for event in deferred.trigger.run():
            return dict(event.payload)
        raise RuntimeError("the trigger ended without an event")

    event = asyncio.run(wait())
    job_ended = time.perf_counter()
    at_event = emu.requests()
    with RssSampler() as collect_rss:
        summary = getattr(op, deferred.method_name)(context, event, **(deferred.kwargs or {}))
    done = time.perf_counter()
    after = emu.requests()

    calls = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    polls = at_event.get("batch_get", 0) - at_defer.get("batch_get", 0)
    # The worker was busy [started, submitted] and [job_ended, done]; the job ran from its creation (inside
    # the first interval) to its end (the event, at or before job_ended). Their overlap is the slot time the
    # worker spent while the job ran: the rest of execute() after create_batch returned.
    slot_while_running = submitted - created[0]
    return {
        "documents": len(refs),
        "summary": summary,
        "calls": calls,
        "calls_total": sum(calls.values()),
        "polls": polls,
        "calls_without_polls": sum(calls.values()) - polls,
        "submit_s": submitted - started,
        "deferred_s": job_ended - submitted,
        "collect_s": done - job_ended,
        "wall_s": done - started,
        "worker_slot_s_while_job_ran": slot_while_running,
        "rss_baseline_mib": baseline,
        "rss_submit_peak_above_mib": submit_rss.peak_mib - baseline,
        "rss_collect_peak_above_mib": collect_rss.peak_mib - baseline,
    }


def run_online(emu: EmulatorProcess, refs: list[Any]) -> dict[str, Any]:
    from airflow_gemini_files.operators.generate import USAGE_XCOM_KEY, GeminiGenerateContentOperator

    op = GeminiGenerateContentOperator(
        task_id="online",
        model=MODEL,
        prompt=PROMPT,
        files=refs,
        response_schema=SCHEMA,
        per_file=True,
        max_concurrency=8,
    )
    context = task_context("online")
    started = time.perf_counter()
    results, calls = calls_between(emu, lambda: op.execute(context))
    wall = time.perf_counter() - started
    usage = context["ti"].xcom[USAGE_XCOM_KEY]
    tokens = {
        "prompt": usage.get("prompt_token_count", 0),
        "candidates": usage.get("candidates_token_count", 0),
        "thoughts": usage.get("thoughts_token_count", 0),
        "total": usage.get("total_token_count", 0),
    }
    return {
        "documents": len(refs),
        "ok": sum(r is not None for r in results),
        "calls": calls,
        "calls_total": sum(calls.values()),
        "wall_s": wall,
        "tokens": tokens,
    }


def price(tokens: dict[str, int], *, batch: bool = False) -> float:
    """Estimated USD for the token counts (short names, as the batch manifest spells them)."""
    fields = {f.name for f in dataclasses.fields(TokenUsage)}
    usage = TokenUsage(**{name: int(value) for name, value in tokens.items() if name in fields})
    return estimate_cost(MODEL, usage, batch=batch)


# Report --------------------------------------------------------------------------------------------------
def report(big: dict[str, Any], batch: dict[str, Any], online: dict[str, Any], info: dict[str, Any]) -> str:
    batch_tokens = batch["summary"]["usage"]
    batch_usd = price(batch_tokens, batch=True)
    online_usd = price(online["tokens"])
    calls = big["calls"]
    lines = [
        "# Batch mode at scale",
        "",
        f"`uv run python bench/batch_scale.py --docs {big['documents']} --compare {batch['documents']}` at "
        f"commit {info['commit']}, {info['cpus']} CPUs, load {os.getloadavg()[0]:.1f} at the end; "
        f"google-genai {info['packages']['google-genai']}. Emulators on 127.0.0.1 (each its own process).",
        "",
        f"## {big['documents']:,} documents in one batch job",
        "",
        "| What | Target | Measured |",
        "|---|---|---|",
        f"| API calls (Gemini) | <= 20 plus polls | **{big['calls_without_polls']}** plus "
        f"{big['polls']} polls: "
        + ", ".join(f"{key} {value}" for key, value in sorted(calls.items()))
        + " |",
        "| Worker peak RSS above baseline, building the input | <= 64 MiB | "
        f"**{big['rss_submit_peak_above_mib']:.1f} MiB** (baseline "
        f"{big['rss_baseline_mib']:.0f} MiB with the {big['documents']:,} refs loaded) |",
        f"| Worker peak RSS above baseline, splitting the results | <= 64 MiB | "
        f"**{big['rss_collect_peak_above_mib']:.1f} MiB** |",
        "| Worker-slot seconds while the job ran | 0 (deferred) | "
        f"**{big['worker_slot_s_while_job_ran']:.3f}** (the rest of `execute` after the job was created; the "
        f"worker was busy {big['submit_s']:.1f} s submitting and {big['collect_s']:.1f} s collecting; "
        f"the job ran {big['deferred_s']:.1f} s in between, waited for by the trigger) |",
        f"| Wall time on the emulator | report | **{big['wall_s']:.1f} s** ({big['summary']['succeeded']:,} "
        f"results and the manifest in GCS, {big['summary']['failed']} failed) |",
        "",
        f"## The same {batch['documents']} documents: batch vs online `per_file`",
        "",
        "| | batch (`GeminiBatchGenerateOperator`) "
        "| online (`GeminiGenerateContentOperator(per_file=True)`) | batch / online |",
        "|---|---:|---:|---:|",
        f"| API calls (Gemini) | {batch['calls_total']} ({batch['polls']} of them polls) | "
        f"{online['calls_total']} | {batch['calls_total'] / online['calls_total']:.3f} |",
        f"| Wall time on the emulator | {batch['wall_s']:.1f} s | {online['wall_s']:.1f} s | "
        f"{batch['wall_s'] / online['wall_s']:.2f} |",
        f"| Tokens (prompt / output+thinking) | {batch_tokens['prompt']:,} / "
        f"{batch_tokens['candidates'] + batch_tokens.get('thoughts', 0):,} | "
        f"{online['tokens']['prompt']:,} / "
        f"{online['tokens']['candidates'] + online['tokens']['thoughts']:,} | |",
        f"| Estimated price, Gemini 2.5 Flash (pricing.py as of {PRICES_AS_OF}) |"
        f" ${batch_usd:.4f} | ${online_usd:.4f} | "
        f"**{batch_usd / online_usd:.2f}** |",
        "",
        "Wall time on the emulator is not the live turnaround: the emulator holds a job 1 s PENDING and 1 s "
        "RUNNING, then ends it once it has generated every reply (no model latency), the live Batch API "
        "within 24 hours; online calls here have no model latency and no rate limit. What carries over is "
        "the calls, the worker's memory and slot time, and the price.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000, help="documents in the one big batch job")
    parser.add_argument("--compare", type=int, default=500, help="documents for batch vs online")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "batch_scale.md")
    args = parser.parse_args()
    quiet_logs()
    info = machine_info()
    with EmulatorProcess(processing_delay=0) as emu, gcs_process():
        emu.connection_env()
        from airflow_gemini_files.hooks.gemini import GeminiHook

        GeminiHook().storage_client.create_bucket(BUCKET)
        started = time.perf_counter()
        refs = upload_documents(max(args.docs, args.compare))
        print(
            f"set-up: {len(refs):,} ACTIVE documents uploaded in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

        big = run_batch(emu, refs[: args.docs], "big/")
        print(
            f"{args.docs:,} documents, one batch job: {big['calls_without_polls']} calls + "
            f"{big['polls']} polls "
            f"{big['calls']}; RSS above baseline: submit {big['rss_submit_peak_above_mib']:.1f} MiB, collect "
            f"{big['rss_collect_peak_above_mib']:.1f} MiB; worker busy {big['submit_s']:.1f} s + "
            f"{big['collect_s']:.1f} s, deferred {big['deferred_s']:.1f} s (slot held while the job ran: "
            f"{big['worker_slot_s_while_job_ran']:.3f} s); wall {big['wall_s']:.1f} s",
            flush=True,
        )
        batch = run_batch(emu, refs[: args.compare], "compare/")
        online = run_online(emu, refs[: args.compare])
        ratio = price(batch["summary"]["usage"], batch=True) / price(online["tokens"])
        print(
            f"{args.compare} documents: batch {batch['calls_total']} calls, {batch['wall_s']:.1f} s | online "
            f"{online['calls_total']} calls, {online['wall_s']:.1f} s | price ratio batch/online {ratio:.2f}",
            flush=True,
        )
    text = report(big, batch, online, info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"table written to {args.out}")
    if args.json:
        write_json(args.json, {"big": big, "batch": batch, "online": online, "machine": info})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
