"""gs:// URI parsing (no network)."""

from __future__ import annotations

import pytest

from airflow_gemini_files import gcs_uri
from airflow_gemini_files.exceptions import GeminiInputError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://my-bucket/report.pdf", ("my-bucket", "report.pdf")),
        ("gs://my.bucket_1/a/b/c d.pdf", ("my.bucket_1", "a/b/c d.pdf")),
        ("  gs://bkt/x  ", ("bkt", "x")),
    ],
)
def test_valid_uris_split_into_bucket_and_object(uri, expected):
    assert gcs_uri.parse_gs_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("s3://bucket/key", "must start with 'gs://'"),
        ("gs:/bucket/key", "must start with 'gs://'"),
        ("bucket/key.pdf", "must start with 'gs://'"),
        ("gs://", "no bucket"),
        ("gs:///obj", "no bucket"),
        ("gs://bucket", "no object"),
        ("gs://bucket/", "no object"),
        ("gs://Bad_Bucket/x", "invalid bucket name 'Bad_Bucket'"),
        ("gs://ab/x", "invalid bucket name 'ab'"),
        ("gs://bucket/..", "invalid object name"),
        ("gs://bucket/a\nb", "invalid object name"),
        ("https://storage.googleapis.com/bkt/a.pdf", "write it as 'gs://bkt/a.pdf'"),
    ],
)
def test_malformed_uris_name_the_value_and_the_expected_form(uri, fragment):
    with pytest.raises(GeminiInputError) as info:
        gcs_uri.parse_gs_uri(uri)
    assert fragment in str(info.value)
    assert repr(uri) in str(info.value)


def test_non_string_uri_is_rejected():
    with pytest.raises(GeminiInputError, match="not a string"):
        gcs_uri.parse_gs_uri(None)  # type: ignore[arg-type]


def test_object_names_that_are_not_utf8_are_refused():
    with pytest.raises(GeminiInputError, match="not valid UTF-8"):
        gcs_uri.parse_gs_uri("gs://bucket/scan-\udcff.pdf")


@pytest.mark.parametrize("name", ["a#b.pdf", "a?b.pdf", "a%2Fb.pdf", "a b.pdf", "dir/ü.pdf", "x+y.pdf"])
def test_object_names_with_url_syntax_are_kept_as_they_are(name):
    assert gcs_uri.parse_gs_uri(f"gs://bucket/{name}") == ("bucket", name)
