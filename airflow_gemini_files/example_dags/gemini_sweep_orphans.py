"""
Maintenance: delete the Gemini files that killed or crashed runs left behind, before they fill the quota.

Every six hours, ``GeminiSweepFilesOperator`` lists the project's Gemini files and deletes those this
provider created that no queued or running DAG run still needs: files of finished runs, and files whose
run is unknown once they are older than ``max_age_hours``. A file of a run that is still going is never
touched, whatever its age, and neither is any file this provider did not create. The report (the task's
return value, also in its log) lists each deleted file with its run and why, and the bytes freed.

Trigger it with ``{"dry_run": true}`` to see what a sweep would delete without deleting anything.

Set the Gemini connection's extra ``ledger`` (a ``gs://`` or local folder shared by your workers) so
that registered files, which Gemini names itself, can be traced to their run too; without one, only
uploads are traced by name and the rest is known by age alone. Keep ``max_age_hours`` above your
longest DAG run (the nightly analysis may take 23 hours).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag

from airflow_gemini_files.operators.sweep import GeminiSweepFilesOperator

MAX_AGE_HOURS = 48
"""Files of unknown runs are deleted once this old: above the longest run (23 h) with room to spare."""


@dag(
    dag_id="gemini_sweep_orphans",
    schedule="0 */6 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=pendulum.duration(hours=1),
    render_template_as_native_obj=True,  # dry_run renders to a bool
    tags=["gemini", "example", "maintenance"],
    doc_md=__doc__,
    params={
        "dry_run": Param(
            False, type="boolean", description="Only report what would be deleted; delete nothing."
        ),
    },
)
def gemini_sweep_orphans() -> None:
    GeminiSweepFilesOperator(
        task_id="sweep_orphans",
        max_age_hours=MAX_AGE_HOURS,
        dry_run="{{ params.dry_run }}",
        retries=2,  # a sweep that failed halfway tries the files it left again
        retry_delay=pendulum.duration(minutes=5),
    )


gemini_sweep_orphans()
