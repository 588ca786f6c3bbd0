"""Upload, register and delete operators: argument handling, concurrency, rollback, retries (fake hook)."""

from __future__ import annotations

import pytest
from airflow.sdk import TriggerRule
from doubles import context

from airflow_gemini_files.exceptions import GeminiFilesError, GeminiInputError
from airflow_gemini_files.naming import context_run_prefix
from airflow_gemini_files.operators.files import (
    GeminiDeleteFilesOperator,
    GeminiRegisterGcsFilesOperator,
    GeminiUploadFileOperator,
)
from airflow_gemini_files.refs import GeminiFileRef


@pytest.fixture
def docs(tmp_path):
    paths = []
    for index in range(6):
        path = tmp_path / f"doc{index}.pdf"
        path.write_bytes(b"%PDF-1.4 " + bytes([index]))
        paths.append(str(path))
    return paths


# Upload -------------------------------------------------------------------------------------------
def test_upload_one_path_returns_one_ref(fake_hook, docs):
    ref = GeminiUploadFileOperator(task_id="up", source=docs[0]).execute(context())
    assert isinstance(ref, GeminiFileRef)
    assert ref.display_name == "doc0.pdf"
    assert ref.source_uri == docs[0]
    assert list(fake_hook.files) == [ref.name]


def test_upload_reads_the_connection_once_and_builds_no_sdk_client(fake_hook, docs):
    """Uploads go through the hook's own HTTP client: the SDK client (two TLS contexts) is not built."""
    GeminiUploadFileOperator(task_id="up", source=docs, max_concurrency=3).execute(context())
    assert fake_hook.calls["settings"] == 1
    assert "get_conn" not in fake_hook.calls


def test_upload_list_returns_refs_in_source_order_with_display_names(fake_hook, docs):
    fake_hook.upload_delay = 0.01
    names = [f"Report {i}" for i in range(len(docs))]
    refs = GeminiUploadFileOperator(task_id="up", source=docs, display_name=names).execute(context())
    assert [ref.source_uri for ref in refs] == docs
    assert [ref.display_name for ref in refs] == names


def test_upload_runs_at_most_max_concurrency_at_once(fake_hook, docs):
    fake_hook.upload_delay = 0.05
    GeminiUploadFileOperator(task_id="up", source=docs, max_concurrency=2).execute(context())
    assert fake_hook.calls["upload"] == len(docs)
    assert fake_hook.max_in_flight == 2


def test_upload_failure_part_way_deletes_what_this_task_uploaded(fake_hook, docs):
    fake_hook.upload_delay = 0.02
    fake_hook.fail_sources[docs[3]] = GeminiInputError("doc3 is broken: fix it")
    with pytest.raises(GeminiInputError, match="doc3 is broken"):
        GeminiUploadFileOperator(task_id="up", source=docs, max_concurrency=2).execute(context())
    assert fake_hook.files == {}, "files uploaded before the failure must be deleted"
    assert fake_hook.calls["upload"] < len(docs), "uploads not yet started are cancelled"


def test_upload_several_failures_are_all_named(fake_hook, docs):
    fake_hook.fail_sources[docs[1]] = RuntimeError("boom one")
    fake_hook.fail_sources[docs[2]] = RuntimeError("boom two")
    fake_hook.upload_delay = fake_hook.fail_delay = 0.05
    with pytest.raises(GeminiFilesError) as caught:
        GeminiUploadFileOperator(task_id="up", source=docs[:3], max_concurrency=3).execute(context())
    assert "2 of 3 uploads failed" in str(caught.value)
    assert docs[1] in str(caught.value)
    assert docs[2] in str(caught.value)
    assert fake_hook.files == {}


def test_upload_missing_local_path_fails_before_any_upload(fake_hook, docs, tmp_path):
    missing = str(tmp_path / "nope.pdf")
    with pytest.raises(GeminiInputError, match=r"nope\.pdf.*does not exist"):
        GeminiUploadFileOperator(task_id="up", source=[*docs, missing]).execute(context())
    assert fake_hook.calls.get("upload", 0) == 0


def test_upload_directory_is_refused(fake_hook, tmp_path):
    with pytest.raises(GeminiInputError, match="not a regular file"):
        GeminiUploadFileOperator(task_id="up", source=str(tmp_path)).execute(context())


@pytest.mark.parametrize(
    ("source", "display_name", "match"),
    [
        ([], None, "empty list"),
        ([None], None, "not a path or URI"),
        (["a.pdf", "b.pdf"], "one name", "one name per source"),
        (["a.pdf", "b.pdf"], ["only one"], "one name per source"),
    ],
)
def test_upload_bad_arguments_name_the_value(fake_hook, source, display_name, match):
    with pytest.raises(GeminiInputError, match=match):
        GeminiUploadFileOperator(task_id="up", source=source, display_name=display_name).execute(context())


def test_upload_names_are_deterministic_per_run_task_and_source(fake_hook, docs):
    GeminiUploadFileOperator(task_id="up", source=docs[:2]).execute(context())
    first = list(fake_hook.upload_names)
    assert all(name and name.startswith(context_run_prefix(context()) + "-") for name in first)
    assert len(set(first)) == 2
    assert all(len(name) <= 40 for name in first)
    fake_hook.files.clear()
    GeminiUploadFileOperator(task_id="up", source=docs[:2]).execute(context(run_id="run-2"))
    assert set(fake_hook.upload_names[2:]).isdisjoint(first), "another run gets other names"


def test_retry_after_successful_upload_reuses_the_file_instead_of_duplicating(fake_hook, docs):
    operator = GeminiUploadFileOperator(task_id="up", source=docs[:3])
    first = operator.execute(context())
    assert fake_hook.calls.get("get", 0) == 0, "a first try uploads without looking first"
    again = GeminiUploadFileOperator(task_id="up", source=docs[:3]).execute(context(try_number=2))
    assert [ref.name for ref in again] == [ref.name for ref in first]
    assert fake_hook.on_exists == ["reuse"] * 6, "the hook decides, by content, whether to reuse"
    assert len(fake_hook.files) == 3
    assert [ref.source_uri for ref in again] == docs[:3]


def test_first_try_meeting_its_name_taken_reuses_that_file(fake_hook, docs):
    first = GeminiUploadFileOperator(task_id="up", source=docs[0]).execute(context())
    again = GeminiUploadFileOperator(task_id="up", source=docs[0]).execute(context())
    assert again.name == first.name
    assert len(fake_hook.files) == 1


def test_retry_replaces_a_failed_file_from_the_earlier_attempt(fake_hook, docs):
    first = GeminiUploadFileOperator(task_id="up", source=docs[0]).execute(context())
    fake_hook.files[first.name] = first.with_state("FAILED", "corrupt")
    again = GeminiUploadFileOperator(task_id="up", source=docs[0]).execute(context(try_number=2))
    assert again.name == first.name
    assert fake_hook.calls["upload"] == 2
    assert fake_hook.files[again.name].state == "PROCESSING"


def test_random_names_when_deterministic_names_is_off(fake_hook, docs):
    GeminiUploadFileOperator(task_id="up", source=docs[0], deterministic_names=False).execute(context())
    assert fake_hook.upload_names == [None]


def test_mapped_upload_is_labelled_with_the_file_name(fake_hook, docs):
    ctx = context(map_index=3)
    GeminiUploadFileOperator(task_id="up", source=docs[2]).execute(ctx)
    assert ctx["gemini_file_label"] == "doc2.pdf"
    assert ctx["map_index_template"] == "{{ gemini_file_label }}"


def test_unmapped_task_keeps_no_map_index_template(fake_hook, docs):
    ctx = context()
    GeminiUploadFileOperator(task_id="up", source=docs[:2]).execute(ctx)
    assert ctx["gemini_file_label"] == "doc0.pdf (+1 more)"
    assert "map_index_template" not in ctx


def test_bad_max_concurrency_is_refused_at_parse_time():
    with pytest.raises(GeminiInputError, match="max_concurrency=0"):
        GeminiUploadFileOperator(task_id="up", source="a.pdf", max_concurrency=0)


# Register -----------------------------------------------------------------------------------------
def test_register_uris_in_batches_keeps_order_and_source_uri(fake_hook):
    uris = [f"gs://bucket/doc{i:03d}.pdf" for i in range(250)]
    refs = GeminiRegisterGcsFilesOperator(task_id="reg", uris=uris, max_concurrency=3).execute(context())
    assert [ref.source_uri for ref in refs] == uris
    assert sorted(len(batch) for batch in fake_hook.register_batches) == [50, 100, 100]
    assert fake_hook.calls["get_conn"] == 1, "the SDK client is built once, before the batches fan out"


def test_register_lists_the_bucket_through_the_hook(fake_hook):
    fake_hook.gcs_objects = ["gs://b/in/a.pdf", "gs://b/in/b.pdf"]
    refs = GeminiRegisterGcsFilesOperator(
        task_id="reg", bucket="b", prefix="in/", match_glob="**/*.pdf"
    ).execute(context())
    assert fake_hook.listed == [("b", "in/", "**/*.pdf")]
    assert [ref.source_uri for ref in refs] == ["gs://b/in/a.pdf", "gs://b/in/b.pdf"]


def test_register_empty_listing_fails_unless_allowed(fake_hook):
    with pytest.raises(GeminiInputError, match=r"no objects to register in gs://b/in/"):
        GeminiRegisterGcsFilesOperator(task_id="reg", bucket="b", prefix="in/").execute(context())
    assert (
        GeminiRegisterGcsFilesOperator(task_id="reg", bucket="b", prefix="in/", fail_if_empty=False).execute(
            context()
        )
        == []
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "not neither"),
        ({"uris": ["gs://b/a"], "bucket": "b"}, "not both"),
        ({"uris": ["gs://b/a"], "prefix": "x/"}, "prefix and match_glob filter a bucket listing"),
        ({"uris": ["/local/a.pdf"]}, "only GCS objects can be registered"),
    ],
)
def test_register_bad_arguments(fake_hook, kwargs, match):
    with pytest.raises(GeminiInputError, match=match):
        GeminiRegisterGcsFilesOperator(task_id="reg", **kwargs).execute(context())


def test_register_batch_size_over_100_is_refused():
    with pytest.raises(GeminiInputError, match="from 1 to 100"):
        GeminiRegisterGcsFilesOperator(task_id="reg", uris=["gs://b/a"], batch_size=500)


def test_register_failed_batch_deletes_the_other_batches_files(fake_hook):
    uris = [f"gs://bucket/doc{i:03d}.pdf" for i in range(30)]
    fake_hook.fail_sources[uris[25]] = GeminiInputError("gs://bucket/doc025.pdf does not exist")
    with pytest.raises(GeminiInputError, match="doc025"):
        GeminiRegisterGcsFilesOperator(task_id="reg", uris=uris, batch_size=10, max_concurrency=1).execute(
            context()
        )
    assert fake_hook.files == {}


# Delete -------------------------------------------------------------------------------------------
def test_delete_runs_after_upstream_failures_by_default():
    assert GeminiDeleteFilesOperator(task_id="rm", files=[]).trigger_rule == TriggerRule.ALL_DONE
    other = GeminiDeleteFilesOperator(task_id="rm2", files=[], trigger_rule=TriggerRule.ALL_SUCCESS)
    assert other.trigger_rule == TriggerRule.ALL_SUCCESS


def test_delete_returns_names_deleted_and_logs_gone_ones(fake_hook, capsys):
    a = fake_hook.add("files/a")
    fake_hook.add("files/b")
    deleted = GeminiDeleteFilesOperator(task_id="rm", files=[a, {"name": "files/b"}, "files/gone"]).execute(
        context()
    )
    assert deleted == ["files/a", "files/b"]
    assert fake_hook.files == {}
    assert "Deleted 2 file(s); 1 were already gone." in capsys.readouterr().out


def test_delete_accepts_nothing_none_and_mapped_lists(fake_hook):
    assert GeminiDeleteFilesOperator(task_id="rm", files=None).execute(context()) == []
    fake_hook.add("files/a")
    fake_hook.add("files/b")
    deleted = GeminiDeleteFilesOperator(task_id="rm", files=[["files/a"], None, ["files/b"]]).execute(
        context()
    )
    assert deleted == ["files/a", "files/b"]


def test_delete_tries_every_file_and_then_fails_naming_the_others(fake_hook):
    for name in ("files/a", "files/b", "files/c"):
        fake_hook.add(name)
    fake_hook.delete_errors["files/b"] = RuntimeError("503 unavailable")
    with pytest.raises(GeminiFilesError, match=r"1 of 3 deletes failed: files/b: 503 unavailable"):
        GeminiDeleteFilesOperator(task_id="rm", files=["files/a", "files/b", "files/c"]).execute(context())
    assert list(fake_hook.files) == ["files/b"]


def test_delete_run_uploads_finds_files_no_xcom_recorded(fake_hook, docs):
    uploaded = GeminiUploadFileOperator(task_id="up", source=docs[:2]).execute(context())
    fake_hook.add("files/someone-elses")
    GeminiUploadFileOperator(task_id="up", source=docs[2]).execute(context(run_id="other-run"))
    deleted = GeminiDeleteFilesOperator(task_id="rm", files=None, delete_run_uploads=True).execute(context())
    assert sorted(deleted) == sorted(ref.name for ref in uploaded)
    assert len(fake_hook.files) == 2, "other runs' and other users' files stay"


def test_delete_malformed_value_names_it(fake_hook):
    with pytest.raises(GeminiInputError, match="not a valid Gemini file name"):
        GeminiDeleteFilesOperator(task_id="rm", files=["report.pdf"]).execute(context())


def test_upload_logs_how_many_files_are_still_processing(fake_hook, docs, capsys):
    GeminiUploadFileOperator(task_id="up", source=docs[:3]).execute(context())
    assert "Uploaded 3 file(s): 3 PROCESSING." in capsys.readouterr().out


# One rule for files listed twice ---------------------------------------------------------------------
def test_a_source_listed_twice_is_uploaded_once(fake_hook, docs):
    refs = GeminiUploadFileOperator(task_id="up", source=[docs[0], docs[1], docs[0]]).execute(context())
    assert [ref.source_uri for ref in refs] == [docs[0], docs[1]]
    assert fake_hook.calls["upload"] == 2
    assert len(fake_hook.files) == 2


def test_a_source_listed_twice_with_two_display_names_is_refused(fake_hook, docs):
    with pytest.raises(GeminiInputError, match=r"listed twice with different display names \('a' and 'b'\)"):
        GeminiUploadFileOperator(task_id="up", source=[docs[0], docs[0]], display_name=["a", "b"]).execute(
            context()
        )
    assert fake_hook.calls.get("upload", 0) == 0


def test_an_object_listed_twice_is_registered_once(fake_hook):
    refs = GeminiRegisterGcsFilesOperator(task_id="reg", uris=["gs://b/a", "gs://b/b", "gs://b/a"]).execute(
        context()
    )
    assert [ref.source_uri for ref in refs] == ["gs://b/a", "gs://b/b"]


def test_a_file_listed_twice_is_deleted_once(fake_hook):
    fake_hook.add("files/a")
    assert GeminiDeleteFilesOperator(task_id="rm", files=["files/a", "files/a"]).execute(context()) == [
        "files/a"
    ]
    assert fake_hook.calls["delete"] == 1


# Templated lists rendered as text ---------------------------------------------------------------------
@pytest.mark.parametrize("param", ["source", "display_name"])
def test_a_templated_list_rendered_as_text_names_render_template_as_native_obj(fake_hook, docs, param):
    kwargs = {"source": docs[:2], "display_name": ["a", "b"]}
    kwargs[param] = str(kwargs[param])
    with pytest.raises(GeminiInputError) as error:
        GeminiUploadFileOperator(task_id="up", **kwargs).execute(context())
    assert f"{param} was rendered to the text" in str(error.value)
    assert "render_template_as_native_obj=True" in str(error.value)
    assert fake_hook.calls.get("upload", 0) == 0


def test_register_uris_rendered_as_text_names_render_template_as_native_obj(fake_hook):
    with pytest.raises(GeminiInputError, match="render_template_as_native_obj"):
        GeminiRegisterGcsFilesOperator(task_id="reg", uris="['gs://b/a', 'gs://b/b']").execute(context())


def test_a_first_try_that_fails_on_bad_input_looks_nothing_up(fake_hook, docs):
    fake_hook.fail_sources[docs[0]] = GeminiInputError("Gemini rejected the API key")
    with pytest.raises(GeminiInputError, match="rejected the API key"):
        GeminiUploadFileOperator(task_id="up", source=docs[0]).execute(context())
    assert fake_hook.calls.get("get", 0) == 0
