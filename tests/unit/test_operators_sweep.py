"""GeminiSweepFilesOperator's arguments: ``dry_run`` may be a template (the maintenance DAG's param)."""

from __future__ import annotations

import pytest

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.operators.sweep import GeminiSweepFilesOperator


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), ("True", True), (" false ", False)]
)
def test_dry_run_is_a_bool_or_the_text_jinja_renders_one_to(value: object, expected: bool) -> None:
    assert GeminiSweepFilesOperator(task_id="sweep", max_age_hours=48, dry_run=value).report_only is expected


def test_a_templated_dry_run_is_checked_once_rendered() -> None:
    sweep = GeminiSweepFilesOperator(task_id="sweep", max_age_hours=48, dry_run="{{ params.dry_run }}")
    assert "dry_run_setting" in sweep.template_fields
    sweep.dry_run_setting = "yes please"  # what a template rendered
    with pytest.raises(GeminiInputError, match=r"dry_run='yes please' is neither True nor False"):
        _ = sweep.report_only


@pytest.mark.parametrize("value", ["maybe", 1, None])
def test_a_dry_run_that_is_not_a_bool_is_refused_naming_it(value: object) -> None:
    with pytest.raises(GeminiInputError, match=rf"'sweep': dry_run={value!r} is neither True nor False"):
        GeminiSweepFilesOperator(task_id="sweep", max_age_hours=48, dry_run=value)  # type: ignore[arg-type]
