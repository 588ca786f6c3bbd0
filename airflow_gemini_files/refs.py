"""GeminiFileRef: a small, typed reference to a Gemini file that travels through XCom."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_gemini_files.naming import printable

if TYPE_CHECKING:
    from google.genai import types

XCOM_FORMAT_VERSION = 1
"""Version of the dict a GeminiFileRef becomes in XCom (Airflow serde), not the package's version.

Raise it only when a reader of the current version would misread the new dict (a field renamed, or one
whose meaning changes): readers refuse versions above their own. Leaving out the fields that are None
needed no new version: every version-1 reader, older ones included, reads a missing field as None."""

FILE_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
"""A file id as the Files API accepts it: up to 40 lowercase letters, digits or dashes, no dash at an end."""

_FILE_URI_PATTERN = re.compile(r"^https?://[^?#]+?/(files/[^/?#]+)$")

# camelCase spellings of the File resource (as the REST API returns it) -> our field names.
_CAMEL_TO_FIELD = {
    "mimeType": "mime_type",
    "displayName": "display_name",
    "sizeBytes": "size_bytes",
    "sha256Hash": "sha256_hash",
    "sourceUri": "source_uri",
    "createTime": "create_time",
    "expirationTime": "expiration_time",
}


def normalize_file_name(value: str) -> str:
    """
    Return ``files/<id>`` for ``files/<id>``, a bare ``<id>`` or a Files API URI.

    Raises ``ValueError`` naming the value and the rule when the id is not one the Files API accepts.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{value!r} (a {type(value).__name__}) is not a Gemini file name: expected a string like "
            "'files/report-2026-11-22'."
        )
    text = value.strip()
    uri_match = _FILE_URI_PATTERN.match(text)
    if uri_match:
        text = uri_match.group(1)
    file_id = text.removeprefix("files/")
    if not FILE_ID_PATTERN.match(file_id):
        hint = ""
        if _looks_like_a_source(text):
            hint = (
                " It looks like a local path or GCS object: upload it first (GeminiUploadFileOperator, or "
                "GeminiRegisterGcsFilesOperator for gs:// objects) and pass that task's output."
            )
        raise ValueError(
            f"{value!r} is not a valid Gemini file name: expected 'files/<id>' where <id> has 1 to 40 "
            "lowercase letters, digits or dashes and does not start or end with a dash "
            f"(for example 'files/report-2026-11-22').{hint}"
        )
    return f"files/{file_id}"


def _looks_like_a_source(text: str) -> bool:
    """A path (``/``, ``\\``, ``~``), a ``gs://`` URI or a file name with an extension, not a Files API id."""
    tail = text.removeprefix("files/")
    has_extension = re.search(r"\.[A-Za-z0-9]{1,5}$", tail) is not None
    return tail.startswith("~") or "/" in tail or "\\" in tail or has_extension


def sha256_hex(value: str | None) -> str | None:
    """
    The SHA-256 the Files API reports (``sha256Hash``) as 64 lowercase hex digits, or None.

    The live API sends base64 of the *hex* digest's ASCII text (decoding gives 64 hex characters); base64
    of the raw 32-byte digest is read too. Anything else is None: not comparable.
    """
    if not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) == 64:
        text = raw.decode("ascii", "replace").lower()
        return text if re.fullmatch(r"[0-9a-f]{64}", text) else None
    if len(raw) == 32:
        return raw.hex()
    return None


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)  # Python 3.11+ reads a trailing "Z" as UTC
    else:
        raise ValueError(f"{value!r} is not a timestamp: expected an ISO 8601 string or a datetime.")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _enum_text(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


UPLOADED = "UPLOADED"
REGISTERED = "REGISTERED"
GENERATED = "GENERATED"
"""The File resource's ``source``: uploaded through the Files API, registered from GCS, or made by Gemini."""


@dataclasses.dataclass(frozen=True)
class GeminiFileRef:
    """
    A reference to a file in the Gemini Files API, small enough for XCom.

    Operators return it, take it back (alone, in a list, as a plain dict with the same fields, or as a
    ``files/<id>`` name) and turn it into a prompt part with :meth:`to_part`. ``source_uri`` remembers
    where the bytes came from (a ``gs://`` object or a local path); ``expiration_time`` is when Gemini
    deletes the file, as Gemini states it (about 48 hours after an upload, up to 30 days after a
    registration): every expiry decision reads it, none assumes a lifetime.
    """

    # Airflow serde reads the name __version__: it is the XCom format's version (XCOM_FORMAT_VERSION).
    __version__: ClassVar[int] = XCOM_FORMAT_VERSION

    name: str
    uri: str | None = None
    mime_type: str | None = None
    display_name: str | None = None
    size_bytes: int | None = None
    sha256_hash: str | None = None
    state: str | None = None
    source: str | None = None
    """How the file came to be: :data:`UPLOADED`, :data:`REGISTERED` or :data:`GENERATED`."""
    source_uri: str | None = None
    create_time: datetime | None = None
    expiration_time: datetime | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_file_name(self.name))
        if self.size_bytes is not None:
            object.__setattr__(self, "size_bytes", int(self.size_bytes))
        object.__setattr__(self, "create_time", _parse_time(self.create_time))
        object.__setattr__(self, "expiration_time", _parse_time(self.expiration_time))

    @property
    def file_id(self) -> str:
        """The id part of the name (``abc`` for ``files/abc``)."""
        return self.name.removeprefix("files/")

    @property
    def label(self) -> str:
        """A printable human name for logs: the display name, else the source, else the file name."""
        return printable(self.display_name or self.source_uri or self.name)

    @property
    def sha256_hex(self) -> str | None:
        """The content's SHA-256 as 64 hex digits (see :func:`sha256_hex`), or None when not known."""
        return sha256_hex(self.sha256_hash)

    @property
    def is_active(self) -> bool:
        """Whether Gemini reported the file ACTIVE (usable in prompts)."""
        return self.state == "ACTIVE"

    def is_expired(self, now: datetime | None = None, margin: timedelta = timedelta(0)) -> bool:
        """Whether the file has passed (or will within ``margin`` pass) its expiration time."""
        if self.expiration_time is None:
            return False
        moment = now or datetime.now(UTC)
        return self.expiration_time <= moment + margin

    def with_state(self, state: str, error: str | None = None) -> GeminiFileRef:
        """A copy with another state (and error message)."""
        return dataclasses.replace(self, state=state, error=error)

    def to_part(self) -> types.Part:
        """The ``fileData`` prompt part that points Gemini at this file."""
        from google.genai import types

        if not self.uri or not self.mime_type:
            raise ValueError(
                f"{self.name} has no uri or MIME type in this reference, so it cannot become a prompt "
                "part: refresh it first with GeminiHook.get_file()."
            )
        return types.Part.from_uri(file_uri=self.uri, mime_type=self.mime_type)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (times as ISO 8601 strings)."""
        data = dataclasses.asdict(self)
        for key in ("create_time", "expiration_time"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data

    # Airflow serde (XCom) ---------------------------------------------------------------------
    def serialize(self) -> dict[str, Any]:
        """Airflow serde hook: the plain dict form without the fields that are None (smaller XComs)."""
        return {key: value for key, value in self.to_dict().items() if value is not None}

    @staticmethod
    def deserialize(data: dict[str, Any], version: int) -> GeminiFileRef:
        """Airflow serde hook: rebuild from :meth:`serialize` output."""
        if version > XCOM_FORMAT_VERSION:
            raise TypeError(
                f"GeminiFileRef version {version} was written by a newer airflow-gemini-files "
                f"(this one reads up to {XCOM_FORMAT_VERSION}): upgrade the provider on this worker."
            )
        return GeminiFileRef.from_dict(data)

    # Construction -----------------------------------------------------------------------------
    @classmethod
    def from_file(cls, file: types.File, source_uri: str | None = None) -> GeminiFileRef:
        """Build from the SDK's ``types.File``."""
        if not file.name:
            raise ValueError("The Gemini API returned a file without a name.")
        error = file.error.message if file.error is not None else None
        return cls(
            name=file.name,
            uri=file.uri,
            mime_type=file.mime_type,
            display_name=file.display_name,
            size_bytes=file.size_bytes,
            sha256_hash=file.sha256_hash,
            state=_enum_text(file.state),
            source=_enum_text(file.source),
            source_uri=source_uri,
            create_time=file.create_time,
            expiration_time=file.expiration_time,
            error=error,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeminiFileRef:
        """Build from a dict with our field names or the REST API's camelCase ones; ignores other keys."""
        known = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            field = _CAMEL_TO_FIELD.get(key, key)
            if field in known:
                values[field] = value
        if not values.get("name"):
            raise ValueError(
                f"Cannot make a GeminiFileRef from {dict(data)!r}: it has no 'name' "
                "(expected at least {'name': 'files/<id>'})."
            )
        error = values.get("error")
        if isinstance(error, Mapping):
            values["error"] = error.get("message") or str(dict(error))
        for key in ("state", "source"):
            values[key] = _enum_text(values.get(key))
        return cls(**values)

    @classmethod
    def coerce(cls, value: Any) -> GeminiFileRef:
        """
        Turn what a DAG hands an operator into a ref.

        Accepts a GeminiFileRef, a dict with the same fields, a ``files/<id>`` name (or Files API URI),
        or the SDK's ``types.File``.
        """
        if isinstance(value, GeminiFileRef):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, str):
            return cls(name=value)
        if type(value).__name__ == "File" and hasattr(value, "mime_type"):
            return cls.from_file(value)
        raise TypeError(
            f"Cannot use {value!r} (a {type(value).__name__}) as a Gemini file: pass a GeminiFileRef, "
            "a dict with a 'name', or a 'files/<id>' string (for example the XCom of an upload, register "
            "or sensor task)."
        )

    @classmethod
    def coerce_many(cls, value: Any) -> list[GeminiFileRef]:
        """Like :meth:`coerce`, for one value or a list (or any iterable, such as a lazy XCom sequence)."""
        if value is None:
            raise ValueError("No Gemini files given (got None): pass a GeminiFileRef, a list, or names.")
        if isinstance(value, str | Mapping | GeminiFileRef) or not isinstance(value, Iterable):
            return [cls.coerce(value)]
        refs: list[GeminiFileRef] = []
        for item in value:
            refs.extend(cls.coerce_many(item) if _is_nested_list(item) else [cls.coerce(item)])
        return refs


def _is_nested_list(item: Any) -> bool:
    return isinstance(item, list | tuple)


def _allow_in_xcom() -> None:
    """Let Airflow deserialize GeminiFileRef from XCom with its default configuration."""
    try:
        from airflow.sdk.serde import allow_class
    except ImportError:  # Task SDK < 1.3: see README, set [core] allowed_deserialization_classes.
        return
    allow_class(GeminiFileRef)


_allow_in_xcom()
