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
                ],
            }
        ],
        "sensors": [
            {"integration-name": "Gemini Files", "python-modules": ["airflow_gemini_files.sensors.files"]}
        ],
        "triggers": [
            {"integration-name": "Gemini Files", "python-modules": ["airflow_gemini_files.triggers.files"]}
        ],
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
                        "description": "Attempts per request (including the first) on 408/429/5xx and "
                        "connection errors, with exponential backoff and jitter.",
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
