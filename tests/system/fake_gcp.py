"""A GCP service-account key whose OAuth token endpoint is a local stub handing out a known access token.

google-auth signs a JWT with the key's private key and POSTs it to the key's ``token_uri``; pointing that at
127.0.0.1 lets a system test give the workers a real service-account key (secret) and a recognisable access
token (secret) without any network, then search for both where they must never appear.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class TokenEndpoint:
    """The running stub: its URL and how many tokens it handed out."""

    url: str
    access_token: str
    issued: int = 0


@contextmanager
def token_endpoint(access_token: str) -> Iterator[TokenEndpoint]:
    """Serve ``POST /token`` on a free 127.0.0.1 port, always answering with ``access_token``."""
    state = TokenEndpoint(url="", access_token=access_token)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.issued += 1
            body = json.dumps({"access_token": access_token, "expires_in": 3600, "token_type": "Bearer"})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def service_account_key(token_uri: str, project: str = "system-test") -> dict[str, str]:
    """A freshly generated service-account key file (as a dict) that fetches its tokens from ``token_uri``."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": f"system-test@{project}.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }


def private_key_fragments(key: dict[str, str]) -> list[str]:
    """Distinctive lines of the key's PEM body: any of them in a log means the private key leaked."""
    body = [line for line in key["private_key"].splitlines() if line and not line.startswith("-----")]
    return [body[1], body[len(body) // 2], body[-2]]
