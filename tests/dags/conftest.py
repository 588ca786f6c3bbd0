"""Run the example DAGs for real (``dag.test()`` on the parsed files) against the local emulators.

The metadata DB and the ``run_dag`` fixture are shared by the whole suite (tests/conftest.py and
tests/dag_runs.py); this module adds a fresh bucket per test and a reader for the JSON results.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from dag_runs import BUNDLE, REPO, next_logical_date
from dag_runs import EXAMPLE_DAGS_FOLDER as DAGS_FOLDER

__all__ = ["BUNDLE", "DAGS_FOLDER", "REPO", "bucket", "next_logical_date", "read_json_objects"]

_buckets = itertools.count()


@pytest.fixture
def bucket(gcs_emulator: Any) -> str:
    """A new, empty bucket in the GCS emulator (unique per test)."""
    name = f"dag-test-{next(_buckets)}"
    gcs_emulator.client().create_bucket(name)
    return name


def read_json_objects(gcs_emulator: Any, bucket: str, prefix: str) -> dict[str, Any]:
    """Every JSON object under ``gs://bucket/prefix``, by object name relative to the prefix."""
    return {
        blob.name[len(prefix) :]: json.loads(blob.download_as_bytes())
        for blob in gcs_emulator.client().list_blobs(bucket, prefix=prefix)
    }
