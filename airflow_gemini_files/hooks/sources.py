"""Where an upload's bytes come from: a local path, a ``gs://`` object or a binary stream.

:func:`open_source` checks what the caller passed (it exists, it is a file, its size is one Gemini
takes) and turns it into one :class:`UploadSource`: the bytes to send (:meth:`UploadSource.open`, as
often as needed), their size, the type storage records for them, the first bytes for sniffing the MIME
type, and the name logs and errors use. The hook's ``upload_file`` has one path for all three.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.gcs_uri import is_gs_uri, parse_gs_uri
from airflow_gemini_files.hooks import gcs
from airflow_gemini_files.hooks.policy import check_source_size
from airflow_gemini_files.hooks.retry import RetryPolicy
from airflow_gemini_files.mime import SNIFF_BYTES, needs_content
from airflow_gemini_files.naming import default_display_name, printable

if TYPE_CHECKING:
    from google.cloud import storage

_HASH_BLOCK = 1024 * 1024


class UploadSource:
    """One source of an upload, checked: what is known about its bytes before any is sent."""

    name: str
    """How logs and errors name it (printable): the path, the ``gs://`` URI, or the stream's name."""
    source_uri: str | None
    """What the returned ref records as ``source_uri`` (None for an anonymous stream)."""
    size: int
    stored_type: str | None = None
    """The content type the storage records (a GCS object's), if any."""
    head: bytes | None = None
    """The first bytes, read only when the MIME type must be sniffed from them."""
    display_name: str | None
    """The display name an upload gets when the caller gives none."""

    def open(self) -> contextlib.AbstractContextManager[IO[bytes]]:
        """The bytes from the start (each call starts again)."""
        raise NotImplementedError

    def sha256(self) -> str | None:
        """SHA-256 of the bytes as hex, or None when they cannot be read again."""
        with self.open() as stream:
            return _hash(stream, self.size)


class LocalSource(UploadSource):
    """A regular file on the worker."""

    def __init__(self, path: str, *, size: int | None, mime_type: str | None) -> None:
        check_local_file(path)
        shown = printable(path)
        actual = os.path.getsize(path)
        check_source_size(actual, path)
        _check_given_size(size, actual, path)
        self.path = path
        self.name = shown
        self.source_uri = path
        self.size = actual
        self.display_name = default_display_name(path)
        try:
            with open(path, "rb") as handle:
                self.head = handle.read(SNIFF_BYTES) if needs_content(mime_type, None) else None
        except PermissionError as err:
            raise GeminiInputError(
                f"Cannot read '{shown}': permission denied for the worker's user. Fix the file's permissions."
            ) from err

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        with open(self.path, "rb") as handle:
            yield handle


class GcsSource(UploadSource):
    """A GCS object, streamed through :class:`~airflow_gemini_files.hooks.gcs.GcsReadAhead`."""

    def __init__(
        self,
        uri: str,
        *,
        client: storage.Client,
        size: int | None,
        mime_type: str | None,
        chunk_size: int,
        retry: RetryPolicy,
    ) -> None:
        parse_gs_uri(uri)
        self.blob = gcs.get_blob(client, uri)
        actual = int(self.blob.size or 0)
        check_source_size(actual, uri)
        _check_given_size(size, actual, uri)
        self.name = printable(uri)
        self.source_uri = uri
        self.size = actual
        self.stored_type = self.blob.content_type
        self.display_name = default_display_name(uri)
        self.head = (
            gcs.read_head(self.blob, SNIFF_BYTES) if needs_content(mime_type, self.stored_type) else None
        )
        self.chunk_size = chunk_size
        self.retry = retry

    def open(self) -> contextlib.AbstractContextManager[IO[bytes]]:
        reader = gcs.GcsReadAhead(self.blob, self.chunk_size, retry=self.retry)
        return cast("contextlib.AbstractContextManager[IO[bytes]]", reader)


class StreamSource(UploadSource):
    """A binary stream the caller opened; read again only if it can seek back."""

    def __init__(self, stream: Any, *, size: int | None, mime_type: str | None) -> None:
        stream_name = getattr(stream, "name", None)
        named = stream_name if isinstance(stream_name, str) and not stream_name.startswith("<") else None
        self.name = printable(named) if named else f"stream {type(stream).__name__}"
        if not mime_type:
            what = printable(named) if named else type(stream).__name__
            raise GeminiInputError(
                f"mime_type is required to upload a stream ({what}): "
                "pass e.g. mime_type='application/pdf', or pass the file's path instead so it can be sniffed."
            )
        self.stream = stream
        self.origin = _position(stream)
        if size is None:
            if self.origin is None:
                raise GeminiInputError(
                    f"Cannot measure {self.name} (it cannot seek): pass size= with the number of bytes to "
                    "upload."
                )
            size = stream.seek(0, os.SEEK_END) - self.origin
            stream.seek(self.origin)
        check_source_size(size, named or self.name)
        self.source_uri = named
        self.size = size
        self.display_name = default_display_name(named) if named else None

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if self.origin is not None:
            self.stream.seek(self.origin)
        yield self.stream  # the caller's: not closed here

    def sha256(self) -> str | None:
        if self.origin is None:
            return None
        return super().sha256()


def open_source(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    size: int | None,
    mime_type: str | None,
    storage: Callable[[], storage.Client],
    chunk_size: int,
    retry: RetryPolicy,
) -> UploadSource:
    """The checked :class:`UploadSource` for a path, a ``gs://`` URI or a binary stream."""
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if not isinstance(text, str):
            text = os.fsdecode(text)
        if not isinstance(source, str) and text.startswith("gs:/") and not text.startswith("gs://"):
            raise GeminiInputError(
                f"{text!r} came from a pathlib path, which collapses 'gs://' to 'gs:/': pass GCS URIs "
                "as plain strings, e.g. 'gs://my-bucket/reports/q3.pdf'."
            )
        if is_gs_uri(text):
            return GcsSource(
                text, client=storage(), size=size, mime_type=mime_type, chunk_size=chunk_size, retry=retry
            )
        return LocalSource(text, size=size, mime_type=mime_type)
    if isinstance(source, io.TextIOBase) or not hasattr(source, "read"):
        raise GeminiInputError(
            f"source {source!r} is neither a path, a gs:// URI nor a binary stream: open files with "
            "open(path, 'rb'), or pass the path itself."
        )
    return StreamSource(source, size=size, mime_type=mime_type)


def check_local_file(path: str) -> None:
    """Refuse a local source that is empty as a string, missing, or not a regular file (names it)."""
    if not path.strip():
        raise GeminiInputError("source is an empty string: pass a local path or a gs://bucket/object URI.")
    shown = printable(path)
    if not os.path.exists(path):
        raise GeminiInputError(
            f"Local file '{shown}' does not exist on this worker (working directory "
            f"'{printable(os.getcwd())}'). Check the path (an absolute path on the worker), or use a "
            "gs://bucket/object URI for files in GCS."
        )
    if not os.path.isfile(path):
        raise GeminiInputError(
            f"'{shown}' is not a regular file (a directory?): pass one path per file (a list of paths, e.g. "
            f"sorted(glob.glob('{shown.rstrip('/')}/*.pdf'))), or upload the files to GCS and register them."
        )


def _check_given_size(size: int | None, actual: int, source: str) -> None:
    if size is not None and size != actual:
        raise GeminiInputError(
            f"size={size} was given for '{printable(source)}', which has {actual} bytes: omit size."
        )


def _position(stream: Any) -> int | None:
    """Where a stream is, if it can seek back there; else None."""
    try:
        return int(stream.tell()) if stream.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _hash(stream: IO[bytes], size: int) -> str:
    digest = hashlib.sha256()
    left = size
    while left > 0:
        block = stream.read(min(_HASH_BLOCK, left))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()
