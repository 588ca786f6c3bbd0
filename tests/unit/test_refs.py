"""GeminiFileRef: coercion of what DAGs pass around, XCom round trips, prompt parts, expiry."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from google.genai import types

from airflow_gemini_files.refs import XCOM_FORMAT_VERSION, GeminiFileRef, normalize_file_name, sha256_hex

CREATED = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def full_ref() -> GeminiFileRef:
    return GeminiFileRef(
        name="files/abc-123",
        uri="https://generativelanguage.googleapis.com/v1beta/files/abc-123",
        mime_type="application/pdf",
        display_name="report.pdf",
        size_bytes=1234,
        sha256_hash="q83vEjRWeJA=",
        state="ACTIVE",
        source="REGISTERED",
        source_uri="gs://docs/incoming/report.pdf",
        create_time=CREATED,
        expiration_time=CREATED + timedelta(hours=48),
    )


def test_xcom_round_trip_through_airflow_serde_with_default_config():
    from airflow.sdk.serde import deserialize, serialize

    ref = full_ref()
    encoded = serialize([ref, ref.with_state("FAILED", "bad pdf")])
    # What lands in the XCom table must be plain JSON.
    decoded = deserialize(json.loads(json.dumps(encoded)))
    assert decoded == [ref, ref.with_state("FAILED", "bad pdf")]
    assert isinstance(decoded[0], GeminiFileRef)
    assert decoded[0].expiration_time == CREATED + timedelta(hours=48)


def test_the_xcom_form_leaves_out_what_is_none_and_keeps_everything_else():
    ref = full_ref()
    assert ref.serialize() == {key: value for key, value in ref.to_dict().items() if key != "error"}
    failed = ref.with_state("FAILED", "bad pdf").serialize()
    assert failed["error"] == "bad pdf"
    assert len(failed) == len(ref.to_dict())
    assert GeminiFileRef(name="files/x").serialize() == {"name": "files/x"}
    assert GeminiFileRef.deserialize(ref.serialize(), version=XCOM_FORMAT_VERSION) == ref


# An XCom pushed by an earlier release (every field written, None as null): it must still be read.
EARLIER_RELEASE_XCOM = (
    '[{"__classname__": "airflow_gemini_files.refs.GeminiFileRef", "__version__": 1, "__data__": '
    '{"name": "files/abc-123", "uri": "https://generativelanguage.googleapis.com/v1beta/files/abc-123", '
    '"mime_type": "application/pdf", "display_name": "report.pdf", "size_bytes": 1234, '
    '"sha256_hash": "q83vEjRWeJA=", "state": "ACTIVE", "source": "REGISTERED", '
    '"source_uri": "gs://docs/incoming/report.pdf", "create_time": "2026-11-22T01:00:00+00:00", '
    '"expiration_time": "2026-11-24T01:00:00+00:00", "error": null}}]'
)


def test_an_xcom_written_by_an_earlier_release_is_read():
    from airflow.sdk.serde import deserialize

    assert deserialize(json.loads(EARLIER_RELEASE_XCOM)) == [full_ref()]


def test_todays_xcom_is_smaller_and_reads_as_the_earlier_one():
    from airflow.sdk.serde import deserialize, serialize

    today = json.dumps(serialize([full_ref()]))
    assert len(today) < len(EARLIER_RELEASE_XCOM)
    assert deserialize(json.loads(today)) == deserialize(json.loads(EARLIER_RELEASE_XCOM))
    assert json.loads(today)[0]["__version__"] == 1  # version-1 readers (earlier releases) read it too


def test_newer_serialized_version_is_refused_with_upgrade_hint():
    with pytest.raises(TypeError, match="upgrade the provider"):
        GeminiFileRef.deserialize(full_ref().serialize(), version=GeminiFileRef.__version__ + 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("files/abc-123", "files/abc-123"),
        ("abc-123", "files/abc-123"),
        (" files/x ", "files/x"),
        ("https://generativelanguage.googleapis.com/v1beta/files/abc-123", "files/abc-123"),
        ("a" * 40, "files/" + "a" * 40),
    ],
)
def test_names_are_normalized(value, expected):
    assert normalize_file_name(value) == expected


INVALID_NAMES = ["files/", "files/-abc", "files/abc-", "files/ABC", "files/a_b", "a" * 41, ""]


@pytest.mark.parametrize("value", INVALID_NAMES)
def test_invalid_names_are_refused_naming_the_value_and_the_rule(value):
    with pytest.raises(ValueError, match="lowercase letters, digits or dashes") as info:
        normalize_file_name(value)
    assert repr(value) in str(info.value)


def test_coerce_accepts_ref_dict_camel_dict_name_and_sdk_file():
    ref = full_ref()
    assert GeminiFileRef.coerce(ref) is ref
    assert GeminiFileRef.coerce(ref.to_dict()) == ref
    camel = {
        "name": "files/abc-123",
        "mimeType": "application/pdf",
        "displayName": "report.pdf",
        "sizeBytes": "1234",
        "state": "ACTIVE",
        "createTime": "2026-11-22T01:00:00Z",
        "error": {"code": 3, "message": "boom"},
        "unknownField": 1,
    }
    from_camel = GeminiFileRef.coerce(camel)
    assert (from_camel.mime_type, from_camel.size_bytes) == ("application/pdf", 1234)
    assert from_camel.error == "boom"
    assert from_camel.create_time == CREATED
    assert GeminiFileRef.coerce("files/abc-123").name == "files/abc-123"
    sdk_file = types.File(
        name="files/abc-123",
        uri="https://example/files/abc-123",
        mime_type="image/png",
        state=types.FileState.PROCESSING,
        source=types.FileSource.UPLOADED,
        size_bytes=9,
    )
    from_sdk = GeminiFileRef.coerce(sdk_file)
    assert (from_sdk.state, from_sdk.source, from_sdk.size_bytes) == ("PROCESSING", "UPLOADED", 9)


def test_coerce_many_flattens_lists_from_mapped_upstreams():
    ref = full_ref()
    other = GeminiFileRef(name="files/other")
    assert GeminiFileRef.coerce_many(ref) == [ref]
    assert GeminiFileRef.coerce_many([ref, "files/other"]) == [ref, other]
    assert GeminiFileRef.coerce_many([[ref], [other]]) == [ref, other]
    assert GeminiFileRef.coerce_many(iter([ref.to_dict()])) == [ref]


@pytest.mark.parametrize("value", [None, 42, {"display_name": "x"}, [object()]])
def test_coerce_many_refuses_malformed_values_with_a_hint(value):
    with pytest.raises((TypeError, ValueError), match=r"name|No Gemini files|Cannot use"):
        GeminiFileRef.coerce_many(value)


def test_expiry_uses_expiration_time_and_margin():
    ref = full_ref()
    assert not ref.is_expired(now=CREATED + timedelta(hours=47))
    assert ref.is_expired(now=CREATED + timedelta(hours=47), margin=timedelta(hours=2))
    assert ref.is_expired(now=CREATED + timedelta(hours=48))
    assert not GeminiFileRef(name="files/x").is_expired()


def test_expiry_without_a_time_is_judged_now():
    now = datetime.now(UTC)
    assert not GeminiFileRef(name="files/x", expiration_time=now + timedelta(hours=1)).is_expired()
    assert GeminiFileRef(name="files/x", expiration_time=now - timedelta(hours=1)).is_expired()


def test_a_fresh_worker_reads_refs_from_xcom_with_the_default_config():
    """Importing the provider allow-lists the class; nothing in airflow.cfg is needed."""
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from airflow.sdk.serde import deserialize\n"
        "import airflow_gemini_files.refs\n"
        "ref = deserialize(json.loads(sys.argv[1]))[0]\n"
        "print(type(ref).__name__, ref.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, EARLIER_RELEASE_XCOM], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["GeminiFileRef", "files/abc-123"]


def test_to_part_points_at_the_file_and_refuses_bare_names():
    part = full_ref().to_part()
    assert part.file_data is not None
    assert part.file_data.file_uri == full_ref().uri
    assert part.file_data.mime_type == "application/pdf"
    with pytest.raises(ValueError, match="refresh it first"):
        GeminiFileRef(name="files/x").to_part()


def test_label_prefers_display_name_then_source():
    assert full_ref().label == "report.pdf"
    assert GeminiFileRef(name="files/x", source_uri="gs://b/o.pdf").label == "gs://b/o.pdf"
    assert GeminiFileRef(name="files/x").label == "files/x"


# Exact behaviour of the decisions (these pin what mutation testing found unpinned) ---------------------
def exactly(message: str) -> str:
    """A ``match`` pattern for this message and nothing else."""
    return f"^{re.escape(message)}$"


def test_a_name_that_is_not_a_string_is_a_type_error_naming_it():
    message = "123 (a int) is not a Gemini file name: expected a string like 'files/report-2026-11-22'."
    with pytest.raises(TypeError, match=exactly(message)):
        normalize_file_name(123)  # type: ignore[arg-type]


RULE = (
    "is not a valid Gemini file name: expected 'files/<id>' where <id> has 1 to 40 lowercase letters, "
    "digits or dashes and does not start or end with a dash (for example 'files/report-2026-11-22')."
)
HINT = (
    " It looks like a local path or GCS object: upload it first (GeminiUploadFileOperator, or "
    "GeminiRegisterGcsFilesOperator for gs:// objects) and pass that task's output."
)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("/data/in/report.pdf", True),
        ("./report", True),
        ("~draft", True),
        ("gs://bucket/report.pdf", True),
        ("files/a/b", True),
        ("scans\\page1", True),
        ("report.pdf", True),
        ("SCAN.PDF", True),
        ("files/contract.docx", True),
        ("files/Report", False),
        ("Invoice_2026", False),
        ("files/Not A Name", False),
        ("-abc", False),
    ],
)
def test_a_path_where_a_file_is_expected_says_upload_it_first(value, hint):
    with pytest.raises(ValueError, match=exactly(f"{value!r} {RULE}" + (HINT if hint else ""))):
        normalize_file_name(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            base64.b64encode(hashlib.sha256(b"x").hexdigest().encode()).decode(),
            hashlib.sha256(b"x").hexdigest(),
        ),
        (
            base64.b64encode(hashlib.sha256(b"x").hexdigest().upper().encode()).decode(),
            hashlib.sha256(b"x").hexdigest(),
        ),
        (base64.b64encode(hashlib.sha256(b"x").digest()).decode(), hashlib.sha256(b"x").hexdigest()),
        (None, None),
        ("", None),
        ("not base64!", None),
        ("$" + base64.b64encode(hashlib.sha256(b"x").hexdigest().encode()).decode(), None),
        (base64.b64encode(b"\xff" * 64).decode(), None),
        (base64.b64encode(b"z" * 64).decode(), None),
        (base64.b64encode(b"a" * 16).decode(), None),
    ],
)
def test_sha256_hex_reads_the_live_apis_form_and_the_raw_digest(value, expected):
    assert sha256_hex(value) == expected
    assert GeminiFileRef(name="files/a", sha256_hash=value).sha256_hex == expected


def test_times_are_parsed_and_made_aware():
    ref = GeminiFileRef(name="files/a", create_time="", expiration_time=datetime(2026, 1, 2, 3, 4))
    assert ref.create_time is None
    assert ref.expiration_time == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert GeminiFileRef(name="files/a", create_time="2026-11-22T01:00:00Z").create_time == CREATED
    paris = GeminiFileRef(name="files/a", create_time="2026-11-22T02:00:00+01:00").create_time
    assert paris == CREATED
    assert paris is not None
    assert paris.utcoffset() == timedelta(hours=1), "an aware time keeps its offset"
    with pytest.raises(
        ValueError, match=exactly("12 is not a timestamp: expected an ISO 8601 string or a datetime.")
    ):
        GeminiFileRef(name="files/a", create_time=12)


def test_the_constructor_normalizes_the_name():
    assert GeminiFileRef(name=" abc ").name == "files/abc"


def test_with_state_sets_state_and_error():
    failed = full_ref().with_state("FAILED", "bad pdf")
    assert (failed.state, failed.error, failed.name) == ("FAILED", "bad pdf", "files/abc-123")
    assert failed.with_state("ACTIVE").error is None


def test_to_part_needs_both_uri_and_mime_type():
    message = (
        "files/x has no uri or MIME type in this reference, so it cannot become a prompt part: refresh it "
        "first with GeminiHook.get_file()."
    )
    for bare in (
        GeminiFileRef(name="files/x", uri="https://e/files/x"),
        GeminiFileRef(name="files/x", mime_type="a/b"),
    ):
        with pytest.raises(ValueError, match=exactly(message)):
            bare.to_part()


def test_to_dict_writes_times_as_iso_strings_and_keeps_none():
    data = full_ref().to_dict()
    assert data["create_time"] == "2026-11-22T01:00:00+00:00"
    assert data["expiration_time"] == "2026-11-24T01:00:00+00:00"
    bare = GeminiFileRef(name="files/x").to_dict()
    assert (bare["create_time"], bare["expiration_time"]) == (None, None)


def test_from_file_keeps_every_field():
    file = types.File(
        name="files/abc-123",
        uri="https://generativelanguage.googleapis.com/v1beta/files/abc-123",
        mime_type="application/pdf",
        display_name="report.pdf",
        size_bytes=1234,
        sha256_hash="q83vEjRWeJA=",
        state=types.FileState.FAILED,
        source=types.FileSource.REGISTERED,
        create_time=CREATED,
        expiration_time=CREATED + timedelta(hours=48),
        error=types.FileStatus(message="bad pdf", code=3),
    )
    assert GeminiFileRef.from_file(file, source_uri="gs://docs/incoming/report.pdf") == full_ref().with_state(
        "FAILED", "bad pdf"
    )
    assert GeminiFileRef.from_file(types.File(name="files/a")).error is None
    with pytest.raises(ValueError, match=exactly("The Gemini API returned a file without a name.")):
        GeminiFileRef.from_file(types.File())


def test_from_dict_without_a_name_and_an_error_without_a_message():
    message = (
        "Cannot make a GeminiFileRef from {'display_name': 'x'}: it has no 'name' (expected at least "
        "{'name': 'files/<id>'})."
    )
    with pytest.raises(ValueError, match=exactly(message)):
        GeminiFileRef.from_dict({"display_name": "x"})
    assert GeminiFileRef.from_dict({"name": "files/a", "error": {"code": 3}}).error == "{'code': 3}"


def test_coerce_refuses_other_objects_naming_them():
    from types import SimpleNamespace

    message = (
        "Cannot use namespace(mime_type='x') (a SimpleNamespace) as a Gemini file: pass a GeminiFileRef, a "
        "dict with a 'name', or a 'files/<id>' string (for example the XCom of an upload, register or sensor "
        "task)."
    )
    with pytest.raises(TypeError, match=exactly(message)):
        GeminiFileRef.coerce(SimpleNamespace(mime_type="x"))
    none = "No Gemini files given (got None): pass a GeminiFileRef, a list, or names."
    with pytest.raises(ValueError, match=exactly(none)):
        GeminiFileRef.coerce_many(None)


def test_coerce_many_takes_sdk_files_in_a_list():
    file = types.File(name="files/abc", mime_type="image/png")
    assert [ref.name for ref in GeminiFileRef.coerce_many([file, file])] == ["files/abc", "files/abc"]


def test_the_xcom_format_version_is_not_the_package_version():
    import airflow_gemini_files

    assert GeminiFileRef.__version__ == XCOM_FORMAT_VERSION == 1
    assert airflow_gemini_files.__version__ != GeminiFileRef.__version__


def test_label_escapes_control_characters():
    assert GeminiFileRef(name="files/x", display_name="a\nb\x1b[0m").label == "a\\nb\\x1b[0m"
