"""``gemini-files-demo``: the nightly document-analysis DAG, run for real in Airflow, fully offline.

What it does, in order:

1. makes a throw-away Airflow home (SQLite) and starts one Airflow CLI process that migrates its
   metadata DB while the demo
2. starts a GCS emulator and the Gemini API emulator on 127.0.0.1 (no API key, no network) and
3. puts the shipped sample documents into ``gs://<bucket>/incoming/<today>/``; then
4. that process runs ``airflow dags test gemini_nightly_document_analysis <today>`` with the Gemini
   connection given as ``AIRFLOW_CONN_GEMINI_DEFAULT``, while the demo prints each task state change
   read from the metadata DB (the full Airflow log goes to a file whose path is printed);
5. the demo reads the per-document results and the run manifest back from GCS, prints them as a
   table, and checks that no file and no batch job is left in the Gemini emulator.

``--analysis batch`` analyses the documents in one Gemini Batch API job instead of one call each.
Exit status: 0 when the DAG run succeeded, its manifest exists and nothing was left behind in Gemini.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_gemini_files.example_dags import FOLDER as EXAMPLE_DAGS_FOLDER
from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS, sample_path

if TYPE_CHECKING:
    from google.cloud import storage

    from airflow_gemini_files.emulator import GeminiEmulator
    from airflow_gemini_files.gcs_emulator import GcsEmulator

DAG_ID = "gemini_nightly_document_analysis"
DEMO_API_KEY = "demo-offline-key"  # accepted by the local emulator only; a placeholder, not a secret
DEFAULT_BUCKET = "demo-documents"
SHOWN_STATES = ("deferred", "up_for_retry", "success", "failed", "skipped", "upstream_failed")
_CHILD = "_airflow-child"  # argv[1] of the Airflow process this module starts for itself


class DemoError(Exception):
    """A step of the demo could not run; the message says which and where to look."""


@dataclass
class Clock:
    """Seconds since the demo started, for the progress lines."""

    start: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, message: str) -> None:
        print(f"[{self.elapsed():5.1f}s] {message}", flush=True)


# ---- the Airflow process --------------------------------------------------------------------------
def airflow_env(home: Path, dags_folder: Path, *, gemini_base_url: str, gcs_host: str) -> dict[str, str]:
    """
    The Airflow process's environment: our home, SQLite, the emulators, nothing inherited from Airflow.

    Inherited ``AIRFLOW__*`` settings, ``AIRFLOW_CONN_*`` connections and API keys are dropped so the
    demo can never touch a real metadata database or send a real key anywhere.
    """
    from airflow_gemini_files.hooks.gcs import ANONYMOUS_GCP_CONNECTION

    dropped = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")
    secrets = ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k not in secrets}
    connection = {"conn_type": "gemini", "password": DEMO_API_KEY, "extra": {"base_url": gemini_base_url}}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW_CONN_GEMINI_DEFAULT": json.dumps(connection),
            "STORAGE_EMULATOR_HOST": gcs_host,
            # Offline GCS: an explicit anonymous GCP connection (no credentials, placeholder register token).
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(ANONYMOUS_GCP_CONNECTION),
            "GOOGLE_CLOUD_PROJECT": "demo",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if env.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in env:
        # Without bytecode caching Airflow is compiled from source on every run (seconds of CPU); cache
        # it outside the source tree and the virtualenv instead of next to the sources.
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        env["PYTHONPYCACHEPREFIX"] = str(cache / "airflow-gemini-files" / "pycache")
    return env


def airflow_child(argv: Sequence[str]) -> int:
    """
    Inside the Airflow process: ``airflow db migrate``, wait for "go" on stdin, ``airflow dags test ...``.

    Both are the real CLI commands, run in one interpreter so Airflow is imported once, not twice.
    The marker file ``argv[0]`` appears when the metadata DB is ready; ``argv[1:]`` are the
    ``dags test`` arguments.
    """
    from airflow.__main__ import main as airflow_main

    marker = Path(argv[0])
    sys.argv = ["airflow", "db", "migrate"]
    airflow_main()
    marker.touch()
    if sys.stdin.readline().strip() != "go":
        return 3
    sys.argv = ["airflow", "dags", "test", *argv[1:]]
    try:
        airflow_main()
    except SystemExit as exit_:  # "DagRun failed" is raised as SystemExit with a message
        print(exit_, flush=True)
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


# ---- emulators and seed data ----------------------------------------------------------------------
@contextlib.contextmanager
def emulators() -> Iterator[tuple[GcsEmulator, GeminiEmulator]]:
    """Start the GCS emulator and the Gemini emulator (which reads registered objects from it)."""
    from airflow_gemini_files.emulator import GeminiEmulator
    from airflow_gemini_files.gcs_emulator import GcsEmulator

    try:
        gcs = GcsEmulator().start()
    except RuntimeError as err:  # e.g. installed without the [demo] extra
        raise DemoError(str(err)) from None
    try:
        with GeminiEmulator(api_key=DEMO_API_KEY, gcs_host=gcs.host) as gemini:
            yield gcs, gemini
    finally:
        gcs.stop()


def seed_documents(client: storage.Client, bucket_name: str, prefix: str) -> list[str]:
    """Create the bucket and upload the nightly sample documents under ``prefix``; return their URIs."""
    bucket = client.bucket(bucket_name)
    if not bucket.exists():
        bucket = client.create_bucket(bucket_name)
    uris = []
    for name, content_type in NIGHTLY_DOCUMENTS.items():
        blob = bucket.blob(f"{prefix}{name}")
        blob.upload_from_filename(str(sample_path(name)), content_type=content_type)
        uris.append(f"gs://{bucket_name}/{blob.name}")
    return uris


# ---- progress -------------------------------------------------------------------------------------
@dataclass
class TaskRow:
    """One task instance as read from the metadata DB."""

    task_id: str
    map_index: int
    label: str | None
    state: str | None

    @property
    def title(self) -> str:
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id}[{self.label or self.map_index}]"


def read_task_rows(db_path: Path, dag_id: str) -> tuple[str | None, list[TaskRow]]:
    """The latest run's state and its task instances, read-only (the DB is busy with the run)."""
    if not db_path.exists():
        return None, []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)) as db:
            run = db.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            if run is None:
                return None, []
            rows = db.execute(
                "SELECT task_id, map_index, rendered_map_index, state FROM task_instance "
                "WHERE dag_id = ? AND run_id = ? ORDER BY map_index",
                (dag_id, run[0]),
            ).fetchall()
    except sqlite3.Error:  # tables not created yet, or locked by a write: try again on the next tick
        return None, []
    return run[1], [TaskRow(task_id=r[0], map_index=r[1], label=r[2], state=r[3]) for r in rows]


class Progress:
    """Prints a task instance each time it reaches a state worth showing (deferred, retry, finished)."""

    def __init__(self, clock: Clock, db_path: Path) -> None:
        self.clock = clock
        self.db_path = db_path
        self.shown: dict[tuple[str, int], str] = {}
        self.run_state: str | None = None
        self.rows: list[TaskRow] = []

    def tick(self) -> None:
        self.run_state, self.rows = read_task_rows(self.db_path, DAG_ID)
        for row in self.rows:
            key = (row.task_id, row.map_index)
            if row.state in SHOWN_STATES and self.shown.get(key) != row.state:
                self.shown[key] = row.state
                print(f"[{self.clock.elapsed():5.1f}s]   {row.title:<58} {row.state}", flush=True)


def wait_with_progress(
    process: subprocess.Popen[str], progress: Progress, timeout: float, poll: float = 0.25
) -> int:
    """Poll the run's task states until the Airflow process exits; return its exit code."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        progress.tick()
        if time.monotonic() > deadline:
            raise DemoError(f"the DAG run did not finish within {timeout:.0f}s (see --timeout)")
        time.sleep(poll)
    progress.tick()
    return process.returncode


# ---- results --------------------------------------------------------------------------------------
def read_results(
    client: storage.Client, bucket: str, prefix: str
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The per-document result JSONs and the run manifest stored under ``gs://bucket/prefix``."""
    results: list[dict[str, Any]] = []
    manifest: dict[str, Any] | None = None
    for blob in client.list_blobs(bucket, prefix=prefix):
        data = json.loads(blob.download_as_bytes())
        if blob.name.endswith("/_manifest.json"):
            manifest = data
        else:
            results.append(data)
    return sorted(results, key=lambda r: str(r.get("document"))), manifest


def _cell(value: Any, width: int) -> str:
    text = " ".join(str(value if value is not None else "-").split())
    return text if len(text) <= width else text[: width - 1] + "~"


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table: document, type, language, summary excerpt, tokens."""
    columns = (("document", 30), ("type", 15), ("language", 9), ("summary", 50), ("tokens", 6))
    lines = ["  ".join(f"{name:<{width}}" for name, width in columns).rstrip()]
    lines.append("  ".join("-" * width for _, width in columns))
    for result in results:
        analysis = result.get("analysis") or result.get("result") or {}  # online / batch analysis
        usage = result.get("usage") or {}
        cells = (
            result.get("document"),
            analysis.get("document_type"),
            analysis.get("language"),
            analysis.get("summary"),
            usage.get("total_tokens", usage.get("total")),
        )
        row = "  ".join(f"{_cell(v, w):<{w}}" for v, (_, w) in zip(cells, columns, strict=True))
        lines.append(row.rstrip())
    return "\n".join(lines)


def manifest_summary(manifest: dict[str, Any]) -> str:
    """The manifest's counts, tokens, estimated cost and failures in a few lines (online or batch)."""
    lines = [
        f"documents {manifest.get('documents')}, analysed {manifest.get('succeeded')}, "
        f"failed {manifest.get('failed')}; tokens: " + _tokens(manifest),
    ]
    if manifest.get("batch"):
        lines.append(f"batch job {manifest['batch']} ended {manifest.get('state')} (batch price: half)")
    cost = manifest.get("cost") or {}  # cost and storage: the run's estimated price
    if cost:
        amount = cost.get("estimated")
        shown = "unknown (a model without a price)" if amount is None else f"${amount:.6f}"
        lines.append(
            f"estimated cost {shown} {cost.get('currency', 'USD')} ({cost.get('pricing')} prices as of "
            f"{cost.get('prices_as_of')}, {cost.get('prices_source')})"
        )
    for failure in manifest.get("failures") or []:
        where = failure.get("failed_at") or failure.get("stage")
        why = failure.get("state") or failure.get("reason")
        lines.append(f"failed: {failure.get('document') or '-'} at {where} ({why})")
    return "\n".join(lines)


def _tokens(manifest: dict[str, Any]) -> str:
    online = manifest.get("tokens")
    if online is not None:
        return (
            f"prompt {online.get('prompt')}, output {online.get('output')}, "
            f"thinking {online.get('thoughts', 0)}, total {online.get('total')}"
        )
    usage = manifest.get("usage") or {}
    output = (usage.get("candidates") or 0) + (usage.get("thoughts") or 0)
    return f"prompt {usage.get('prompt')}, output {output}, total {usage.get('total')}"


# ---- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gemini-files-demo",
        description="Run the nightly Gemini document-analysis DAG in real Airflow against local emulators "
        "(no API key, no network) and print what it produced.",
    )
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create in the GCS emulator")
    parser.add_argument(
        "--mode",
        choices=("register", "upload"),
        default="register",
        help="register the GCS objects with Gemini (no bytes through Airflow) or upload them (streamed)",
    )
    parser.add_argument(
        "--analysis",
        choices=("online", "batch"),
        default="online",
        help="online: one generateContent call per document; batch: one Gemini Batch API job for all of "
        "them (half the price; the emulator finishes it in seconds)",
    )
    parser.add_argument(
        "--dags-folder",
        type=Path,
        default=EXAMPLE_DAGS_FOLDER,
        help="folder holding gemini_nightly_document_analysis.py (default: the example DAGs shipped with "
        "the provider)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the metadata DB and task logs afterwards")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds the DAG run may take before the demo gives up"
    )
    return parser.parse_args(argv)


def run_demo(args: argparse.Namespace, clock: Clock, work: Path, log: IO[str]) -> bool:
    """Steps 1-5 of the module docstring; True when everything checked out."""
    ds = datetime.now(UTC).date().isoformat()
    conf = json.dumps({"bucket": args.bucket, "mode": args.mode, "analysis": args.analysis})
    with emulators() as (gcs, gemini):
        env = airflow_env(work, args.dags_folder, gemini_base_url=gemini.base_url, gcs_host=gcs.host)
        marker = work / "migrated"
        command = [sys.executable, "-m", "airflow_gemini_files.demo", _CHILD, str(marker)]
        command += [DAG_ID, ds, "--conf", conf]
        airflow = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            clock.say(f"emulators up: GCS {gcs.host}, Gemini {gemini.base_url}; migrating the metadata DB")
            client = gcs.client()
            uris = seed_documents(client, args.bucket, f"incoming/{ds}/")
            clock.say(
                f"seeded gs://{args.bucket}/incoming/{ds}/ with {len(uris)} documents: "
                + ", ".join(uri.rsplit("/", 1)[1] for uri in uris)
            )
            while not marker.exists():
                if airflow.poll() is not None:
                    raise DemoError(f"`airflow db migrate` failed (exit {airflow.returncode})")
                time.sleep(0.1)
            clock.say(
                f"metadata DB ready; `airflow dags test {DAG_ID} {ds}` (mode {args.mode}, analysis "
                f"{args.analysis}):"
            )
            assert airflow.stdin is not None
            airflow.stdin.write("go\n")
            airflow.stdin.close()
            progress = Progress(clock, work / "airflow.db")
            code = wait_with_progress(airflow, progress, args.timeout)
        finally:
            if airflow.poll() is None:
                airflow.kill()
                airflow.wait()
        clock.say(f"DAG run {progress.run_state or 'did not start'} (airflow exit code {code})")
        results, manifest = read_results(client, args.bucket, f"results/{ds}/")
        left = gemini.files()
        jobs = gemini.batches()

    print()
    print(f"Results in gs://{args.bucket}/results/{ds}/ (the emulated model describes what it was given):")
    print(textwrap.indent(results_table(results), "  "))
    print()
    manifest_uri = f"gs://{args.bucket}/results/{ds}/_manifest.json"
    print(f"Run manifest ({manifest_uri}):" if manifest else f"Run manifest: missing ({manifest_uri})")
    if manifest:
        print(textwrap.indent(manifest_summary(manifest), "  "))
    print(f"Cleanup check: files left in the Gemini emulator: {len(left)}, batch jobs left: {len(jobs)}")
    return demo_succeeded(code, progress.run_state, manifest, len(left) + len(jobs))


def demo_succeeded(exit_code: int, run_state: str | None, manifest: dict[str, Any] | None, left: int) -> bool:
    """The demo's verdict: Airflow exited 0, the run succeeded, the manifest exists, nothing (no file, no
    batch job) is left in Gemini."""
    return exit_code == 0 and run_state == "success" and manifest is not None and left == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gemini-files-demo``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_CHILD]:
        return airflow_child(argv[1:])
    args = parse_args(argv)
    clock = Clock()
    if not (args.dags_folder / f"{DAG_ID}.py").is_file():
        print(
            f"gemini-files-demo: {args.dags_folder / f'{DAG_ID}.py'} not found. Pass --dags-folder with the "
            f"folder that holds {DAG_ID}.py, or leave it out to run the shipped example "
            f"({EXAMPLE_DAGS_FOLDER}).",
            file=sys.stderr,
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="gemini-files-demo-"))
    log_path = work / "airflow.log"
    print("gemini-files-demo: nightly document analysis in real Airflow, offline (no API key, no network)")
    clock.say(f"Airflow home {work} (SQLite); full Airflow log: {log_path}")
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            ok = run_demo(args, clock, work, log)
    except DemoError as err:
        print(f"gemini-files-demo: {err}; full Airflow log: {log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gemini-files-demo: interrupted; full Airflow log: {log_path}", file=sys.stderr)
        return 130
    clock.say(f"{'OK' if ok else 'FAILED'} in {clock.elapsed():.1f}s; full Airflow log: {log_path}")
    if ok and not args.keep:  # the Airflow log stays: its path was printed
        (work / "airflow.db").unlink(missing_ok=True)
        shutil.rmtree(work / "logs", ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
