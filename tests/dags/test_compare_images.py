"""The compare-images example: one image through the Files API, one inline, in one prompt."""

from __future__ import annotations

from typing import Any


def test_one_uploaded_and_one_inline_image_reach_the_model(
    run_dag: Any, gemini_emulator: Any, gemini_connection: str
) -> None:
    run = run_dag("gemini_compare_images")

    assert run.state == "success", run.tasks
    answer = run.xcom("compare")
    # The emulated model lists the parts it was given: the uploaded file, then the inline image.
    assert "What is different between these two images?" in answer
    assert "'revenue_chart_q3.png' (image/png" in answer
    assert "inline data (image/png" in answer
    assert "image 160x100 px" in answer
    requests = gemini_emulator.stats()["requests"]
    assert requests["upload_start"] == 1  # only the first image went through the Files API
    assert requests["delete"] == 1
    assert gemini_emulator.files() == []


def test_a_failed_comparison_fails_the_run_and_still_deletes_the_upload(
    run_dag: Any, gemini_emulator: Any, gemini_connection: str
) -> None:
    run = run_dag("gemini_compare_images", conf={"model": "no-such-model"})

    assert run.state == "failed"
    assert run.tasks["compare"] == "failed"
    assert run.tasks["delete_image"] == "success"
    assert gemini_emulator.files() == []


def test_an_inline_image_over_the_api_limit_fails_the_run_and_cleanup_still_runs(
    run_dag: Any, gemini_emulator: Any, gemini_connection: str, tmp_path: Any
) -> None:
    big = tmp_path / "scan.png"
    with big.open("wb") as handle:  # sparse: 100 MiB + 1 byte on disk costs nothing
        handle.truncate(100 * 1024 * 1024 + 1)
    run = run_dag("gemini_compare_images", conf={"inline_image": str(big)})

    assert run.state == "failed"
    assert run.tasks["compare"] == "failed"
    assert gemini_emulator.stats()["requests"]["generate"] == 0  # refused before the request
    assert run.tasks["delete_image"] == "success"
    assert gemini_emulator.files() == []
