"""GeminiHook with GCS: register and upload from gs://, real SDK and storage client on the emulators."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from importlib import resources

import pytest
from doubles import service_account_key
from google.cloud import storage

from airflow_gemini_files.exceptions import GeminiFilesError, GeminiInputError
from airflow_gemini_files.hooks.gemini import GeminiHook

SAMPLES = resources.files("airflow_gemini_files.samples")
BUCKET = "hook-gcs-tests"


@pytest.fixture
def bucket(gcs_emulator) -> Iterator[storage.Bucket]:
    """This module's own bucket (other tests share the GCS emulator): fresh for each test, then deleted."""
    bkt = gcs_emulator.client().create_bucket(BUCKET)
    for name, content_type in (
        ("invoice_northwind_2026-11.pdf", "application/pdf"),
        ("revenue_chart_q3.png", "image/png"),
        ("meeting_notes_de.md", "text/markdown"),
    ):
        bkt.blob(f"incoming/{name}").upload_from_string(
            SAMPLES.joinpath(name).read_bytes(), content_type=content_type
        )
    yield bkt
    for blob in bkt.list_blobs():
        blob.delete()
    bkt.delete()


@pytest.fixture
def hook(gemini_connection: str, gcs_emulator) -> GeminiHook:
    return GeminiHook(gemini_conn_id=gemini_connection)


def uris(*names: str) -> list[str]:
    return [f"gs://{BUCKET}/incoming/{n}" for n in names]


ALL = ("invoice_northwind_2026-11.pdf", "revenue_chart_q3.png", "meeting_notes_de.md")


# Register --------------------------------------------------------------------------------------------
def test_register_batches_calls_and_keeps_order_and_source_uri(hook, bucket, gemini_emulator):
    refs = hook.register_gcs_files(uris(*ALL), batch_size=2)
    assert [r.source_uri for r in refs] == uris(*ALL)
    assert [r.mime_type for r in refs] == ["application/pdf", "image/png", "text/markdown"]
    assert {r.source for r in refs} == {"REGISTERED"}
    assert gemini_emulator.stats()["requests"]["register"] == 2
    assert len(gemini_emulator.files()) == 3
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == 0  # no bytes through the worker


def test_register_many_objects_in_few_calls(hook, bucket, gemini_emulator):
    names = [f"bulk/doc-{i:03d}.txt" for i in range(150)]
    for name in names:
        bucket.blob(name).upload_from_string(b"page", content_type="text/plain")
    refs = hook.register_gcs_files([f"gs://{BUCKET}/{n}" for n in names])
    assert len(refs) == 150
    assert refs[149].source_uri == f"gs://{BUCKET}/bulk/doc-149.txt"
    assert gemini_emulator.stats()["requests"]["register"] == 2


def test_register_ignores_duplicates_and_empty_input(hook, bucket, gemini_emulator):
    assert hook.register_gcs_files([]) == []
    refs = hook.register_gcs_files(uris(ALL[0], ALL[0], ALL[1]))
    assert [r.source_uri for r in refs] == uris(ALL[0], ALL[1])
    assert gemini_emulator.stats()["requests"]["register"] == 1


def test_malformed_uri_is_refused_before_any_call(hook, bucket, gemini_emulator):
    with pytest.raises(GeminiInputError, match=r"'gs://hook-gcs-tests'.*no object"):
        hook.register_gcs_files([*uris(ALL[0]), "gs://hook-gcs-tests"])
    assert gemini_emulator.stats()["requests"]["register"] == 0


def test_missing_object_fails_and_leaves_nothing_behind(hook, bucket, gemini_emulator):
    wanted = uris(*ALL) + uris("missing.pdf")
    with pytest.raises(GeminiFilesError) as info:
        hook.register_gcs_files(wanted, batch_size=3)
    assert "missing.pdf" in str(info.value)
    assert "Storage Object Viewer" in str(info.value)
    assert gemini_emulator.files() == []  # the first batch was deleted again


def test_register_without_any_credentials_says_how_to_provide_them(
    hook, bucket, gemini_emulator, monkeypatch, tmp_path
):
    monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT")  # the emulator alone gives no credentials
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with pytest.raises(GeminiInputError, match="gcp_conn_id"):
        hook.register_gcs_files(uris(ALL[0]))
    assert gemini_emulator.stats()["requests"]["register"] == 0


def test_register_with_unknown_gcp_connection_names_it(gemini_connection, bucket):
    with pytest.raises(GeminiInputError, match="'gcp_typo'"):
        GeminiHook(gemini_conn_id=gemini_connection, gcp_conn_id="gcp_typo").register_gcs_files(uris(ALL[0]))


def register_hook(
    monkeypatch, emulator, register_auth: str | None, gcp_conn_id: str | None = None
) -> GeminiHook:
    extra = {"base_url": emulator.base_url}
    if register_auth is not None:
        extra["register_auth"] = register_auth
    conn = {"conn_type": "gemini", "password": emulator.api_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_GEMINI_REGISTER", json.dumps(conn))
    return GeminiHook(gemini_conn_id="gemini_register", gcp_conn_id=gcp_conn_id)


@pytest.mark.parametrize(
    ("server", "ours", "refusal", "advice"),
    [
        # A server that takes the key alone (python-genai #2535) refuses the seed's key plus token.
        ("key_only", None, "Expected only one form of authentication", "register_auth to 'key_only'"),
        ("credentials_only", "key_and_bearer", "Expected only one form", "register_auth to 'key_only'"),
        # A server that wants a token (the seed notebook's reading) refuses the key alone.
        ("key_and_bearer", "key_only", "Expected OAuth 2 access token", "register_auth to 'key_and_bearer'"),
    ],
)
def test_a_refused_register_authentication_says_which_setting_to_try(
    monkeypatch, bucket, gemini_emulator, server, ours, refusal, advice
):
    gemini_emulator.configure(register_auth=server)
    hook = register_hook(monkeypatch, gemini_emulator, ours)
    with pytest.raises(GeminiInputError) as info:
        hook.register_gcs_files(uris(*ALL))
    message = str(info.value)
    mode = ours or "key_and_bearer"
    assert message.startswith(
        f"Gemini refused the authentication of files:register with register_auth={mode!r} (connection "
        "'gemini_register', gcp_conn_id=None; 401 UNAUTHENTICATED: "
    )
    assert refusal in message
    assert advice in message
    assert gemini_emulator.stats()["requests"]["register"] == 1  # not retried
    assert gemini_emulator.files() == []


def test_key_only_registers_with_the_api_key_alone_and_needs_no_gcp_identity(
    monkeypatch, bucket, gemini_emulator
):
    gemini_emulator.configure(register_auth="key_only")
    hook = register_hook(monkeypatch, gemini_emulator, "key_only", gcp_conn_id="gcp_never_read")
    refs = hook.register_gcs_files(uris(*ALL), batch_size=2)
    assert [ref.source_uri for ref in refs] == uris(*ALL)
    assert {ref.source for ref in refs} == {"REGISTERED"}
    assert "gcp_credentials" not in hook.__dict__


def test_a_registered_file_lives_by_its_own_expiration_time_and_uses_no_upload_quota(
    hook, bucket, gemini_emulator
):
    from airflow_gemini_files.hooks import policy

    gemini_emulator.configure(max_project_bytes=10)  # smaller than any of the objects
    (ref,) = hook.register_gcs_files(uris(ALL[0]))
    assert ref.create_time is not None
    assert ref.expiration_time is not None
    # google-genai 1.x reads one of the two timestamps without its fraction of a second
    lifetime = ref.expiration_time - ref.create_time
    assert abs(lifetime - policy.REGISTRATION_LIFETIME) < timedelta(seconds=1)
    gemini_emulator.advance_clock(49 * 3600)  # an upload would be gone by now
    fresh = hook.get_file(ref)
    assert policy.file_verdict(fresh, margin=policy.USE_EXPIRY_MARGIN) is policy.FileVerdict.USABLE
    answer = hook.generate_content(model="gemini-2.5-flash", contents=["What is it?", fresh]).text or ""
    assert f"registered from {uris(ALL[0])[0]}" in answer


SA_TOKEN = "ya29.service-account-token-must-not-leak"


class _TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """Google's OAuth token endpoint, as far as a service-account JWT exchange needs it."""

    grants: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.grants.append(self.rfile.read(length).decode())
        body = json.dumps({"access_token": SA_TOKEN, "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


def test_register_with_a_service_account_key_from_a_connection(
    gemini_connection, bucket, gemini_emulator, token_endpoint, monkeypatch, caplog, capsys
):
    key = service_account_key(token_endpoint)
    monkeypatch.setenv(
        "AIRFLOW_CONN_GCP_DOCS",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": json.dumps(key)}}),
    )
    caplog.set_level(logging.DEBUG)
    hook = GeminiHook(gemini_conn_id=gemini_connection, gcp_conn_id="gcp_docs")
    refs = hook.register_gcs_files(uris(ALL[0]))
    assert refs[0].source_uri == uris(ALL[0])[0]
    assert "jwt-bearer" in _TokenEndpoint.grants[-1]  # the key really was exchanged for a token
    assert SA_TOKEN not in caplog.text
    assert SA_TOKEN not in capsys.readouterr().out


def test_register_records_lineage_from_gcs_to_gemini(hook, bucket, monkeypatch):
    from airflow.sdk import lineage

    collector = lineage.HookLineageCollector()
    monkeypatch.setattr(lineage, "get_hook_lineage_collector", lambda: collector)
    refs = hook.register_gcs_files(uris(ALL[0]))
    collected = collector.collected_assets
    assert [a.asset.uri for a in collected.inputs] == uris(ALL[0])
    assert [a.asset.uri for a in collected.outputs] == [refs[0].uri]


# Upload from gs:// -------------------------------------------------------------------------------------
def test_upload_from_gcs_uses_the_object_content_type_and_name(hook, bucket, gemini_emulator):
    ref = hook.upload_file(uris(ALL[0])[0])
    assert ref.mime_type == "application/pdf"
    assert ref.display_name == ALL[0]
    assert ref.source_uri == uris(ALL[0])[0]
    assert ref.source == "UPLOADED"
    assert ref.size_bytes == len(SAMPLES.joinpath(ALL[0]).read_bytes())


def test_upload_from_gcs_sniffs_when_the_object_has_no_content_type(hook, bucket):
    untyped = "application/octet-stream"  # what GCS records when the uploader sets no type
    png = SAMPLES.joinpath("revenue_chart_q4.png").read_bytes()
    bucket.blob("scans/scan-0001").upload_from_string(png, content_type=untyped)
    assert hook.upload_file(f"gs://{BUCKET}/scans/scan-0001").mime_type == "image/png"
    bucket.blob("exports/events.jsonl").upload_from_string(b'{"a": 1}\n{"a": 2}\n', content_type=untyped)
    assert hook.upload_file(f"gs://{BUCKET}/exports/events.jsonl").mime_type == "text/plain"


def test_text_plain_content_type_contradicted_by_magic_bytes_is_corrected(hook, bucket):
    # upload_from_string's default content type is text/plain, whatever the bytes are.
    bucket.blob("scans/chart.png").upload_from_string(SAMPLES.joinpath("revenue_chart_q4.png").read_bytes())
    assert hook.upload_file(f"gs://{BUCKET}/scans/chart.png").mime_type == "image/png"
    bucket.blob("notes/readme.txt").upload_from_string(b"just text")
    assert hook.upload_file(f"gs://{BUCKET}/notes/readme.txt").mime_type == "text/plain"


def test_explicit_mime_type_beats_the_gcs_content_type(hook, bucket):
    ref = hook.upload_file(uris("meeting_notes_de.md")[0], mime_type="text/plain", display_name="notes")
    assert ref.mime_type == "text/plain"
    assert ref.display_name == "notes"


@pytest.fixture
def separate_gemini_emulator(monkeypatch, gcs_emulator) -> Iterator[str]:
    """An emulator in its own process, so this process's memory is the client's alone; yields a conn id."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_gemini_files.emulator.cli", "--port", "0", "--api-key", "k"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        conn = {"conn_type": "gemini", "password": "k", "extra": {"base_url": base_url}}
        monkeypatch.setenv("AIRFLOW_CONN_GEMINI_SEPARATE", json.dumps(conn))
        yield "gemini_separate"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_upload_from_gcs_streams_in_bounded_memory(separate_gemini_emulator, bucket):
    size = 96 * 1024 * 1024
    bucket.blob("big/video.mp4").upload_from_string(
        b"\x00\x00\x00\x20ftypisom" + b"\x00" * (size - 12), content_type="video/mp4"
    )
    hook = GeminiHook(gemini_conn_id=separate_gemini_emulator)
    tracemalloc.start()
    try:
        ref = hook.upload_file(f"gs://{BUCKET}/big/video.mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.size_bytes == size
    assert ref.mime_type == "video/mp4"
    # Chunks of 8 MiB, two read ahead: the 96 MiB object is never held whole (issue 5: <= 64 MiB).
    assert peak < 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        (f"gs://{BUCKET}/incoming/nope.pdf", "object 'incoming/nope.pdf' does not exist"),
        ("gs://no-such-bucket/a.pdf", "bucket 'no-such-bucket'"),
        ("gs://hook-gcs-tests/", "no object"),
        ("gs:/hook-gcs-tests/a.pdf", "must start with 'gs://'"),
    ],
)
def test_bad_gcs_sources_are_named_and_nothing_is_uploaded(hook, bucket, gemini_emulator, uri, fragment):
    with pytest.raises(GeminiInputError, match=fragment):
        hook.upload_file(uri)
    assert gemini_emulator.stats()["requests"]["upload_start"] == 0


def test_an_empty_gcs_object_is_refused_by_upload_and_register_alike(hook, bucket, gemini_emulator):
    bucket.blob("empty.pdf").upload_from_string(b"")
    uri = f"gs://{BUCKET}/empty.pdf"
    with pytest.raises(GeminiInputError) as uploading:
        hook.upload_file(uri)
    assert gemini_emulator.stats()["requests"]["upload_start"] == 0
    with pytest.raises(GeminiInputError) as registering:
        hook.register_gcs_files([*uris(ALL[0]), uri])
    for error in (uploading.value, registering.value):
        assert f"'{uri}' is empty (0 bytes): Gemini cannot use an empty file" in str(error)
    assert gemini_emulator.files() == [], "the batch with the empty object was rolled back"


SPECIAL_NAMES = ("a#b.pdf", "a?b.pdf", "a%2Fb.pdf", "a b.pdf", "dir/ü.pdf", "x+y.pdf", "c&d=e.pdf")


@pytest.mark.parametrize("name", SPECIAL_NAMES)
def test_object_names_with_url_syntax_stream_their_own_bytes(hook, bucket, gemini_emulator, name):
    """Names with #, ?, %2F, spaces, + or non-ASCII are percent-encoded in the media URL."""
    data = b"%PDF-1.4 " + name.encode() + b" " + bytes(range(256)) * 40
    bucket.blob(f"special/{name}").upload_from_string(data, content_type="application/pdf")
    for decoy in ("a", "a%2Fb.pdf", "a/b.pdf"):  # where a wrongly encoded URL would point
        if decoy != name:
            bucket.blob(f"special/{decoy}").upload_from_string(
                b"%PDF-1.4 decoy", content_type="application/pdf"
            )
    ref = hook.upload_file(f"gs://{BUCKET}/special/{name}")
    assert ref.size_bytes == len(data)
    assert ref.sha256_hex == hashlib.sha256(data).hexdigest()
    assert ref.display_name == name.rsplit("/", 1)[-1]


def test_gcs_object_of_unknown_type_asks_for_mime_type(hook, bucket, gemini_emulator):
    bucket.blob("blob.dat").upload_from_string(bytes(range(256)), content_type="application/octet-stream")
    with pytest.raises(GeminiInputError, match=r"gs://hook-gcs-tests/blob\.dat.*mime_type="):
        hook.upload_file(f"gs://{BUCKET}/blob.dat")
    assert gemini_emulator.stats()["requests"]["upload_start"] == 0


def test_concurrent_gcs_uploads_share_one_hook_without_exhausting_connections(
    hook, bucket, gemini_emulator, caplog
):
    from concurrent.futures import ThreadPoolExecutor

    for i in range(16):
        bucket.blob(f"batch/doc-{i:02d}.pdf").upload_from_string(b"%PDF-1.4 " + b"x" * 200_000)
    caplog.set_level(logging.WARNING)
    with ThreadPoolExecutor(max_workers=16) as pool:
        refs = list(pool.map(lambda i: hook.upload_file(f"gs://{BUCKET}/batch/doc-{i:02d}.pdf"), range(16)))
    assert [r.source_uri for r in refs] == [f"gs://{BUCKET}/batch/doc-{i:02d}.pdf" for i in range(16)]
    assert {r.mime_type for r in refs} == {"application/pdf"}
    assert len(gemini_emulator.files()) == 16
    assert "Connection pool is full" not in caplog.text


def test_register_when_the_key_cannot_be_exchanged_for_a_token(
    gemini_connection, bucket, gemini_emulator, monkeypatch
):
    key = service_account_key("http://127.0.0.1:9/token")  # nothing listens there
    monkeypatch.setenv(
        "AIRFLOW_CONN_GCP_DEAD",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": key}}),
    )
    hook = GeminiHook(gemini_conn_id=gemini_connection, gcp_conn_id="gcp_dead")
    with pytest.raises(GeminiInputError, match=r"Could not get a GCP access token.*gcp_conn_id='gcp_dead'"):
        hook.register_gcs_files(uris(ALL[0]))
    assert gemini_emulator.stats()["requests"]["register"] == 0
