"""Suite-wide set-up: a throw-away AIRFLOW_HOME per session, and shared test endpoints."""

from __future__ import annotations

import http.server
import json
import os
import tempfile
import threading
from collections.abc import Iterator

import pytest

# Must happen before anything imports airflow: its configuration is read at import time.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="gemini-files-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


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
