"""GeminiGenerateContentOperator: prompt layout, refusal of unusable files, JSON schemas, per-file fan-out."""

from __future__ import annotations

import datetime as dt
import json

import pydantic
import pytest
from doubles import context

from airflow_gemini_files.exceptions import (
    GeminiFileGoneError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
)
from airflow_gemini_files.operators.generate import GeminiGenerateContentOperator


def texts(contents: list) -> list[str]:
    """Each content item as text: strings as they are, file parts as 'FILE <uri tail>'."""
    out = []
    for item in contents:
        if isinstance(item, str):
            out.append(item)
        else:
            out.append("FILE " + item.file_data.file_uri.rsplit("/", 1)[-1])
    return out


def test_prompt_then_each_file_preceded_by_its_name_in_order(fake_hook):
    fake_hook.add("files/b", display_name="second.pdf")
    fake_hook.add("files/a", display_name="first.pdf")
    result = GeminiGenerateContentOperator(
        task_id="gen",
        model="gemini-2.5-flash",
        prompt="Compare them.",
        files=["files/b", {"name": "files/a"}],
    ).execute(context())
    assert result == "summary"
    assert texts(fake_hook.contents[0]) == [
        "Compare them.",
        "<<<File: second.pdf>>>",
        "FILE b",
        "<<<File: first.pdf>>>",
        "FILE a",
    ]


def test_file_labels_can_be_turned_off(fake_hook):
    fake_hook.add("files/a")
    GeminiGenerateContentOperator(
        task_id="gen", model="m", prompt="Summarise.", files="files/a", label_files=False
    ).execute(context())
    assert texts(fake_hook.contents[0]) == ["Summarise.", "FILE a"]


def test_usage_goes_to_its_own_xcom_key_normalised_and_priced(fake_hook):
    fake_hook.add("files/a")
    fake_hook.usage_metadata = {
        "prompt_token_count": 1000,
        "cached_content_token_count": 400,
        "candidates_token_count": 200,
        "thoughts_token_count": 100,
        "total_token_count": 1300,
    }
    ctx = context()
    GeminiGenerateContentOperator(
        task_id="gen", model="gemini-2.5-flash", prompt="Summarise.", files="files/a"
    ).execute(ctx)
    usage = ctx["ti"].xcom["usage"]
    assert {key: value for key, value in usage.items() if key.endswith("_count") or key == "calls"} == {
        "calls": 1,
        "prompt_token_count": 1000,
        "cached_content_token_count": 400,
        "candidates_token_count": 200,
        "thoughts_token_count": 100,
        "tool_use_prompt_token_count": 0,
        "audio_prompt_token_count": 0,
        "cached_audio_token_count": 0,
        "total_token_count": 1300,
    }
    # 600 fresh input at $0.30, 400 cached at $0.03, 300 output (answer and thinking) at $2.50 per million
    assert usage["estimated_cost"] == pytest.approx((600 * 0.30 + 400 * 0.03 + 300 * 2.50) / 1e6)
    assert (usage["pricing"], usage["currency"], usage["prices_as_of"]) == ("online", "USD", "2026-11-30")
    [call] = ctx["ti"].xcom["usage_by_call"]
    assert call["files"] == ["files/a"]
    assert call["total_token_count"] == 1300


def test_a_model_the_price_table_does_not_know_has_no_cost_but_its_tokens(fake_hook):
    ctx = context()
    GeminiGenerateContentOperator(task_id="gen", model="my-tuned-model", prompt="Hi").execute(ctx)
    assert ctx["ti"].xcom["usage"]["total_token_count"] == 12
    assert ctx["ti"].xcom["usage"]["estimated_cost"] is None


def test_system_instruction_and_generation_config_reach_the_model(fake_hook):
    GeminiGenerateContentOperator(
        task_id="gen",
        model="m",
        prompt="Hello",
        system_instruction="Be terse.",
        generation_config={"temperature": 0.1, "max_output_tokens": 50},
    ).execute(context())
    assert fake_hook.configs[0] == {
        "temperature": 0.1,
        "max_output_tokens": 50,
        "system_instruction": "Be terse.",
    }
    assert fake_hook.contents[0] == ["Hello"], "no files: a text-only prompt"


@pytest.mark.parametrize(
    ("state", "expires_in", "match"),
    [
        ("PROCESSING", dt.timedelta(hours=47), r"files/a \(a\.pdf\) is PROCESSING, not ACTIVE: wait for it"),
        ("FAILED", dt.timedelta(hours=47), r"files/a \(a\.pdf\) FAILED processing: unsupported PDF"),
        (
            "ACTIVE",
            dt.timedelta(seconds=-5),
            r"files/a \(a\.pdf\) expired at .*Upload or register the source again",
        ),
        ("ACTIVE", dt.timedelta(seconds=30), r"files/a \(a\.pdf\) expires at .*, too soon to use it: Gemini"),
    ],
)
def test_unusable_files_are_refused_before_the_model_is_called(fake_hook, state, expires_in, match):
    fake_hook.add("files/ok")
    fake_hook.add("files/a", display_name="a.pdf", expiration_time=dt.datetime.now(dt.UTC) + expires_in)
    fake_hook.states["files/a"] = [state]
    with pytest.raises(GeminiFileNotUsableError, match=f"(?i){match}"):
        GeminiGenerateContentOperator(
            task_id="gen", model="m", prompt="Summarise.", files=["files/ok", "files/a"]
        ).execute(context())
    assert fake_hook.calls.get("generate", 0) == 0


def test_a_deleted_file_is_refused_with_its_name(fake_hook):
    with pytest.raises(GeminiFileGoneError, match=r"files/deleted does not exist: it was deleted"):
        GeminiGenerateContentOperator(task_id="gen", model="m", prompt="Hi", files="files/deleted").execute(
            context()
        )
    assert fake_hook.calls.get("generate", 0) == 0


def test_refs_are_refreshed_even_when_the_xcom_said_active(fake_hook):
    stale = fake_hook.add("files/a")
    fake_hook.states["files/a"] = ["FAILED"]
    with pytest.raises(GeminiFileNotUsableError, match="FAILED"):
        GeminiGenerateContentOperator(task_id="gen", model="m", prompt="Hi", files=stale).execute(context())


@pytest.mark.parametrize("prompt", ["", "   \n", None])
def test_empty_prompt_is_an_error(fake_hook, prompt):
    with pytest.raises(GeminiInputError, match="the prompt is empty"):
        GeminiGenerateContentOperator(task_id="gen", model="m", prompt=prompt).execute(context())
    assert fake_hook.calls == {}


def test_json_schema_reply_is_parsed_and_validated(fake_hook):
    fake_hook.add("files/a")
    fake_hook.reply = lambda contents: json.dumps({"title": "Q3", "pages": 4})
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "pages": {"type": "integer"}},
        "required": ["title", "pages"],
    }
    result = GeminiGenerateContentOperator(
        task_id="gen", model="m", prompt="Describe.", files="files/a", response_schema=schema
    ).execute(context())
    assert result == {"title": "Q3", "pages": 4}
    assert fake_hook.configs[0]["response_mime_type"] == "application/json"
    assert fake_hook.configs[0]["response_json_schema"] == schema


def test_reply_not_matching_the_schema_fails_naming_the_problem(fake_hook):
    fake_hook.add("files/a")
    fake_hook.reply = lambda contents: json.dumps({"title": 3})
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    with pytest.raises(GeminiFilesError, match=r"does not match response_schema: 3 is not of type 'string'"):
        GeminiGenerateContentOperator(
            task_id="gen", model="m", prompt="Describe.", files="files/a", response_schema=schema
        ).execute(context())


class Summary(pydantic.BaseModel):
    title: str
    pages: int


def test_pydantic_schema_returns_a_plain_dict(fake_hook):
    fake_hook.add("files/a")
    fake_hook.reply = lambda contents: '{"title": "Q3", "pages": 4}'
    result = GeminiGenerateContentOperator(
        task_id="gen", model="m", prompt="Describe.", files="files/a", response_schema=Summary
    ).execute(context())
    assert result == {"title": "Q3", "pages": 4}
    assert fake_hook.configs[0]["response_schema"] is Summary


def test_json_mime_type_without_schema_parses_json(fake_hook):
    fake_hook.reply = lambda contents: "[1, 2]"
    result = GeminiGenerateContentOperator(
        task_id="gen",
        model="m",
        prompt="Numbers?",
        generation_config={"response_mime_type": "application/json"},
    ).execute(context())
    assert result == [1, 2]


def test_response_schema_must_be_a_dict_or_model():
    with pytest.raises(GeminiInputError, match="neither a JSON schema dict nor a pydantic model"):
        GeminiGenerateContentOperator(task_id="gen", model="m", prompt="x", response_schema="{}")


# per_file -----------------------------------------------------------------------------------------
def test_per_file_returns_results_aligned_with_files(fake_hook):
    for name in ("files/a", "files/b", "files/c"):
        fake_hook.add(name, display_name=name[-1] + ".pdf")
    fake_hook.reply = lambda contents: f"about {contents[1]}"
    ctx = context()
    result = GeminiGenerateContentOperator(
        task_id="gen", model="m", prompt="Summarise.", files=["files/c", "files/a", "files/b"], per_file=True
    ).execute(ctx)
    assert result == ["about <<<File: c.pdf>>>", "about <<<File: a.pdf>>>", "about <<<File: b.pdf>>>"]
    assert ctx["ti"].xcom["usage"]["calls"] == 3
    assert ctx["ti"].xcom["usage"]["total_token_count"] == 36
    assert ctx["ti"].xcom["errors"] == []


def test_per_file_one_failure_does_not_hide_the_others(fake_hook):
    for name in ("files/a", "files/b", "files/c"):
        fake_hook.add(name)
    fake_hook.generate_errors["files/b"] = RuntimeError("500 internal")
    ctx = context()
    with pytest.raises(GeminiFilesError, match=r"1 of 3 generate call\(s\) failed: files/b \(b\.pdf\): 500"):
        GeminiGenerateContentOperator(
            task_id="gen",
            model="m",
            prompt="Summarise.",
            files=["files/a", "files/b", "files/c"],
            per_file=True,
        ).execute(ctx)
    assert fake_hook.calls["generate"] == 3, "every file was still tried"
    assert ctx["ti"].xcom["errors"] == [{"file": "files/b", "display_name": "b.pdf", "error": "500 internal"}]


def test_per_file_without_fail_on_error_marks_failures_as_none(fake_hook):
    fake_hook.add("files/a")
    fake_hook.add("files/b")
    fake_hook.states["files/b"] = ["PROCESSING"]
    ctx = context()
    result = GeminiGenerateContentOperator(
        task_id="gen",
        model="m",
        prompt="Summarise.",
        files=["files/a", "files/b"],
        per_file=True,
        fail_on_error=False,
    ).execute(ctx)
    assert result == ["summary", None]
    assert ctx["ti"].xcom["errors"][0]["file"] == "files/b"
    assert "not ACTIVE" in ctx["ti"].xcom["errors"][0]["error"]
    assert fake_hook.calls["generate"] == 1, "the unusable file never reached the model"


def test_per_file_runs_calls_concurrently_but_bounded(fake_hook, monkeypatch):
    import threading
    import time

    for index in range(6):
        fake_hook.add(f"files/d{index}")
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    original = fake_hook.generate_content

    def slow(**kwargs):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return original(**kwargs)

    monkeypatch.setattr(fake_hook, "generate_content", slow)
    GeminiGenerateContentOperator(
        task_id="gen",
        model="m",
        prompt="Summarise.",
        files=[f"files/d{i}" for i in range(6)],
        per_file=True,
        max_concurrency=3,
    ).execute(context())
    assert state["max"] == 3


def test_mapped_generate_is_labelled_with_the_document_name(fake_hook):
    fake_hook.add("files/a", display_name="Quarterly report.pdf")
    ctx = context(map_index=0)
    GeminiGenerateContentOperator(task_id="gen", model="m", prompt="Hi", files="files/a").execute(ctx)
    assert ctx["gemini_file_label"] == "Quarterly report.pdf"
    assert ctx["map_index_template"] == "{{ gemini_file_label }}"


def test_prompt_and_files_are_rendered_from_templates_and_xcom(fake_hook):
    """A templated prompt and files pulled from an upstream task's XCom (a list of refs) both work."""
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    ref = fake_hook.add("files/a", display_name="a.pdf")
    with DAG("d", schedule=None):
        upstream = BaseOperator(task_id="upload")
        operator = GeminiGenerateContentOperator(
            task_id="gen", model="m", prompt="Summarise {{ params.doc }}.", files=upstream.output
        )
    ctx = context()
    ctx["ti"].xcom["upload:return_value"] = [ref.to_dict()]
    ctx["params"] = {"doc": "the report"}
    operator.render_template_fields(ctx)
    assert operator.prompt == "Summarise the report."
    operator.execute(ctx)
    assert texts(fake_hook.contents[0]) == ["Summarise the report.", "<<<File: a.pdf>>>", "FILE a"]


def test_a_jinja_string_of_refs_gets_a_clear_fix(fake_hook):
    with pytest.raises(GeminiInputError, match="render_template_as_native_obj"):
        GeminiGenerateContentOperator(
            task_id="gen", model="m", prompt="Hi", files="[GeminiFileRef(name='files/a')]"
        ).execute(context())


def test_an_empty_file_list_is_an_error_unless_per_file(fake_hook):
    with pytest.raises(GeminiInputError, match="files is an empty list"):
        GeminiGenerateContentOperator(task_id="gen", model="m", prompt="Hi", files=[]).execute(context())
    ctx = context()
    result = GeminiGenerateContentOperator(
        task_id="gen", model="m", prompt="Hi", files=[], per_file=True
    ).execute(ctx)
    assert result == []
    assert (ctx["ti"].xcom["usage"]["calls"], ctx["ti"].xcom["usage"]["total_token_count"]) == (0, 0)
    assert fake_hook.calls.get("generate", 0) == 0


def test_per_file_a_file_that_cannot_be_fetched_is_one_error_among_results(fake_hook):
    fake_hook.add("files/a")
    fake_hook.add("files/b")
    fake_hook.get_errors = [RuntimeError("503 after retries")]
    ctx = context()
    result = GeminiGenerateContentOperator(
        task_id="gen",
        model="m",
        prompt="Hi",
        files=["files/a", "files/b"],
        per_file=True,
        fail_on_error=False,
        max_concurrency=1,
    ).execute(ctx)
    assert result == [None, "summary"]
    assert "503 after retries" in ctx["ti"].xcom["errors"][0]["error"]


def test_a_rejected_api_key_fails_at_once(fake_hook):
    fake_hook.add("files/a")
    fake_hook.get_errors = [GeminiInputError("Gemini rejected the API key of connection 'gemini_default'")]
    with pytest.raises(GeminiInputError, match="rejected the API key"):
        GeminiGenerateContentOperator(
            task_id="gen", model="m", prompt="Hi", files=["files/a"], per_file=True, fail_on_error=False
        ).execute(context())
