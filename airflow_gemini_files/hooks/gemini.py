"""GeminiHook: the one place that talks to the Gemini API (Files API, register, generateContent) and GCS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import hashlib
import inspect
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_gemini_files.exceptions import (
    GeminiBatchJobError,
    GeminiBatchJobGoneError,
    GeminiConnectionError,
    GeminiFileExistsError,
    GeminiFileGoneError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
)
from airflow_gemini_files.gcs_uri import is_gs_uri, parse_gs_uri
from airflow_gemini_files.hooks import gcs, policy
from airflow_gemini_files.hooks.policy import ActiveWait, ApiProblem, PollSchedule
from airflow_gemini_files.hooks.process_local import process_cached_property
from airflow_gemini_files.hooks.retry import RetryPolicy, acall_with_retries, call_with_retries, number_extra
from airflow_gemini_files.hooks.sources import UploadSource, open_source
from airflow_gemini_files.ledger import Ledger, check_ledger_uri, open_ledger
from airflow_gemini_files.mime import resolve_mime_type
from airflow_gemini_files.naming import check_display_name, printable
from airflow_gemini_files.pricing import DEFAULT_PRICES, PriceTable, price_table_from_extra
from airflow_gemini_files.quota import PROJECT_STORAGE_BYTES, FilesUsage, files_usage
from airflow_gemini_files.refs import GeminiFileRef, normalize_file_name

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import Connection
    from google import genai
    from google.auth.credentials import Credentials
    from google.cloud import storage
    from google.genai import errors, types

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
DEFAULT_API_VERSION = "v1"
"""The Gemini Developer API version used when the connection names none (the SDK's own default)."""

MiB = 1024 * 1024
UPLOAD_CHUNK_QUANTUM = 256 * 1024
DEFAULT_UPLOAD_CHUNK_SIZE = 8 * MiB
DOWNLOAD_CHUNK_SIZE = 8 * MiB
"""Bytes a download to a ``gs://`` object holds before sending them on (a multiple of 256 KiB)."""
DOWNLOAD_PIECE = MiB

CONNECTION_EXTRAS = frozenset(
    {
        "base_url",
        "api_version",
        "timeout",
        "retry_attempts",
        "retry_initial_delay",
        "retry_max_delay",
        "retry_max_total_wait",
        "upload_chunk_size",
        "register_auth",
        "prices",
        "ledger",
        "storage_quota_bytes",
    }
)
"""The extras a ``gemini`` connection understands (all optional); the connection form lists the same."""

OnExists = Literal["fail", "reuse", "replace"]
ON_EXISTS: tuple[str, ...] = ("fail", "reuse", "replace")

_API_VERSION = re.compile(r"^v\d+[a-z0-9]*$")
_GONE_FILE = re.compile(r"access the File (?:files/)?([a-z0-9-]+)")

GENERATE_METHOD = "generateContent"
"""The API method a model must serve for ``generate_content`` (see :meth:`GeminiHook.check_model`)."""
BATCH_METHOD = "batchGenerateContent"
"""The API method a model must serve for a batch job (:meth:`GeminiHook.create_batch`)."""

_checked_models: set[tuple[str, ...]] = set()
_checked_models_lock = threading.Lock()
"""Models :meth:`GeminiHook.check_model` found, per endpoint, key and method: checked once per process."""


@dataclasses.dataclass(frozen=True)
class GeminiConnectionSettings:
    """What a ``gemini`` connection says, checked. ``api_key`` never shows in ``repr``."""

    conn_id: str
    api_key: str = dataclasses.field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    api_version: str = DEFAULT_API_VERSION
    timeout: float | None = None
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    upload_chunk_size: int = DEFAULT_UPLOAD_CHUNK_SIZE
    register_auth: str = policy.DEFAULT_REGISTER_AUTH
    prices: PriceTable = DEFAULT_PRICES
    ledger: str | None = None
    storage_quota_bytes: int = PROJECT_STORAGE_BYTES

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
                f"Use 'v1' or 'v1beta', or remove it for the default ({DEFAULT_API_VERSION})."
            )
        timeout = _optional_seconds(conn_id, "timeout", extra.get("timeout"))
        try:
            retry = RetryPolicy.from_connection_extra(extra)
        except ValueError as err:
            raise GeminiInputError(f"Gemini connection {conn_id!r}: {err}") from None
        chunk = _chunk_size(conn_id, extra.get("upload_chunk_size"))
        register_auth = _register_auth(conn_id, extra.get("register_auth"))
        try:
            prices = price_table_from_extra(extra.get("prices"))
        except GeminiInputError as err:
            raise GeminiInputError(f"Gemini connection {conn_id!r}: {err}") from None
        return cls(
            conn_id,
            api_key,
            base_url or DEFAULT_BASE_URL,
            api_version or DEFAULT_API_VERSION,
            timeout,
            retry,
            chunk,
            register_auth,
            prices,
            check_ledger_uri(extra.get("ledger"), conn_id=conn_id),
            _quota_bytes(conn_id, extra.get("storage_quota_bytes")),
        )

    def http_options(self) -> types.HttpOptions:
        """The SDK's HttpOptions: base URL, version and timeout (ms) from the connection.

        The SDK tries each request once: :meth:`GeminiHook.call_with_retries` retries, under the
        connection's retry policy (:mod:`airflow_gemini_files.hooks.retry`).
        """
        from google.genai import types

        return types.HttpOptions(
            base_url=self.base_url,
            api_version=self.api_version,
            timeout=int(self.timeout * 1000) if self.timeout else None,
            retry_options=RetryPolicy.sdk_options(),
        )


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _optional_seconds(conn_id: str, key: str, value: Any) -> float | None:
    try:
        seconds = number_extra(key, value, integer=False, example="120")
    except ValueError:
        seconds = -1.0
    if seconds is not None and not seconds > 0:
        raise GeminiInputError(
            f"Gemini connection {conn_id!r}: extra {key}={value!r} must be a positive number of seconds "
            "(e.g. 120), or removed for no limit."
        )
    return seconds


def _chunk_size(conn_id: str, value: Any) -> int:
    try:
        number = number_extra(
            "upload_chunk_size", value, integer=True, example=str(DEFAULT_UPLOAD_CHUNK_SIZE)
        )
    except ValueError:
        number = -1
    if number is None:
        return DEFAULT_UPLOAD_CHUNK_SIZE
    if number <= 0 or number % UPLOAD_CHUNK_QUANTUM:
        raise GeminiInputError(
            f"Gemini connection {conn_id!r}: extra upload_chunk_size={value!r} must be a positive multiple "
            f"of {UPLOAD_CHUNK_QUANTUM} bytes (256 KiB), e.g. {DEFAULT_UPLOAD_CHUNK_SIZE} (8 MiB, the "
            "default); remove it for the default."
        )
    return int(number)


def _quota_bytes(conn_id: str, value: Any) -> int:
    try:
        number = number_extra("storage_quota_bytes", value, integer=True, example=str(PROJECT_STORAGE_BYTES))
    except ValueError:
        number = -1
    if number is None:
        return PROJECT_STORAGE_BYTES
    if number <= 0:
        raise GeminiInputError(
            f"Gemini connection {conn_id!r}: extra storage_quota_bytes={value!r} must be a positive number "
            f"of bytes; remove it for the Files API's {PROJECT_STORAGE_BYTES} (20 GB)."
        )
    return int(number)


def _register_auth(conn_id: str, value: Any) -> str:
    mode = _optional_str(value)
    if mode is None:
        return policy.DEFAULT_REGISTER_AUTH
    if mode == "credentials_only":
        from google import genai

        raise GeminiInputError(
            f"Gemini connection {conn_id!r}: extra register_auth='credentials_only' cannot be used: "
            f"google-genai (installed: {genai.__version__}; likewise 1.66 to 3.6) builds no Gemini Developer "
            "API client without an API key ('No API key was provided'), so files:register cannot be sent "
            "with OAuth credentials alone. Use 'key_and_bearer' (the default) or 'key_only'."
        )
    if mode not in policy.REGISTER_AUTH_MODES:
        raise GeminiInputError(
            f"Gemini connection {conn_id!r}: extra register_auth={value!r} is not a registration mode. Use "
            "'key_and_bearer' (the API key plus the GCP identity's token, the default) or 'key_only' (the "
            "API key alone), or remove it for the default."
        )
    return mode


def validate_file_name(name: str) -> str:
    """Return ``files/<id>`` for a ``files/<id>`` or bare ``<id>`` the Files API accepts, else raise."""
    try:
        return normalize_file_name(name)
    except (TypeError, ValueError) as err:
        raise GeminiInputError(str(err)) from None


class GeminiHook(BaseHook):
    """
    Gemini API Files API (upload, register GCS objects, get, list, delete, wait) and generateContent.

    The connection (type ``gemini``) holds the API key in its password; optional extras: ``base_url``,
    ``api_version``, ``timeout`` (seconds), ``retry_attempts``, ``retry_initial_delay``,
    ``retry_max_delay``, ``retry_max_total_wait`` (seconds), ``upload_chunk_size`` (bytes),
    ``register_auth`` (``key_and_bearer`` or ``key_only``). One ``genai.Client`` is built per hook and
    per process (a forked worker builds its own, never sharing pooled connections with its parent); every
    call through it is retried by :meth:`call_with_retries`, which honours the server's ``RetryInfo`` and
    ``Retry-After``. ``gcp_conn_id`` names the GCP connection used to read ``gs://`` objects and to
    register them (see :mod:`airflow_gemini_files.hooks.gcs`); one storage client per hook.

    ``sleep`` and ``async_sleep`` are how the hook waits between tries; tests replace them on an instance
    to record the waits instead of sleeping.

    :param gemini_conn_id: the Gemini connection id.
    :param gcp_conn_id: the GCP connection id (default: ``google_cloud_default`` if defined, else ADC).
    """

    conn_name_attr = "gemini_conn_id"
    default_conn_name = "gemini_default"
    conn_type = "gemini"
    hook_name = "Gemini API (Files)"

    def __init__(self, gemini_conn_id: str = default_conn_name, gcp_conn_id: str | None = None) -> None:
        super().__init__()
        self.gemini_conn_id = gemini_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.sleep: Callable[[float], Any] = time.sleep
        self.async_sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

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
        """The checked connection settings (API key, base URL, version, timeout, retries, chunk size)."""
        try:
            conn = self.get_connection(self.gemini_conn_id)
        except AirflowNotFoundException:
            raise self._missing_connection() from None
        return self._settings_from(conn)

    def _build_client(self, settings: GeminiConnectionSettings) -> genai.Client:
        from google import genai

        return genai.Client(api_key=settings.api_key, vertexai=False, http_options=settings.http_options())

    @process_cached_property
    def client(self) -> genai.Client:
        """The ``genai.Client`` for this hook's connection (built once per process, with retries)."""
        return self._build_client(self.settings)

    def get_conn(self) -> genai.Client:
        """The ``genai.Client`` (Airflow's generic hook accessor)."""
        return self.client

    async def aget_client(self) -> Any:
        """The SDK's async client (``client.aio``) for triggers, reading the connection without blocking."""
        if GeminiHook.client.cached(self) is None:
            try:
                conn = await self.aget_connection(self.gemini_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            self.client = self._build_client(self._settings_from(conn))
        return self.client.aio

    @cached_property
    def gcp_access(self) -> gcs.GcpAccess:
        """The GCP identity of ``gcp_conn_id`` (see :mod:`airflow_gemini_files.hooks.gcs`)."""
        return gcs.gcp_access(self.gcp_conn_id)

    @process_cached_property
    def storage_client(self) -> storage.Client:
        """The ``google.cloud.storage.Client`` of this hook (one per hook): reads, listings, your writes."""
        return gcs.storage_client(self.gcp_access)

    @property
    def prices(self) -> PriceTable:
        """The price table: the defaults (:mod:`airflow_gemini_files.pricing`) with the connection's extra
        ``prices`` applied."""
        return self.settings.prices

    @cached_property
    def ledger(self) -> Ledger | None:
        """The ledger the connection's extra ``ledger`` names (see :mod:`airflow_gemini_files.ledger`)."""
        uri = self.settings.ledger
        return open_ledger(uri, lambda: self.storage_client) if uri else None

    def require_ledger(self, what: str) -> Ledger:
        """:attr:`ledger`, or an error saying that ``what`` needs one and how to set it."""
        if self.ledger is None:
            raise GeminiInputError(
                f"{what} needs a ledger every worker can reach, and Gemini connection "
                f"{self.gemini_conn_id!r} names none: set its extra 'ledger' to a GCS prefix such as "
                "'gs://my-bucket/gemini-ledger/' (or, with every worker on one machine, a directory)."
            )
        return self.ledger

    @cached_property
    def gcp_credentials(self) -> Credentials:
        """GCP credentials sent to ``files:register`` (with ``register_auth='key_and_bearer'``)."""
        return self.gcp_access.register_credentials()

    # Retries -----------------------------------------------------------------------------------------
    def call_with_retries(
        self, fn: Callable[..., T], /, *args: Any, what: str, idempotent: bool = True, **kwargs: Any
    ) -> T:
        """
        ``fn(*args, **kwargs)``, an SDK call, retried as the connection's retry policy says.

        Retried: 408, 429 (except a full storage quota), 5xx and dropped connections
        (:func:`~airflow_gemini_files.hooks.policy.is_transient`). Each retry waits the backoff, or what
        the server asked for when that is longer (``RetryInfo.retryDelay``, else ``Retry-After``); the call
        gives up when its attempts are used or its waits would pass ``retry_max_total_wait`` (see
        :mod:`airflow_gemini_files.hooks.retry`). Pass ``idempotent=False`` for a call that creates
        something (files:register, a batch job): it is then repeated only after a 429 or a connection
        never opened, never after a 5xx or timeout that may have come after the work was done. The last
        error is raised as the SDK raised it: call it inside ``self._api(...)`` to get this provider's
        errors. ``what`` names the call in the log.
        """
        return call_with_retries(
            lambda: fn(*args, **kwargs),
            policy=self.settings.retry,
            what=what,
            sleep=self.sleep,
            idempotent=idempotent,
        )

    async def acall_with_retries(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        what: str,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> T:
        """:meth:`call_with_retries` for the async client (``await self.aget_client()`` first)."""
        return await acall_with_retries(
            lambda: fn(*args, **kwargs),
            policy=self.settings.retry,
            what=what,
            sleep=self.async_sleep,
            idempotent=idempotent,
        )

    def paged_with_retries(
        self, list_method: Callable[..., Any], *, config: dict[str, Any], what: str
    ) -> Iterator[Any]:
        """Every item of an SDK ``list`` call (``client.files.list``, ``client.models.list``, ...).

        Pages are fetched one at a time, each through :meth:`call_with_retries` with ``config`` (which
        should hold a ``page_size``) and the previous page's token.
        """
        config = dict(config)
        while True:
            pager = self.call_with_retries(list_method, config=config, what=what)
            yield from pager.page
            token = pager.config.get("page_token")
            if not token:
                return
            config = {**config, "page_token": token}

    # Errors ------------------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        settings = self.__dict__.get("settings")
        return text.replace(settings.api_key, "***") if settings is not None else text

    def _where(self) -> str:
        settings = self.__dict__.get("settings")
        url = settings.base_url if settings is not None else "the Gemini API"
        return f"{url} (connection {self.gemini_conn_id!r})"

    @contextlib.contextmanager
    def _api(
        self,
        *,
        file: GeminiFileRef | None = None,
        model: str | None = None,
        name: str | None = None,
        job: str | None = None,
        refused: str = "",
        network: bool = True,
    ) -> Iterator[None]:
        """Turn what the SDK raises inside the block into this provider's errors (see :meth:`_raise_api`).

        With ``network``, a connection failure becomes a :class:`GeminiConnectionError` naming the URL.
        """
        from google.genai import errors

        try:
            yield
        except errors.APIError as err:
            self._raise_api(err, file=file, model=model, name=name, job=job, refused=refused)
        except policy.NETWORK_ERRORS as err:
            if not network:
                raise
            raise self._unreachable(err) from err

    def _unreachable(self, err: BaseException) -> GeminiConnectionError:
        return GeminiConnectionError(
            f"Cannot reach the Gemini API at {self._where()}: {type(err).__name__}: "
            f"{printable(self._redact(str(err)))[:300]}. Check the connection's base_url extra (leave it "
            "empty for the Gemini API; is the emulator or proxy running?) and the worker's network."
        )

    def _raise_api(
        self,
        err: errors.APIError,
        *,
        file: GeminiFileRef | None = None,
        model: str | None = None,
        name: str | None = None,
        job: str | None = None,
        refused: str = "",
    ) -> NoReturn:
        """Raise the provider error for an SDK error answer (or the SDK's own, when it is transient)."""
        problem = policy.classify_api_error(
            err, about_file=file is not None, about_model=model is not None, about_job=job is not None
        )
        message = printable(self._redact(str(err.message or "")))
        status = f"{err.code} {err.status or ''}".strip()
        if problem is ApiProblem.AUTH_REFUSED:
            refusal = policy.register_auth_refusal(err)
            assert refusal is not None
            mode = self.settings.register_auth
            raise GeminiInputError(
                f"Gemini refused the authentication of files:register with register_auth={mode!r} "
                f"(connection {self.gemini_conn_id!r}, gcp_conn_id={self.gcp_conn_id!r}; {status}: "
                f"{message}). {policy.register_auth_advice(refusal, mode)}"
            ) from err
        if problem is ApiProblem.BAD_KEY:
            raise GeminiInputError(
                f"Gemini rejected the API key of connection {self.gemini_conn_id!r} ({status}: {message}). "
                "Put a valid key from https://aistudio.google.com/apikey in its password."
            ) from err
        if problem is ApiProblem.FILE_GONE:
            gone = file or _gone_file(message)
            if gone is not None:
                raise policy.gone_error(gone) from err
        if problem is ApiProblem.MODEL_NOT_FOUND:
            raise self._unknown_model(str(model), GENERATE_METHOD, answer=message) from err
        if problem is ApiProblem.QUOTA_FULL:
            raise GeminiFilesError(
                f"The Gemini project's file storage quota is full ({message}). Delete files that are no "
                "longer needed (GeminiDeleteFilesOperator or GeminiHook.delete_file) or wait for them to "
                "expire (uploads live 48 hours), then retry. Registered GCS objects use none of the 20 GB."
            ) from err
        if problem is ApiProblem.JOB_GONE:
            raise GeminiBatchJobGoneError(
                f"Batch job {job} does not exist ({status}: {message}): it was deleted, or it was created "
                "with another API key (jobs belong to the key's project).",
                job_name=job,
            ) from err
        if problem is ApiProblem.JOB_STATE:
            raise GeminiBatchJobError(
                f"Gemini refused the request for batch job {job} in its current state ({status}: {message})."
                f"{refused}",
                job_name=job,
            ) from err
        if problem is ApiProblem.NOT_ACTIVE:
            raise GeminiFileNotUsableError(
                f"Gemini refused the request: {message}. Wait until every file is ACTIVE "
                "(GeminiFileActiveSensor or GeminiHook.wait_for_active) before generating."
            ) from err
        if problem is ApiProblem.NAME_TAKEN:
            raise GeminiFileExistsError(
                f"A Gemini file named {name or 'as requested'} already exists ({message}). Choose another "
                "name, delete it first, or pass on_exists='reuse' (reuse it when it holds the same bytes) "
                "or on_exists='replace'.",
                file_name=name,
            ) from err
        if problem in (ApiProblem.REFUSED, ApiProblem.FILE_GONE):
            raise GeminiInputError(f"Gemini refused the request ({status}: {message}).{refused}") from err
        raise err  # transient (after the SDK's own retries) or unknown: Airflow's retries may help

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

    # GCS ---------------------------------------------------------------------------------------------
    def list_gcs_objects(
        self, bucket: str, prefix: str | None = None, match_glob: str | None = None
    ) -> list[str]:
        """The ``gs://`` URIs under ``gs://bucket/prefix`` matching ``match_glob`` (GCS glob), sorted."""
        return gcs.list_objects(self.storage_client, bucket, prefix, match_glob)

    def source_size(self, source: str | os.PathLike[str]) -> int:
        """The size in bytes of a local file or a ``gs://`` object (its metadata only; nothing is read)."""
        text = os.fspath(source)
        if is_gs_uri(text):  # also a malformed "gs:/..." one: get_blob names it and the fix
            size = gcs.get_blob(self.storage_client, str(text)).size
            return int(size or 0)
        return os.path.getsize(text)

    # Upload ------------------------------------------------------------------------------------------
    def upload_file(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        mime_type: str | None = None,
        display_name: str | None = None,
        name: str | None = None,
        size: int | None = None,
        on_exists: OnExists = "fail",
    ) -> GeminiFileRef:
        """
        Upload a local path, a ``gs://bucket/object`` (streamed, never written to disk) or a binary stream.

        MIME type: ``mime_type``, else the GCS object's content type, else sniffed from the name and the
        first bytes; a stream needs ``mime_type``. ``display_name`` defaults to the base name. ``size`` is
        the number of bytes to read from a stream (needed when it cannot seek).

        ``name`` (``files/<id>`` or ``<id>``) chooses the file's name. When it is taken, ``on_exists``
        decides: ``"fail"`` raises :class:`~airflow_gemini_files.exceptions.GeminiFileExistsError`;
        ``"reuse"`` returns the existing file when it is usable and provably holds the source's bytes
        (same size and SHA-256; see :func:`~airflow_gemini_files.hooks.policy.reuse_refusal`), else
        replaces it, saying why; ``"replace"`` deletes it and uploads again.
        """
        file_name = validate_file_name(name) if name is not None else None
        if display_name is not None:
            check_display_name(display_name)
        if on_exists not in ON_EXISTS:
            raise GeminiInputError(
                f"on_exists={on_exists!r} must be one of {', '.join(map(repr, ON_EXISTS))}."
            )
        source_ = open_source(
            source,
            size=size,
            mime_type=mime_type,
            storage=lambda: self.storage_client,
            chunk_size=self.settings.upload_chunk_size,
            retry=self.settings.retry,
        )
        resolved = resolve_mime_type(
            source=source_.source_uri or source_.name,
            explicit=mime_type,
            stored=source_.stored_type,
            head=source_.head,
        )
        display = display_name or source_.display_name
        try:
            return self._send(source_, mime_type=resolved, display_name=display, name=file_name)
        except GeminiFileExistsError:
            if on_exists == "fail" or file_name is None:
                raise
        existing = self._existing(file_name)
        if existing is not None:
            why = "on_exists='replace'"
            if on_exists == "reuse":
                refusal = policy.reuse_refusal(existing, size=source_.size, source_sha256=source_.sha256)
                if refusal is None:
                    log.info("Reusing %s: it holds the same bytes as %s.", file_name, source_.name)
                    return dataclasses.replace(existing, source_uri=source_.source_uri)
                why = refusal
            log.info("Replacing %s (%s): %s.", file_name, existing.state, why)
            self.delete_file(existing)
        return self._send(source_, mime_type=resolved, display_name=display, name=file_name)

    def _existing(self, file_name: str) -> GeminiFileRef | None:
        try:
            return self.get_file(file_name)
        except GeminiFileNotUsableError:
            return None

    @process_cached_property
    def _upload_http(self) -> httpx.Client:
        """One httpx client for every upload (and streamed download) of this hook (not one per file)."""
        import httpx

        return httpx.Client(headers={"user-agent": "airflow-gemini-files"})

    def _send(
        self, source: UploadSource, *, mime_type: str, display_name: str | None, name: str | None
    ) -> GeminiFileRef:
        from airflow_gemini_files.hooks.upload import ResumableUpload, ResumableUploadError

        settings = self.settings
        uploader = ResumableUpload(
            base_url=settings.base_url,
            api_version=settings.api_version,
            api_key=settings.api_key,
            retry=settings.retry,
            chunk_size=settings.upload_chunk_size,
            timeout=settings.timeout,
            http=self._upload_http,
            sleep=self.sleep,
        )
        log.info("Uploading %s (%d bytes, %s) to Gemini.", source.name, source.size, mime_type)
        try:
            # Not network=True: a connection failure here may be GCS's (reading the source), not Gemini's.
            with self._api(name=name, network=False), source.open() as stream:
                file = uploader.upload(
                    stream,
                    size=source.size,
                    mime_type=mime_type,
                    display_name=display_name,
                    name=name,
                    source_name=source.name,
                )
        except ResumableUploadError as err:  # its cause is always the Gemini side's
            if err.__cause__ is not None and policy.is_network_error(err.__cause__):
                raise self._unreachable(err.__cause__) from err
            raise
        ref = GeminiFileRef.from_file(file, source_uri=source.source_uri)
        log.info("Uploaded %s as %s (%s).", source.name, ref.name, ref.state)
        self._record_lineage(source.source_uri, ref)
        return ref

    # Register ----------------------------------------------------------------------------------------
    def register_gcs_files(self, uris: Sequence[str], *, batch_size: int = 100) -> list[GeminiFileRef]:
        """
        Register ``gs://`` objects with Gemini (no bytes pass through the worker), ``batch_size`` per call.

        Returns one ref per distinct URI, in the given order, with ``source_uri`` set. An empty object is
        refused as an upload would refuse it. If anything fails, the files registered so far are deleted
        again before the error is raised. A registration gives access for up to 30 days (each ref's
        ``expiration_time`` says until when) and uses none of the 20 GB upload quota.

        How the call authenticates is the connection's ``register_auth``: ``key_and_bearer`` (default)
        sends the API key plus an OAuth token of ``gcp_conn_id``, the identity Gemini reads the objects
        with; ``key_only`` sends the API key alone (Gemini reads as the key's project). When Gemini refuses
        the one, the error says which setting to try.
        """
        if isinstance(uris, str):
            uris = [uris]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise GeminiInputError(f"batch_size must be a positive integer (e.g. 100), got {batch_size!r}.")
        ordered = list(dict.fromkeys(u.strip() if isinstance(u, str) else u for u in uris))
        if len(ordered) < len(uris):
            log.info("Ignoring %d duplicate URI(s) in the register list.", len(uris) - len(ordered))
        for uri in ordered:
            parse_gs_uri(uri)
        if not ordered:
            return []
        credentials = self.gcp_credentials if self.settings.register_auth == "key_and_bearer" else None
        refs: list[GeminiFileRef] = []
        try:
            for start in range(0, len(ordered), batch_size):
                batch = ordered[start : start + batch_size]
                registered = self._register_batch(credentials, batch)
                refs.extend(registered)
                for ref in registered:
                    policy.check_source_size(ref.size_bytes, ref.source_uri or ref.name)
                log.info("Registered %d of %d GCS objects with Gemini.", len(refs), len(ordered))
        except BaseException:
            self.delete_files_quietly(refs)
            raise
        for ref in refs:
            self._record_lineage(ref.source_uri, ref)
        return refs

    def _register_batch(self, credentials: Credentials | None, batch: list[str]) -> list[GeminiFileRef]:
        """One ``files:register`` call: the key plus the ``credentials``' token, or (None) the key alone."""
        from google.auth.exceptions import GoogleAuthError

        shown = ", ".join(batch[:3]) + (f" and {len(batch) - 3} more" if len(batch) > 3 else "")
        reader = (
            f"the GCP identity (gcp_conn_id={self.gcp_conn_id!r})"
            if credentials is not None
            else "the API key's project's Gemini API service agent (register_auth='key_only')"
        )
        refused = (
            f" Gemini could not register {printable(shown)}: the objects must exist and {reader} needs "
            "'Storage Object Viewer' on the bucket."
        )
        # Each registration creates files Gemini names (they last up to 30 days): not repeated after a
        # failure that may have come after the work was done.
        what = f"files.register ({len(batch)} URIs)"
        # A registration creates files Gemini names (kept up to 30 days): idempotent=False repeats it only
        # after a failure that proves nothing happened.
        try:
            with self._api(refused=refused):
                if credentials is None:
                    # The SDK's public register_files always adds a bearer token (google-genai 1.66 to
                    # 3.6); its _register_files sends the client's API key alone (python-genai #2535).
                    response = self.call_with_retries(
                        self.client.files._register_files, uris=batch, what=what, idempotent=False
                    )
                else:
                    response = self.call_with_retries(
                        self.client.files.register_files,
                        auth=credentials,
                        uris=batch,
                        what=what,
                        idempotent=False,
                    )
        except GoogleAuthError as err:
            raise GeminiInputError(
                "Could not get a GCP access token to register GCS objects "
                f"({type(err).__name__}). Check the credentials: gcp_conn_id={self.gcp_conn_id!r} "
                "(a service-account key) or Application Default Credentials."
            ) from None
        finally:
            token = getattr(credentials, "token", None) if credentials is not None else None
            if token and token != gcs.ANONYMOUS_TOKEN:
                from airflow.sdk.log import mask_secret

                mask_secret(token)
        files = list(response.files or [])
        if len(files) != len(batch):
            raise GeminiFilesError(
                f"Gemini registered {len(files)} files for {len(batch)} URIs ({batch[0]}...); expected one "
                "per URI. Retry the task; if it persists, register fewer objects per call (batch_size)."
            )
        return [GeminiFileRef.from_file(f, source_uri=uri) for f, uri in zip(files, batch, strict=True)]

    # Get / list / delete -----------------------------------------------------------------------------
    def get_file(self, file: GeminiFileRef | str | dict[str, Any]) -> GeminiFileRef:
        """The current state of a file; :class:`~..exceptions.GeminiFileGoneError` if it is gone (403/404)."""
        ref = self._coerce(file)
        with self._api(file=ref):
            fresh = self.call_with_retries(self.client.files.get, name=ref.name, what=f"files.get {ref.name}")
        return GeminiFileRef.from_file(fresh, source_uri=ref.source_uri)

    async def aget_file(self, file: GeminiFileRef | str | dict[str, Any]) -> GeminiFileRef:
        """Async :meth:`get_file` (for triggers): never blocks the event loop."""
        ref = self._coerce(file)
        client = await self.aget_client()
        with self._api(file=ref):
            fresh = await self.acall_with_retries(
                client.files.get, name=ref.name, what=f"files.get {ref.name}"
            )
        return GeminiFileRef.from_file(fresh, source_uri=ref.source_uri)

    def list_files(self, page_size: int = 100) -> Iterator[GeminiFileRef]:
        """Every file of the project, fetching ``page_size`` (1 to 100) per request."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise GeminiInputError(f"page_size must be an integer from 1 to 100, got {page_size!r}.")
        return self._iter_files(page_size)

    def _iter_files(self, page_size: int) -> Iterator[GeminiFileRef]:
        with self._api():
            for file in self.paged_with_retries(
                self.client.files.list, config={"page_size": page_size}, what="files.list"
            ):
                yield GeminiFileRef.from_file(file)

    def files_usage(self) -> FilesUsage:
        """
        The project's Files API storage: uploaded bytes against the quota (the connection's extra
        ``storage_quota_bytes``, default 20 GB), and bytes and files by state and by who created them
        (this provider's uploads by run prefix, registered files, generated files, other uploads), with
        the biggest holders. One ``files.list`` page per 100 files.
        """
        return files_usage(self.list_files(), quota_bytes=self.settings.storage_quota_bytes)

    async def afiles_usage(self) -> FilesUsage:
        """Async :meth:`files_usage` (for triggers): never blocks the event loop."""
        client = await self.aget_client()
        refs: list[GeminiFileRef] = []
        config: dict[str, Any] = {"page_size": 100}
        with self._api():
            while True:
                pager = await self.acall_with_retries(client.files.list, config=config, what="files.list")
                refs.extend(GeminiFileRef.from_file(file) for file in pager.page)
                token = pager.config.get("page_token")
                if not token:
                    break
                config = {**config, "page_token": token}
        return files_usage(refs, quota_bytes=self.settings.storage_quota_bytes)

    def delete_file(self, file: GeminiFileRef | str | dict[str, Any]) -> bool:
        """Delete a file; False (and a log line) when it was already gone (403/404)."""
        ref = self._coerce(file)
        try:
            with self._api(file=ref):
                self.call_with_retries(
                    self.client.files.delete, name=ref.name, what=f"files.delete {ref.name}"
                )
        except GeminiFileNotUsableError:
            log.info("Gemini file %s was already gone: nothing to delete.", policy.describe(ref))
            return False
        log.info("Deleted Gemini file %s.", policy.describe(ref))
        return True

    def delete_files_quietly(self, files: Iterable[GeminiFileRef | str | dict[str, Any]]) -> list[str]:
        """Best-effort rollback: delete each file, log (never raise) what could not be; the names deleted."""
        deleted: list[str] = []
        for file in files:
            try:
                if self.delete_file(file):
                    deleted.append(self._coerce(file).name)
            except Exception as err:
                log.warning("Could not delete %s while rolling back: %s", file, printable(err))
        if deleted:
            log.info("Rolled back: deleted %d file(s).", len(deleted))
        return deleted

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
        max_poll_interval: float = policy.MAX_POLL_INTERVAL,
    ) -> list[GeminiFileRef]:
        """
        Poll until every file is ACTIVE and return the refreshed refs (same order, duplicates once).

        The interval starts at ``poll_interval`` and grows 1.5x while nothing changes, up to
        ``max_poll_interval``. How the wait ends (a FAILED, expired or vanished file, an error no poll can
        fix, too many failed polls in a row, the timeout) is decided by
        :class:`~airflow_gemini_files.hooks.policy.ActiveWait`, as for the sensor in every mode.
        """
        if not timeout > 0 or not poll_interval > 0:
            raise GeminiInputError(
                f"timeout ({timeout!r}) and poll_interval ({poll_interval!r}) must be positive seconds."
            )
        try:
            refs = GeminiFileRef.coerce_many(files)
        except (ValueError, TypeError) as err:
            raise GeminiInputError(f"files: {err}") from None
        wait = ActiveWait(refs)
        schedule = PollSchedule(poll_interval, cap=max_poll_interval)
        deadline = time.monotonic() + timeout
        while True:
            progressed = wait.record({ref.name: self._answer(ref) for ref in wait.pending})
            if wait.done:
                return wait.result()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise wait.timeout_error(timeout)
            pause = min(schedule.next(progressed), remaining)
            log.info("%s; next check in %.1f s.", wait.progress(), pause)
            time.sleep(pause)

    def _answer(self, ref: GeminiFileRef) -> GeminiFileRef | BaseException:
        try:
            return self.get_file(ref)
        except Exception as err:
            return err

    # Models ------------------------------------------------------------------------------------------
    def check_model(self, model: str, *, method: str = GENERATE_METHOD) -> str:
        """
        Check that ``model`` exists and serves ``method`` before any work is done; return its id.

        One ``models.get`` per model, endpoint, API key and method in this process: a model found once is
        not asked about again. An unknown model raises
        :class:`~airflow_gemini_files.exceptions.GeminiInputError` (not retried) naming the close model
        names (from ``models.list``); a model that does not serve
        ``method`` (e.g. ``"batchGenerateContent"``) raises naming what it serves. A rejected key raises as
        every call does. When the check itself cannot be made (a transient error after the retries, an
        unreachable API), it logs a warning and returns: the call that follows tells what is wrong.

        :param model: ``gemini-2.5-flash`` or ``models/gemini-2.5-flash``.
        :param method: the API method the caller will use, as ``Model.supported_actions`` names it.
        """
        if not isinstance(model, str) or not model.strip():
            raise GeminiInputError(f"model {model!r} must be a model id such as 'gemini-2.5-flash'.")
        model_id = model.strip().removeprefix("models/")
        if "/" in model_id:  # tunedModels/... and other namespaces: not in the models catalogue
            return model_id
        settings = self.settings
        fingerprint = hashlib.sha256(settings.api_key.encode()).hexdigest()[:16]
        key = (settings.base_url, settings.api_version, fingerprint, model_id, method)
        if key in _checked_models:
            return model_id
        from google.genai import errors

        try:
            found = self.call_with_retries(
                self.client.models.get, model=model_id, what=f"models.get {model_id}"
            )
        except errors.APIError as err:
            problem = policy.classify_api_error(err, about_model=True)
            if problem is ApiProblem.MODEL_NOT_FOUND:
                raise self._unknown_model(model_id, method) from err
            if problem not in (ApiProblem.TRANSIENT, ApiProblem.OTHER):
                self._raise_api(err, model=model_id)
            log.warning("Could not check model %r (%s %s); going on without.", model_id, err.code, err.status)
            return model_id
        except policy.NETWORK_ERRORS as err:
            log.warning("Could not check model %r (%s); going on without.", model_id, type(err).__name__)
            return model_id
        actions = list(found.supported_actions or [])
        if actions and method not in actions:
            raise GeminiInputError(
                f"Gemini model {model_id!r} does not serve {method} (it serves {', '.join(actions)}). "
                f"{self._model_suggestions(model_id, method)}"
            )
        with _checked_models_lock:
            _checked_models.add(key)
        return model_id

    def _unknown_model(self, model_id: str, method: str, *, answer: str = "") -> GeminiInputError:
        """The error for a model name Gemini does not know, naming the close names it does know."""
        said = f" ({answer})" if answer else ""
        return GeminiInputError(
            f"Gemini model {model_id!r} was not found at {self._where()}{said}. "
            f"{self._model_suggestions(model_id, method)}"
        )

    def _model_suggestions(self, model_id: str, method: str) -> str:
        """``Did you mean ...?`` from ``models.list`` (models serving ``method``), or a generic hint."""
        hint = "Use a model id such as 'gemini-2.5-flash' (client.models.list() lists them)."
        try:
            with self._api():
                names = [
                    str(found.name).removeprefix("models/")
                    for found in self.paged_with_retries(
                        self.client.models.list, config={"page_size": 1000}, what="models.list"
                    )
                    if found.name and (not found.supported_actions or method in found.supported_actions)
                ]
        except Exception as err:  # the suggestions are a courtesy: the error stands without them
            log.debug("Could not list models for suggestions: %s", printable(err))
            return hint
        close = difflib.get_close_matches(model_id, names, n=5, cutoff=0.6)
        if close:
            return f"Did you mean {' or '.join(repr(name) for name in close)}? {hint}"
        if names:
            shown = ", ".join(repr(name) for name in sorted(names)[:10])
            return f"No served model has a close name; models serving {method} include {shown}. {hint}"
        return hint

    # Generate ----------------------------------------------------------------------------------------
    def generate_content(
        self,
        *,
        model: str,
        contents: Sequence[Any] | Any,
        config: dict[str, Any] | types.GenerateContentConfig | None = None,
    ) -> types.GenerateContentResponse:
        """Call ``models.generateContent``; GeminiFileRef items in ``contents`` become file parts."""
        model, parts = _model_and_parts(model, contents, to="generate from")
        refused = f" Check the request for model {model!r}{_config_summary(config)}."
        with self._api(model=model, refused=refused):
            return self.call_with_retries(
                self.client.models.generate_content,
                model=model,
                contents=parts,
                config=config,
                what=f"generateContent ({model})",
            )

    def count_tokens(self, *, model: str, contents: Sequence[Any] | Any) -> int:
        """
        ``models.countTokens`` for ``contents`` (GeminiFileRef items become file parts): the input tokens
        a ``generate_content`` with the same contents is billed for. The Gemini Developer API counts the
        contents only: put a system instruction in ``contents`` as text to count it too.
        """
        model, parts = _model_and_parts(model, contents, to="count")
        with self._api(model=model):
            response = self.call_with_retries(
                self.client.models.count_tokens,
                model=model,
                contents=parts,
                what=f"countTokens ({model})",
            )
        return int(response.total_tokens or 0)

    # Connection test ---------------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """List one page of files; ``(False, reason)`` on a bad key or unreachable API (key never shown)."""
        from google.genai import errors

        try:
            with self._api():
                pager = self.call_with_retries(
                    self.client.files.list, config={"page_size": 1}, what="files.list"
                )
                count = len(pager.page)
        except errors.APIError as err:
            return False, self._redact(f"{err.code} {err.message}")
        except Exception as err:
            return False, self._redact(str(err) if isinstance(err, GeminiFilesError) else f"{err!r}")
        return (
            True,
            f"Connected to the Gemini Files API at {self.settings.base_url} ({count} file(s) on the first "
            "page).",
        )

    # Batch API ---------------------------------------------------------------------------------------
    # Jobs go through the SDK's client.batches.*; results files through client.files.download where the
    # SDK streams them (google-genai >= 2.21), else through _stream_download (older SDKs read the whole
    # file into memory). Which job state means what is policy.job_verdict's decision. Every call goes
    # through call_with_retries; creating a job is not idempotent (a retried create after a 5xx could
    # make a second paid job), so the operator re-attaches to its job by display name instead.
    def batch_request(
        self, *, contents: Sequence[Any], config: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """
        One ``GenerateContentRequest`` as a line of a batch's JSONL input wants it (REST JSON).

        ``contents`` and ``config`` are what :meth:`generate_content` takes (refs become file parts). The
        SDK turns them into REST JSON only inside ``batches.create``; its own converter is used here so a
        request reads the same whether it is sent inline or in a file (the SDK has no public one; tested
        against every supported google-genai).
        """
        from google.genai import _common
        from google.genai import batches as sdk_batches

        parts = [item.to_part() if isinstance(item, GeminiFileRef) else item for item in contents]
        line = sdk_batches._InlinedRequest_to_mldev(
            self.client._api_client, {"contents": parts, "config": dict(config or {}) or None}
        )
        request = _common.encode_unserializable_types(_common.convert_to_dict(line["request"]))
        return dict(request)

    def create_batch(
        self, *, model: str, src: str | Sequence[Mapping[str, Any]], display_name: str
    ) -> types.BatchJob:
        """
        Create a batch job: ``src`` is a JSONL input file (``files/<id>``, one ``{"key", "request"}`` per
        line) or a list of inline requests (``{"contents", "config", "metadata"}``).
        """
        from google.genai import types

        check_display_name(display_name)
        source: Any = src if isinstance(src, str) else list(src)
        what = f"input file {src}" if isinstance(src, str) else f"{len(source)} inline request(s)"
        refused = f" Check the batch's requests ({what}) for model {model!r}."
        with self._api(model=model, refused=refused):
            job = self.call_with_retries(
                self.client.batches.create,
                model=model,
                src=source,
                config=types.CreateBatchJobConfig(display_name=display_name),
                what=f"batches.create {display_name}",
                idempotent=False,
            )
        log.info("Created batch job %s (%s, %s) for %s.", job.name, display_name, what, model)
        return job

    def get_batch(self, name: str) -> types.BatchJob:
        """The batch job now; :class:`~..exceptions.GeminiBatchJobGoneError` when it does not exist."""
        job_name = batch_job_name(name)
        with self._api(job=job_name):
            return self.call_with_retries(
                self.client.batches.get, name=job_name, what=f"batches.get {job_name}"
            )

    async def aget_batch(self, name: str) -> types.BatchJob:
        """Async :meth:`get_batch` (for triggers): never blocks the event loop."""
        job_name = batch_job_name(name)
        client = await self.aget_client()
        with self._api(job=job_name):
            return await self.acall_with_retries(
                client.batches.get, name=job_name, what=f"batches.get {job_name}"
            )

    def list_batches(self, page_size: int = 100) -> Iterator[types.BatchJob]:
        """Every batch job of the project (newest first), ``page_size`` (1 to 100) per request.

        The page size is always sent: without it the API answered an empty page (python-genai#1250).
        """
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise GeminiInputError(f"page_size must be an integer from 1 to 100, got {page_size!r}.")
        return self._iter_batches(page_size)

    def _iter_batches(self, page_size: int) -> Iterator[types.BatchJob]:
        with self._api():
            yield from self.paged_with_retries(
                self.client.batches.list, config={"page_size": page_size}, what="batches.list"
            )

    def cancel_batch(self, name: str) -> bool:
        """Cancel an unfinished job; False (and a log line) when it had already ended or is gone."""
        job_name = batch_job_name(name)
        try:
            with self._api(job=job_name):
                self.call_with_retries(
                    self.client.batches.cancel, name=job_name, what=f"batches.cancel {job_name}"
                )
        except GeminiBatchJobError as err:  # ended already (FAILED_PRECONDITION) or gone
            log.info("Did not cancel batch job %s: %s", job_name, err)
            return False
        log.info("Cancelled batch job %s.", job_name)
        return True

    async def acancel_batch(self, name: str) -> bool:
        """Async :meth:`cancel_batch` (for a trigger's ``on_kill``)."""
        job_name = batch_job_name(name)
        client = await self.aget_client()
        try:
            with self._api(job=job_name):
                await self.acall_with_retries(
                    client.batches.cancel, name=job_name, what=f"batches.cancel {job_name}"
                )
        except GeminiBatchJobError as err:
            log.info("Did not cancel batch job %s: %s", job_name, err)
            return False
        log.info("Cancelled batch job %s.", job_name)
        return True

    def end_batch(self, name: str, *, wait: float | None = None) -> types.BatchJob:
        """The job once it has ended: cancelled first when it still runs, then checked until it has
        ended (up to ``wait`` seconds, default :data:`~.policy.JOB_END_WAIT`, else a GeminiBatchJobError
        saying it still runs)."""
        wait = policy.JOB_END_WAIT if wait is None else wait
        job_name = batch_job_name(name)
        job = self.get_batch(job_name)
        if policy.job_verdict(job.state).finished:
            return job
        self.cancel_batch(job_name)
        deadline = time.monotonic() + wait
        schedule = PollSchedule(0.5, cap=5.0)
        while True:
            job = self.get_batch(job_name)
            if policy.job_verdict(job.state).finished:
                return job
            if time.monotonic() >= deadline:
                raise GeminiBatchJobError(
                    f"Batch job {job_name} is still {policy.job_state_name(job.state)} {wait:g} s after it "
                    "was cancelled, so it was not deleted (it may still read its documents' files). Run the "
                    "cleanup again later, or cancel it in AI Studio.",
                    job_name=job_name,
                    state=policy.job_state_name(job.state),
                )
            self.sleep(min(schedule.next(False), max(0.0, deadline - time.monotonic())))

    def delete_batch(self, name: str, *, with_results: bool = True) -> bool:
        """
        Remove a batch job and (``with_results``) its results file; False when the job was already gone.

        An unfinished job is cancelled first and deleted once it has ended (:meth:`end_batch`): deleting
        does not cancel, and a deleted job's results file stays until deleted too (the ledger, B13-B14).
        The results file goes first, so a task killed in between still finds it through the job.
        """
        job_name = batch_job_name(name)
        try:
            job = self.end_batch(job_name)
        except GeminiBatchJobGoneError:
            log.info("Batch job %s was already gone: nothing to delete.", job_name)
            return False
        results = job.dest.file_name if with_results and job.dest is not None else None
        if results:
            self.delete_generated_file(results)
        try:
            with self._api(job=job_name):
                self.call_with_retries(
                    self.client.batches.delete, name=job_name, what=f"batches.delete {job_name}"
                )
        except GeminiBatchJobGoneError:
            return False
        log.info("Deleted batch job %s%s.", job_name, f" and its results {results}" if results else "")
        return True

    def delete_generated_file(self, name: str) -> bool:
        """Delete a GENERATED file (a batch's results); False when it was already gone."""
        file_name = generated_file_name(name)
        refused = f" Could not delete {file_name}."
        try:
            with self._api(refused=refused):
                self.call_with_retries(
                    self.client.files.delete, name=file_name, what=f"files.delete {file_name}"
                )
        except GeminiFilesError as err:
            if not _answered_gone(err):
                raise
            log.info("Gemini file %s was already gone: nothing to delete.", file_name)
            return False
        log.info("Deleted Gemini file %s.", file_name)
        return True

    def download_file(self, file: str | GeminiFileRef, destination: IO[bytes] | str) -> int:
        """
        Stream a GENERATED file (a batch's results) to a writable binary stream or a ``gs://`` object, in
        bounded memory; the number of bytes written.

        A failure before the first byte was written is tried again (the connection's retry policy); a
        ``gs://`` object is written only when every byte arrived.
        """
        file_name = generated_file_name(file.name if isinstance(file, GeminiFileRef) else file)
        if isinstance(destination, str):
            with self.open_gcs_writer(destination, content_type="application/jsonl") as out:
                written = self._download(file_name, out)
            log.info("Downloaded %s (%d bytes) to %s.", file_name, written, destination)
            return written
        if not hasattr(destination, "write"):
            raise GeminiInputError(
                f"destination {destination!r} is neither a 'gs://bucket/object' URI nor a writable binary "
                "stream (e.g. open(path, 'wb'))."
            )
        return self._download(file_name, destination)

    def _download(self, file_name: str, out: IO[bytes]) -> int:
        counter = _CountingWriter(out)
        refused = f" Could not download {file_name}: only GENERATED files (a batch's results) can be."

        def attempt() -> None:
            try:
                if "destination" in inspect.signature(self.client.files.download).parameters:
                    self.client.files.download(file=file_name, destination=counter)
                else:
                    self._stream_download(file_name, counter)
            except Exception as err:
                if counter.written and policy.is_transient(err):
                    # Bytes already went to the destination: another try would write them twice.
                    raise GeminiFilesError(
                        f"The download of {file_name} broke after {counter.written} bytes ({err}); not "
                        "tried again, since the bytes already written would be written twice. Run the task "
                        "again."
                    ) from err
                raise

        try:
            with self._api(refused=refused):
                self.call_with_retries(attempt, what=f"files.download {file_name}")
        except GeminiFilesError as err:
            if not _answered_gone(err):
                raise
            raise GeminiFileGoneError(
                f"{file_name} does not exist: a batch's results file is deleted 48 hours after its job "
                "ended (or by a cleanup), or it belongs to another API key's project.",
                file_name=file_name,
            ) from err
        return counter.written

    def _stream_download(self, file_name: str, out: _CountingWriter) -> None:
        """``files/<id>:download?alt=media`` streamed to ``out``: google-genai < 2.21 has no streaming
        download (its ``files.download`` returns the whole file as bytes)."""
        import httpx
        from google.genai import errors

        from airflow_gemini_files.hooks.upload import DEFAULT_TIMEOUT

        settings = self.settings
        url = f"{settings.base_url.rstrip('/')}/{settings.api_version}/{file_name}:download"
        timeout = httpx.Timeout(settings.timeout) if settings.timeout else DEFAULT_TIMEOUT
        headers = {"x-goog-api-key": settings.api_key}
        with self._upload_http.stream(
            "GET", url, params={"alt": "media"}, headers=headers, timeout=timeout
        ) as response:
            if response.status_code != 200:
                response.read()
                try:
                    payload: Any = response.json()
                except ValueError:
                    payload = {"error": {"code": response.status_code, "message": response.text[:500]}}
                payload = json.loads(self._redact(json.dumps(payload)))
                # No response object: it holds the request, whose headers hold the API key.
                errors.APIError.raise_error(response.status_code, payload, None)
            for piece in response.iter_bytes(DOWNLOAD_PIECE):
                out.write(piece)

    def write_gcs_object(self, uri: str, data: bytes, *, content_type: str = "application/json") -> str:
        """Write ``data`` as the ``gs://`` object ``uri`` (replacing it); retried like any idempotent write,
        since writing the same bytes again changes nothing. Returns ``uri``."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        bucket, object_name = parse_gs_uri(uri)
        blob = self.storage_client.bucket(bucket).blob(object_name)
        blob.upload_from_string(data, content_type=content_type, retry=DEFAULT_RETRY)
        return uri

    def open_gcs_writer(self, uri: str, *, content_type: str = "application/json") -> IO[bytes]:
        """A binary stream that writes the ``gs://`` object ``uri`` in bounded memory; use it as a context
        manager: the object exists once the block ends without an error, and not at all otherwise."""
        bucket, object_name = parse_gs_uri(uri)
        blob = self.storage_client.bucket(bucket).blob(object_name)
        return blob.open("wb", chunk_size=DOWNLOAD_CHUNK_SIZE, ignore_flush=True, content_type=content_type)

    def read_gcs_object(self, uri: str) -> bytes | None:
        """The bytes of the ``gs://`` object ``uri``, or None when it does not exist."""
        from google.api_core.exceptions import NotFound

        bucket, object_name = parse_gs_uri(uri)
        try:
            return bytes(self.storage_client.bucket(bucket).blob(object_name).download_as_bytes())
        except NotFound:
            return None


def _gone_file(message: str) -> GeminiFileRef | None:
    """The file a "cannot access the File <id>" answer names, when its id is one refs can hold."""
    match = _GONE_FILE.search(message)
    try:
        return GeminiFileRef(name=f"files/{match.group(1)}") if match else None
    except ValueError:  # e.g. a batch's results file files/batch-<36 characters>: longer than uploads' ids
        return None


def _answered_gone(error: BaseException) -> bool:
    """Whether the API answered 403 or 404 (the live API says 403 for a file that does not exist), and
    not about the API key."""
    from google.genai import errors

    cause = error.__cause__
    if not isinstance(cause, errors.APIError) or cause.code not in (403, 404):
        return False
    return not policy.is_bad_key(cause.code, str(cause.message or ""), str(cause.details or ""))


_BATCH_NAME = re.compile(r"^(?:batches/)?([a-z0-9][a-z0-9-]*)$")
_GENERATED_FILE = re.compile(r"^(?:files/)?([a-z0-9][a-z0-9-]{0,126})$")


def batch_job_name(name: Any) -> str:
    """``batches/<id>`` for ``batches/<id>`` or a bare ``<id>``, else a GeminiInputError naming it."""
    match = _BATCH_NAME.match(name.strip()) if isinstance(name, str) else None
    if match is None:
        raise GeminiInputError(
            f"{name!r} is not a batch job name: expected 'batches/<id>' (as create_batch returns it)."
        )
    return f"batches/{match.group(1)}"


def generated_file_name(name: Any) -> str:
    """``files/<id>`` of a generated file (ids may be longer than uploads' 40 characters: batch results)."""
    match = _GENERATED_FILE.match(name.strip()) if isinstance(name, str) else None
    if match is None:
        raise GeminiInputError(
            f"{name!r} is not a Gemini file name: expected 'files/<id>' (a batch's results file is "
            "'files/batch-<id>')."
        )
    return f"files/{match.group(1)}"


class _CountingWriter(io.RawIOBase):
    """A writable stream that passes bytes on to ``target`` and counts them."""

    def __init__(self, target: IO[bytes]) -> None:
        super().__init__()
        self.target = target
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.target.write(data)
        size = len(data)
        self.written += size
        return size


def _model_and_parts(model: Any, contents: Sequence[Any] | Any, *, to: str) -> tuple[str, list[Any]]:
    """The model id (stripped) and the request parts (GeminiFileRef items become file parts), or an error."""
    if not isinstance(model, str) or not model.strip():
        raise GeminiInputError(f"model {model!r} must be a model id such as 'gemini-2.5-flash'.")
    items = contents if isinstance(contents, list | tuple) else [contents]
    parts = [item.to_part() if isinstance(item, GeminiFileRef) else item for item in items]
    if not parts:
        raise GeminiInputError(f"contents is empty: pass a prompt (and files) to {to}.")
    return model.strip(), parts


def _config_summary(config: Any) -> str:
    """The request values a refused generateContent most likely trips on, shortened, for the error."""
    if config is None:
        return ""
    from google.genai import types

    values = (
        config.model_dump(exclude_none=True) if isinstance(config, types.GenerateContentConfig) else config
    )
    if not isinstance(values, dict):
        return f" and its config {printable(repr(values))[:300]}"
    shown = []
    for key in ("response_schema", "response_json_schema", "response_mime_type", "tools", "thinking_config"):
        if values.get(key) is not None:
            value = values[key]
            text = value.__name__ if isinstance(value, type) else repr(value)
            shown.append(f"{key}={printable(text)[:300]}")
    others = sorted(set(values) - {"response_schema", "response_json_schema", "response_mime_type", "tools"})
    if others:
        shown.append(f"other config keys {others}")
    return (": " + "; ".join(shown)) if shown else ""
