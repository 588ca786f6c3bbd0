"""The example DAG files parse cleanly and say what they are; the shipped sample documents are valid."""

from __future__ import annotations

import csv
import io
import re
import struct
import wave
import zlib
from pathlib import Path

import pytest

from airflow_gemini_files.samples import NIGHTLY_DOCUMENTS, SAMPLES_DIR, sample_path
from airflow_gemini_files.samples.make_samples import make_samples

from .conftest import BUNDLE, DAGS_FOLDER

EXPECTED_DAGS = {
    "gemini_nightly_document_analysis",
    "gemini_compare_images",
    "gemini_transcribe_audio",
    "gemini_sweep_orphans",
}


@pytest.fixture(scope="module")
def dags() -> dict[str, object]:
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name=BUNDLE)
    assert bag.import_errors == {}
    return dict(bag.dags)


def test_every_example_dag_parses_and_is_documented(dags: dict[str, object]) -> None:
    assert set(dags) == EXPECTED_DAGS
    for dag_id, dag in dags.items():
        assert Path(dag.fileloc).name == f"{dag_id}.py"  # type: ignore[attr-defined]
        assert "example" in dag.tags  # type: ignore[attr-defined]
        assert dag.doc_md  # type: ignore[attr-defined]


def test_nightly_dag_runs_daily_over_the_previous_day_with_documented_params(dags: dict[str, object]) -> None:
    dag = dags["gemini_nightly_document_analysis"]
    # Data-interval semantics: the run that starts at midnight covers the day that just ended (ds = that day).
    timetable = dag.timetable  # type: ignore[attr-defined]
    assert type(timetable).__name__ == "CronDataIntervalTimetable"
    assert timetable.expression in ("@daily", "0 0 * * *")  # Airflow 3.2 keeps the alias, 3.3 expands it
    params = dag.params  # type: ignore[attr-defined]
    assert set(params) == {
        "bucket", "prefix", "results_prefix", "model", "prompt", "mode", "analysis", "budget"
    }  # fmt: skip
    assert params["budget"] is None  # no budget unless a run sets one
    assert params["mode"] == "register"
    assert params["analysis"] == "online"
    for name in params:
        assert params.get_param(name).description
    tasks = {task.task_id: task for task in dag.tasks}  # type: ignore[attr-defined]
    assert tasks["per_document.wait_active"].deferrable is True
    assert tasks["wait_active"].partial_kwargs["deferrable"] is True
    assert tasks["analyse_batch"].deferrable is True
    assert tasks["analyse_batch"].timeout < dag.dagrun_timeout.total_seconds()  # type: ignore[attr-defined]
    assert tasks["delete_gemini_files"].trigger_rule == "all_done"
    assert tasks["write_manifest"].trigger_rule == "all_done"


def test_sweep_dag_runs_every_six_hours_one_at_a_time_and_deletes_unless_asked_not_to(
    dags: dict[str, object],
) -> None:
    dag = dags["gemini_sweep_orphans"]
    assert dag.timetable.expression == "0 */6 * * *"  # type: ignore[attr-defined]
    assert dag.max_active_runs == 1  # type: ignore[attr-defined]
    assert dag.params["dry_run"] is False  # type: ignore[attr-defined]
    assert dag.params.get_param("dry_run").description  # type: ignore[attr-defined]
    [sweep] = dag.tasks  # type: ignore[attr-defined]
    assert sweep.max_age.total_seconds() / 3600 >= 24  # above the nightly DAG's longest run (23 h)


def test_samples_regenerate_byte_for_byte(tmp_path: Path) -> None:
    made = make_samples(tmp_path)
    assert {path.name for path in made} >= set(NIGHTLY_DOCUMENTS)
    for path in made:
        assert path.read_bytes() == (SAMPLES_DIR / path.name).read_bytes(), path.name


def test_sample_pdf_has_a_correct_cross_reference_table() -> None:
    data = sample_path("invoice_northwind_2026-11.pdf").read_bytes()
    assert data.startswith(b"%PDF-1.4")
    assert data.rstrip().endswith(b"%%EOF")
    startxref = int(re.search(rb"startxref\n(\d+)\n", data).group(1))  # type: ignore[union-attr]
    assert data[startxref:].startswith(b"xref\n0 ")
    offsets = [int(m.group(1)) for m in re.finditer(rb"(\d{10}) 00000 n ", data)]
    for number, offset in enumerate(offsets, start=1):
        assert data[offset:].startswith(f"{number} 0 obj".encode())
    assert b"(INVOICE INV-2026-1122) Tj" in data


@pytest.mark.parametrize("name", ["revenue_chart_q3.png", "revenue_chart_q4.png"])
def test_sample_pngs_have_valid_chunks(name: str) -> None:
    data = sample_path(name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = body
        position += 12 + length
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    assert (width, height) == (160, 100)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    assert b"IEND" in chunks


def test_sample_wav_csv_and_markdown_read_back() -> None:
    with wave.open(str(sample_path("support_call_chime.wav"))) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 8000)
        assert audio.getnframes() / audio.getframerate() == 1.5
    rows = list(csv.reader(io.StringIO(sample_path("orders_2026-11.csv").read_text(encoding="utf-8"))))
    assert rows[0][0] == "order_id"
    assert len(rows) == 8
    assert {len(row) for row in rows} == {7}
    notes = sample_path("meeting_notes_de.md").read_text(encoding="utf-8")
    assert notes.startswith("# Protokoll")
    assert "Lagerumzug" in notes


def test_unknown_sample_names_the_available_ones() -> None:
    with pytest.raises(FileNotFoundError, match=r"invoice_northwind_2026-11\.pdf"):
        sample_path("nope.pdf")
