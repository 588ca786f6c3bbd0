"""The hook's GCS side: the real google-cloud-storage client against the GCS emulator and a 403 server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.hooks import gcs
from airflow_gemini_files.hooks.gemini import GeminiHook


@pytest.fixture
def bucket(gcs_emulator) -> Iterator[storage.Bucket]:
    """This module's own bucket (other tests share the GCS emulator): fresh for each test, then deleted."""
    client = gcs_emulator.client()
    bkt = client.create_bucket("gcs-helper-tests")
    for name in (
        "incoming/2026-11-21/a.pdf",
        "incoming/2026-11-22/b.pdf",
        "incoming/2026-11-22/c.png",
        "incoming/2026-11-22/nested/d.pdf",
        "incoming/2026-11-22/",  # a folder placeholder
        "archive/old.pdf",
    ):
        bkt.blob(name).upload_from_string(b"%PDF-1.4 test" if name.endswith(".pdf") else b"x")
    yield bkt
    for blob in bkt.list_blobs():
        blob.delete()
    bkt.delete()


def test_the_hook_lists_by_prefix_with_one_anonymous_storage_client(bucket):
    hook = GeminiHook()  # the gcs_emulator fixture defines the anonymous google_cloud_default
    assert isinstance(hook.storage_client._credentials, AnonymousCredentials)
    assert hook.storage_client is hook.storage_client
    assert hook.list_gcs_objects("gcs-helper-tests", "incoming/2026-11-22/") == [
        "gs://gcs-helper-tests/incoming/2026-11-22/b.pdf",
        "gs://gcs-helper-tests/incoming/2026-11-22/c.png",
        "gs://gcs-helper-tests/incoming/2026-11-22/nested/d.pdf",
    ]


def test_match_glob_uses_gcs_semantics(bucket):
    hook = GeminiHook()
    assert hook.list_gcs_objects("gcs-helper-tests", "incoming/", "incoming/*/*.pdf") == [
        "gs://gcs-helper-tests/incoming/2026-11-21/a.pdf",
        "gs://gcs-helper-tests/incoming/2026-11-22/b.pdf",
    ]
    assert hook.list_gcs_objects("gcs-helper-tests", match_glob="**.pdf") == [
        "gs://gcs-helper-tests/archive/old.pdf",
        "gs://gcs-helper-tests/incoming/2026-11-21/a.pdf",
        "gs://gcs-helper-tests/incoming/2026-11-22/b.pdf",
        "gs://gcs-helper-tests/incoming/2026-11-22/nested/d.pdf",
    ]


def test_empty_prefix_match_is_an_empty_list(bucket):
    assert GeminiHook().list_gcs_objects("gcs-helper-tests", "nothing-here/") == []


def test_listing_a_missing_bucket_names_it(bucket):
    with pytest.raises(GeminiInputError, match="'no-such-bucket' does not exist"):
        GeminiHook().list_gcs_objects("no-such-bucket", "x/")


def test_bucket_given_as_uri_is_refused_with_the_fix():
    with pytest.raises(GeminiInputError, match="bare name"):
        GeminiHook().list_gcs_objects("gs://gcs-helper-tests/incoming")


def test_get_blob_loads_size_and_content_type(bucket):
    bucket.blob("typed.csv").upload_from_string(b"a,b\n1,2\n", content_type="text/csv")
    blob = gcs.get_blob(GeminiHook().storage_client, "gs://gcs-helper-tests/typed.csv")
    assert blob.size == 8
    assert blob.content_type == "text/csv"
    assert gcs.read_head(blob, 3) == b"a,b"


def test_missing_object_and_missing_bucket_are_told_apart(bucket):
    client = GeminiHook().storage_client
    with pytest.raises(GeminiInputError, match=r"object 'incoming/zzz\.pdf' does not exist in bucket"):
        gcs.get_blob(client, "gs://gcs-helper-tests/incoming/zzz.pdf")
    with pytest.raises(
        GeminiInputError, match=r"bucket 'other-bucket' in 'gs://other-bucket/a\.pdf' does not exist"
    ):
        gcs.get_blob(client, "gs://other-bucket/a.pdf")


@pytest.fixture
def forbidden_client(forbidden_gcs_url: str) -> storage.Client:
    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": forbidden_gcs_url},
    )


def test_permission_denied_reading_says_which_role_is_missing(forbidden_client):
    with pytest.raises(
        GeminiInputError, match=r"Permission denied reading gs://locked/a\.pdf.*Storage Object Viewer"
    ):
        gcs.get_blob(forbidden_client, "gs://locked/a.pdf")


def test_permission_denied_listing_says_which_role_is_missing(forbidden_client):
    with pytest.raises(
        GeminiInputError, match=r"Permission denied listing gs://locked/in/.*storage\.objects\.list"
    ):
        gcs.list_objects(forbidden_client, "locked", "in/")
