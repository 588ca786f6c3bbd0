"""One real Airflow deployment per system-test module, wired to the Gemini and GCS emulators.

The deployment gets a recognisable Gemini API key and a GCP service-account key whose access token is
recognisable too, so the tests can look for them everywhere they must not be. Set
``GEMINI_SYSTEM_KEEP=1`` to keep the Airflow home (logs, metadata DB) after the module for debugging.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from airflow_gemini_files.demo import DAG_ID, airflow_env
from airflow_gemini_files.emulator import GeminiEmulator
from airflow_gemini_files.example_dags import FOLDER as EXAMPLE_DAGS_FOLDER
from airflow_gemini_files.gcs_emulator import GcsEmulator

from .airflow_services import AirflowServices, running
from .fake_gcp import TokenEndpoint, private_key_fragments, service_account_key, token_endpoint
from .runs import PARKED

BUCKET = "system-test-documents"
GCP_CONN_ID = "gcp_system_test"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "celery: starts PostgreSQL, Redis and a CeleryExecutor deployment with two workers (slow; needs "
        "Debian's postgresql and redis-server, see .ci/services.sh)",
    )


@dataclass
class Deployment:
    """Everything a system test drives and inspects."""

    airflow: AirflowServices
    gemini: GeminiEmulator
    gcs: GcsEmulator
    token_endpoint: TokenEndpoint
    secrets: dict[str, str]
    """What must never appear in a log, XCom, rendered field or trigger kwargs: description -> value."""
    emulator_log: Path
    trigger_kwargs_seen: list[str] = field(default_factory=list)
    """Decrypted ``trigger.kwargs`` of every trigger captured while it existed (rows go once they fire)."""


@pytest.fixture(scope="module")
def deployment(gcs_emulator: GcsEmulator) -> Iterator[Deployment]:
    """Scheduler, dag-processor, triggerer and api-server running with the nightly DAG parsed."""
    home = Path(tempfile.mkdtemp(prefix="gemini-files-system-"))
    api_key = f"AIza-SECRET-CANARY-{secrets.token_hex(12)}"
    access_token = f"ya29.SECRET-CANARY-{secrets.token_hex(12)}"
    emulator_log = home / "services" / "gemini-emulator.log"
    emulator_log.parent.mkdir(parents=True)
    log_handler = logging.FileHandler(emulator_log)
    emulator_logger = logging.getLogger("airflow_gemini_files.emulator")
    previous_level = emulator_logger.level
    emulator_logger.addHandler(log_handler)
    emulator_logger.setLevel(logging.DEBUG)
    try:
        with (
            token_endpoint(access_token) as tokens,
            GeminiEmulator(api_key=api_key, gcs_host=gcs_emulator.host, processing_delay=PARKED) as gemini,
        ):
            key = service_account_key(tokens.url)
            dags = home / "dags"
            dags.mkdir()
            for dag_file in EXAMPLE_DAGS_FOLDER.glob("*.py"):
                shutil.copy(dag_file, dags)
            env = airflow_env(home, dags, gemini_base_url=gemini.base_url, gcs_host=gcs_emulator.host)
            env["AIRFLOW_CONN_GEMINI_DEFAULT"] = json.dumps(
                {"conn_type": "gemini", "password": api_key, "extra": {"base_url": gemini.base_url}}
            )
            env[f"AIRFLOW_CONN_{GCP_CONN_ID.upper()}"] = json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": key}}
            )
            env["GEMINI_GCP_CONN_ID"] = GCP_CONN_ID
            env["GEMINI_DOCUMENTS_BUCKET"] = BUCKET
            airflow = AirflowServices.create(home, env)
            airflow.run_cli("db", "migrate")
            with running(airflow):
                airflow.wait_healthy(["scheduler", "triggerer", "dag_processor"])
                airflow.wait_for_dag(DAG_ID)
                secret_values = {"Gemini API key": api_key, "GCP access token": access_token}
                for index, fragment in enumerate(private_key_fragments(key)):
                    secret_values[f"service-account private key, fragment {index + 1}"] = fragment
                yield Deployment(airflow, gemini, gcs_emulator, tokens, secret_values, emulator_log)
    finally:
        emulator_logger.removeHandler(log_handler)
        emulator_logger.setLevel(previous_level)
        log_handler.close()
        if os.environ.get("GEMINI_SYSTEM_KEEP"):
            print(f"system test: kept the Airflow home {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
