"""What each operator and the sensor report to OpenLineage after running (fake hook, no Airflow run)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.openlineage.extractors.base import DefaultExtractor
from airflow.providers.openlineage.extractors.manager import ExtractorManager
from doubles import FakeGeminiHook, context
from openlineage.client.serde import Serde

from airflow_gemini_files.exceptions import GeminiFilesError
from airflow_gemini_files.naming import upload_file_id
from airflow_gemini_files.operators.batch import GeminiBatchGenerateOperator
from airflow_gemini_files.operators.files import (
    GeminiDeleteFilesOperator,
    GeminiRegisterGcsFilesOperator,
    GeminiUploadFileOperator,
)
from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator
from airflow_gemini_files.operators.sweep import GeminiSweepFilesOperator
from airflow_gemini_files.sensors.files import GeminiFileActiveSensor

NS = "gemini://emulator"  # the fake hook's files live at https://emulator/v1beta/files/<id>


@pytest.fixture
def hook(fake_hook: FakeGeminiHook) -> FakeGeminiHook:
    return fake_hook


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(dataset.namespace, dataset.name) for dataset in datasets]


def facet(dataset: Any, key: str) -> dict[str, Any]:
    return {k: v for k, v in json.loads(Serde.to_json(dataset.facets[key])).items() if not k.startswith("_")}


def test_the_openlineage_listener_finds_an_extractor_for_every_operator():
    operators = [
        GeminiUploadFileOperator(task_id="up", source="a.pdf"),
        GeminiRegisterGcsFilesOperator(task_id="reg", uris=["gs://bkt/a.pdf"]),
        GeminiFileActiveSensor(task_id="wait", files="files/a"),
        GeminiGenerateContentOperator(task_id="gen", model="m", prompt="p"),
        GeminiDeleteFilesOperator(task_id="del"),
        GeminiBatchGenerateOperator(
            task_id="batch", model="m", prompt="p", files=[], results_uri="gs://b/r/"
        ),
        GeminiSweepFilesOperator(task_id="sweep", max_age_hours=48),
    ]
    manager = ExtractorManager()
    for operator in operators:
        assert manager.get_extractor_class(operator) is DefaultExtractor, operator.task_id


def test_upload_reports_each_source_and_the_file_it_became(hook, tmp_path):
    docs = [tmp_path / "a.pdf", tmp_path / "b.pdf"]
    for doc in docs:
        doc.write_bytes(b"%PDF-1.4")
    operator = GeminiUploadFileOperator(task_id="up", source=[str(doc) for doc in docs])
    refs = operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.inputs) == [("file", str(docs[0])), ("file", str(docs[1]))]
    assert names(result.outputs) == [(NS, ref.name) for ref in refs]
    assert facet(result.outputs[1], "gemini_file")["sourceUri"] == str(docs[1])


def test_an_upload_that_rolled_back_reports_no_file(hook, tmp_path):
    docs = [tmp_path / "a.pdf", tmp_path / "b.pdf"]
    for doc in docs:
        doc.write_bytes(b"%PDF-1.4")
    hook.fail_sources[str(docs[1])] = GeminiFilesError("boom")
    operator = GeminiUploadFileOperator(task_id="up", source=[str(doc) for doc in docs], max_concurrency=1)
    with pytest.raises(GeminiFilesError):
        operator.execute(context())
    assert hook.files == {}
    result = operator.get_openlineage_facets_on_complete(None)
    assert (result.inputs, result.outputs) == ([], [])


def test_register_reports_gcs_objects_in_and_registered_files_out(hook):
    uris = ["gs://bkt/in/a.pdf", "gs://bkt/in/b.pdf"]
    operator = GeminiRegisterGcsFilesOperator(task_id="reg", uris=uris)
    refs = operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.inputs) == [("gs://bkt", "in/a.pdf"), ("gs://bkt", "in/b.pdf")]
    assert names(result.outputs) == [(NS, ref.name) for ref in refs]
    assert [facet(d, "gemini_file")["sourceUri"] for d in result.outputs] == uris


def test_a_task_that_failed_before_running_reports_nothing(hook):
    operator = GeminiRegisterGcsFilesOperator(task_id="reg", uris=["gs://bkt/a.pdf"])
    result = operator.get_openlineage_facets_on_complete(None)  # execute never ran
    assert (result.inputs, result.outputs) == ([], [])


def test_sensor_reports_the_files_it_waited_for(hook):
    a, b = hook.add("files/a"), hook.add("files/b")
    operator = GeminiFileActiveSensor(task_id="wait", files=[a, b], poke_interval=0, timeout=5)
    operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.inputs) == [(NS, "files/a"), (NS, "files/b")]
    assert result.outputs == []


def test_generate_reports_files_in_response_out_model_and_one_calls_usage(hook):
    a = hook.add("files/a")
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    hook.reply = lambda contents: '{"title": "T"}'
    operator = GeminiGenerateContentOperator(
        task_id="gen", model="gemini-2.5-flash", prompt="p", files=a, response_schema=schema
    )
    operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.inputs) == [(NS, "files/a")]
    assert names(result.outputs) == [(NS, "models/gemini-2.5-flash/responses/a")]
    assert facet(result.outputs[0], "schema")["fields"][0]["name"] == "title"
    job = json.loads(Serde.to_json(result.job_facets["gemini"]))
    assert job["model"] == "gemini-2.5-flash"
    usage = json.loads(Serde.to_json(result.run_facets["gemini_usage"]))
    assert (usage["calls"], usage["prompt_token_count"], usage["total_token_count"]) == (1, 10, 12)


def test_generate_per_file_reports_only_the_answered_files_and_their_summed_usage(hook):
    files = [hook.add(f"files/f{index}") for index in range(3)]
    hook.generate_errors = {"files/f1": GeminiFilesError("model overloaded")}
    operator = GeminiGenerateContentOperator(
        task_id="gen", model="m", prompt="p", files=files, per_file=True, fail_on_error=False
    )
    ctx = context()
    operator.execute(ctx)
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.inputs) == [(NS, "files/f0"), (NS, "files/f1"), (NS, "files/f2")]
    assert sorted(names(result.outputs)) == [(NS, "models/m/responses/f0"), (NS, "models/m/responses/f2")]
    assert "schema" not in result.outputs[0].facets
    usage = json.loads(Serde.to_json(result.run_facets["gemini_usage"]))
    assert {k: v for k, v in usage.items() if not k.startswith("_")} == {
        key: value
        for key, value in ctx["ti"].xcom["usage"].items()
        if value is not None  # no price for "m"
    }
    assert usage["calls"] == 2


def test_generate_with_several_files_in_one_call_reports_one_response(hook):
    a, b = hook.add("files/a"), hook.add("files/b")
    operator = GeminiGenerateContentOperator(task_id="gen", model="m", prompt="compare", files=[a, b])
    operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.outputs) == [(NS, "models/m/responses/a+b")]


def test_a_rerun_of_the_same_operator_reports_only_its_own_calls(hook):
    a, b = hook.add("files/a"), hook.add("files/b")
    operator = GeminiGenerateContentOperator(task_id="gen", model="m", prompt="p", files=a)
    operator.execute(context())
    operator.files = b
    operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.outputs) == [(NS, "models/m/responses/b")]
    assert json.loads(Serde.to_json(result.run_facets["gemini_usage"]))["calls"] == 1


def test_a_failed_generate_reports_its_input_and_no_response(hook):
    a = hook.add("files/a", state="PROCESSING")
    operator = GeminiGenerateContentOperator(task_id="gen", model="m", prompt="p", files=a)
    with pytest.raises(GeminiFilesError):
        operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert names(result.inputs) == [(NS, "files/a")]
    assert (result.outputs, result.run_facets) == ([], {})


def test_delete_reports_only_what_it_deleted_as_dropped(hook):
    a, b, c = hook.add("files/a"), hook.add("files/b"), hook.add("files/c")
    hook.files.pop("files/b")  # already gone: nothing this task did
    hook.delete_errors = {"files/c": GeminiFilesError("503")}
    operator = GeminiDeleteFilesOperator(task_id="del", files=[a, b, c])
    with pytest.raises(GeminiFilesError):
        operator.execute(context())
    result = operator.get_openlineage_facets_on_complete(None)
    assert result.inputs == []
    assert names(result.outputs) == [(NS, "files/a")]
    assert facet(result.outputs[0], "lifecycleStateChange")["lifecycleStateChange"] == "DROP"


def test_sweep_reports_only_the_orphans_it_deleted_as_dropped_and_a_dry_run_nothing(hook):
    old = datetime.now(UTC) - timedelta(hours=3)
    orphan = hook.add("files/" + upload_file_id(context(), "a.pdf"), create_time=old)
    hook.add("files/" + upload_file_id(context(), "b.pdf"))  # ours, but younger than the max age
    hook.add("files/someone-elses", create_time=old)  # not created by this provider
    dry = GeminiSweepFilesOperator(task_id="sweep", max_age_hours=2, dry_run=True)
    assert [entry["file"] for entry in dry.execute(context())["would_delete"]] == [orphan.name]
    assert dry.get_openlineage_facets_on_complete(None).outputs == []
    sweep = GeminiSweepFilesOperator(task_id="sweep", max_age_hours=2)
    sweep.execute(context())
    result = sweep.get_openlineage_facets_on_complete(None)
    assert names(result.outputs) == [(NS, orphan.name)]
    assert facet(result.outputs[0], "lifecycleStateChange")["lifecycleStateChange"] == "DROP"
    assert result.inputs == []
