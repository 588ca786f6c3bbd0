"""Example DAGs shipped with the provider; each runs offline against the local emulators."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
"""This folder: point a DAGs folder or a DAG bundle at it to run the examples."""
