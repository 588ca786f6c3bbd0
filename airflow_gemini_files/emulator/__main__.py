"""``python -m airflow_gemini_files.emulator``: same as the ``gemini-files-emulator`` command."""

from airflow_gemini_files.emulator.cli import main

raise SystemExit(main())
