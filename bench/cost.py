"""Cost and storage (issue 13): token totals and price online vs batch, a run budget across 8 concurrent
mapped tasks, and the sweeper's hit rate on planted orphans.

    uv run python bench/cost.py [--docs 500] [--budget-share 0.25] [--orphans 50]

Offline, against ``gemini-files-emulator`` and a GCS emulator in their own processes (the emulator's
token counts are deterministic). Figures:

- **online vs batch**: the same ``--docs`` documents through ``GeminiGenerateContentOperator(per_file=True)``
  and through ``GeminiBatchGenerateOperator`` (run deferred, as in ``batch_scale.py``): total tokens and
  the estimated price each task reported (``pricing``: online rates, batch rates), side by side, and
  their ratio;
- **budget**: one task instance per document (map indexes of one DAG run), 8 running at once, every one
  drawing from one ``budget={"max_total_tokens": ...}`` set to ``--budget-share`` of what the documents
  need (the ledger on local disk): calls that ran, tokens spent against the limit (overshoot in tokens,
  and the room left when it stopped short), next to the largest single call;
- **sweeper**: ``--orphans`` uploads and ``--orphans`` registrations whose task was killed before it
  recorded its answer, all of finished runs, among as many files of a running run and files of
  someone else: orphans found / planted, and files wrongly deleted (false positives).

Writes ``bench/results/cost.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, BenchTaskInstance, EmulatorProcess, machine_info, quiet_logs, task_context
from batch_scale import BUCKET, MODEL, PROMPT, SCHEMA, gcs_process, run_batch, run_online, upload_documents

CONCURRENCY = 8
RUN_ID = "bench-cost-run"


# Online vs batch -----------------------------------------------------------------------------------------
def online_vs_batch(emu: EmulatorProcess, refs: list[Any]) -> dict[str, Any]:
    from airflow_gemini_files.pricing import estimate_cost

    online = run_online(emu, refs)
    batch = run_batch(emu, refs, "cost/")
    tokens = online["tokens"]
    return {
        "documents": len(refs),
        "online_tokens": tokens["total"],
        "online_usd": estimate_cost(MODEL, {**online_usage(tokens), "calls": len(refs)}),
        "batch_tokens": batch["summary"]["usage"]["total"],
        "batch_usd": batch["summary"]["cost"]["estimated"],
        "online_calls": online["calls_total"],
        "batch_calls": batch["calls_total"],
    }


def online_usage(tokens: dict[str, int]) -> dict[str, int]:
    """batch_scale's online token counts under the usage XCom's names."""
    return {
        "prompt_token_count": tokens["prompt"],
        "candidates_token_count": tokens["candidates"],
        "thoughts_token_count": tokens["thoughts"],
        "total_token_count": tokens["total"],
    }


# Budget across mapped tasks ------------------------------------------------------------------------------
def budget_run(emu: EmulatorProcess, refs: list[Any], needed: int, share: float) -> dict[str, Any]:
    """One generate task instance per document, 8 at once, all of one run under one token budget."""
    from airflow_gemini_files.operators.generate import USAGE_XCOM_KEY, GeminiGenerateContentOperator

    limit = int(needed * share) + 100  # + 100: not a whole number of these (equal-sized) calls
    ledger = tempfile.mkdtemp(prefix="bench-cost-ledger-")
    emu.connection_env(ledger=ledger)

    def one(index: int) -> dict[str, Any]:
        op = GeminiGenerateContentOperator(
            task_id="analyse",
            model=MODEL,
            prompt=PROMPT,
            files=[refs[index]],
            response_schema=SCHEMA,
            budget={"max_total_tokens": limit},
        )
        context = task_context("analyse", run_id=RUN_ID)
        ti: BenchTaskInstance = context["ti"]
        ti.map_index = index
        try:
            op.execute(context)
            outcome = "ran"
        except Exception as error:  # the budget's refusal (AirflowFailException) or anything else
            outcome = "refused" if "budget" in str(error).lower() else f"error: {error}"
        usage = ti.xcom.get(USAGE_XCOM_KEY) or {}
        return {"outcome": outcome, "tokens": usage.get("total_token_count", 0)}

    before = emu.requests()
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = list(pool.map(one, range(len(refs))))
    wall = time.perf_counter() - started
    generated = emu.requests()["generate"] - before.get("generate", 0)
    emu.connection_env()
    spent = sum(o["tokens"] for o in outcomes)
    errors = [o["outcome"] for o in outcomes if o["outcome"].startswith("error")]
    largest = max((o["tokens"] for o in outcomes), default=0)
    return {
        "documents": len(refs),
        "limit": limit,
        "spent": spent,
        "overshoot": max(0, spent - limit),
        "room_left": max(0, limit - spent),
        "largest_call": largest,
        "ran": sum(o["outcome"] == "ran" for o in outcomes),
        "refused": sum(o["outcome"] == "refused" for o in outcomes),
        "generate_calls": generated,
        "errors": errors[:3],
        "wall_s": wall,
    }


# Sweeper -------------------------------------------------------------------------------------------------
class SweeperTI(BenchTaskInstance):
    """The sweep task's instance: answers the DAG-run counts from ``states`` (run id -> state)."""

    def __init__(self, states: dict[str, str]) -> None:
        super().__init__("sweep", run_id="bench-sweep")
        self.states = states

    def get_dr_count(self, dag_id: str, run_ids: list[str], states: list[str] | None = None) -> int:
        state = self.states.get(run_ids[0])
        return int(state is not None and (states is None or state in states))


def sweeper(emu: EmulatorProcess, planted: int) -> dict[str, Any]:
    from airflow_gemini_files.hooks.gemini import GeminiHook
    from airflow_gemini_files.ledger import FileRecords, LocalLedger, TaskKey, record_run
    from airflow_gemini_files.naming import upload_file_id
    from airflow_gemini_files.operators.sweep import GeminiSweepFilesOperator

    folder = tempfile.mkdtemp(prefix="bench-sweep-ledger-")
    os.environ["AIRFLOW_CONN_GEMINI_DEFAULT"] = os.environ["AIRFLOW_CONN_GEMINI_DEFAULT"].replace(
        '"extra": {', f'"extra": {{"ledger": "{folder}", ', 1
    )
    hook = GeminiHook()
    ledger = LocalLedger(folder)
    bucket = hook.storage_client.bucket(BUCKET)
    states = {"finished-run": "success", "running-run": "running"}
    orphans: set[str] = set()
    keep: set[str] = set()

    def context(run_id: str, task_id: str) -> dict[str, Any]:
        ti = BenchTaskInstance(task_id, run_id=run_id)
        return {"ti": ti, "task_instance": ti, "run_id": run_id}

    def plant(index: int) -> None:
        for run_id, into in (("finished-run", orphans), ("running-run", keep)):
            ctx = context(run_id, "upload")
            record_run(ledger, TaskKey.from_context(ctx))
            name = upload_file_id(ctx, f"doc-{index}.pdf")
            into.add(hook.upload_file(io.BytesIO(b"%PDF-1.4 x"), mime_type="application/pdf", name=name).name)
            uri = f"gs://{BUCKET}/sweep/{run_id}/{index}.pdf"
            blob = bucket.blob(uri.split("/", 3)[3])
            blob.upload_from_string(b"%PDF-1.4 x", content_type="application/pdf")
            records = FileRecords(ledger, TaskKey.from_context(context(run_id, f"register_{index}")))
            key = records.begin_registration([uri])
            [ref] = hook.register_gcs_files([uri])
            if run_id == "running-run":
                records.end_registration(key, [uri], [ref.name])
            # the finished run's register task was killed here: its answer was never recorded
            into.add(ref.name)
        keep.add(hook.upload_file(io.BytesIO(b"theirs"), mime_type="text/plain").name)

    for index in range(planted):  # one at a time: registrations through one hook from many threads
        plant(index)  # met closed connections here (not investigated yet)
    ti = SweeperTI(states)
    started = time.perf_counter()
    report = GeminiSweepFilesOperator(task_id="sweep", max_age_hours=48).execute(
        {"ti": ti, "task_instance": ti, "run_id": ti.run_id}
    )
    wall = time.perf_counter() - started
    deleted = {entry["file"] for entry in report["deleted"]}
    left = {f["name"] for f in emu.files()}
    return {
        "planted": len(orphans),
        "found": len(deleted & orphans),
        "false_positives": len(deleted - orphans),
        "kept_alive_or_foreign": len(keep & left),
        "kept_total": len(keep),
        "scanned": report["scanned"],
        "errors": len(report["errors"]),
        "wall_s": wall,
    }


# Report --------------------------------------------------------------------------------------------------
def report(
    compare: dict[str, Any], budget: dict[str, Any], sweep: dict[str, Any], info: dict[str, Any]
) -> str:
    ratio_usd = compare["batch_usd"] / compare["online_usd"] if compare["online_usd"] else float("nan")
    return "\n".join(
        [
            "# Cost and storage (issue 13)",
            "",
            f"`uv run python bench/cost.py --docs {compare['documents']}`, "
            f"{time.strftime('%Y-%m-%d')}, {info.get('cpus')} CPUs, load {info.get('load_avg_1m')}, "
            f"commit {info.get('commit')}. Emulators on 127.0.0.1; prices from the shipped table "
            "(`airflow_gemini_files.pricing`, gemini-2.5-flash).",
            "",
            f"## {compare['documents']} documents: online vs batch",
            "",
            "| | online (`per_file`) | batch | batch / online |",
            "|---|---|---|---|",
            f"| total tokens | {compare['online_tokens']:,} | {compare['batch_tokens']:,} | "
            f"{compare['batch_tokens'] / compare['online_tokens']:.2f} |",
            f"| estimated price (USD) | {compare['online_usd']:.6f} | {compare['batch_usd']:.6f} | "
            f"{ratio_usd:.2f} |",
            f"| Gemini API calls | {compare['online_calls']} | {compare['batch_calls']} | |",
            "",
            f"## Run budget across {CONCURRENCY} concurrent mapped tasks",
            "",
            f"{budget['documents']} task instances of one run (one document each), {CONCURRENCY} at once, "
            f"budget `max_total_tokens={budget['limit']:,}` (a share of what all documents need), no "
            "`max_output_tokens`:",
            "",
            "| limit | spent | overshoot | room left | largest call | calls ran | refused | errors |",
            "|---|---|---|---|---|---|---|---|",
            f"| {budget['limit']:,} | {budget['spent']:,} | {budget['overshoot']:,} | "
            f"{budget['room_left']:,} | "
            f"{budget['largest_call']:,} | {budget['ran']} ({budget['generate_calls']} generateContent) | "
            f"{budget['refused']} | {len(budget['errors'])} |",
            "",
            "Overshoot is bounded by the calls in flight whose output went past the largest output recorded "
            "before them (0 with `max_output_tokens`); room left is under one call's usage.",
            "",
            "## Sweeper on planted orphans",
            "",
            "| orphans planted (uploads + killed registrations, finished runs) | found and deleted | "
            "false positives | running-run and foreign files kept | files scanned | wall |",
            "|---|---|---|---|---|---|",
            f"| {sweep['planted']} | {sweep['found']} ({sweep['found'] / sweep['planted']:.0%}) | "
            f"{sweep['false_positives']} | {sweep['kept_alive_or_foreign']} of {sweep['kept_total']} | "
            f"{sweep['scanned']} | {sweep['wall_s']:.1f} s |",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=500, help="documents for online vs batch and the budget")
    parser.add_argument("--budget-share", type=float, default=0.25, help="budget as a share of the need")
    parser.add_argument("--orphans", type=int, default=50, help="uploads and registrations each, planted")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cost.md")
    args = parser.parse_args()
    quiet_logs()
    info = machine_info()
    with gcs_process(), EmulatorProcess(processing_delay=0, model_latency=0.05) as emu:  # emu reads GCS
        emu.connection_env()
        from airflow_gemini_files.hooks.gemini import GeminiHook

        GeminiHook().storage_client.create_bucket(BUCKET)
        refs = upload_documents(args.docs)
        compare = online_vs_batch(emu, refs)
        print(
            f"{args.docs} documents: online {compare['online_tokens']:,} tokens "
            f"${compare['online_usd']:.6f} | "
            f"batch {compare['batch_tokens']:,} tokens ${compare['batch_usd']:.6f} | price ratio "
            f"{compare['batch_usd'] / compare['online_usd']:.2f}",
            flush=True,
        )
        budget = budget_run(emu, refs, compare["online_tokens"], args.budget_share)
        print(
            f"budget {budget['limit']:,} tokens over {CONCURRENCY} concurrent tasks: "
            f"spent {budget['spent']:,} "
            f"(overshoot {budget['overshoot']:,}, room left {budget['room_left']:,}, largest call "
            f"{budget['largest_call']:,}); {budget['ran']} ran, {budget['refused']} refused, errors "
            f"{budget['errors']}; {budget['wall_s']:.1f} s",
            flush=True,
        )
        emu.reset()
        sweep = sweeper(emu, args.orphans)
        print(
            f"sweeper: found {sweep['found']} of {sweep['planted']} planted orphans, false positives "
            f"{sweep['false_positives']}, kept {sweep['kept_alive_or_foreign']} of {sweep['kept_total']} "
            f"live/foreign files; {sweep['wall_s']:.1f} s",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(compare, budget, sweep, info))
    print(f"table written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
