"""Sample documents (made by ``make_samples.py``) that the demo and the example DAGs analyse."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent

#: The documents of a nightly partition, with the content type they are stored under in GCS.
NIGHTLY_DOCUMENTS: dict[str, str] = {
    "invoice_northwind_2026-11.pdf": "application/pdf",
    "revenue_chart_q3.png": "image/png",
    "support_call_chime.wav": "audio/wav",
    "meeting_notes_de.md": "text/markdown",
    "orders_2026-11.csv": "text/csv",
}


def sample_path(name: str) -> Path:
    """The path of one shipped sample; a clear error names the available ones."""
    path = SAMPLES_DIR / name
    if not path.is_file():
        available = ", ".join(sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix != ".py"))
        raise FileNotFoundError(f"No sample named {name!r}; available: {available}")
    return path
