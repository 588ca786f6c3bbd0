"""Pytest fixtures for testing DAGs against the local Gemini and GCS emulators (a pytest plugin)."""
