"""OpenLineage naming and facets (``airflow_gemini_files.lineage``), without Airflow running a task."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from openlineage.client.serde import Serde
from pydantic import BaseModel

from airflow_gemini_files import lineage
from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.lineage import DatasetName, SchemaField
from airflow_gemini_files.refs import GeminiFileRef

PUBLIC = "gemini://generativelanguage.googleapis.com"


def ref(file_id: str, uri_host: str | None = "https://generativelanguage.googleapis.com", **kwargs: Any):
    uri = f"{uri_host}/v1beta/files/{file_id}" if uri_host else None
    return GeminiFileRef(name=f"files/{file_id}", uri=uri, **kwargs)


def as_json(value: Any) -> Any:
    """What an OpenLineage consumer receives."""
    return json.loads(Serde.to_json(value))


# Gemini namespace -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "namespace"),
    [
        (None, PUBLIC),
        ("", PUBLIC),
        ("https://generativelanguage.googleapis.com/v1beta/files/abc", PUBLIC),
        ("https://generativelanguage.googleapis.com:443", PUBLIC),  # the scheme's own port is implied
        ("http://127.0.0.1:8765", "gemini://127.0.0.1:8765"),
        ("http://localhost:80/", "gemini://localhost"),
        ("https://proxy.example.com:80/gemini", "gemini://proxy.example.com:80"),  # 80 is not https's
        ("HTTPS://Proxy.Example.COM/x", "gemini://proxy.example.com"),
        ("http://[::1]:8765/v1beta", "gemini://[::1]:8765"),
        ("https://host:notaport/", "gemini://host"),
        ("not a url", PUBLIC),
    ],
)
def test_gemini_namespace_is_the_api_host_and_a_non_default_port(url, namespace):
    assert lineage.gemini_namespace(url) == namespace


def test_gemini_namespace_never_carries_credentials_path_or_query():
    url = "https://user:s3cret-pass@proxy.example.com:8443/prefix/v1beta?key=AIza-secret-key#frag"
    namespace = lineage.gemini_namespace(url)
    assert namespace == "gemini://proxy.example.com:8443"
    for secret in ("user", "s3cret", "AIza", "key=", "prefix", "frag"):
        assert secret not in namespace


# Sources ---------------------------------------------------------------------------------------------------
def test_gcs_object_is_named_as_the_openlineage_spec_says():
    assert lineage.uri_dataset(" gs://my-bucket/incoming/2026-11-21/a b.pdf ") == DatasetName(
        "gs://my-bucket", "incoming/2026-11-21/a b.pdf"
    )


def test_local_path_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert lineage.uri_dataset("docs/a.pdf") == DatasetName("file", str(tmp_path / "docs" / "a.pdf"))
    assert lineage.uri_dataset(tmp_path / "b.pdf") == DatasetName("file", str(tmp_path / "b.pdf"))


def test_a_malformed_gcs_uri_is_an_error_naming_it():
    with pytest.raises(GeminiInputError, match="gs://my-bucket/"):
        lineage.uri_dataset("gs://my-bucket/")


# Gemini files and responses --------------------------------------------------------------------------------
def test_gemini_file_namespace_comes_from_its_uri_before_the_base_url():
    assert lineage.gemini_file_dataset(ref("abc", "http://127.0.0.1:9"), "https://other") == DatasetName(
        "gemini://127.0.0.1:9", "files/abc"
    )
    assert lineage.gemini_file_dataset(ref("abc", None), "http://127.0.0.1:9") == DatasetName(
        "gemini://127.0.0.1:9", "files/abc"
    )
    assert lineage.gemini_file_dataset(ref("abc", None)) == DatasetName(PUBLIC, "files/abc")


def test_response_is_named_after_the_model_and_the_files_in_order():
    files = [ref("b2"), ref("a1")]
    assert lineage.response_dataset(files, " gemini-2.5-flash ") == DatasetName(
        PUBLIC, "models/gemini-2.5-flash/responses/b2+a1"
    )
    assert (
        lineage.response_dataset(files, "models/gemini-2.5-pro").name
        == "models/gemini-2.5-pro/responses/b2+a1"
    )
    assert lineage.response_dataset([ref("a1")], "tunedModels/mine").name == "tunedModels/mine/responses/a1"


def test_response_namespace_is_the_first_files_else_the_base_url():
    assert lineage.response_dataset([ref("a", "http://h:1")], "m").namespace == "gemini://h:1"
    assert lineage.response_dataset([ref("a", None)], "m", "http://h:2").namespace == "gemini://h:2"


def test_a_long_response_key_is_shortened_deterministically():
    many = [ref(f"file-{index:02d}-" + "x" * 20) for index in range(8)]  # 8 * 28 + 7 = 231 characters
    name = lineage.response_dataset(many, "m").name
    assert name.startswith("models/m/responses/file-00-" + "x" * 20 + "+7-more-")
    assert len(name.rsplit("-", 1)[1]) == 12
    assert lineage.response_dataset(many, "m").name == name
    assert lineage.response_dataset(list(reversed(many)), "m").name != name
    fits = [ref(letter * 40) for letter in "abcd"] + [ref("e" * 36)]  # exactly MAX_RESPONSE_KEY (200)
    assert lineage.response_dataset(fits, "m").name == "models/m/responses/" + "+".join(
        file.file_id for file in fits
    )


def test_a_response_needs_files():
    with pytest.raises(
        ValueError, match=r"^A model response is named after the files it is about; got no files\.$"
    ):
        lineage.response_dataset([], "gemini-2.5-flash")


# Schema ----------------------------------------------------------------------------------------------------
def test_schema_fields_of_an_object_schema_with_nesting_enums_and_descriptions():
    schema = {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["invoice", "letter"], "description": "What it is."},
            "tag": {"enum": ["a", "b"]},
            "entities": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
            "dates": {"type": "array", "items": {"type": "string"}, "description": "ISO dates."},
            "score": {"type": ["number", "null", "number"]},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}, {"type": "string"}, "odd", {}]},
            "either": {"oneOf": [{"type": ["integer", "null"]}, {"type": "string"}]},
            "free": {},
        },
    }
    assert lineage.schema_fields(schema) == (
        SchemaField("kind", "string", "What it is. (one of: invoice, letter)"),
        SchemaField("tag", None, "one of: a, b"),
        SchemaField(
            "entities",
            "array",
            None,
            (SchemaField("_element", "object", None, (SchemaField("name", "string"),)),),
        ),
        SchemaField("dates", "array", "ISO dates.", (SchemaField("_element", "string"),)),
        SchemaField("score", "number|null"),
        SchemaField("note", "string|null"),
        SchemaField("either", "integer|null|string"),
        SchemaField("free"),
    )


def test_schema_fields_of_a_non_object_schema_is_one_value_field():
    assert lineage.schema_fields({"type": "array", "items": {"type": "integer"}}) == (
        SchemaField("value", "array", None, (SchemaField("_element", "integer"),)),
    )
    assert lineage.schema_fields({"type": "object"}) == (SchemaField("value", "object"),)


def test_schema_fields_follow_refs_and_stop_at_recursion():
    schema = {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/Node"}, "old": {"$ref": "#/definitions/Leaf"}},
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
            }
        },
        "definitions": {"Leaf": {"type": "boolean", "description": "Old style."}},
    }
    assert lineage.schema_fields(schema) == (
        SchemaField(
            "root",
            "object",
            None,
            (
                SchemaField("label", "string"),
                SchemaField("children", "array", None, (SchemaField("_element"),)),
            ),
        ),
        SchemaField("old", "boolean", "Old style."),
    )


def test_schema_fields_follow_refs_at_every_level():
    schema = {
        "type": "array",  # not an object: one "value" field, whose items are a reference
        "items": {"$ref": "#/$defs/Row"},
        "$defs": {
            "Row": {
                "type": "object",
                "properties": {
                    "inner": {
                        "type": "object",
                        "properties": {
                            "leaf": {"$ref": "#/$defs/Leaf"},
                            "many": {"items": {"$ref": "#/$defs/Leaf"}},
                        },
                    },
                    "maybe": {"anyOf": [{"$ref": "#/$defs/Leaf"}, {"type": "null"}]},
                },
            },
            "Leaf": {"type": "string", "description": "A leaf."},
        },
    }
    leaf = SchemaField("leaf", "string", "A leaf.")
    row = (
        SchemaField(
            "inner",
            "object",
            None,
            (leaf, SchemaField("many", None, None, (SchemaField("_element", "string", "A leaf."),))),
        ),
        SchemaField("maybe", "string|null"),
    )
    assert lineage.schema_fields(schema) == (
        SchemaField("value", "array", None, (SchemaField("_element", "object", None, row),)),
    )


def test_schema_fields_of_a_reference_at_the_root():
    schema = {
        "$ref": "#/$defs/Doc",
        "$defs": {"Doc": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    }
    assert lineage.schema_fields(schema) == (SchemaField("a", "integer"),)
    assert lineage.schema_fields({"$ref": "#/$defs/Missing"}) == (SchemaField("value"),)
    assert lineage.schema_fields({"$ref": "#/Missing"}) == (SchemaField("value"),)
    through_a_string = {"$ref": "#/$defs/Doc/type/x", "$defs": {"Doc": {"type": "object"}}}
    assert lineage.schema_fields(through_a_string) == (SchemaField("value"),)


def test_schema_fields_of_a_recursive_pydantic_model():
    class Node(BaseModel):
        label: str
        children: list[Node] = []

    Node.model_rebuild()
    assert Node.model_json_schema().get("$ref")  # pydantic puts a recursive model behind a root $ref
    assert lineage.schema_fields(Node) == (
        SchemaField("label", "string"),
        SchemaField("children", "array", None, (SchemaField("_element"),)),
    )


def test_schema_fields_of_a_pydantic_model():
    class Entity(BaseModel):
        name: str

    class Analysis(BaseModel):
        title: str
        entities: list[Entity]
        confidence: float | None = None
        main: Entity | None = None

    fields = lineage.schema_fields(Analysis)
    assert [field.name for field in fields] == ["title", "entities", "confidence", "main"]
    assert fields[1] == SchemaField(
        "entities",
        "array",
        None,
        (SchemaField("_element", "object", None, (SchemaField("name", "string"),)),),
    )
    assert fields[2].type == "number|null"
    assert fields[3].type == "object|null"


def test_schema_fields_tolerate_odd_schemas():
    assert lineage.schema_fields(
        {"properties": {"a": "not a schema", "b": {"items": [{"type": "string"}]}}}
    ) == (
        SchemaField("a"),
        SchemaField("b", None, None, (SchemaField("_element"),)),
    )
    assert lineage.schema_fields({"properties": ["not", "a", "mapping"]}) == ()
    assert lineage.schema_fields({"type": "object", "properties": {"x": {"$ref": "#/$defs/Missing"}}}) == (
        SchemaField("x"),
    )


# The connection's base URL ---------------------------------------------------------------------------------
def test_connection_base_url_only_from_a_hook_that_already_read_its_connection():
    class Hook:
        @property
        def settings(self):  # reading it would read the connection: must not happen
            raise AssertionError("lineage read the connection")

    operator = SimpleNamespace()
    assert lineage.connection_base_url(operator) is None  # no hook built
    operator.hook = Hook()
    assert lineage.connection_base_url(operator) is None  # hook built, connection not read yet
    vars(operator.hook)["settings"] = SimpleNamespace(base_url="http://127.0.0.1:8765")
    assert lineage.connection_base_url(operator) == "http://127.0.0.1:8765"


# OpenLineage objects ---------------------------------------------------------------------------------------
def registered(file_id: str, source_uri: str | None) -> GeminiFileRef:
    return ref(
        file_id,
        display_name=f"{file_id}.pdf",
        mime_type="application/pdf",
        size_bytes=12,
        sha256_hash="aGFzaA==",
        state="ACTIVE",
        source="REGISTERED",
        source_uri=source_uri,
        create_time=datetime(2026, 11, 21, 1, 0, tzinfo=UTC),
        expiration_time=datetime(2026, 11, 23, 1, 0, tzinfo=UTC),
        error=None,
    )


def test_transfer_lineage_sources_in_and_gemini_files_out_with_where_they_came_from():
    files = [
        registered("a", "gs://bkt/in/a.pdf"),
        registered("c", "gs://bkt/in/a.pdf"),
        registered("d", None),
        registered("a", "gs://bkt/in/a.pdf"),
    ]
    result = lineage.transfer_lineage(files)
    assert [(d.namespace, d.name) for d in result.inputs] == [("gs://bkt", "in/a.pdf")]
    assert [(d.namespace, d.name) for d in result.outputs] == [
        (PUBLIC, "files/a"),
        (PUBLIC, "files/c"),
        (PUBLIC, "files/d"),
    ]
    facet = as_json(result.outputs[0].facets["gemini_file"])
    assert {k: v for k, v in facet.items() if not k.startswith("_")} == {
        "displayName": "a.pdf",
        "mimeType": "application/pdf",
        "sizeBytes": 12,
        "sha256Hash": "aGFzaA==",
        "source": "REGISTERED",
        "sourceUri": "gs://bkt/in/a.pdf",
        "createTime": "2026-11-21T01:00:00+00:00",
        "expirationTime": "2026-11-23T01:00:00+00:00",
    }
    assert as_json(result.outputs[2].facets["gemini_file"]).get("sourceUri") is None
    assert result.job_facets == {}
    assert result.run_facets == {}


def test_a_file_with_only_a_name_gets_the_connections_namespace_and_an_almost_empty_facet():
    result = lineage.wait_lineage([GeminiFileRef(name="files/x")], "http://127.0.0.1:8765")
    assert [(d.namespace, d.name) for d in result.inputs] == [("gemini://127.0.0.1:8765", "files/x")]
    assert {k for k in as_json(result.inputs[0].facets["gemini_file"]) if not k.startswith("_")} == set()
    assert result.outputs == []


def test_generation_lineage_one_response_per_answered_call_with_schema_model_and_usage():
    a, b, c = registered("a", "gs://bkt/a"), registered("b", "gs://bkt/b"), registered("c", "gs://bkt/c")
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "The title."},
            "who": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
    result = lineage.generation_lineage(
        files=[a, b, c],
        answered=[[a], [], [c], [a]],
        model="gemini-2.5-flash",
        response_schema=schema,
        usage={"calls": 2, "prompt_token_count": 20, "total_token_count": 24},
    )
    assert [d.name for d in result.inputs] == ["files/a", "files/b", "files/c"]
    assert [d.name for d in result.outputs] == [
        "models/gemini-2.5-flash/responses/a",
        "models/gemini-2.5-flash/responses/c",
    ]
    assert as_json(result.outputs[0].facets["schema"])["fields"] == [
        {"name": "title", "type": "string", "description": "The title.", "fields": []},
        {"name": "who", "type": "object", "fields": [{"name": "name", "type": "string", "fields": []}]},
    ]
    job = as_json(result.job_facets["gemini"])
    assert (job["model"], job["method"]) == ("gemini-2.5-flash", "generateContent")
    usage = as_json(result.run_facets["gemini_usage"])
    assert {k: v for k, v in usage.items() if not k.startswith("_")} == {
        "calls": 2,
        "prompt_token_count": 20,
        "total_token_count": 24,
    }


def test_generation_lineage_without_schema_usage_or_answers():
    result = lineage.generation_lineage(
        files=[registered("a", None)], answered=[], model="m", method="batchGenerateContent"
    )
    assert result.outputs == []
    assert result.run_facets == {}
    assert as_json(result.job_facets["gemini"])["method"] == "batchGenerateContent"
    with_answer = lineage.generation_lineage(files=[], answered=[[registered("a", None)]], model="m")
    assert with_answer.outputs[0].facets == {}


def test_builders_name_files_without_a_uri_in_the_connections_namespace():
    bare = GeminiFileRef(name="files/z", source_uri="gs://bkt/z.pdf")
    here = "gemini://127.0.0.1:8765"
    transfer = lineage.transfer_lineage([bare], "http://127.0.0.1:8765")
    assert names_of(transfer.outputs) == [(here, "files/z")]
    generation = lineage.generation_lineage(
        files=[bare], answered=[[bare]], model="m", base_url="http://127.0.0.1:8765"
    )
    assert names_of(generation.inputs) == [(here, "files/z")]
    assert names_of(generation.outputs) == [(here, "models/m/responses/z")]


def names_of(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(dataset.namespace, dataset.name) for dataset in datasets]


def test_deletion_lineage_marks_each_deleted_file_dropped():
    result = lineage.deletion_lineage(
        [registered("a", "gs://bkt/a"), GeminiFileRef(name="files/z")], "http://h:1"
    )
    assert result.inputs == []
    assert [(d.namespace, d.name) for d in result.outputs] == [
        (PUBLIC, "files/a"),
        ("gemini://h:1", "files/z"),
    ]
    for dataset in result.outputs:
        assert as_json(dataset.facets["lifecycleStateChange"])["lifecycleStateChange"] == "DROP"
        assert "gemini_file" in dataset.facets


# TaskFlow tasks ---------------------------------------------------------------------------------------------
def test_add_task_lineage_gives_the_running_task_new_inlets_and_outlets():
    static_inlets: list[Any] = ["declared in the DAG"]
    static_outlets: list[Any] = []
    task = SimpleNamespace(inlets=static_inlets, outlets=static_outlets)
    lineage.add_task_lineage(
        {"task": task},  # type: ignore[arg-type]
        inputs=[DatasetName("gemini://h", "models/m/responses/a")],
        outputs=[DatasetName("gs://bkt", "results/a.json"), DatasetName("gs://bkt", "results/b.json")],
    )
    assert task.inlets[0] == "declared in the DAG"
    assert [(d.namespace, d.name) for d in task.inlets[1:]] == [("gemini://h", "models/m/responses/a")]
    assert [(d.namespace, d.name) for d in task.outlets] == [
        ("gs://bkt", "results/a.json"),
        ("gs://bkt", "results/b.json"),
    ]
    # The DAG's own lists are untouched: the next run of the task (or map index) starts clean.
    assert static_inlets == ["declared in the DAG"]
    assert static_outlets == []


def test_add_task_lineage_does_nothing_without_openlineage(monkeypatch):
    monkeypatch.setitem(sys.modules, "openlineage.client.event_v2", None)  # as if not installed
    task = SimpleNamespace(inlets=[], outlets=[])
    lineage.add_task_lineage({"task": task}, outputs=[DatasetName("gs://bkt", "x")])  # type: ignore[arg-type]
    assert task.outlets == []


def test_importing_the_provider_does_not_import_openlineage():
    import subprocess

    code = (
        "import sys; import airflow_gemini_files.lineage, airflow_gemini_files.operators.files, "
        "airflow_gemini_files.operators.generate, airflow_gemini_files.sensors.files; "
        "print(sorted(m for m in sys.modules if m.startswith('openlineage')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ)
    )
    # Airflow may log a warning on stdout first (google.api_core's Python support notice on 3.11).
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_readme_snippet_reports_what_store_result_read_and_wrote():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Lineage (OpenLineage)") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    task = SimpleNamespace(inlets=[], outlets=[])
    namespace: dict[str, Any] = {
        "get_current_context": lambda: {"task": task},
        "GeminiFileRef": GeminiFileRef,
        "file": ref("abc", "http://127.0.0.1:8765").to_dict(),
        "model": "gemini-2.5-flash",
        "bucket": "my-bucket",
        "object_name": "results/2026-11-21/a.pdf.json",
    }
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    assert [(d.namespace, d.name) for d in task.inlets] == [
        ("gemini://127.0.0.1:8765", "models/gemini-2.5-flash/responses/abc")
    ]
    assert [(d.namespace, d.name) for d in task.outlets] == [
        ("gs://my-bucket", "results/2026-11-21/a.pdf.json")
    ]
