"""
Transcribe a recording, then summarise the transcript: audio understanding through the Files API.

Upload the audio (local path or ``gs://`` object, streamed), wait until Gemini has processed it
(deferrable: audio can take a while), ask for a transcript, then ask (text only, no file) for a short
summary with action items as JSON, and delete the file whatever happened.
Supported audio: WAV, MP3, AIFF, AAC, OGG Vorbis, FLAC.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag

from airflow_gemini_files.operators.files import GeminiDeleteFilesOperator, GeminiUploadFileOperator
from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator
from airflow_gemini_files.samples import sample_path
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "description": "Three sentences at most."},
        "speakers": {"type": "integer", "minimum": 0},
        "action_items": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["summary", "speakers", "action_items"],
}


@dag(
    dag_id="gemini_transcribe_audio",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["gemini", "example"],
    doc_md=__doc__,
    params={
        "audio": Param(
            str(sample_path("support_call_chime.wav")),
            type="string",
            description="Local path or gs:// URI of the recording.",
        ),
        "model": Param("gemini-2.5-flash", type="string"),
    },
)
def gemini_transcribe_audio() -> None:
    upload = GeminiUploadFileOperator(task_id="upload_audio", source="{{ params.audio }}")
    active = GeminiFileActiveSensor(
        task_id="wait_active", files=upload.output, deferrable=True, poke_interval=10, timeout=2 * 60 * 60
    )
    transcript = GeminiGenerateContentOperator(
        task_id="transcribe",
        model="{{ params.model }}",
        prompt="Generate a transcript of the speech, one line per speaker turn, prefixed by the speaker. "
        "Describe non-speech sounds in brackets.",
        files=active.output,
    )
    summary = GeminiGenerateContentOperator(
        task_id="summarise",
        model="{{ params.model }}",
        prompt="Summarise this call transcript and list its action items.\n\n"
        "{{ ti.xcom_pull(task_ids='transcribe') }}",
        response_schema=SUMMARY_SCHEMA,
    )
    # A teardown: it runs whatever happened before it, and the run's state is still theirs.
    delete = GeminiDeleteFilesOperator(task_id="delete_audio", files=upload.output).as_teardown(setups=upload)
    transcript >> summary >> delete


gemini_transcribe_audio()
