"""Provider registration read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_gemini_files import __version__


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: connection type and form, hooks, operators, sensors, triggers."""
    return {
        "package-name": "airflow-gemini-files",
        "name": "Gemini Files",
        "description": "Move documents from Google Cloud Storage or local disk through the Gemini API "
        "Files API, ask Gemini about them, and clean up afterwards.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Gemini Files",
                "external-doc-url": "https://ai.google.dev/gemini-api/docs/files",
                "tags": ["ai", "gemini", "generative-ai", "gcp"],
            }
        ],
        "hooks": [
            {"integration-name": "Gemini Files", "python-modules": ["airflow_gemini_files.hooks.gemini"]}
        ],
        "operators": [
            {
                "integration-name": "Gemini Files",
                "python-modules": [
                    "airflow_gemini_files.operators.files",
                    "airflow_gemini_files.operators.generate",
                    "airflow_gemini_files.operators.batch",
                    "airflow_gemini_files.operators.sweep",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "Gemini Files", "python-modules": ["airflow_gemini_files.sensors.files"]}
        ],
        "triggers": [
            {
                "integration-name": "Gemini Files",
                "python-modules": [
                    "airflow_gemini_files.triggers.files",
                    "airflow_gemini_files.triggers.batch",
                    "airflow_gemini_files.triggers.quota",
                ],
            }
        ],
        "config": {
            "gemini_files": {
                "description": "Settings of the airflow-gemini-files provider.",
                "options": {
                    "deployment_id": {
                        "description": "A name unique to this Airflow deployment (e.g. 'production'). "
                        "Uploads are named after the DAG run and this id, so deployments that share an "
                        "API key never reuse or delete each other's files. When empty, the DAG run's "
                        "start time tells deployments apart.",
                        "version_added": None,
                        "type": "string",
                        "example": "production",
                        "default": "",
                    }
                },
            }
        },
        "connection-types": [
            {
                "hook-class-name": "airflow_gemini_files.hooks.gemini.GeminiHook",
                "hook-name": "Gemini API (Files)",
                "connection-type": "gemini",
                "conn-fields": {
                    "base_url": {
                        "label": "Base URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Leave empty for the Gemini Developer API. Set it for a proxy or the "
                        "local emulator, e.g. http://127.0.0.1:8765.",
                    },
                    "api_version": {
                        "label": "API version",
                        "schema": {"type": ["string", "null"], "enum": [None, "v1", "v1beta"]},
                        "description": "Gemini API version (default: the SDK default, v1).",
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"]},
                        "description": "HTTP timeout per request, in seconds.",
                    },
                    "retry_attempts": {
                        "label": "Retry attempts",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                        "description": "Attempts per call (including the first) on 408/429/5xx and "
                        "connection errors, with exponential backoff and jitter (default 5).",
                    },
                    "retry_initial_delay": {
                        "label": "Retry initial delay (seconds)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": "Seconds before the first retry (default 1); doubles per retry.",
                    },
                    "retry_max_delay": {
                        "label": "Retry maximum delay (seconds)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": "Cap on the backoff between retries (default 30). A longer delay "
                        "the server asks for (RetryInfo, Retry-After) is honoured.",
                    },
                    "retry_max_total_wait": {
                        "label": "Retry total wait (seconds)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": "Most time one call spends waiting between its tries (default 180); "
                        "a call whose next wait would pass it gives up.",
                    },
                    "register_auth": {
                        "label": "Registration authentication",
                        "schema": {"type": ["string", "null"], "enum": [None, "key_and_bearer", "key_only"]},
                        "description": "How files:register authenticates: key_and_bearer (default) sends the "
                        "API key plus an OAuth token of the GCP connection, which reads the bucket; key_only "
                        "sends the API key alone (grant the key's project's Gemini API service agent Storage "
                        "Object Viewer). An error says which to try when Gemini refuses one.",
                    },
                    "upload_chunk_size": {
                        "label": "Upload chunk size (bytes)",
                        "schema": {"type": ["integer", "null"], "minimum": 262144, "multipleOf": 262144},
                        "description": "Bytes per resumable-upload request and per GCS ranged read, a "
                        "multiple of 256 KiB (default 8388608, 8 MiB).",
                    },
                    "ledger": {
                        "label": "Ledger",
                        "schema": {"type": ["string", "null"]},
                        "description": "Where budgets and the records of created files live, reachable by "
                        "every worker: gs://bucket/prefix/ (or an absolute directory on a disk every worker "
                        "shares). Needed for per-run budgets and to trace registered files for the sweeper.",
                    },
                    "prices": {
                        "label": "Prices",
                        "schema": {"type": ["object", "null"]},
                        "description": "Price overrides in USD per million tokens, e.g. "
                        '{"models": {"gemini-2.5-flash": {"input": 0.3, "cached_input": 0.03, '
                        '"output": 2.5}}, "batch_discount": 0.5, "as_of": "2026-12-01"}. Models listed '
                        "replace or add to the shipped table.",
                    },
                    "storage_quota_bytes": {
                        "label": "Storage quota (bytes)",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                        "description": "The project's Files API storage quota the upload operator checks "
                        "against (default 21474836480, 20 GB).",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "host"],
                    "relabeling": {"password": "API key"},
                    "placeholders": {"password": "Gemini API key (AI Studio)"},
                },
            }
        ],
    }
