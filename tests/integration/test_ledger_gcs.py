"""The ledger in GCS (``GcsLedger``) on the GCS emulator, through the real ``google-cloud-storage`` client.

What a deployment relies on: records written at the same time by many writers (threads of one worker, as
mapped tasks and fan-outs write them) are all read back, each exactly once, under the key it was written
to; a large record is read from the object's content; ``only_if_absent`` never overwrites; and a missing
bucket or a refused permission fails with an error naming the ledger URI and the fix.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from doubles import context
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.ledger import (
    MAX_METADATA_RECORD,
    FileRecords,
    GcsLedger,
    LedgerError,
    TaskKey,
    read_file_records,
    read_runs,
)

_buckets = itertools.count()


@pytest.fixture
def bucket(gcs_emulator: Any) -> str:
    name = f"ledger-{next(_buckets)}"
    gcs_emulator.client().create_bucket(name)
    return name


@pytest.fixture
def ledger(gcs_emulator: Any, bucket: str) -> GcsLedger:
    client = gcs_emulator.client()
    return GcsLedger(bucket, "gemini-ledger/", lambda: client)


def test_records_written_by_concurrent_writers_are_all_read_back_once(ledger: GcsLedger) -> None:
    def write(writer: int) -> None:
        for call in range(5):
            ledger.put(f"budgets/run/b/task~{writer}~1~{call}.json", {"writer": writer, "call": call})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(8)))

    found = ledger.scan("budgets/run/")
    assert len(found) == 40
    assert [key for key, _ in found] == sorted(key for key, _ in found)
    assert {(record["writer"], record["call"]) for _, record in found} == {
        (writer, call) for writer in range(8) for call in range(5)
    }
    for key, record in found:
        assert key == f"budgets/run/b/task~{record['writer']}~1~{record['call']}.json"
    assert ledger.scan("budgets/other/") == []


def test_mapped_tasks_registering_at_once_leave_one_record_per_call(ledger: GcsLedger) -> None:
    """Eight mapped register tasks, two calls each, in threads: every call's record, URIs and names."""

    def register(map_index: int) -> None:
        records = FileRecords(ledger, TaskKey.from_context(context(task_id="register", map_index=map_index)))
        for call in range(2):
            uris = [f"gs://docs/{map_index}-{call}.pdf"]
            key = records.begin_registration(uris)
            records.end_registration(key, uris, [f"files/reg-{map_index}-{call}"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(register, range(8)))

    records = read_file_records(ledger)
    assert len(records) == 16
    assert sorted(name for record in records for name in record.files or ()) == sorted(
        f"files/reg-{index}-{call}" for index in range(8) for call in range(2)
    )
    for record in records:
        [uri] = record.uris
        assert record.files == (f"files/reg-{uri.removeprefix('gs://docs/').removesuffix('.pdf')}",)
        assert record.started is not None
        assert record.ended is not None
    [run] = read_runs(ledger).values()  # the run is recorded once, however many tasks wrote
    assert run.run_id == context()["run_id"]


def test_a_record_too_big_for_metadata_is_read_from_the_object(ledger: GcsLedger) -> None:
    big = {"uris": [f"gs://docs/{'x' * 50}-{index}.pdf" for index in range(200)]}
    assert len(json.dumps(big)) > MAX_METADATA_RECORD
    ledger.put("files/run/register~big.json", big)
    ledger.put("files/run/register~small.json", {"uris": ["gs://docs/a.pdf"]})
    assert ledger.scan("files/run/") == [
        ("files/run/register~big.json", big),
        ("files/run/register~small.json", {"uris": ["gs://docs/a.pdf"]}),
    ]
    assert ledger.get("files/run/register~big.json") == big


def test_delete_removes_a_record_and_a_missing_one_reads_as_none(ledger: GcsLedger) -> None:
    ledger.put("runs/p.json", {"run_id": "first"})
    assert ledger.get("runs/p.json") == {"run_id": "first"}
    ledger.delete("runs/p.json")
    ledger.delete("runs/p.json")  # already gone: nothing
    assert ledger.get("runs/p.json") is None
    assert ledger.scan("runs/") == []


@pytest.mark.xfail(
    strict=True,
    reason="gcp-storage-emulator ignores ifGenerationMatch (GCS answers 412), so only_if_absent "
    "overwrites offline; only record_run uses it, and rewriting a run record is harmless",
)
def test_only_if_absent_keeps_the_first_record(ledger: GcsLedger) -> None:
    ledger.put("runs/p.json", {"run_id": "first"}, only_if_absent=True)
    ledger.put("runs/p.json", {"run_id": "second"}, only_if_absent=True)
    assert ledger.get("runs/p.json") == {"run_id": "first"}


def test_the_hook_opens_the_ledger_its_connection_names(
    gcs_emulator: Any, gemini_emulator: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {
        "conn_type": "gemini",
        "password": gemini_emulator.api_key,
        "extra": {"base_url": gemini_emulator.base_url, "ledger": f"gs://{bucket}/team-a/ledger"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_LEDGER", json.dumps(conn))
    hook_ledger = GeminiHook(gemini_conn_id="gemini_ledger").ledger
    assert isinstance(hook_ledger, GcsLedger)
    hook_ledger.put("runs/p.json", {"run_id": "r"})
    assert [blob.name for blob in gcs_emulator.client().list_blobs(bucket)] == ["team-a/ledger/runs/p.json"]


def test_a_missing_bucket_names_the_ledger_and_the_fix(gcs_emulator: Any) -> None:
    client = gcs_emulator.client()
    ledger = GcsLedger("no-such-ledger-bucket", "gemini-ledger/", lambda: client)
    for action in (
        lambda: ledger.put("runs/p.json", {"run_id": "r"}),
        lambda: ledger.scan("runs/"),
    ):
        with pytest.raises(LedgerError) as error:
            action()
        message = str(error.value)
        assert "gs://no-such-ledger-bucket/gemini-ledger/runs/" in message
        assert "does not exist: create it, or change the Gemini connection's extra 'ledger'" in message


def test_a_refused_permission_names_the_ledger_and_the_role_to_grant(forbidden_gcs_url: str) -> None:
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": forbidden_gcs_url}
    )
    ledger = GcsLedger("ledger-bucket", "gemini-ledger/", lambda: client)
    for what, action in (
        ("write", lambda: ledger.put("runs/p.json", {"run_id": "r"})),
        ("read", lambda: ledger.get("runs/p.json")),
        ("list", lambda: ledger.scan("runs/")),
    ):
        with pytest.raises(LedgerError) as error:
            action()
        message = str(error.value)
        assert f"Permission denied to {what} the ledger record {ledger.uri}runs/" in message
        assert ledger.uri == "gs://ledger-bucket/gemini-ledger/"
        assert "'Storage Object User'" in message
