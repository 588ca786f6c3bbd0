"""Contract: ``files:register`` as the seed notebook calls it, and what a registered file looks like.

Live, this needs ``GEMINI_LIVE_GCS_URI`` (an object the key's project may read) and Application Default
Credentials with the ``devstorage.read_only`` scope. Which authentication the real endpoint accepts is
one of the open questions of the fidelity ledger: a live run answers it.
"""

from __future__ import annotations

import itertools
import os
from datetime import timedelta

import pytest
from google.auth.credentials import Credentials as BaseCredentials
from google.oauth2.credentials import Credentials
from live import LIVE_GCS_URI_ENV

from airflow_gemini_files.testing import GcsEmulator

from .conftest import Target

_BUCKETS = itertools.count()
SCOPES = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/devstorage.read_only",
]


@pytest.fixture
def registrable(target: Target, request: pytest.FixtureRequest) -> tuple[str, BaseCredentials]:
    """A gs:// object to register and the OAuth credentials to do it with."""
    if target.live:
        uri = os.environ.get(LIVE_GCS_URI_ENV)
        if not uri:
            pytest.skip(f"set {LIVE_GCS_URI_ENV} (and Application Default Credentials) to register live")
        import google.auth

        credentials, _ = google.auth.default(scopes=SCOPES)
        return uri, credentials
    gcs: GcsEmulator = request.getfixturevalue("gcs_emulator")
    bucket = gcs.client().create_bucket(f"contract-register-{next(_BUCKETS)}")
    bucket.blob("docs/contract.pdf").upload_from_string(b"%PDF-1.4 contract", content_type="application/pdf")
    return f"gs://{bucket.name}/docs/contract.pdf", Credentials(token="offline-token")


def test_register_as_the_seed_notebook_does(target: Target, registrable: tuple[str, BaseCredentials]) -> None:
    uri, credentials = registrable
    files = target.client.files.register_files(auth=credentials, uris=[uri]).files or []
    for file in files:
        target.track(file)
    assert len(files) == 1
    file = files[0]
    assert file.source is not None
    assert file.source.name == "REGISTERED"
    assert file.create_time is not None
    assert file.expiration_time is not None
    assert timedelta(days=29) < file.expiration_time - file.create_time <= timedelta(days=30)
