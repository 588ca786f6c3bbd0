"""MIME types: which ones Gemini accepts, and which one an upload is sent as.

One home for both halves of the decision:

- :data:`SUPPORTED_MIME_TYPES` is the list the Gemini API documents for prompts (documents, text,
  images, audio, video). The local emulator refuses everything else with the API's own
  ``400 INVALID_ARGUMENT Unsupported MIME type: <type>``, so the list is shared by the provider and
  the emulator (the evidence for every entry is in ``docs/emulator-fidelity.md``).
- :func:`resolve_mime_type` picks the type an upload is sent as: explicit > storage metadata > content
  magic bytes > file extension, and never one the API refuses. Spellings of a supported format are
  normalised (``image/jpg`` -> ``image/jpeg``, ``audio/x-wav`` -> ``audio/wav``); text the API has no
  type for (code, ``.jsonl``, ``.tsv``, ``.xyz``-style guesses from the system MIME table) goes as
  ``text/plain``; anything else fails before upload with an error naming the file and the accepted
  types.

Python's ``mimetypes`` alone guesses badly for Gemini (``.jsonl`` unknown, ``.wav`` as ``audio/x-wav``,
``.cu`` as ``application/cu-seeme``), and it never looks at the bytes, so a PDF called ``report`` or a
PNG called ``scan.bin`` would be refused. This module looks at both.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from collections.abc import Mapping
from typing import NoReturn

SNIFF_BYTES = 4096
"""How many leading bytes :func:`sniff_content` needs to see."""

SUPPORTED_MIME_TYPES: Mapping[str, str] = {
    # Documents and text (document-processing guide; text/md and the x-python / x-javascript
    # spellings from the same list on Google Cloud; text/markdown as the seed notebook sends it).
    "application/pdf": "document",
    "text/plain": "text",
    "text/html": "text",
    "text/css": "text",
    "text/csv": "text",
    "text/markdown": "text",
    "text/md": "text",
    "text/xml": "text",
    "text/rtf": "text",
    "text/javascript": "text",
    "application/x-javascript": "text",
    "text/x-python": "text",
    "application/x-python": "text",
    # Images (image-understanding guide).
    "image/png": "image",
    "image/jpeg": "image",
    "image/webp": "image",
    "image/heic": "image",
    "image/heif": "image",
    # Audio (audio-understanding guide; audio/mpeg as the docs' own JavaScript sample sends MP3).
    "audio/wav": "audio",
    "audio/mp3": "audio",
    "audio/mpeg": "audio",
    "audio/aiff": "audio",
    "audio/aac": "audio",
    "audio/ogg": "audio",
    "audio/flac": "audio",
    # Video (video-understanding guide; video/quicktime from the same list on Google Cloud).
    "video/mp4": "video",
    "video/mpeg": "video",
    "video/mov": "video",
    "video/quicktime": "video",
    "video/avi": "video",
    "video/x-flv": "video",
    "video/mpg": "video",
    "video/webm": "video",
    "video/wmv": "video",
    "video/3gpp": "video",
}
"""Every MIME type Gemini accepts in a prompt, mapped to its kind (document, text, image, audio, video)."""

BATCH_INPUT_MIME_TYPES = frozenset({"application/jsonl"})
"""Accepted for upload as Batch API request files, not as prompt parts."""

ALIASES: Mapping[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-aiff": "audio/aiff",
    "audio/x-flac": "audio/flac",
    "audio/x-aac": "audio/aac",
    "audio/vorbis": "audio/ogg",
    "video/x-msvideo": "video/avi",
    "video/msvideo": "video/avi",
    "video/x-ms-wmv": "video/wmv",
    "video/x-mpeg": "video/mpeg",
    "video/3gp": "video/3gpp",
    "text/x-markdown": "text/markdown",
    "application/xml": "text/xml",
    "application/javascript": "text/javascript",
    "application/ecmascript": "text/javascript",
    "text/ecmascript": "text/javascript",
    "application/rtf": "text/rtf",
    "text/x-rtf": "text/rtf",
}
"""Other spellings of a supported format (the API refuses them, e.g. ``image/jpg``) -> the one it takes."""

GENERIC_MIME_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown"})
"""Content types that say nothing: a GCS object uploaded without one gets ``application/octet-stream``."""

WEAK_MIME_TYPES = frozenset({"text/plain"})
"""Stored types checked against the bytes: uploaders such as ``Blob.upload_from_string`` default to them."""

_TEXT_APPLICATION_TYPES = frozenset(
    {
        "application/json",
        "application/jsonl",
        "application/x-ndjson",
        "application/ndjson",
        "application/sql",
        "application/x-sh",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/x-tex",
        "application/x-latex",
        "application/graphql",
    }
)

# Extensions whose meaning does not show in the bytes (text formats), plus the binary ones as a fallback
# when the content cannot be read. Types are the spellings the API takes; text formats it has no type
# for (JSON, JSON Lines, TSV, logs) are still listed so their content is checked for text.
EXTENSION_MIME_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".ndjson": "application/jsonl",
    ".html": "text/html",
    ".htm": "text/html",
    ".xml": "text/xml",
    ".css": "text/css",
    ".js": "text/javascript",
    ".py": "text/x-python",
    ".rtf": "text/rtf",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".wav": "audio/wav",
    ".mp3": "audio/mp3",
    ".aiff": "audio/aiff",
    ".aif": "audio/aiff",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".flac": "audio/flac",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".mpeg": "video/mpeg",
    ".mpg": "video/mpeg",
    ".avi": "video/avi",
    ".flv": "video/x-flv",
    ".webm": "video/webm",
    ".wmv": "video/wmv",
    ".3gp": "video/3gpp",
}

_MIME_SYNTAX = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")  # RFC 6838 names

_FTYP_BRANDS: dict[bytes, str] = {
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
}


def _fail(message: str) -> NoReturn:
    # Imported here: the emulator uses the type list without loading Airflow (seconds of start-up).
    from airflow_gemini_files.exceptions import GeminiInputError

    raise GeminiInputError(message)


def base_type(mime_type: str | None) -> str:
    """The type without parameters, lower case: ``'Text/CSV; charset=utf-8'`` -> ``'text/csv'``."""
    return (mime_type or "").split(";")[0].strip().lower()


def canonical(mime_type: str | None) -> str:
    """The base type, with another spelling of a supported format replaced by the one the API takes."""
    base = base_type(mime_type)
    return ALIASES.get(base, base)


def is_supported(mime_type: str | None) -> bool:
    """Whether Gemini accepts this exact type (parameters aside) in a prompt."""
    return base_type(mime_type) in SUPPORTED_MIME_TYPES


def is_text_type(mime_type: str | None) -> bool:
    """Whether the type names a text format (``text/*``, JSON, YAML, XML, scripts...)."""
    base = base_type(mime_type)
    return (
        base.startswith("text/")
        or base in _TEXT_APPLICATION_TYPES
        or base.endswith(("+json", "+xml"))
        or SUPPORTED_MIME_TYPES.get(base) == "text"
    )


_KIND_LABELS = {
    "document": "documents",
    "text": "text",
    "image": "images",
    "audio": "audio",
    "video": "video",
}


def accepted_types() -> str:
    """The supported types, grouped by kind, for error messages."""
    kinds: dict[str, list[str]] = {}
    for mime_type, kind in SUPPORTED_MIME_TYPES.items():
        kinds.setdefault(kind, []).append(mime_type)
    return "; ".join(f"{_KIND_LABELS[kind]} {', '.join(types)}" for kind, types in kinds.items())


def sniff_content(head: bytes) -> str | None:
    """Return the MIME type the leading bytes prove (binary formats only), or None."""
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/avi"}.get(head[8:12])
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head.startswith(b"ID3"):
        return "audio/mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync: layer bits 00 mean AAC (ADTS), anything else MP1/2/3.
        return "audio/aac" if head[1] & 0x06 == 0 else "audio/mp3"
    return None


def looks_like_text(head: bytes) -> bool:
    """Whether the leading bytes are UTF-8 text without control characters (a cut last char is fine)."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # a multi-byte character cut off by the sniff window is fine
            return False
        text = head[: err.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\n\r\f\v" for ch in text)


def guess_from_name(name: str) -> str | None:
    """MIME type for a file name (local path, object name or URI) by its extension, or None."""
    ext = posixpath.splitext(name.lower())[1]
    if ext in EXTENSION_MIME_TYPES:
        return EXTENSION_MIME_TYPES[ext]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return None if guessed in GENERIC_MIME_TYPES else guessed


def resolve_mime_type(
    *,
    source: str,
    explicit: str | None = None,
    stored: str | None = None,
    head: bytes | None = None,
) -> str:
    """
    Decide the MIME type an upload is sent as; always one Gemini accepts.

    Order: ``explicit`` (the caller's ``mime_type``) > ``stored`` (e.g. the GCS object's content type,
    ignored when it is generic like ``application/octet-stream``, and ``text/plain`` only stands when
    the bytes are not a known binary format) > magic bytes in ``head`` > the name's extension (text
    formats need text content) > plain text when the content is text. Other spellings of a supported
    type are normalised; a text format the API has no type for becomes ``text/plain``. Otherwise raises
    :class:`GeminiInputError` naming ``source``, the type and the accepted types.
    """
    if explicit:
        _check_syntax(explicit, source)
        return _acceptable(source, canonical(explicit), head, "mime_type", batch_ok=True)
    stored_type = canonical(stored)
    sniffed = canonical(sniff_content(head)) if head else None
    if stored_type not in GENERIC_MIME_TYPES:
        if sniffed and (stored_type in WEAK_MIME_TYPES or not is_supported(stored_type)):
            return _acceptable(source, sniffed, head, "content")
        return _acceptable(source, stored_type, head, "stored content type")
    if sniffed:
        return _acceptable(source, sniffed, head, "content")
    by_name = guess_from_name(source)
    if by_name:
        return _acceptable(source, canonical(by_name), head, "extension", check_text=True)
    if head and looks_like_text(head):
        return "text/plain"
    content = "" if head is None else " and its first bytes match no known format"
    _fail(
        f"Cannot tell the MIME type of {source!r}: its name has no known extension{content}. Pass it "
        "explicitly, e.g. mime_type='application/pdf' (or 'image/png', 'audio/mp3', 'video/mp4', "
        "'text/plain'), or set the object's Content-Type in GCS."
    )


def _acceptable(
    source: str,
    mime_type: str,
    head: bytes | None,
    origin: str,
    *,
    batch_ok: bool = False,
    check_text: bool = False,
) -> str:
    """``mime_type`` if Gemini takes it; ``text/plain`` for text it has no type for; else an error.

    ``check_text``: a text type only stands when ``head`` (if read) is text; the extension is a guess.
    """
    if is_supported(mime_type) or (batch_ok and mime_type in BATCH_INPUT_MIME_TYPES):
        if check_text and is_text_type(mime_type) and head is not None and not looks_like_text(head):
            _fail(
                f"{source!r} looks like {mime_type} by its {origin}, but its first bytes are not text: "
                "pass the right mime_type explicitly."
            )
        return mime_type
    is_text = looks_like_text(head) if head is not None else is_text_type(mime_type)
    if is_text:
        return "text/plain"
    detail = "" if head is None or origin == "content" else ", and its content is not text"
    _fail(
        f"Gemini does not accept {mime_type!r}, the type of {source!r} by its {origin}{detail}. Convert the "
        f"file to a supported format, or pass mime_type= if it really is one. Accepted: {accepted_types()}."
    )


def needs_content(explicit: str | None, stored: str | None) -> bool:
    """Whether :func:`resolve_mime_type` would look at the first bytes (worth a ranged read)."""
    if explicit:
        return False
    stored_type = canonical(stored)
    return stored_type in GENERIC_MIME_TYPES | WEAK_MIME_TYPES or not is_supported(stored_type)


def _check_syntax(mime_type: str, source: str) -> None:
    if not _MIME_SYNTAX.match(base_type(mime_type)):
        _fail(
            f"mime_type {mime_type!r} given for {source!r} is not a MIME type: use the form 'type/subtype', "
            "e.g. 'application/pdf' or 'text/plain'."
        )
