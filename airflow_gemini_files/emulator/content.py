"""Cheap facts about bytes the emulated model 'sees': words, first line, WAV length, image size, PDF pages.

Every function reads from a seekable binary stream in bounded pieces, so a large file costs time but
never memory.
"""

from __future__ import annotations

import re
import struct
from typing import BinaryIO

_PIECE = 1024 * 1024
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![s\w])")
_PDF_SCAN_LIMIT = 64 * 1024 * 1024
_TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/javascript")


def is_text(mime_type: str) -> bool:
    return mime_type.startswith("text/") or mime_type in _TEXT_TYPES or mime_type.endswith("+json")


def text_facts(stream: BinaryIO) -> tuple[int, str]:
    """Word count and first non-empty line (at most 120 characters) of a UTF-8 text."""
    words = 0
    first_line = ""
    in_word = False
    head = b""
    while piece := stream.read(_PIECE):
        if not first_line and len(head) < 64 * 1024:
            head += piece[: 64 * 1024]
        for token in re.split(rb"(\s+)", piece):
            if not token:
                continue
            if token.isspace():
                in_word = False
            elif not in_word:
                words += 1
                in_word = True
    for line in head.decode("utf-8", "replace").splitlines():
        if line.strip():
            first_line = line.strip()[:120]
            break
    return words, first_line


def wav_duration(stream: BinaryIO) -> float | None:
    """Seconds of audio in a RIFF/WAVE file, from its fmt and data chunk headers."""
    header = stream.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    byte_rate = 0
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            return None
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"fmt ":
            fmt = stream.read(size + (size & 1))
            if len(fmt) < 12:
                return None
            byte_rate = struct.unpack("<I", fmt[8:12])[0]
        elif chunk_id == b"data":
            return round(size / byte_rate, 3) if byte_rate else None
        else:
            stream.seek(size + (size & 1), 1)


def image_size(stream: BinaryIO, mime_type: str) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG image."""
    head = stream.read(_PIECE)
    if mime_type == "image/png" and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if mime_type in ("image/jpeg", "image/jpg") and head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                i += 1
                continue
            marker = head[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = struct.unpack(">H", head[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", head[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return None


def pdf_pages(stream: BinaryIO) -> int | None:
    """Number of page objects in a PDF (first 64 MiB scanned)."""
    if stream.read(5) != b"%PDF-":
        return None
    pages = 0
    tail = b""
    scanned = 0
    while scanned < _PDF_SCAN_LIMIT and (piece := stream.read(_PIECE)):
        scanned += len(piece)
        window = tail + piece
        cut = max(len(window) - 32, 0)
        pages += sum(1 for m in _PDF_PAGE.finditer(window) if m.start() < cut)
        tail = window[cut:]
    pages += len(_PDF_PAGE.findall(tail))
    return pages


def mp4_duration(stream: BinaryIO) -> float | None:
    """Seconds of an MP4/QuickTime movie, from ``moov/mvhd`` (top-level boxes are skipped by seeking)."""
    end: int | None = None
    while True:
        start = stream.tell()
        if end is not None and start >= end:
            return None
        header = stream.read(8)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header)
        if size == 1:
            size = struct.unpack(">Q", stream.read(8))[0]
        if kind == b"moov":
            end = start + size if size else None
            continue  # descend: its children follow
        if kind == b"mvhd":
            version = stream.read(4)[0]
            if version == 1:
                stream.seek(16, 1)
                timescale, duration = struct.unpack(">IQ", stream.read(12))
            else:
                stream.seek(8, 1)
                timescale, duration = struct.unpack(">II", stream.read(8))
            return round(duration / timescale, 3) if timescale else None
        if size < 8:
            return None
        stream.seek(start + size)


def describe_content(stream: BinaryIO, mime_type: str) -> str:
    """One short phrase about the content, or '' when nothing cheap is known about this type."""
    if is_text(mime_type):
        words, first_line = text_facts(stream)
        return f"{words} words; first line: {first_line!r}"
    if mime_type in ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"):
        seconds = wav_duration(stream)
        return f"WAV audio, {seconds:.3f} s" if seconds is not None else "WAV audio, unreadable header"
    if mime_type in ("image/png", "image/jpeg", "image/jpg"):
        size = image_size(stream, mime_type)
        return f"image {size[0]}x{size[1]} px" if size else "image, unreadable header"
    if mime_type in ("video/mp4", "video/quicktime"):
        seconds = mp4_duration(stream)
        return f"video, {seconds:.3f} s" if seconds is not None else "video, unreadable header"
    if mime_type == "application/pdf":
        pages = pdf_pages(stream)
        return f"PDF, {pages} page(s)" if pages is not None else "PDF, unreadable header"
    return ""
