"""GeminiFileRef: coercion of what DAGs pass around, XCom round trips, prompt parts, expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.genai import types

from airflow_gemini_files.refs import GeminiFileRef, normalize_file_name

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
