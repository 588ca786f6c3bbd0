"""``[core] hostname_callable`` of the local Celery workers: each reports its own name as its hostname.

Two workers on one machine share the machine's hostname, so the task instances' ``hostname`` column could
not tell which worker ran them; on a real cluster each worker is its own host. Imported by every task
process of those workers: keep it free of heavy imports.
"""

from __future__ import annotations

import os
import socket

WORKER_ENV = "GEMINI_CLUSTER_WORKER"


def worker_hostname() -> str:
    """The worker's name from env ``GEMINI_CLUSTER_WORKER``; the machine's FQDN elsewhere."""
    return os.environ.get(WORKER_ENV) or socket.getfqdn()
