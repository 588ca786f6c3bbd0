"""Suite-wide set-up: a throw-away AIRFLOW_HOME per session, the emulator fixtures, shared test endpoints.

The first lines are the README's ``conftest.py`` for testing your own DAGs, except the DAGs folder: the
DAG tests here configure a bundle per run (``tests/dags/conftest.py``).
"""

from __future__ import annotations

import http.server
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from importlib.metadata import version

import pytest

# Before anything imports Airflow: it reads its configuration once, at import time.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="gemini-files-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# GeminiFileRef allow-lists itself for XCom on Task SDK 1.3+ (Airflow 3.3); Airflow 3.2 needs the config
# line the README gives. Only there, so that on 3.3 the suite checks the self-allow-listing.
if tuple(int(part) for part in version("apache-airflow-task-sdk").split(".")[:2]) < (1, 3):
    os.environ.setdefault(
        "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES", "airflow.* airflow_gemini_files.refs.GeminiFileRef"
    )

pytest_plugins = ["airflow_gemini_files.testing"]


class _ForbiddenStorage(http.server.BaseHTTPRequestHandler):
    """A storage endpoint that refuses everything, as GCS does without storage.objects.* permission."""

    def _refuse(self) -> None:
        body = json.dumps(
            {"error": {"code": 403, "message": "caller does not have storage.objects.get access"}}
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def forbidden_gcs_url() -> Iterator[str]:
    """Base URL of a GCS endpoint on 127.0.0.1 that answers every request 403 PERMISSION_DENIED."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForbiddenStorage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
