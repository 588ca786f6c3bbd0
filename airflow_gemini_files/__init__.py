"""Apache Airflow provider for the Gemini API Files API."""

__version__ = "0.1.0"
