"""
Nightly document analysis: the day's documents in GCS -> Gemini Files API -> one JSON result each.

Every night the run takes the objects under ``gs://<bucket>/incoming/<ds>/`` (``ds`` is the day the run
covers), puts them into the Gemini Files API (``register``: Gemini reads them straight from GCS, no bytes
through the worker; or ``upload``: streamed from GCS), waits until Gemini has processed each one
(deferrable sensor: the wait costs no worker slot), asks the model for a structured analysis of each
(document type, language, summary, key entities, ...), writes one JSON result per document and a run
manifest to ``gs://<bucket>/results/<ds>/``, and deletes the Gemini files whatever happened.

The ``analysis`` param chooses how the documents are analysed:

- ``online`` (the default): each document goes through its own mapped task group (wait -> analyse ->
  store), labelled with the document's name in the grid, one ``generateContent`` call each.
- ``batch``: every document waits for ACTIVE (a mapped deferrable sensor), then one Gemini Batch API job
  analyses them all at half the online price (``GeminiBatchGenerateOperator``, deferred while the job
  runs), which writes one JSON result per document and the manifest itself. Use it for large nightly
  volumes with hours of slack; online answers within minutes.

Either way one document that Gemini cannot process or analyse fails only itself: the others' results are
still written, and the manifest lists which documents failed and why. The run is marked failed when any
document failed, after everything else has been written and cleaned up; the Gemini files are deleted
whatever happened (never while a batch job of the run could still read them).

The manifest carries the run's token totals (prompt, cached, output, thinking) and its estimated price
(the connection's price table, dated). The ``budget`` param (e.g. ``{"max_cost": 5.0}``) caps the run: every
analyse task and retry draws from it, and a document it has no room for fails naming the budget; in batch
mode a job whose counted input would pass it is refused before it is created (the connection needs the
extra ``ledger``).

Configure: an Airflow connection ``gemini_default`` (type ``gemini``, API key as password), GCP credentials
that can read and write the bucket (Application Default Credentials, or a connection holding a
service-account key named by env ``GEMINI_GCP_CONN_ID``), and the bucket (env ``GEMINI_DOCUMENTS_BUCKET``;
both env vars are read when the DAG is parsed), or the ``bucket`` param when triggering.
Offline, ``gemini-files-demo`` runs this DAG against local emulators.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import (
    Asset,
    AssetAlias,
    CronDataIntervalTimetable,
    Param,
    TriggerRule,
    XComArg,
    dag,
    get_current_context,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowFailException

from airflow_gemini_files import lineage
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators.batch import GeminiBatchGenerateOperator
from airflow_gemini_files.operators.files import (
    GeminiDeleteFilesOperator,
    GeminiRegisterGcsFilesOperator,
    GeminiUploadFileOperator,
)
from airflow_gemini_files.operators.generate import USAGE_XCOM_KEY, GeminiGenerateContentOperator
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

GCP_CONN_ID: str | None = os.environ.get("GEMINI_GCP_CONN_ID") or None
"""GCP connection (env ``GEMINI_GCP_CONN_ID`` when the DAG is parsed); None: ``google_cloud_default`` if it
is defined (offline: one with the extra ``is_anonymous``), else Application Default Credentials."""
RESULTS = AssetAlias("gemini-document-analysis-results")
"""Each run adds the Asset ``gs://<bucket>/<results prefix>`` to this alias; schedule consumers on it."""

INPUT_PREFIX = "{{ params.prefix or 'incoming/' ~ ds ~ '/' }}"
RESULTS_PREFIX = "{{ params.results_prefix or 'results/' ~ ds ~ '/' }}"

PROMPT = """\
You are a careful records clerk. Analyse the attached document (it may be a scanned or digital PDF, an
image, an audio recording, a spreadsheet export or a text file) and fill in every field of the JSON schema.
Use the document's own language for names and titles, English for the summary, and an ISO 639-1 code
for the language. List at most ten key entities, most important first. Do not invent facts: when a field
does not apply, use an empty list or "unknown".
"""

ANALYSIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "document_type": {
            "type": "string",
            "enum": [
                "invoice",
                "receipt",
                "contract",
                "letter",
                "report",
                "meeting_notes",
                "spreadsheet",
                "chart",
                "form",
                "audio_recording",
                "image",
                "other",
            ],
        },
        "title": {"type": "string", "description": "The document's title or a short descriptive one."},
        "language": {"type": "string", "description": "ISO 639-1 code of the main language, or 'unknown'."},
        "summary": {"type": "string", "description": "Two or three sentences in English."},
        "key_entities": {
            "type": "array",
            "maxItems": 10,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "kind": {
                        "type": "string",
                        "enum": ["person", "organization", "location", "date", "amount", "product", "other"],
                    },
                },
                "required": ["name", "kind"],
            },
        },
        "dates": {"type": "array", "items": {"type": "string"}, "description": "Dates as YYYY-MM-DD."},
        "action_items": {"type": "array", "items": {"type": "string"}},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["document_type", "title", "language", "summary", "key_entities", "dates", "action_items"],
}


def _document_name(ref: GeminiFileRef, input_prefix: str) -> str:
    """The document's object name below the input prefix (its display name or Gemini name otherwise)."""
    if ref.source_uri and ref.source_uri.startswith("gs://"):
        object_name = ref.source_uri.split("/", 3)[3] if ref.source_uri.count("/") >= 3 else ref.source_uri
        return object_name.removeprefix(input_prefix) or object_name
    return ref.display_name or ref.name


@dag(
    dag_id="gemini_nightly_document_analysis",
    # Interval semantics: the run that starts at midnight covers the day that just ended (ds = that day).
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # Long enough for a batch job (its timeout below) and its cleanup; ends before the next night's run.
    dagrun_timeout=timedelta(hours=23),
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
    tags=["gemini", "example"],
    doc_md=__doc__,
    params={
        "bucket": Param(
            os.environ.get("GEMINI_DOCUMENTS_BUCKET", "gemini-documents"),
            type="string",
            minLength=3,
            description="GCS bucket holding the incoming documents and receiving the results.",
        ),
        "prefix": Param(
            None,
            type=["null", "string"],
            description="Object prefix of the documents; empty: the run's partition incoming/<ds>/.",
        ),
        "results_prefix": Param(
            None,
            type=["null", "string"],
            description="Where results and the manifest go; empty: results/<ds>/.",
        ),
        "model": Param("gemini-2.5-flash", type="string", description="Gemini model name."),
        "prompt": Param(PROMPT, type="string", description="Instruction sent with each document."),
        # Cost and storage (issue 13): a per-run budget shared by every analyse task and retry of the run.
        "budget": Param(
            None,
            type=["null", "object"],
            description='Per-run budget, e.g. {"max_total_tokens": 2000000} or {"max_cost": 5.0} (USD); '
            "needs the Gemini connection's extra 'ledger'. Empty: no budget.",
        ),
        "mode": Param(
            "register",
            enum=["register", "upload"],
            description="register: Gemini reads the GCS objects itself (no bytes through the worker); "
            "upload: stream each object from GCS into the Files API.",
        ),
        "analysis": Param(
            "online",
            enum=["online", "batch"],
            description="online: one generateContent call per document (results in minutes); batch: one "
            "Gemini Batch API job for all of them (half the price, results within 24 hours).",
        ),
    },
)
def gemini_nightly_document_analysis() -> None:
    @task.branch
    def choose_mode() -> str:
        """Register the objects with Gemini, or upload them."""
        mode = get_current_context()["params"]["mode"]
        return "register_documents" if mode == "register" else "list_documents"

    register = GeminiRegisterGcsFilesOperator(
        task_id="register_documents",
        bucket="{{ params.bucket }}",
        prefix=INPUT_PREFIX,
        gcp_conn_id=GCP_CONN_ID,
        fail_if_empty=False,
    )

    @task
    def list_documents(bucket: str, prefix: str) -> list[str]:
        """The ``gs://`` URIs of the run's documents."""
        return GeminiHook(gcp_conn_id=GCP_CONN_ID).list_gcs_objects(bucket, prefix)

    listed = list_documents("{{ params.bucket }}", INPUT_PREFIX)
    upload = GeminiUploadFileOperator.partial(task_id="upload_documents", gcp_conn_id=GCP_CONN_ID).expand(
        source=listed
    )
    choose_mode() >> [register, listed]

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def documents(registered: Any, uploaded: Any) -> list[GeminiFileRef]:
        """The Gemini files of this run, from whichever branch ran (a failed upload drops only its own)."""
        return GeminiFileRef.coerce_many(list(registered or []) + list(uploaded or []))

    found = documents(register.output, upload.output)

    @task(map_index_template="{{ document }}")
    def store_result(
        file: Any, analysis: Any, usage: Any, input_prefix: str, results_prefix: str
    ) -> dict[str, Any]:
        """Write the analysis as ``<results prefix><document>.json``; return a line for the manifest."""
        context = get_current_context()
        params = context["params"]
        ref = GeminiFileRef.coerce(file)
        document = _document_name(ref, input_prefix)
        context["document"] = document  # type: ignore[typeddict-unknown-key]
        usage = usage or {}
        tokens = {  # the usage the analyse task reported, and its estimated price (USD)
            "prompt_tokens": usage.get("prompt_token_count"),
            "audio_prompt_tokens": usage.get("audio_prompt_token_count"),  # priced apart
            "cached_tokens": usage.get("cached_content_token_count"),
            "output_tokens": usage.get("candidates_token_count"),
            "thoughts_tokens": usage.get("thoughts_token_count"),
            "total_tokens": usage.get("total_token_count"),
            "estimated_cost": usage.get("estimated_cost"),
        }
        result = {
            "document": document,
            "source_uri": ref.source_uri,
            "gemini_file": ref.name,
            "mime_type": ref.mime_type,
            "size_bytes": ref.size_bytes,
            "model": params["model"],
            "analysis": analysis,
            "usage": tokens,
            "dag_run": context["run_id"],
        }
        object_name = f"{results_prefix}{document}.json"
        blob = GeminiHook(gcp_conn_id=GCP_CONN_ID).storage_client.bucket(params["bucket"]).blob(object_name)
        blob.upload_from_string(
            json.dumps(result, indent=2, ensure_ascii=False), content_type="application/json"
        )
        uri = f"gs://{params['bucket']}/{object_name}"
        # OpenLineage: the model's response in (as the analyse task named it), the result object out.
        lineage.add_task_lineage(
            context,
            inputs=[lineage.response_dataset([ref], params["model"])],
            outputs=[lineage.uri_dataset(uri)],
        )
        return {"document": document, "result": uri, **tokens}

    @task_group
    def per_document(ref: GeminiFileRef) -> Any:
        """One document: wait until ACTIVE, analyse, store the JSON result. Failures stay in this document."""
        active = GeminiFileActiveSensor(
            task_id="wait_active",
            files=ref,
            deferrable=True,  # the wait runs in the triggerer: no worker slot held
            poke_interval=5,
            timeout=60 * 60,
            # Keeps the DAG's retries: a FAILED file fails at once anyway (GeminiFileFailedError skips
            # retries), while a retry covers Airflow 3.3's race that can fail a task whose trigger fires
            # within seconds of deferring (apache/airflow#71580).
        )
        analysis = GeminiGenerateContentOperator(
            task_id="analyse",
            model="{{ params.model }}",
            prompt="{{ params.prompt }}",
            files=active.output,
            response_schema=ANALYSIS_SCHEMA,
            generation_config={"temperature": 0.1},
            budget="{{ params.budget }}",  # None unless the run sets one
        )
        return store_result(
            active.output,
            analysis.output,
            XComArg(analysis, key=USAGE_XCOM_KEY),
            INPUT_PREFIX,
            RESULTS_PREFIX,
        )

    @task.branch
    def choose_analysis() -> str:
        """One generateContent call per document, or one Batch API job for all of them."""
        analysis = get_current_context()["params"]["analysis"]
        return "online_documents" if analysis == "online" else "batch_documents"

    @task
    def online_documents(files: Any) -> list[GeminiFileRef]:
        """The documents to analyse online."""
        return GeminiFileRef.coerce_many(files)

    @task
    def batch_documents(files: Any) -> list[GeminiFileRef]:
        """The documents to analyse in one batch job."""
        return GeminiFileRef.coerce_many(files)

    online = online_documents(found)
    batch = batch_documents(found)
    found >> choose_analysis() >> [online, batch]

    stored = per_document.expand(ref=online)

    active = GeminiFileActiveSensor.partial(
        task_id="wait_active", deferrable=True, poke_interval=5, timeout=60 * 60
    ).expand(files=batch)
    analysed = GeminiBatchGenerateOperator(
        task_id="analyse_batch",
        model="{{ params.model }}",
        prompt="{{ params.prompt }}",
        files=batch,  # all of them: a document that did not become ACTIVE is named in the manifest
        response_schema=ANALYSIS_SCHEMA,
        generation_config={"temperature": 0.1},
        results_uri="gs://{{ params.bucket }}/" + RESULTS_PREFIX,
        gcp_conn_id=GCP_CONN_ID,
        timeout=timedelta(hours=20),  # the job is cancelled after that; the run ends within 23 hours
        # Every document that can be analysed is; write_manifest then fails the run if any one failed.
        max_failed_fraction=1.0,
        budget="{{ params.budget }}",  # a job the run's budget cannot hold is refused before it is created
        # Runs once every document's wait has ended, whatever the outcome; skipped with the branch, or
        # on a day without documents.
        trigger_rule=TriggerRule.NONE_SKIPPED,
    )
    active >> analysed

    cleanup = GeminiDeleteFilesOperator(
        task_id="delete_gemini_files",
        files=found,
        # Also uploads whose task failed before it could push its XCom, and the run's batch jobs: they are
        # cancelled and deleted (with their input and results files) before any document's file.
        delete_run_uploads=True,
        trigger_rule=TriggerRule.ALL_DONE,
    )
    [stored, analysed] >> cleanup

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[RESULTS])
    def write_manifest(
        files: Any, stored: Any, batch_summary: Any, input_prefix: str, results_prefix: str
    ) -> dict[str, Any]:
        """Write ``_manifest.json`` (counts, tokens, failures; in batch mode analyse_batch wrote it); fail
        the run if anything failed."""
        context = get_current_context()
        params = context["params"]
        ti = context["ti"]
        refs = GeminiFileRef.coerce_many(files) if files else []
        states: dict[str, Any] = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        ingest = ("register_documents", "list_documents", "upload_documents", "documents")
        ingest_failures = [
            {"document": None, "failed_at": key, "state": state}
            for key, state in sorted(states.items())
            if key.startswith(ingest) and state in ("failed", "upstream_failed")
        ]
        # analyse_batch is skipped with the online branch, or when no document was found; skipped with
        # documents (a budget's on_exceeded="skip") is a run that analysed nothing: it fails.
        if params["analysis"] == "batch" and (states.get("analyse_batch") != "skipped" or refs):
            manifest_uri = f"gs://{params['bucket']}/{results_prefix}_manifest.json"
            return _check_batch(
                context, states.get("analyse_batch"), batch_summary, ingest_failures, manifest_uri
            )
        lines = [line for line in (stored or []) if line]
        done = {line["document"] for line in lines}
        failures: list[dict[str, Any]] = []
        for index, ref in enumerate(refs):
            document = _document_name(ref, input_prefix)
            if document in done:
                continue
            steps = [f"per_document.{step}_{index}" for step in ("wait_active", "analyse", "store_result")]
            stage = next((step for step in steps if states.get(step) != "success"), steps[-1])
            failures.append(
                {
                    "document": document,
                    "gemini_file": ref.name,
                    "failed_at": stage.split(".", 1)[1].rsplit("_", 1)[0],
                    "state": states.get(stage),
                    "map_index": index,
                }
            )
        failures.extend(ingest_failures)

        def total(key: str) -> int:
            return sum(int(line.get(key) or 0) for line in lines)

        # Cost and storage: the estimated price of the run, from the connection's price table.
        # None when a document's model has no price: an unknown part makes the whole unknown.
        costs = [line.get("estimated_cost") for line in lines]
        cost = {
            "estimated": None if None in costs else round(sum(costs), 6),
            "pricing": "online",
            **GeminiHook(gcp_conn_id=GCP_CONN_ID).prices.describe(),
        }

        manifest = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "logical_date": context["ds"],
            "bucket": params["bucket"],
            "input_prefix": input_prefix,
            "results_prefix": results_prefix,
            "mode": params["mode"],
            "analysis": params["analysis"],
            "model": params["model"],
            "documents": len(refs),
            "succeeded": len(lines),
            "failed": len(refs) - len(lines),
            "failures": failures,
            "tokens": {
                "prompt": total("prompt_tokens"),
                "cached": total("cached_tokens"),
                "output": total("output_tokens"),
                "thoughts": total("thoughts_tokens"),
                "total": total("total_tokens"),
            },
            "cost": cost,
            "results": sorted(line["result"] for line in lines),
            "written_at": pendulum.now("UTC").isoformat(),
        }
        object_name = f"{results_prefix}_manifest.json"
        blob = GeminiHook(gcp_conn_id=GCP_CONN_ID).storage_client.bucket(params["bucket"]).blob(object_name)
        blob.upload_from_string(json.dumps(manifest, indent=2), content_type="application/json")
        lineage.add_task_lineage(  # OpenLineage: the result objects in, the manifest out
            context,
            inputs=[lineage.uri_dataset(uri) for uri in manifest["results"]],
            outputs=[lineage.uri_dataset(f"gs://{params['bucket']}/{object_name}")],
        )
        context["outlet_events"][RESULTS].add(Asset(f"gs://{params['bucket']}/{results_prefix}"))
        if failures:  # AirflowFailException: no retry, writing the same manifest again changes nothing
            raise AirflowFailException(
                f"{len(failures)} problem(s) in this run; every other result is stored. Manifest: "
                f"gs://{params['bucket']}/{object_name}. "
                + "; ".join(
                    f"{f['document'] or '-'} failed at {f['failed_at']} ({f['state']})" for f in failures
                )
            )
        return {key: manifest[key] for key in ("documents", "succeeded", "failed", "tokens", "cost")}

    def _check_batch(
        context: Any,
        state: str | None,
        summary: Any,
        ingest_failures: list[dict[str, Any]],
        manifest_uri: str,
    ) -> dict[str, Any]:
        """Batch mode: analyse_batch wrote the results and the manifest; fail the run if anything failed."""
        problems = [f"{f['failed_at']} {f['state']}" for f in ingest_failures]
        if state != "success" or not isinstance(summary, dict):
            problems.append(f"analyse_batch is {state} (see its log)")
        elif summary["failed"]:
            problems.append(f"{summary['failed']} of {summary['documents']} document(s) failed")
        if problems:  # AirflowFailException: no retry, the manifest names each failed document and why
            where = (
                f"Every other result is stored; the manifest names each failed document and why: "
                f"{manifest_uri}."
                if isinstance(summary, dict)
                else "The batch analysis did not finish: its log says what, if anything, it stored."
            )
            raise AirflowFailException(f"{'; '.join(problems)}. {where}")
        context["outlet_events"][RESULTS].add(Asset(summary["results_uri"].removesuffix("/")))
        return {key: summary[key] for key in ("documents", "succeeded", "failed", "usage", "cost")}

    write_manifest(found, stored, analysed.output, INPUT_PREFIX, RESULTS_PREFIX)


gemini_nightly_document_analysis()
