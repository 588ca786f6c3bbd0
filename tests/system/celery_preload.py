"""``[celery] celery_config_options`` of the local workers: Airflow's Celery config, provider preloaded.

Celery imports this module in each worker's main process, before it forks its pool; every task process
is forked from a pool process and then parses its DAG file. Importing the provider (and with it
``google-genai`` and ``google-cloud-storage``) here means each task inherits those modules instead of
importing them again: about 1 s of CPU less per task instance (``bench/celery_task_cost.py``). Nothing
is connected or cached at import time, so nothing is shared across the fork.
"""

from __future__ import annotations

import google.cloud.storage
import google.genai  # noqa: F401 - the libraries every task uses, loaded once before the fork
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

import airflow_gemini_files.hooks.gemini
import airflow_gemini_files.operators.files
import airflow_gemini_files.operators.generate
import airflow_gemini_files.sensors.files  # noqa: F401

CELERY_CONFIG = DEFAULT_CELERY_CONFIG
