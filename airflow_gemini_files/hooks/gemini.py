"""GeminiHook: the one place that talks to the Gemini API (Files API, register, generateContent)."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from google import genai
from google.genai import errors, types

from airflow_gemini_files import gcs
from airflow_gemini_files.exceptions import (
    GeminiFileFailedError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
    GeminiWaitTimeoutError,
)
from airflow_gemini_files.hooks.process_local import process_cached_property
from airflow_gemini_files.hooks.retry import RetryPolicy
from airflow_gemini_files.mime import SNIFF_BYTES, needs_content, resolve_mime_type
from airflow_gemini_files.refs import GeminiFileRef, normalize_file_name

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from google.auth.credentials import Credentials
    from google.cloud import storage

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 2 * 1024**3
"""The Files API's limit per file (2 GB); larger sources are refused before any byte is sent."""

MAX_DISPLAY_NAME = 512
"""The Files API's limit on ``display_name`` (characters)."""

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"

CONNECTION_EXTRAS = frozenset(
    {"base_url", "api_version", "timeout", "retry_attempts", "retry_initial_delay", "retry_max_delay"}
)
"""The extras a ``gemini`` connection understands (all optional)."""

_API_VERSION = re.compile(r"^v\d+[a-z0-9]*$")


def _network_errors() -> tuple[type[Exception], ...]:
    found: list[type[Exception]] = [OSError, httpx.TransportError]
    try:  # google-genai talks through httpx2 (a fork of httpx with its own exception classes) when present
        import httpx2

        found.append(httpx2.TransportError)
    except ImportError:  # pragma: no cover - depends on the SDK's optional transport
        pass
    return tuple(found)


NETWORK_ERRORS = _network_errors()
"""Connection-level failures (refused, reset, timed out) from the SDK's transports: worth polling again."""

_GONE_FILE = re.compile(r"access the File (?:files/)?([a-z0-9-]+)")
_TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class GeminiConnectionSettings:
    """What a ``gemini`` connection says, checked. ``api_key`` never shows in ``repr``."""

    conn_id: str
    api_key: str = dataclasses.field(repr=False)
    base_url: str | None = None
    api_version: str | None = None
    timeout: float | None = None
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)

    @classmethod
    def from_connection(cls, conn: Connection) -> GeminiConnectionSettings:
        """Read and validate the password (API key) and extras; errors name the connection and the fix."""
        conn_id = conn.conn_id
        api_key = (conn.password or "").strip()
        if not api_key:
            raise GeminiInputError(
                f"Gemini connection {conn_id!r} has no API key. Put the key from "
                "https://aistudio.google.com/apikey in the connection's password field (or "
                f'AIRFLOW_CONN_{conn_id.upper()}=\'{{"conn_type": "gemini", "password": "<key>"}}\').'
            )
        extra = conn.extra_dejson or {}
        unknown = sorted(k for k in extra if k not in CONNECTION_EXTRAS)
        if unknown:
            log.warning(
                "Gemini connection %r: ignoring unknown extra keys %s (known: %s).",
                conn_id,
                unknown,
                sorted(CONNECTION_EXTRAS),
            )
        base_url = _optional_str(extra.get("base_url"))
        if base_url and not base_url.startswith(("http://", "https://")):
            raise GeminiInputError(
                f"Gemini connection {conn_id!r}: extra base_url={base_url!r} is not an http(s) URL. Use e.g. "
                "'http://127.0.0.1:8765' for the emulator, or remove it for the Gemini API."
            )
        api_version = _optional_str(extra.get("api_version"))
        if api_version and not _API_VERSION.match(api_version):
            raise GeminiInputError(
                f"Gemini connection {conn_id!r}: extra api_version={api_version!r} is not an API version. "
                "Use 'v1' or 'v1beta', or remove it for the SDK default."
            )
        timeout = _optional_seconds(conn_id, "timeout", extra.get("timeout"))
        try:
            retry = RetryPolicy.from_connection_extra(extra)
        except ValueError as err:
            raise GeminiInputError(f"Gemini connection {conn_id!r}: {err}") from None
        return cls(conn_id, api_key, base_url, api_version, timeout, retry)

    def http_options(self) -> types.HttpOptions:
        """The SDK's HttpOptions: base URL, version, timeout (ms) and retries."""
        return types.HttpOptions(
            base_url=self.base_url,
            api_version=self.api_version,
            timeout=int(self.timeout * 1000) if self.timeout else None,
            retry_options=self.retry.to_sdk(),
        )


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _optional_seconds(conn_id: str, key: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not seconds > 0:
        raise GeminiInputError(
            f"Gemini connection {conn_id!r}: extra {key}={value!r} must be a positive number of seconds "
            "(e.g. 120), or removed for no limit."
        )
    return seconds


def validate_display_name(display_name: str) -> str:
    """Return ``display_name`` if the Files API accepts it (1 to 512 characters), else raise."""
    if not isinstance(display_name, str) or not display_name.strip():
        raise GeminiInputError(
            f"display_name {display_name!r} must be a non-empty string; omit it to use the file's base name."
        )
    if len(display_name) > MAX_DISPLAY_NAME:
        raise GeminiInputError(
            f"display_name {display_name[:40]!r}... has {len(display_name)} characters; the Files API allows "
            f"at most {MAX_DISPLAY_NAME}. Shorten it, or omit it to use the file's base name."
        )
    return display_name


def validate_file_name(name: str) -> str:
    """Return ``files/<id>`` for a ``files/<id>`` or bare ``<id>`` the Files API accepts, else raise."""
    if not isinstance(name, str):
        raise GeminiInputError(f"file name {name!r} must be a string like 'files/report-2026-11-22'.")
    try:
        return normalize_file_name(name)
    except ValueError as err:
        raise GeminiInputError(str(err)) from None


def _default_display_name(source: str) -> str:
    base = source.rstrip("/").rsplit("/", 1)[-1] or source
    return base[-MAX_DISPLAY_NAME:]


def _check_size(size: int, source: str) -> None:
    if size == 0:
        raise GeminiInputError(
            f"{source!r} is empty (0 bytes): Gemini cannot use an empty file. Check that whatever writes it "
            "finished, or leave it out of the upload."
        )
    if size > MAX_FILE_BYTES:
        raise GeminiInputError(
            f"{source!r} is {size / 1024**3:.2f} GiB; the Files API takes at most 2 GiB per file. Split or "
            "compress it before uploading."
        )


class GeminiHook(BaseHook):
    """
    Gemini API Files API (upload, register GCS objects, get, list, delete, wait) and generateContent.

    The connection (type ``gemini``) holds the API key in its password; optional extras: ``base_url``,
    ``api_version``, ``timeout`` (seconds), ``retry_attempts``, ``retry_initial_delay``,
    ``retry_max_delay``. One ``genai.Client`` is built per hook (and per process: a forked worker builds
    its own, never sharing pooled connections with its parent), with those retries. ``gcp_conn_id``
    optionally names a connection with a GCP service-account key used to read ``gs://`` objects and
    to register them (see :mod:`airflow_gemini_files.gcs`); without it, Application Default Credentials,
    or no credentials at all when ``STORAGE_EMULATOR_HOST`` points at a GCS emulator.

    :param gemini_conn_id: the Gemini connection id.
    :param gcp_conn_id: optional GCP connection id with a service-account key.
    """

    conn_name_attr = "gemini_conn_id"
    default_conn_name = "gemini_default"
    conn_type = "gemini"
    hook_name = "Gemini API (Files)"

    def __init__(self, gemini_conn_id: str = default_conn_name, gcp_conn_id: str | None = None) -> None:
        super().__init__()
        self.gemini_conn_id = gemini_conn_id
        self.gcp_conn_id = gcp_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for Airflow < 3.2 (3.2+ reads the declarative form in provider info)."""
        from airflow_gemini_files.get_provider_info import get_provider_info

        behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        return {key.replace("-", "_"): value for key, value in behaviour.items()}

    # Connection and clients ------------------------------------------------------------------------
    def _settings_from(self, conn: Connection) -> GeminiConnectionSettings:
        settings = GeminiConnectionSettings.from_connection(conn)
        self.__dict__["settings"] = settings
        return settings

    def _missing_connection(self) -> GeminiInputError:
        return GeminiInputError(
            f"Gemini connection {self.gemini_conn_id!r} is not defined. Create it with conn type "
            "'gemini' and the API key as password, e.g. in the UI (Admin > Connections) or as the "
            "environment variable "
            f'AIRFLOW_CONN_{self.gemini_conn_id.upper()}=\'{{"conn_type": "gemini", "password": "<key>"}}\'.'
        )

    @cached_property
    def settings(self) -> GeminiConnectionSettings:
        """The checked connection settings (API key, base URL, version, timeout, retry policy)."""
        try:
            conn = self.get_connection(self.gemini_conn_id)
        except AirflowNotFoundException:
            raise self._missing_connection() from None
        return self._settings_from(conn)

    def _build_client(self, settings: GeminiConnectionSettings) -> genai.Client:
        return genai.Client(api_key=settings.api_key, vertexai=False, http_options=settings.http_options())

    @process_cached_property
    def client(self) -> genai.Client:
        """The ``genai.Client`` for this hook's connection (built once per process, with retries)."""
        return self._build_client(self.settings)

    def get_conn(self) -> genai.Client:
        """The ``genai.Client`` (Airflow's generic hook accessor)."""
        return self.client

    @property
    def async_client(self) -> Any:
        """The SDK's async client (``client.aio``) for triggers; see also :meth:`aget_file`."""
        return self.client.aio

    async def _aclient(self) -> Any:
        """The async client, reading the connection without blocking the event loop the first time."""
        if GeminiHook.client.cached(self) is None:
            try:
                conn = await self.aget_connection(self.gemini_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            self.client = self._build_client(self._settings_from(conn))
        return self.client.aio

    @process_cached_property
    def storage_client(self) -> storage.Client:
        """The ``google.cloud.storage.Client`` used to read ``gs://`` sources (see :mod:`..gcs`)."""
        return gcs.storage_client(self.gcp_conn_id)

    @cached_property
    def gcp_credentials(self) -> Credentials:
        """GCP credentials sent to ``files:register`` (service-account key, offline token, or ADC)."""
        return gcs.register_credentials(self.gcp_conn_id)

    # Errors ------------------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        key = self.__dict__.get("settings")
        return text.replace(key.api_key, "***") if key is not None else text

    def _translate(
        self, err: errors.APIError, *, file: str | None = None, model: str | None = None
    ) -> Exception:
        """Turn an SDK error into one that names the value and the fix (or return it unchanged)."""
        message = self._redact(str(err.message or ""))
        status = err.status or ""
        if err.code == 401 or (
            err.code in (400, 403) and ("api key" in message.lower() or "API_KEY" in str(err.details))
        ):
            return GeminiInputError(
                f"Gemini rejected the API key of connection {self.gemini_conn_id!r} ({err.code} {status}: "
                f"{message}). Put a valid key from https://aistudio.google.com/apikey in its password."
            )
        gone = _GONE_FILE.search(message)
        missing = file or (f"files/{gone.group(1)}" if gone else None)
        if err.code in (403, 404) and missing:
            # The live API answers 403 PERMISSION_DENIED, not 404, for a file that no longer exists.
            return GeminiFileNotUsableError(
                f"Gemini file {missing} does not exist: it was deleted, expired (files live 48 hours) or "
                f"belongs to another project ({err.code} {status}). Upload or register the source again.",
                file_name=missing,
            )
        if model and err.code == 404:
            return GeminiInputError(
                f"Gemini model {model!r} was not found ({message}). Use a model id such as "
                "'gemini-2.5-flash' (list them with client.models.list())."
            )
        if err.code == 429 and "file_storage_bytes" in message:
            return GeminiFilesError(
                f"The Gemini project's file storage quota is full ({message}). Delete files that are no "
                "longer needed (GeminiDeleteFilesOperator or GeminiHook.delete_file) or wait for them to "
                "expire (48 hours), then retry."
            )
        if err.code == 400 and status == "FAILED_PRECONDITION":
            return GeminiFileNotUsableError(
                f"Gemini refused the request: {message}. Wait until every file is ACTIVE "
                "(GeminiFileActiveSensor or GeminiHook.wait_for_active) before generating."
            )
        return err

    # Lineage -----------------------------------------------------------------------------------------
    def _record_lineage(self, source_uri: str | None, ref: GeminiFileRef) -> None:
        """Record the source (input) and the Gemini file (output) with Airflow's hook lineage collector."""
        try:
            from airflow.sdk.lineage import get_hook_lineage_collector
        except ImportError:  # pragma: no cover - older task SDK
            return
        try:
            collector = get_hook_lineage_collector()
            if source_uri:
                uri = source_uri if "://" in source_uri else f"file://{os.path.abspath(source_uri)}"
                collector.add_input_asset(context=self, uri=uri)
            if ref.uri:
                collector.add_output_asset(context=self, uri=ref.uri, name=ref.name)
        except Exception:  # lineage must never break a transfer
            log.debug("Could not record hook lineage for %s.", ref.name, exc_info=True)

    # Upload ------------------------------------------------------------------------------------------
    def upload_file(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        mime_type: str | None = None,
        display_name: str | None = None,
        name: str | None = None,
        size: int | None = None,
        exists_ok: bool = False,
    ) -> GeminiFileRef:
        """
        Upload a local path, a ``gs://bucket/object`` (streamed, never written to disk) or a binary stream.

        MIME type: ``mime_type``, else the GCS object's content type, else sniffed from the name and the
        first bytes; a stream needs ``mime_type``. ``display_name`` defaults to the base name. ``name``
        (``files/<id>`` or ``<id>``) chooses the file's name; with ``exists_ok`` an existing file of that
        name is returned instead of uploading again (retries without duplicates). ``size`` is the number
        of bytes to read from a stream (needed when it cannot seek).
        """
        file_name = validate_file_name(name) if name is not None else None
        if display_name is not None:
            validate_display_name(display_name)
        if file_name and exists_ok:
            existing = self._existing(file_name)
            if existing is not None:
                label = os.fspath(source) if isinstance(source, str | os.PathLike) else None
                log.info("Gemini file %s exists already: reusing it instead of uploading again.", file_name)
                return dataclasses.replace(existing, source_uri=label)
        if isinstance(source, str | os.PathLike):
            text = os.fspath(source)
            if not isinstance(source, str) and text.startswith("gs:/") and not text.startswith("gs://"):
                raise GeminiInputError(
                    f"{text!r} came from a pathlib path, which collapses 'gs://' to 'gs:/': pass GCS URIs "
                    "as plain strings, e.g. 'gs://my-bucket/reports/q3.pdf'."
                )
            if gcs.is_gs_uri(text):
                return self._upload_gcs(text, mime_type, display_name, file_name, size, exists_ok)
            return self._upload_local(text, mime_type, display_name, file_name, size, exists_ok)
        if isinstance(source, io.TextIOBase) or not hasattr(source, "read"):
            raise GeminiInputError(
                f"source {source!r} is neither a path, a gs:// URI nor a binary stream: open files with "
                "open(path, 'rb'), or pass the path itself."
            )
        return self._upload_stream(source, mime_type, display_name, file_name, size, exists_ok)

    def _existing(self, file_name: str) -> GeminiFileRef | None:
        try:
            return self.get_file(file_name)
        except GeminiFileNotUsableError:
            return None

    def _upload_local(
        self,
        path: str,
        mime_type: str | None,
        display_name: str | None,
        name: str | None,
        size: int | None,
        exists_ok: bool,
    ) -> GeminiFileRef:
        if not path.strip():
            raise GeminiInputError(
                "source is an empty string: pass a local path or a gs://bucket/object URI."
            )
        if not os.path.exists(path):
            raise GeminiInputError(
                f"Local file {path!r} does not exist on this worker (working directory {os.getcwd()!r}). Use "
                "an absolute path on the worker, or a gs://bucket/object URI for files in GCS."
            )
        if os.path.isdir(path):
            raise GeminiInputError(
                f"{path!r} is a directory, not a file. Pass the files in it one by one (a list of "
                f"paths, e.g. sorted(glob.glob('{path.rstrip('/')}/*.pdf'))), or upload them to GCS and "
                "register them."
            )
        actual = os.path.getsize(path)
        _check_size(actual, path)
        if size is not None and size != actual:
            raise GeminiInputError(
                f"size={size} was given for {path!r}, which has {actual} bytes: omit size."
            )
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed in finally, after the upload
        except PermissionError as err:
            raise GeminiInputError(
                f"Cannot read {path!r}: permission denied for the worker's user. Fix the file's permissions."
            ) from err
        try:
            head = handle.read(SNIFF_BYTES) if not mime_type else None
            handle.seek(0)
            resolved = resolve_mime_type(source=path, explicit=mime_type, head=head)
            return self._send(
                handle,
                size=actual,
                mime_type=resolved,
                display_name=display_name or _default_display_name(path),
                name=name,
                source_uri=path,
                exists_ok=exists_ok,
            )
        finally:
            handle.close()

    def _upload_gcs(
        self,
        uri: str,
        mime_type: str | None,
        display_name: str | None,
        name: str | None,
        size: int | None,
        exists_ok: bool,
    ) -> GeminiFileRef:
        from airflow_gemini_files.streams import GcsReadAhead

        gcs.parse_gs_uri(uri)
        blob = gcs.get_blob(uri, self.storage_client)
        actual = int(blob.size or 0)
        _check_size(actual, uri)
        if size is not None and size != actual:
            raise GeminiInputError(f"size={size} was given for {uri!r}, which has {actual} bytes: omit size.")
        stored = blob.content_type
        head = gcs.read_head(blob, SNIFF_BYTES) if needs_content(mime_type, stored) else None
        resolved = resolve_mime_type(source=uri, explicit=mime_type, stored=stored, head=head)
        with GcsReadAhead(blob, self._chunk_size, retry=self.settings.retry) as reader:
            return self._send(
                cast("IO[bytes]", reader),
                size=actual,
                mime_type=resolved,
                display_name=display_name or _default_display_name(uri),
                name=name,
                source_uri=uri,
                exists_ok=exists_ok,
            )

    def _upload_stream(
        self,
        stream: IO[bytes],
        mime_type: str | None,
        display_name: str | None,
        name: str | None,
        size: int | None,
        exists_ok: bool,
    ) -> GeminiFileRef:
        stream_name = getattr(stream, "name", None)
        label = stream_name if isinstance(stream_name, str) and not stream_name.startswith("<") else None
        if not mime_type:
            raise GeminiInputError(
                f"mime_type is required to upload a stream ({label or type(stream).__name__}): pass e.g. "
                "mime_type='application/pdf', or pass the file's path instead so it can be sniffed."
            )
        if size is None:
            try:
                start = stream.tell()
                size = stream.seek(0, os.SEEK_END) - start
                stream.seek(start)
            except (OSError, AttributeError, ValueError) as err:
                raise GeminiInputError(
                    f"Cannot measure the stream {label or type(stream).__name__} (it cannot seek): pass "
                    "size= with the number of bytes to upload."
                ) from err
        _check_size(size, label or f"stream {type(stream).__name__}")
        return self._send(
            stream,
            size=size,
            mime_type=resolve_mime_type(source=label or "stream", explicit=mime_type),
            display_name=display_name or (_default_display_name(label) if label else None),
            name=name,
            source_uri=label,
            exists_ok=exists_ok,
        )

    @property
    def _chunk_size(self) -> int:
        from airflow_gemini_files.hooks.upload import DEFAULT_CHUNK_SIZE

        return DEFAULT_CHUNK_SIZE

    @process_cached_property
    def _upload_http(self) -> httpx.Client:
        """One httpx client for every upload of this hook (a new one per file costs ~0.1 s of CPU)."""
        return httpx.Client(headers={"user-agent": "airflow-gemini-files"})

    def _send(
        self,
        stream: IO[bytes],
        *,
        size: int,
        mime_type: str,
        display_name: str | None,
        name: str | None,
        source_uri: str | None,
        exists_ok: bool,
    ) -> GeminiFileRef:
        from airflow_gemini_files.hooks.upload import ResumableUpload

        settings = self.settings
        http = self.client._api_client._http_options
        uploader = ResumableUpload(
            base_url=http.base_url or settings.base_url or DEFAULT_BASE_URL,
            api_version=http.api_version or settings.api_version or "v1beta",
            api_key=settings.api_key,
            retry=settings.retry,
            chunk_size=self._chunk_size,
            timeout=settings.timeout,
            http=self._upload_http,
        )
        label = source_uri or display_name or "stream"
        log.info("Uploading %s (%d bytes, %s) to Gemini.", label, size, mime_type)
        try:
            file = uploader.upload(
                stream, size=size, mime_type=mime_type, display_name=display_name, name=name, label=label
            )
        except errors.APIError as err:
            if err.code == 409 and name and exists_ok:
                return dataclasses.replace(self.get_file(name), source_uri=source_uri)
            if err.code == 409 and name:
                raise GeminiInputError(
                    f"A Gemini file named {name} already exists. Choose another name, delete it first, or "
                    "pass exists_ok=True to reuse it."
                ) from err
            raise self._translate(err) from err
        ref = GeminiFileRef.from_file(file, source_uri=source_uri)
        log.info("Uploaded %s as %s (%s).", label, ref.name, ref.state)
        self._record_lineage(source_uri, ref)
        return ref

    # Register ----------------------------------------------------------------------------------------
    def register_gcs_files(self, uris: Sequence[str], *, batch_size: int = 100) -> list[GeminiFileRef]:
        """
        Register ``gs://`` objects with Gemini (no bytes pass through the worker), ``batch_size`` per call.

        Returns one ref per distinct URI, in the given order, with ``source_uri`` set. If a batch fails,
        the files registered by earlier batches are deleted again before the error is raised.
        """
        if isinstance(uris, str):
            uris = [uris]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise GeminiInputError(f"batch_size must be a positive integer (e.g. 100), got {batch_size!r}.")
        ordered = list(dict.fromkeys(u.strip() if isinstance(u, str) else u for u in uris))
        if len(ordered) < len(uris):
            log.info("Ignoring %d duplicate URI(s) in the register list.", len(uris) - len(ordered))
        for uri in ordered:
            gcs.parse_gs_uri(uri)
        if not ordered:
            return []
        credentials = self.gcp_credentials
        refs: list[GeminiFileRef] = []
        try:
            for start in range(0, len(ordered), batch_size):
                batch = ordered[start : start + batch_size]
                refs.extend(self._register_batch(credentials, batch))
                log.info("Registered %d of %d GCS objects with Gemini.", len(refs), len(ordered))
        except BaseException:
            self._cleanup(refs)
            raise
        for ref in refs:
            self._record_lineage(ref.source_uri, ref)
        return refs

    def _register_batch(self, credentials: Credentials, batch: list[str]) -> list[GeminiFileRef]:
        from google.auth.exceptions import GoogleAuthError

        try:
            response = self.client.files.register_files(auth=credentials, uris=batch)
        except GoogleAuthError as err:
            raise GeminiInputError(
                "Could not get a GCP access token to register GCS objects "
                f"({type(err).__name__}). Check the credentials: gcp_conn_id={self.gcp_conn_id!r} "
                "(a service-account key) or Application Default Credentials."
            ) from None
        except errors.APIError as err:
            translated = self._translate(err)
            if translated is not err:
                raise translated from err
            shown = ", ".join(batch[:3]) + (f" and {len(batch) - 3} more" if len(batch) > 3 else "")
            hint = (
                " The GCP identity needs 'Storage Object Viewer' on the bucket and the objects must exist."
                if err.code in (400, 403, 404)
                else ""
            )
            message = self._redact(str(err.message))
            raise GeminiFilesError(
                f"Gemini refused to register {shown} ({err.code} {err.status}: {message}).{hint}"
            ) from err
        finally:
            token = getattr(credentials, "token", None)
            if token and token != gcs.OFFLINE_TOKEN:
                from airflow.sdk.log import mask_secret

                mask_secret(token)
        files = list(response.files or [])
        if len(files) != len(batch):
            raise GeminiFilesError(
                f"Gemini registered {len(files)} files for {len(batch)} URIs ({batch[0]}...); expected one "
                "per URI. Retry the task; if it persists, register fewer objects per call (batch_size)."
            )
        return [GeminiFileRef.from_file(f, source_uri=uri) for f, uri in zip(files, batch, strict=True)]

    def _cleanup(self, refs: Iterable[GeminiFileRef]) -> None:
        for ref in refs:
            try:
                self.delete_file(ref)
            except Exception:
                log.warning("Could not delete %s while cleaning up after a failure.", ref.name, exc_info=True)

    # Get / list / delete -----------------------------------------------------------------------------
    def get_file(self, file: GeminiFileRef | str | dict[str, Any]) -> GeminiFileRef:
        """The current state of a file; :class:`GeminiFileNotUsableError` if it is gone (403/404)."""
        ref = self._coerce(file)
        try:
            fresh = self.client.files.get(name=ref.name)
        except errors.APIError as err:
            raise self._translate(err, file=ref.name) from err
        return GeminiFileRef.from_file(fresh, source_uri=ref.source_uri)

    async def aget_file(self, file: GeminiFileRef | str | dict[str, Any]) -> GeminiFileRef:
        """Async :meth:`get_file` (for triggers): never blocks the event loop."""
        ref = self._coerce(file)
        client = await self._aclient()
        try:
            fresh = await client.files.get(name=ref.name)
        except errors.APIError as err:
            raise self._translate(err, file=ref.name) from err
        return GeminiFileRef.from_file(fresh, source_uri=ref.source_uri)

    def list_files(self, page_size: int = 100) -> Iterator[GeminiFileRef]:
        """Every file of the project, fetching ``page_size`` (1 to 100) per request."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise GeminiInputError(f"page_size must be an integer from 1 to 100, got {page_size!r}.")
        return self._iter_files(page_size)

    def _iter_files(self, page_size: int) -> Iterator[GeminiFileRef]:
        try:
            for file in self.client.files.list(config={"page_size": page_size}):
                yield GeminiFileRef.from_file(file)
        except errors.APIError as err:
            raise self._translate(err) from err

    def delete_file(self, file: GeminiFileRef | str | dict[str, Any]) -> bool:
        """Delete a file; False (and a log line) when it was already gone (403/404)."""
        ref = self._coerce(file)
        try:
            self.client.files.delete(name=ref.name)
        except errors.APIError as err:
            translated = self._translate(err, file=ref.name)
            if isinstance(translated, GeminiFileNotUsableError):
                log.info("Gemini file %s (%s) was already gone: nothing to delete.", ref.name, ref.label)
                return False
            raise translated from err
        log.info("Deleted Gemini file %s (%s).", ref.name, ref.label)
        return True

    @staticmethod
    def _coerce(file: Any) -> GeminiFileRef:
        try:
            return GeminiFileRef.coerce(file)
        except (ValueError, TypeError) as err:
            raise GeminiInputError(
                f"{file!r} is not a Gemini file: pass a GeminiFileRef, its dict, or a name like 'files/abc' "
                f"({err})."
            ) from None

    # Wait --------------------------------------------------------------------------------------------
    def wait_for_active(
        self,
        files: GeminiFileRef | str | dict[str, Any] | Sequence[GeminiFileRef | str | dict[str, Any]],
        *,
        timeout: float,
        poll_interval: float,
        max_poll_interval: float = 60.0,
    ) -> list[GeminiFileRef]:
        """
        Poll until every file is ACTIVE and return the refreshed refs (same order).

        The interval starts at ``poll_interval`` and grows 1.5x per round up to ``max_poll_interval``.
        A FAILED file raises :class:`GeminiFileFailedError` with Gemini's message; a vanished one
        :class:`GeminiFileNotUsableError`; files still processing after ``timeout`` seconds
        :class:`GeminiWaitTimeoutError` naming them. Transient API errors are logged and polled again.
        """
        if not timeout > 0 or not poll_interval > 0:
            raise GeminiInputError(
                f"timeout ({timeout!r}) and poll_interval ({poll_interval!r}) must be positive seconds."
            )
        try:
            refs = GeminiFileRef.coerce_many(files)
        except (ValueError, TypeError) as err:
            raise GeminiInputError(f"files: {err}") from None
        current = {ref.name: ref for ref in refs}
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while True:
            for file_name, ref in current.items():
                current[file_name] = fresh = self._poll_once(ref)
                if fresh.state == "FAILED":
                    raise GeminiFileFailedError(
                        f"Gemini could not process {fresh.label} ({fresh.name}): "
                        f"{fresh.error or 'no error message given'}. Check the file is a valid "
                        f"{fresh.mime_type or 'document'}, or upload it again.",
                        file_name=fresh.name,
                        error=fresh.error,
                    )
            pending = [r for r in current.values() if r.state != "ACTIVE"]
            if not pending:
                return [current[ref.name] for ref in refs]
            remaining = deadline - time.monotonic()
            names = ", ".join(f"{r.name} ({r.label})" for r in pending[:5])
            more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
            if remaining <= 0:
                raise GeminiWaitTimeoutError(
                    f"{len(pending)} of {len(current)} Gemini files still PROCESSING after {timeout:g} s: "
                    f"{names}{more}. Raise the timeout (videos can take minutes), or check them later.",
                    pending=[r.name for r in pending],
                )
            log.info(
                "%d of %d files still PROCESSING (%s%s); next check in %.1f s.",
                len(pending),
                len(current),
                names,
                more,
                min(interval, remaining),
            )
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, max(poll_interval, max_poll_interval))

    def _poll_once(self, ref: GeminiFileRef) -> GeminiFileRef:
        if ref.state == "ACTIVE":
            return ref
        try:
            return self.get_file(ref)
        except errors.APIError as err:
            if err.code in _TRANSIENT_CODES:
                log.warning(
                    "Transient error polling %s (%s %s); will poll again.", ref.name, err.code, err.status
                )
                return ref
            raise
        except NETWORK_ERRORS as err:
            log.warning("Network error polling %s (%s); will poll again.", ref.name, type(err).__name__)
            return ref

    # Generate ----------------------------------------------------------------------------------------
    def generate_content(
        self,
        *,
        model: str,
        contents: Sequence[Any] | Any,
        config: dict[str, Any] | types.GenerateContentConfig | None = None,
    ) -> types.GenerateContentResponse:
        """Call ``models.generateContent``; GeminiFileRef items in ``contents`` become file parts."""
        if not isinstance(model, str) or not model.strip():
            raise GeminiInputError(f"model {model!r} must be a model id such as 'gemini-2.5-flash'.")
        items = contents if isinstance(contents, list | tuple) else [contents]
        parts = [item.to_part() if isinstance(item, GeminiFileRef) else item for item in items]
        if not parts:
            raise GeminiInputError("contents is empty: pass a prompt (and files) to generate from.")
        try:
            return self.client.models.generate_content(
                model=model.strip(),
                contents=parts,  # type: ignore[arg-type]
                config=config,  # type: ignore[arg-type]
            )
        except errors.APIError as err:
            raise self._translate(err, model=model) from err

    # Connection test ---------------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """List one page of files; ``(False, reason)`` on a bad key or unreachable API (key never shown)."""
        try:
            pager = self.client.files.list(config={"page_size": 1})
            count = len(pager.page)
        except GeminiFilesError as err:
            return False, self._redact(str(err))
        except errors.APIError as err:
            translated = self._translate(err)
            return False, self._redact(
                str(translated) if translated is not err else f"{err.code} {err.message}"
            )
        except Exception as err:
            return False, self._redact(f"Cannot reach the Gemini API: {type(err).__name__}: {err}")
        where = self.settings.base_url or DEFAULT_BASE_URL
        return True, f"Connected to the Gemini Files API at {where} ({count} file(s) on the first page)."
