"""
The nightly DAG's OpenLineage events, as a lineage backend receives them.

The real OpenLineage provider's listener runs with a file transport while ``dag.test()`` runs the DAG
against the emulators; the test reads the emitted events and follows each document from its GCS object
to its Gemini file, the model's response and the result object. This environment has no Google
provider, so Airflow knows no ``gs`` asset scheme: the lineage must not depend on one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_gemini_files.demo import seed_documents
from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS

from .conftest import read_json_objects

DAG_ID = "gemini_nightly_document_analysis"
DOCUMENTS = sorted(NIGHTLY_DOCUMENTS)
MODEL = "gemini-2.5-flash"
SCHEMA_FIELDS = [  # the properties of the DAG's ANALYSIS_SCHEMA, in order
    "document_type",
    "title",
    "language",
    "summary",
    "key_entities",
    "dates",
    "action_items",
    "confidence",
]


def _clear_openlineage_conf() -> None:
    """The provider caches its configuration: forget it so it is read again from the environment."""
    from airflow.providers.openlineage import conf

    for value in vars(conf).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@pytest.fixture
def openlineage_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Any]]]:
    """
    The OpenLineage listener, configured as a user would (``[openlineage] transport``, a file), for one
    test; returns a function reading the events written so far.

    The provider registers its listener when Airflow loads plugins, which in this pytest session happened
    before the transport was configured (so it was disabled); this registers it for the test's duration.
    """
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener
    from airflow.sdk.listener import get_listener_manager

    path = tmp_path / "openlineage.jsonl"
    transport = {"type": "file", "log_file_path": str(path), "append": True}
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(transport))
    _clear_openlineage_conf()
    listener = get_openlineage_listener()
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        yield lambda: [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    finally:
        manager.pm.unregister(listener)
        monkeypatch.delenv("AIRFLOW__OPENLINEAGE__TRANSPORT")
        _clear_openlineage_conf()


@pytest.fixture
def nightly(
    openlineage_events: Callable[[], list[Any]],
    run_dag: Any,
    gcs_emulator: Any,
    gemini_emulator: Any,
    gemini_connection: str,
    bucket: str,
) -> Callable[..., tuple[Any, list[Any]]]:
    """``nightly(mode, broken=None)``: seed the day's documents, run the DAG, return (run, events)."""

    def run(mode: str = "register", broken: str | None = None) -> tuple[Any, list[Any]]:
        seed_documents(gcs_emulator.client(), bucket, "incoming/today/")
        if broken:
            gemini_emulator.fail_processing(broken, "Corrupt image")
        conf = {"bucket": bucket, "prefix": "incoming/today/", "results_prefix": "results/today/"}
        result = run_dag(DAG_ID, {**conf, "mode": mode, "model": MODEL})
        return result, openlineage_events()

    return run


def completed(events: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The COMPLETE events of one task (one per map index)."""
    job = f"{DAG_ID}.{task}"
    return [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == job]


def ids(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


def test_no_asset_uri_handler_knows_gcs_or_gemini_here() -> None:
    """The situation of the issue: Airflow alone cannot turn gs:// or Gemini URIs into lineage."""
    from airflow.sdk.plugins_manager import ProvidersManagerTaskRuntime  # what the listener asks

    converters = ProvidersManagerTaskRuntime().asset_to_openlineage_converters
    assert "gs" not in converters
    assert "gemini" not in converters


@pytest.mark.parametrize(
    ("mode", "ingest"), [("register", "register_documents"), ("upload", "upload_documents")]
)
def test_nightly_run_reports_each_document_from_gcs_object_to_result_object(
    nightly: Any, gcs_emulator: Any, gemini_emulator: Any, bucket: str, mode: str, ingest: str
) -> None:
    run, events = nightly(mode)
    assert run.state == "success", run.tasks
    gemini = f"gemini://{gemini_emulator.base_url.split('://', 1)[1].rstrip('/')}"

    # register: one task, every object in and every file out; upload: one task per document.
    ingested = completed(events, ingest)
    assert len(ingested) == (1 if mode == "register" else 5)
    sources = [source for event in ingested for source in ids(event["inputs"])]
    files = {f["facets"]["gemini_file"]["sourceUri"]: f for event in ingested for f in event["outputs"]}
    assert len(files) == 5
    wait = completed(events, "per_document.wait_active")
    analyse = completed(events, "per_document.analyse")
    store = completed(events, "per_document.store_result")
    assert (len(wait), len(analyse), len(store)) == (5, 5, 5)
    results = read_json_objects(gcs_emulator, bucket, "results/today/")

    for document in DOCUMENTS:
        # GCS object -> Gemini file (the file's facet names the object it was made from).
        source = ("gs://" + bucket, f"incoming/today/{document}")
        assert source in sources
        file = files[f"gs://{bucket}/incoming/today/{document}"]
        if mode == "upload":  # its own task: exactly this object in, this file out
            event = only([e for e in ingested if file in e["outputs"]])
            assert ids(event["inputs"]) == [source]
        assert file["namespace"] == gemini
        assert file["facets"]["gemini_file"]["displayName"] == document
        assert file["facets"]["gemini_file"]["mimeType"] == NIGHTLY_DOCUMENTS[document]
        file_id = (file["namespace"], file["name"])
        # The sensor waited for that file.
        assert only([e for e in wait if ids(e["inputs"]) == [file_id]])["outputs"] == []
        # Gemini file -> the model's response, with the DAG's JSON schema, the model and the tokens.
        answer = only([e for e in analyse if ids(e["inputs"]) == [file_id]])
        response = only(answer["outputs"])
        assert (response["namespace"], response["name"]) == (
            gemini,
            f"models/{MODEL}/responses/{file['name'].removeprefix('files/')}",
        )
        schema = [field["name"] for field in response["facets"]["schema"]["fields"]]
        assert schema == SCHEMA_FIELDS
        assert answer["job"]["facets"]["gemini"]["model"] == MODEL
        usage = answer["run"]["facets"]["gemini_usage"]
        assert usage["calls"] == 1
        assert usage["total_token_count"] == results[f"{document}.json"]["usage"]["total_tokens"]
        # The response -> the result object, written by store_result.
        result = only([e for e in store if ids(e["inputs"]) == [(response["namespace"], response["name"])]])
        assert ids(result["outputs"]) == [("gs://" + bucket, f"results/today/{document}.json")]

    manifest = only(completed(events, "write_manifest"))
    assert sorted(ids(manifest["inputs"])) == [
        ("gs://" + bucket, f"results/today/{d}.json") for d in DOCUMENTS
    ]
    assert ids(manifest["outputs"]) == [("gs://" + bucket, "results/today/_manifest.json")]

    deleted = only(completed(events, "delete_gemini_files"))
    assert sorted(ids(deleted["outputs"])) == sorted((f["namespace"], f["name"]) for f in files.values())
    assert {d["facets"]["lifecycleStateChange"]["lifecycleStateChange"] for d in deleted["outputs"]} == {
        "DROP"
    }

    raw = json.dumps(events)
    assert bucket in raw  # the search below looks at the whole events
    assert gemini_emulator.api_key not in raw


def test_a_document_gemini_cannot_process_ends_at_its_failed_wait(nightly: Any, bucket: str) -> None:
    run, events = nightly(broken="revenue_chart_q3.png")
    assert run.state == "failed"
    register = only(completed(events, "register_documents"))
    broken = only(
        [
            f
            for f in register["outputs"]
            if f["facets"]["gemini_file"]["displayName"] == "revenue_chart_q3.png"
        ]
    )
    broken_id = (broken["namespace"], broken["name"])

    # The sensor's FAIL event names the file it gave up on; no response or result exists for it.
    failed_wait = only([e for e in events if e["eventType"] == "FAIL" and ids(e["inputs"]) == [broken_id]])
    assert failed_wait["job"]["name"] == f"{DAG_ID}.per_document.wait_active"
    assert broken_id not in [i for e in completed(events, "per_document.analyse") for i in ids(e["inputs"])]
    assert len(completed(events, "per_document.store_result")) == 4
    # The manifest task fails the run, and its FAIL event still shows what it read and wrote.
    manifest = only(
        [e for e in events if e["eventType"] == "FAIL" and e["job"]["name"] == f"{DAG_ID}.write_manifest"]
    )
    assert sorted(name for _, name in ids(manifest["inputs"])) == [
        f"results/today/{d}.json" for d in DOCUMENTS if d != "revenue_chart_q3.png"
    ]
    assert ids(manifest["outputs"]) == [("gs://" + bucket, "results/today/_manifest.json")]
    # Cleanup dropped every file, the broken one included.
    dropped = ids(only(completed(events, "delete_gemini_files"))["outputs"])
    assert sorted(dropped) == sorted(ids(register["outputs"]))
