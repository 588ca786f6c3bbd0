"""A local stand-in for the Gemini Developer API (Files API and generateContent)."""

from airflow_gemini_files.emulator.control import GeminiEmulator

__all__ = ["GeminiEmulator"]
