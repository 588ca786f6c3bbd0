"""Suite-wide set-up: every test session gets its own throw-away AIRFLOW_HOME."""

from __future__ import annotations

import os
import tempfile

# Must happen before anything imports airflow: its configuration is read at import time.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="gemini-files-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
