"""``gs://bucket/object`` URIs: what counts as one, and how it splits into bucket and object."""

from __future__ import annotations

import re

from airflow_gemini_files.exceptions import GeminiInputError

_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_FIX_URI = "Use the form 'gs://<bucket>/<object>', e.g. 'gs://my-bucket/reports/2026/q3.pdf'."


def is_gs_uri(value: object) -> bool:
    """Whether ``value`` is a string that claims to be a ``gs://`` URI (valid or not)."""
    return isinstance(value, str) and value.strip().lower().startswith("gs:")


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/object`` into ``(bucket, object)``; a clear :class:`GeminiInputError` otherwise."""
    if not isinstance(uri, str):
        raise GeminiInputError(f"GCS URI {uri!r} is not a string. {_FIX_URI}")
    text = uri.strip()
    for prefix in ("https://storage.googleapis.com/", "https://storage.cloud.google.com/"):
        if text.startswith(prefix):
            raise GeminiInputError(
                f"{uri!r} is an HTTPS URL, not a GCS URI: write it as 'gs://{text[len(prefix) :]}'."
            )
    if not text.startswith("gs://"):
        raise GeminiInputError(f"{uri!r} is not a GCS URI: it must start with 'gs://'. {_FIX_URI}")
    bucket, sep, name = text[len("gs://") :].partition("/")
    if not bucket:
        raise GeminiInputError(f"GCS URI {uri!r} has no bucket name. {_FIX_URI}")
    if not _BUCKET_PATTERN.match(bucket) or ".." in bucket:
        raise GeminiInputError(
            f"GCS URI {uri!r} has an invalid bucket name {bucket!r}: bucket names have 3 to 222 lowercase "
            "letters, digits, dashes, underscores or dots and start and end with a letter or digit. "
            + _FIX_URI
        )
    if not sep or not name:
        raise GeminiInputError(
            f"GCS URI {uri!r} names the bucket {bucket!r} but no object. {_FIX_URI} "
            "To take every object under a prefix, use the register operator's bucket/prefix/match_glob."
        )
    if name in (".", "..") or "\n" in name or "\r" in name or len(name.encode("utf-8", "replace")) > 1024:
        raise GeminiInputError(
            f"GCS URI {uri!r} has an invalid object name: object names are 1 to 1024 bytes of UTF-8, "
            f"without line breaks, and not '.' or '..'. {_FIX_URI}"
        )
    if any("\ud800" <= char <= "\udfff" for char in name):
        raise GeminiInputError(f"GCS URI {uri!r} has an object name that is not valid UTF-8. {_FIX_URI}")
    return bucket, name
