"""GeminiHook against the Gemini emulator through the real google-genai SDK: files, wait, generate."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
from importlib import resources

import pytest

from airflow_gemini_files.exceptions import (
    GeminiFileExistsError,
    GeminiFileFailedError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
    GeminiWaitTimeoutError,
)
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.refs import GeminiFileRef

SAMPLES = resources.files("airflow_gemini_files.samples")


def sample(name: str) -> str:
    return str(SAMPLES.joinpath(name))


@pytest.fixture
def hook(gemini_connection: str) -> GeminiHook:
    return GeminiHook(gemini_conn_id=gemini_connection)


def use_connection(monkeypatch, conn_id: str, emulator, **extra) -> GeminiHook:
    conn = {
        "conn_type": "gemini",
        "password": emulator.api_key,
        "extra": {"base_url": emulator.base_url, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return GeminiHook(gemini_conn_id=conn_id)


# Upload ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "mime_type"),
    [
        ("invoice_northwind_2026-11.pdf", "application/pdf"),
        ("revenue_chart_q3.png", "image/png"),
        ("support_call_chime.wav", "audio/wav"),
        ("meeting_notes_de.md", "text/markdown"),
        ("orders_2026-11.csv", "text/csv"),
    ],
)
def test_upload_local_file_sniffs_mime_type_and_defaults_display_name(hook, gemini_emulator, name, mime_type):
    ref = hook.upload_file(sample(name))
    assert isinstance(ref, GeminiFileRef)
    assert ref.name.startswith("files/")
    assert ref.mime_type == mime_type
    assert ref.display_name == name
    assert ref.size_bytes == os.path.getsize(sample(name))
    assert ref.source == "UPLOADED"
    assert ref.source_uri == sample(name)
    stored = gemini_emulator.files()
    assert [f["name"] for f in stored] == [ref.name]
    assert stored[0]["mimeType"] == mime_type


def test_upload_jsonl_without_mime_type_works_where_the_sdk_alone_fails(hook, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"key": "1", "request": {}}\n{"key": "2", "request": {}}\n')
    ref = hook.upload_file(path)
    assert ref.mime_type == "text/plain"  # Gemini has no type for JSON Lines: sent as text
    assert ref.display_name == "requests.jsonl"


def test_upload_with_chosen_name_display_name_and_mime_type(hook, gemini_emulator):
    ref = hook.upload_file(
        sample("meeting_notes_de.md"),
        name="notes-2026-11-22",
        display_name="Meeting notes",
        mime_type="text/plain",
    )
    assert ref.name == "files/notes-2026-11-22"
    assert ref.display_name == "Meeting notes"
    assert ref.mime_type == "text/plain"


def test_a_taken_name_is_refused_unless_on_exists_says_otherwise(hook, gemini_emulator):
    first = hook.upload_file(sample("orders_2026-11.csv"), name="orders-2026-11")
    with pytest.raises(
        GeminiFileExistsError, match=r"files/orders-2026-11 already exists.*on_exists='reuse'"
    ) as e:
        hook.upload_file(sample("orders_2026-11.csv"), name="orders-2026-11")
    assert e.value.file_name == "files/orders-2026-11"
    assert isinstance(e.value, GeminiInputError), "not retried"
    chunks_before = gemini_emulator.stats()["requests"]["upload_chunk"]
    again = hook.upload_file(sample("orders_2026-11.csv"), name="files/orders-2026-11", on_exists="reuse")
    assert again.name == first.name
    assert again.source_uri == sample("orders_2026-11.csv")
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == chunks_before  # no byte sent again
    assert len(gemini_emulator.files()) == 1


def test_reuse_takes_only_a_file_that_holds_the_same_bytes(hook, gemini_emulator, tmp_path, caplog):
    """The source was fixed after the first upload: the stale file is replaced, and the log says why."""
    path = tmp_path / "report.txt"
    path.write_text("first draft\n")
    first = hook.upload_file(str(path), name="report-1")
    path.write_text("fixed draft\n")  # same size, other bytes
    caplog.set_level(logging.INFO)
    again = hook.upload_file(str(path), name="report-1", on_exists="reuse")
    assert again.name == first.name
    assert again.sha256_hex == hashlib.sha256(b"fixed draft\n").hexdigest() != first.sha256_hex
    assert "its content differs from the source" in caplog.text
    assert [f["name"] for f in gemini_emulator.files()] == ["files/report-1"]


def test_reuse_never_takes_a_foreign_file_of_another_size(hook, gemini_emulator, tmp_path):
    hook.upload_file(io.BytesIO(b"someone else's file"), mime_type="text/plain", name="taken-1")
    path = tmp_path / "mine.txt"
    path.write_text("my document, longer than the other one\n")
    mine = hook.upload_file(str(path), name="taken-1", on_exists="reuse")
    assert mine.size_bytes == path.stat().st_size
    assert gemini_emulator.stats()["requests"]["delete"] == 1


def test_replace_uploads_again_whatever_the_existing_file_holds(hook, gemini_emulator):
    hook.upload_file(io.BytesIO(b"same"), mime_type="text/plain", name="same-1")
    hook.upload_file(io.BytesIO(b"same"), mime_type="text/plain", name="same-1", on_exists="replace")
    requests = gemini_emulator.stats()["requests"]
    assert (requests["delete"], len(gemini_emulator.files())) == (1, 1)


def test_reuse_of_a_stream_hashes_it_and_starts_again_from_its_beginning(hook, gemini_emulator):
    data = b"%PDF-1.4 stream" + bytes(range(256)) * 10
    hook.upload_file(io.BytesIO(b"%PDF-1.4 other"), mime_type="application/pdf", name="stream-1")
    ref = hook.upload_file(io.BytesIO(data), mime_type="application/pdf", name="stream-1", on_exists="reuse")
    assert ref.sha256_hex == hashlib.sha256(data).hexdigest()
    assert ref.size_bytes == len(data)


def test_on_exists_must_be_one_of_the_three(hook):
    with pytest.raises(GeminiInputError, match=r"on_exists='keep' must be one of 'fail', 'reuse', 'replace'"):
        hook.upload_file(sample("orders_2026-11.csv"), name="x", on_exists="keep")  # type: ignore[arg-type]


def test_upload_binary_stream_needs_mime_type_and_measures_a_seekable_stream(hook):
    data = b"%PDF-1.4\n" + b"x" * 5000
    with pytest.raises(GeminiInputError, match="mime_type is required"):
        hook.upload_file(io.BytesIO(data))
    ref = hook.upload_file(io.BytesIO(data), mime_type="application/pdf", display_name="in-memory.pdf")
    assert ref.size_bytes == len(data)
    assert ref.display_name == "in-memory.pdf"
    assert ref.source_uri is None


def test_upload_open_file_uses_its_name(hook):
    with open(sample("revenue_chart_q4.png"), "rb") as handle:
        ref = hook.upload_file(handle, mime_type="image/png")
    assert ref.display_name == "revenue_chart_q4.png"
    assert ref.source_uri == sample("revenue_chart_q4.png")


def test_text_stream_is_refused_with_the_fix(hook):
    with pytest.raises(GeminiInputError, match=r"open\(path, 'rb'\)"):
        hook.upload_file(io.StringIO("hello"), mime_type="text/plain")  # type: ignore[arg-type]


def _assert_nothing_sent(emulator) -> None:
    stats = emulator.stats()
    assert stats["requests"]["upload_start"] == 0
    assert stats["requests"]["upload_chunk"] == 0
    assert emulator.files() == []


def test_missing_local_path_names_the_path_and_sends_nothing(hook, gemini_emulator, tmp_path):
    missing = str(tmp_path / "nope.pdf")
    with pytest.raises(GeminiInputError) as info:
        hook.upload_file(missing)
    assert repr(missing) in str(info.value)
    assert "absolute path" in str(info.value)
    _assert_nothing_sent(gemini_emulator)


def test_directory_is_refused_with_the_fix(hook, gemini_emulator, tmp_path):
    with pytest.raises(GeminiInputError, match=r"not a regular file \(a directory\?\).*glob"):
        hook.upload_file(str(tmp_path))
    _assert_nothing_sent(gemini_emulator)


def test_empty_file_is_refused(hook, gemini_emulator, tmp_path):
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(GeminiInputError, match=r"empty\.pdf.*is empty \(0 bytes\)"):
        hook.upload_file(empty)
    _assert_nothing_sent(gemini_emulator)


def test_file_over_2_gib_is_refused_before_any_byte_is_sent(hook, gemini_emulator, tmp_path):
    big = tmp_path / "huge.mp4"
    with open(big, "wb") as handle:  # sparse: no disk space used
        handle.truncate(2 * 1024**3 + 1)
    with pytest.raises(GeminiInputError, match=r"huge\.mp4.*at most 2 GiB"):
        hook.upload_file(big)
    _assert_nothing_sent(gemini_emulator)


def test_stream_declared_over_2_gib_is_refused(hook, gemini_emulator):
    with pytest.raises(GeminiInputError, match="at most 2 GiB"):
        hook.upload_file(io.BytesIO(b"x"), mime_type="video/mp4", size=3 * 1024**3)
    _assert_nothing_sent(gemini_emulator)


def test_unknown_content_type_lists_how_to_pass_mime_type(hook, gemini_emulator, tmp_path):
    blob = tmp_path / "export.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(GeminiInputError, match=r"export\.bin.*mime_type="):
        hook.upload_file(blob)
    _assert_nothing_sent(gemini_emulator)


def test_bad_display_name_and_bad_name_are_refused_before_upload(hook, gemini_emulator):
    with pytest.raises(GeminiInputError, match="513 characters"):
        hook.upload_file(sample("orders_2026-11.csv"), display_name="d" * 513)
    with pytest.raises(GeminiInputError, match="'files/Orders_2026'"):
        hook.upload_file(sample("orders_2026-11.csv"), name="files/Orders_2026")
    _assert_nothing_sent(gemini_emulator)


def test_project_quota_full_is_explained(monkeypatch, gemini_emulator):
    hook = use_connection(monkeypatch, "gemini_quota", gemini_emulator, retry_attempts=1)
    gemini_emulator.configure(max_project_bytes=1000)
    with pytest.raises(GeminiFilesError, match=r"storage quota is full.*Delete files"):
        hook.upload_file(sample("invoice_northwind_2026-11.pdf"))
    assert gemini_emulator.files() == []


def test_upload_retries_transient_errors(monkeypatch, gemini_emulator):
    hook = use_connection(
        monkeypatch, "gemini_retry", gemini_emulator, retry_initial_delay=0.01, retry_max_delay=0.05
    )
    gemini_emulator.inject_faults("upload_start", sequence=[503, 429])
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    assert ref.state in ("PROCESSING", "ACTIVE")
    assert len(gemini_emulator.files()) == 1


# Get / list / delete ---------------------------------------------------------------------------------
def test_get_file_refreshes_state_and_keeps_source_uri(hook, gemini_emulator):
    gemini_emulator.configure(processing_delay=60)
    ref = hook.upload_file(sample("revenue_chart_q3.png"))
    assert ref.state == "PROCESSING"
    gemini_emulator.advance_clock(61)
    fresh = hook.get_file(ref)
    assert fresh.state == "ACTIVE"
    assert fresh.source_uri == ref.source_uri
    assert hook.get_file(ref.name).state == "ACTIVE"
    assert hook.get_file(ref.to_dict()).name == ref.name


def test_get_missing_file_is_not_usable_error(hook):
    with pytest.raises(GeminiFileNotUsableError, match=r"files/doesnotexist does not exist.*48 hours"):
        hook.get_file("files/doesnotexist")


def test_get_with_malformed_value_names_it(hook):
    with pytest.raises(GeminiInputError, match="Not A Name"):
        hook.get_file("Not A Name")


def test_aget_file_works_from_an_event_loop(hook):
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    fresh = asyncio.run(GeminiHook(gemini_conn_id=hook.gemini_conn_id).aget_file(ref.name))
    assert fresh.name == ref.name
    with pytest.raises(GeminiFileNotUsableError):
        asyncio.run(hook.aget_file("files/gone"))


def test_list_files_pages_through_everything(hook, gemini_emulator):
    names = {hook.upload_file(io.BytesIO(b"row %d\n" % i), mime_type="text/plain").name for i in range(7)}
    listed = list(hook.list_files(page_size=3))
    assert {r.name for r in listed} == names
    assert gemini_emulator.stats()["requests"]["list"] == 3
    with pytest.raises(GeminiInputError, match="1 to 100"):
        hook.list_files(page_size=500)


def test_delete_returns_true_then_false_when_already_gone(hook, gemini_emulator, caplog):
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    assert hook.delete_file(ref) is True
    assert gemini_emulator.files() == []
    caplog.set_level(logging.INFO)
    assert hook.delete_file(ref) is False
    assert "already gone" in caplog.text


# Wait ------------------------------------------------------------------------------------------------
def test_wait_for_active_returns_refreshed_refs_in_order(hook, gemini_emulator, caplog):
    gemini_emulator.configure(processing_delay=0.3)
    refs = [hook.upload_file(sample(n)) for n in ("orders_2026-11.csv", "revenue_chart_q3.png")]
    caplog.set_level(logging.INFO)
    active = hook.wait_for_active(refs, timeout=10, poll_interval=0.1)
    assert [r.name for r in active] == [r.name for r in refs]
    assert all(r.state == "ACTIVE" for r in active)
    assert [r.source_uri for r in active] == [r.source_uri for r in refs]
    assert "still PROCESSING" in caplog.text


def test_wait_for_active_backs_off_between_polls(hook, gemini_emulator):
    gemini_emulator.configure(processing_delay=1.5)
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    gets_before = gemini_emulator.stats()["requests"]["get"]
    hook.wait_for_active(ref, timeout=10, poll_interval=0.1, max_poll_interval=1)
    # 0.1, 0.15, 0.225, ... capped at 1 s: about 8 polls in 1.5 s, not the 15 fixed 0.1 s polling would make.
    assert gemini_emulator.stats()["requests"]["get"] - gets_before <= 10


def test_wait_for_active_raises_with_the_files_error_message(hook, gemini_emulator):
    gemini_emulator.fail_processing("broken", "The document has no pages.")
    good = hook.upload_file(sample("orders_2026-11.csv"))
    bad = hook.upload_file(io.BytesIO(b"%PDF-"), mime_type="application/pdf", display_name="broken.pdf")
    with pytest.raises(GeminiFileFailedError) as info:
        hook.wait_for_active([good, bad], timeout=10, poll_interval=0.1)
    assert "broken.pdf" in str(info.value)
    assert "The document has no pages." in str(info.value)
    assert info.value.file_name == bad.name


def test_wait_for_active_timeout_names_the_files_still_processing(hook, gemini_emulator):
    gemini_emulator.configure(processing_delay=3600)
    ref = hook.upload_file(sample("revenue_chart_q4.png"))
    with pytest.raises(GeminiWaitTimeoutError) as info:
        hook.wait_for_active([ref], timeout=0.3, poll_interval=0.1)
    assert ref.name in str(info.value)
    assert "revenue_chart_q4.png" in str(info.value)
    assert info.value.pending == [ref.name]


def test_wait_for_active_rides_out_transient_errors(monkeypatch, gemini_emulator):
    hook = use_connection(monkeypatch, "gemini_flaky", gemini_emulator, retry_attempts=1)
    gemini_emulator.configure(processing_delay=0.2)
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    gemini_emulator.inject_faults("get", sequence=[503, 503])
    assert hook.wait_for_active(ref, timeout=10, poll_interval=0.1)[0].state == "ACTIVE"


def test_wait_for_a_deleted_file_is_not_usable(hook):
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    hook.delete_file(ref)
    with pytest.raises(GeminiFileNotUsableError, match=ref.name):
        hook.wait_for_active(ref.with_state("PROCESSING"), timeout=5, poll_interval=0.1)


# Generate --------------------------------------------------------------------------------------------
def test_generate_content_with_a_file_ref(hook, gemini_emulator):
    ref = hook.wait_for_active(hook.upload_file(sample("orders_2026-11.csv")), timeout=10, poll_interval=0.1)[
        0
    ]
    response = hook.generate_content(model="gemini-2.5-flash", contents=["Summarise this table.", ref])
    assert response.text
    assert gemini_emulator.stats()["requests"]["generate"] == 1


def test_generate_with_structured_output_config(hook):
    response = hook.generate_content(
        model="gemini-2.5-flash",
        contents="Give me a JSON object.",
        config={"response_mime_type": "application/json", "response_schema": {"type": "OBJECT"}},
    )
    assert isinstance(json.loads(response.text or ""), dict)


def test_generate_with_unknown_model_names_it(hook):
    with pytest.raises(GeminiInputError, match=r"model 'gpt-4o' was not found"):
        hook.generate_content(model="gpt-4o", contents="hi")


def test_generate_with_processing_file_is_not_usable(hook, gemini_emulator):
    gemini_emulator.configure(processing_delay=3600)
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    with pytest.raises(GeminiFileNotUsableError, match="ACTIVE"):
        hook.generate_content(model="gemini-2.5-flash", contents=["Summarise.", ref])


def test_generate_with_deleted_file_names_it(hook):
    ref = hook.wait_for_active(hook.upload_file(sample("orders_2026-11.csv")), timeout=10, poll_interval=0.1)[
        0
    ]
    hook.delete_file(ref)
    with pytest.raises(GeminiFileNotUsableError, match=ref.name):
        hook.generate_content(model="gemini-2.5-flash", contents=["Summarise.", ref])


def test_generate_with_empty_contents_or_model_is_refused(hook):
    with pytest.raises(GeminiInputError, match="model"):
        hook.generate_content(model=" ", contents="hi")
    with pytest.raises(GeminiInputError, match="contents is empty"):
        hook.generate_content(model="gemini-2.5-flash", contents=[])


# Connection ------------------------------------------------------------------------------------------
def test_test_connection_succeeds_against_the_emulator(hook, gemini_emulator):
    ok, message = hook.test_connection()
    assert ok, message
    assert gemini_emulator.base_url in message


def test_wrong_api_key_fails_test_connection_without_leaking_it(monkeypatch, gemini_emulator):
    secret = "AIzaSy-WRONG-key-that-must-not-leak"
    conn = {"conn_type": "gemini", "password": secret, "extra": {"base_url": gemini_emulator.base_url}}
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_BAD", json.dumps(conn))
    hook = GeminiHook(gemini_conn_id="gemini_bad")
    ok, message = hook.test_connection()
    assert not ok
    assert "'gemini_bad'" in message
    assert "API key" in message
    assert secret not in message
    with pytest.raises(GeminiInputError) as info:
        hook.get_file("files/abc")
    assert secret not in str(info.value)
    assert gemini_emulator.stats()["requests"]["get"] <= 1  # a bad key is not retried


def test_missing_connection_fails_test_connection_with_the_fix(monkeypatch):
    ok, message = GeminiHook(gemini_conn_id="gemini_missing").test_connection()
    assert not ok
    assert "AIRFLOW_CONN_GEMINI_MISSING" in message


def test_unreachable_api_fails_test_connection(monkeypatch):
    conn = {
        "conn_type": "gemini",
        "password": "k",
        "extra": {"base_url": "http://127.0.0.1:9", "retry_attempts": 1},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_DOWN", json.dumps(conn))
    ok, message = GeminiHook(gemini_conn_id="gemini_down").test_connection()
    assert not ok
    assert "Cannot reach" in message


# Secrets and lineage ---------------------------------------------------------------------------------
def test_api_key_never_reaches_logs_or_errors_even_at_debug_level(hook, gemini_emulator, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    gemini_emulator.configure(processing_delay=0.2)
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    ref = hook.wait_for_active(ref, timeout=10, poll_interval=0.1)[0]
    hook.generate_content(model="gemini-2.5-flash", contents=["Summarise.", ref])
    list(hook.list_files())
    assert hook.test_connection()[0]
    problems = []
    for call in (
        lambda: hook.generate_content(model="unknown-model", contents="x"),
        lambda: hook.get_file("files/gone"),
        lambda: hook.upload_file("/no/such/file.pdf"),
    ):
        with pytest.raises(GeminiFilesError) as info:
            call()
        problems.append(str(info.value))
    hook.delete_file(ref)
    hook.delete_file(ref)
    key = gemini_emulator.api_key
    assert key not in caplog.text
    captured = capsys.readouterr()
    assert key not in captured.out
    assert key not in captured.err
    assert all(key not in p for p in problems)


def test_upload_records_lineage_from_the_local_file_to_the_gemini_file(hook, monkeypatch):
    from airflow.sdk import lineage

    collector = lineage.HookLineageCollector()
    monkeypatch.setattr(lineage, "get_hook_lineage_collector", lambda: collector)
    ref = hook.upload_file(sample("revenue_chart_q3.png"))
    collected = collector.collected_assets
    assert [a.asset.uri for a in collected.inputs] == [f"file://{sample('revenue_chart_q3.png')}"]
    assert [a.asset.uri for a in collected.outputs] == [ref.uri]


def test_gcs_uri_mangled_by_pathlib_is_explained(hook, gemini_emulator):
    from pathlib import Path

    with pytest.raises(GeminiInputError, match="pathlib"):
        hook.upload_file(Path("gs://bucket/report.pdf"))
    _assert_nothing_sent(gemini_emulator)


def test_wait_for_active_rides_out_network_errors_then_names_the_url(monkeypatch, caplog):
    conn = {
        "conn_type": "gemini",
        "password": "k",
        "extra": {"base_url": "http://127.0.0.1:9", "retry_attempts": 1},  # nothing listens there
    }
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_UNREACHABLE", json.dumps(conn))
    hook = GeminiHook(gemini_conn_id="gemini_unreachable")
    caplog.set_level(logging.WARNING)
    with pytest.raises(GeminiFilesError) as error:
        hook.wait_for_active(
            GeminiFileRef(name="files/abc", state="PROCESSING"), timeout=600, poll_interval=0.01
        )
    message = str(error.value)
    assert "Gave up waiting for files/abc after 5 polls in a row could not check them" in message
    assert "Cannot reach the Gemini API at http://127.0.0.1:9 (connection 'gemini_unreachable')" in message
    assert "Check the connection's base_url extra" in message
    assert caplog.text.count("Could not check 1 file(s)") == 5
