"""
Compare two images: one through the Gemini Files API, one sent inline with the prompt.

The seeds' "prompting with multiple images" pattern: a large or reused image goes through the Files API
(uploaded once, referenced by URI, deleted afterwards), a small one travels inline in the request
(up to 100 MB of inline data per request, 50 MB per PDF). The model is asked what differs between them.
The uploaded file is deleted by a teardown task, so it is deleted even when the comparison fails, and the
run still fails.

The defaults compare the two bar charts shipped with the provider (revenue Q3 and Q4); pass other
local paths or ``gs://`` URIs (uploaded image only: the inline one is read from the worker's disk).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiUploadFileOperator
from airflow_gemini_files.refs import GeminiFileRef
from airflow_gemini_files.samples import sample_path
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor


@dag(
    dag_id="gemini_compare_images",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["gemini", "example"],
    doc_md=__doc__,
    params={
        "uploaded_image": Param(
            str(sample_path("revenue_chart_q3.png")),
            type="string",
            description="Local path or gs:// URI of the image that goes through the Files API.",
        ),
        "inline_image": Param(
            str(sample_path("revenue_chart_q4.png")),
            type="string",
            description="Local path (on the worker) of the image sent inline with the prompt.",
        ),
        "model": Param("gemini-2.5-flash", type="string"),
        "prompt": Param("What is different between these two images?", type="string"),
    },
)
def gemini_compare_images() -> None:
    upload = GeminiUploadFileOperator(task_id="upload_image", source="{{ params.uploaded_image }}")
    active = GeminiFileActiveSensor(
        task_id="wait_active", files=upload.output, deferrable=True, poke_interval=2
    )

    @task
    def compare(uploaded: Any, inline_image: str, prompt: str, model: str) -> str:
        """One generateContent call with the uploaded file and the inline image; return the answer."""
        from google.genai import types  # in the task, not at the top: every parse of this file would load it

        path = Path(inline_image)
        mime_type = mimetypes.guess_type(path.name)[0] or "image/png"
        policy.check_inline_size(path.stat().st_size, mime_type, str(path))  # the API's limit, before reading
        data = path.read_bytes()
        response = GeminiHook().generate_content(
            model=model,
            contents=[
                prompt,
                GeminiFileRef.coerce(uploaded),
                types.Part.from_bytes(data=data, mime_type=mime_type),
            ],
        )
        return response.text or ""

    answer = compare(active.output, "{{ params.inline_image }}", "{{ params.prompt }}", "{{ params.model }}")
    # A teardown: it runs whatever happened to the tasks between, and the run's state stays theirs (a
    # failed comparison fails the run).
    cleanup = GeminiDeleteFilesOperator(task_id="delete_image", files=upload.output)
    answer >> cleanup.as_teardown(setups=upload)


gemini_compare_images()
