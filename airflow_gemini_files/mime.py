"""MIME type resolution for uploads: explicit > storage metadata > content magic bytes > file extension.

Python's ``mimetypes`` alone guesses badly for Gemini (``.jsonl`` and ``.md`` unknown on many systems,
``.mp3`` as ``audio/mpeg`` on some and nothing on others), and it never looks at the bytes, so a PDF
called ``report`` or a PNG called ``scan.bin`` would be refused. This module looks at both.
"""

from __future__ import annotations

import mimetypes
import posixpath

from airflow_gemini_files.exceptions import GeminiInputError

SNIFF_BYTES = 4096
"""How many leading bytes :func:`sniff_content` needs to see."""

GENERIC_MIME_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown"})
"""Content types that say nothing: a GCS object uploaded without one gets ``application/octet-stream``."""

WEAK_MIME_TYPES = frozenset({"text/plain"})
"""Stored types checked against the bytes: uploaders such as ``Blob.upload_from_string`` default to them."""

# Extensions whose meaning does not show in the bytes (text formats), plus the binary ones as a fallback
# when the content cannot be read. Types follow the spellings the Gemini docs list.
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
    ".gif": "image/gif",
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
    ".m4a": "audio/mp4",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".mpeg": "video/mpeg",
    ".mpg": "video/mpeg",
    ".avi": "video/x-msvideo",
    ".webm": "video/webm",
    ".wmv": "video/x-ms-wmv",
    ".3gp": "video/3gpp",
}

_TEXT_MIME_TYPES = frozenset(v for v in EXTENSION_MIME_TYPES.values() if v.startswith("text/")) | {
    "application/json",
    "application/jsonl",
}

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
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12])
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
    ext = posixpath.splitext(name.lower().rstrip("/"))[1]
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
    Decide the MIME type of an upload.

    Order: ``explicit`` (the caller's ``mime_type``) > ``stored`` (e.g. the GCS object's content type,
    ignored when it is generic like ``application/octet-stream``, and ``text/plain`` only stands when the
    bytes are not a known binary format) > magic bytes in ``head`` > the name's
    extension (text formats need text content) > plain text when the content is text. Otherwise raises
    :class:`GeminiInputError` naming ``source`` and how to pass ``mime_type``.
    """
    if explicit:
        return _check_syntax(explicit, source)
    stored_type = _base_type(stored)
    sniffed = sniff_content(head) if head else None
    if stored_type and stored_type not in GENERIC_MIME_TYPES:
        if sniffed and stored_type in WEAK_MIME_TYPES:
            return sniffed
        return stored.split(";")[0].strip() if stored else stored_type
    if sniffed:
        return sniffed
    by_name = guess_from_name(source)
    if by_name and by_name in _TEXT_MIME_TYPES:
        if head is None or looks_like_text(head):
            return by_name
    elif by_name:
        return by_name
    if head and looks_like_text(head):
        return "text/plain"
    detail = "its name has no known extension" if not by_name else f"its extension suggests {by_name}"
    content = "" if head is None else " and its first bytes match no known format"
    raise GeminiInputError(
        f"Cannot tell the MIME type of {source!r}: {detail}{content}. "
        "Pass it explicitly, e.g. mime_type='application/pdf' (or 'image/png', 'audio/mp3', 'video/mp4', "
        "'text/plain'), or set the object's Content-Type in GCS."
    )


def needs_content(explicit: str | None, stored: str | None) -> bool:
    """Whether :func:`resolve_mime_type` would look at the first bytes (worth a ranged read)."""
    if explicit:
        return False
    return _base_type(stored) in GENERIC_MIME_TYPES | WEAK_MIME_TYPES


def _base_type(mime_type: str | None) -> str:
    return (mime_type or "").split(";")[0].strip().lower()


def _check_syntax(mime_type: str, source: str) -> str:
    value = mime_type.strip()
    main, sep, sub = value.partition("/")
    if not sep or not main or not sub or " " in value.split(";")[0]:
        raise GeminiInputError(
            f"mime_type {mime_type!r} given for {source!r} is not a MIME type: use the form 'type/subtype', "
            "e.g. 'application/pdf' or 'text/plain'."
        )
    return value
