"""Google Cloud Storage I/O for the hook: GCP credentials, the storage client, listing, streamed reads.

GCP credentials (for reading ``gs://`` objects and for Gemini's ``files:register``), in this order:

1. ``gcp_conn_id`` names an Airflow connection; when it is None, the connection ``google_cloud_default``
   is used if it is defined.

   - Extra ``is_anonymous`` (the Google provider's own field): no credentials at all. Storage is read
     anonymously (public buckets, or a GCS emulator through ``STORAGE_EMULATOR_HOST``) and
     ``files:register`` is sent a placeholder bearer token that only an emulator accepts: the
     explicit setting for offline use.
   - A ``google_cloud_platform`` connection with ``apache-airflow-providers-google`` installed: the
     credentials its ``GoogleBaseHook`` builds (key file or JSON, Secret Manager keys, impersonation
     chains, workload identity federation, ADC), exactly as the Google provider's own hooks use them.
   - Otherwise (no Google provider, or another connection type) the service-account key the
     connection holds: extra ``keyfile_dict`` (the key JSON) or ``key_path``, or the key JSON as the
     password; optionally ``project`` and ``scope``. Without a key: Application Default Credentials
     with the connection's ``project``.

2. Without any connection: Application Default Credentials (``gcloud auth application-default login``,
   ``GOOGLE_APPLICATION_CREDENTIALS``, or the metadata server).
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import io
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.gcs_uri import parse_gs_uri
from airflow_gemini_files.hooks.policy import is_transient
from airflow_gemini_files.hooks.retry import RetryBudget, RetryPolicy
from airflow_gemini_files.naming import printable

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from google.auth.credentials import Credentials
    from google.cloud import storage

log = logging.getLogger(__name__)

DEFAULT_GCP_CONN_ID = "google_cloud_default"
"""The GCP connection used when ``gcp_conn_id`` is None and a connection of this id is defined."""

_GCP_CONN_TYPE = "google_cloud_platform"

GCS_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
"""Scopes requested for service-account and default credentials (register needs cloud-platform)."""

ANONYMOUS_TOKEN = "anonymous"  # a fixed public placeholder, not a secret
"""Bearer token ``files:register`` is sent with an ``is_anonymous`` connection (emulators accept any)."""

ANONYMOUS_GCP_CONNECTION = {"conn_type": _GCP_CONN_TYPE, "extra": {"is_anonymous": True}}
"""A GCP connection for offline use (tests, the demo, GCS emulators): no credentials at all."""

HTTP_POOL_SIZE = 64
"""Connections per host the storage client keeps open (one per concurrent ranged read, with headroom)."""

LIST_PAGE_SIZE = 1000
"""Objects per listing page: the most GCS returns (emulators that return every object at once would put a
100,000-object listing into one response)."""

LIST_FIELDS = "items(name),nextPageToken"
"""A listing asks for the names only (about 40 bytes an object instead of about 800)."""

READ_PIECE = 1024 * 1024
"""Ranged reads come back as pieces of this size (never joined), which an upload sends on as they are."""

_PROVIDER_ONLY_EXTRAS = (
    "key_secret_name",
    "impersonation_chain",
    "credential_config_file",
    "idp_issuer_url",
)


# Credentials -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GcpAccess:
    """GCP credentials (None: anonymous), their project, and the connection they came from (None: ADC)."""

    credentials: Credentials | None
    project: str | None
    conn_id: str | None

    @property
    def anonymous(self) -> bool:
        """Whether no identity is used (an ``is_anonymous`` connection)."""
        return self.credentials is None

    def register_credentials(self) -> Credentials:
        """What ``files.register_files`` is given: these credentials, or the anonymous placeholder token."""
        if self.credentials is not None:
            return self.credentials
        from google.oauth2.credentials import Credentials as OAuthCredentials

        return OAuthCredentials(token=ANONYMOUS_TOKEN)


def google_provider_available() -> bool:
    """Whether ``apache-airflow-providers-google`` (its ``GoogleBaseHook``) can be imported."""
    return importlib.util.find_spec("airflow.providers.google") is not None


def gcp_access(gcp_conn_id: str | None) -> GcpAccess:
    """The GCP identity for ``gcp_conn_id`` (see the module docstring for the order)."""
    conn_id = gcp_conn_id or (DEFAULT_GCP_CONN_ID if _defined(DEFAULT_GCP_CONN_ID) else None)
    if conn_id is None:
        creds, project = default_credentials()
        return GcpAccess(creds, project, None)
    conn = _connection(conn_id)
    extras = _extras(conn)
    project = _text(extras.get("project")) or _text(extras.get("project_id"))
    if _truthy(extras.get("is_anonymous")):
        return GcpAccess(None, project, conn_id)
    if conn.conn_type == _GCP_CONN_TYPE and google_provider_available():
        return _from_google_provider(conn_id)
    creds, key_project = _from_connection_key(conn_id, conn, extras)
    return GcpAccess(creds, project or key_project, conn_id)


def _defined(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def _connection(conn_id: str) -> Connection:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as err:
        raise GeminiInputError(
            f"GCP connection {conn_id!r} (gcp_conn_id) is not defined. Create it with a service-account "
            "key in the extra 'keyfile_dict' or 'key_path' (or is_anonymous for emulators), or leave "
            "gcp_conn_id unset to use Application Default Credentials."
        ) from err


def _extras(conn: Connection) -> dict[str, Any]:
    raw = conn.extra_dejson or {}
    return {key.removeprefix("extra__google_cloud_platform__"): value for key, value in raw.items()}


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _from_google_provider(conn_id: str) -> GcpAccess:
    """Credentials exactly as the Google provider's hooks build them from this connection."""
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    try:
        creds, project = GoogleBaseHook(gcp_conn_id=conn_id).get_credentials_and_project_id()
    except Exception as err:
        raise GeminiInputError(
            f"GCP connection {conn_id!r}: the Google provider could not build credentials from it "
            f"({type(err).__name__}: {printable(err)[:300]}). Fix the connection's key, impersonation or "
            "Secret Manager settings."
        ) from err
    return GcpAccess(creds, project, conn_id)


def _from_connection_key(
    conn_id: str, conn: Connection, extras: Mapping[str, Any]
) -> tuple[Credentials, str | None]:
    """Service-account credentials from the key a connection holds; ADC when it holds none."""
    from google.oauth2 import service_account

    keyfile: Any = extras.get("keyfile_dict") or conn.password or None
    key_path = _text(extras.get("key_path"))
    if keyfile is None and key_path is None:
        needs_provider = [key for key in _PROVIDER_ONLY_EXTRAS if extras.get(key)]
        if needs_provider:
            raise GeminiInputError(
                f"GCP connection {conn_id!r} uses {', '.join(needs_provider)}, which only the Google "
                "provider understands: pip install apache-airflow-providers-google on the workers, or "
                "put a service-account key in the extra 'keyfile_dict'."
            )
        return default_credentials()
    if isinstance(keyfile, str):
        try:
            keyfile = json.loads(keyfile)
        except json.JSONDecodeError as err:
            raise GeminiInputError(
                f"GCP connection {conn_id!r}: the service-account key (extra 'keyfile_dict' or the "
                "password) is not valid JSON. Paste the whole key file downloaded from the Cloud console."
            ) from err
    if keyfile is not None and not isinstance(keyfile, Mapping):
        raise GeminiInputError(
            f"GCP connection {conn_id!r}: 'keyfile_dict' must be the key file's JSON object."
        )
    if keyfile is not None and keyfile.get("private_key"):
        from airflow.sdk.log import mask_secret

        mask_secret(keyfile["private_key"])
    scopes = _scopes(extras)
    try:
        if keyfile is not None:
            creds = service_account.Credentials.from_service_account_info(dict(keyfile), scopes=scopes)
        else:
            creds = service_account.Credentials.from_service_account_file(str(key_path), scopes=scopes)
    except FileNotFoundError as err:
        raise GeminiInputError(
            f"GCP connection {conn_id!r}: key_path {key_path!r} does not exist on this worker. "
            "Fix the path or paste the key JSON into the extra 'keyfile_dict'."
        ) from err
    except (ValueError, KeyError) as err:
        raise GeminiInputError(
            f"GCP connection {conn_id!r}: the service-account key is incomplete or not a "
            f"service-account key ({type(err).__name__}: missing or bad field). Download a fresh JSON key "
            "for the service account."
        ) from err
    return creds, getattr(creds, "project_id", None)


def _scopes(extras: Mapping[str, Any]) -> list[str]:
    scope = extras.get("scope")
    if isinstance(scope, str) and scope.strip():
        return [s.strip() for s in scope.split(",") if s.strip()]
    return list(GCS_SCOPES)


def default_credentials() -> tuple[Credentials, str | None]:
    """Application Default Credentials, or a :class:`GeminiInputError` explaining how to provide some."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, project = google.auth.default(scopes=list(GCS_SCOPES))
    except DefaultCredentialsError as err:
        raise GeminiInputError(
            "No GCP credentials found for Google Cloud Storage: Application Default Credentials are not "
            "configured on this worker. Run 'gcloud auth application-default login', set "
            "GOOGLE_APPLICATION_CREDENTIALS, or pass gcp_conn_id naming a connection with a "
            f"service-account key (or define the connection {DEFAULT_GCP_CONN_ID!r}; for emulators, one "
            "with the extra is_anonymous)."
        ) from err
    return creds, project


# The client and listing --------------------------------------------------------------------------------
def storage_client(access: GcpAccess, *, pool_size: int = HTTP_POOL_SIZE) -> storage.Client:
    """A ``google.cloud.storage.Client`` with ``access``'s credentials (anonymous when it has none).

    Its HTTP session keeps up to ``pool_size`` connections per host (requests' default is 10), so many
    concurrent ``gs://`` uploads, each with a read-ahead thread, reuse connections instead of churning them.
    """
    from google.cloud import storage
    from requests.adapters import HTTPAdapter

    if access.anonymous:
        client = storage.Client.create_anonymous_client()
    else:
        client = storage.Client(project=access.project, credentials=access.credentials)
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


def list_objects(
    client: storage.Client, bucket: str, prefix: str | None = None, match_glob: str | None = None
) -> list[str]:
    """
    The ``gs://`` URIs of the objects in ``bucket`` under ``prefix`` matching ``match_glob``, sorted.

    ``match_glob`` uses GCS syntax (``**`` crosses ``/``, ``*`` does not, ``{a,b}`` alternatives).
    Folder placeholders (names ending in ``/``) are skipped. A missing bucket or a refused listing
    raises :class:`GeminiInputError`.
    """
    from google.api_core import exceptions as api_exceptions

    if not isinstance(bucket, str) or not bucket or "/" in bucket or bucket.startswith("gs:"):
        raise GeminiInputError(
            f"bucket {bucket!r} is not a bucket name: pass the bare name (e.g. 'my-bucket') and put any "
            "path into prefix."
        )
    try:
        blobs = client.list_blobs(
            bucket,
            prefix=prefix or None,
            match_glob=match_glob or None,
            page_size=LIST_PAGE_SIZE,
            fields=LIST_FIELDS,
        )
        names = [blob.name for blob in blobs if not blob.name.endswith("/")]
    except api_exceptions.NotFound as err:
        raise GeminiInputError(
            f"GCS bucket {bucket!r} does not exist (or is not visible to these credentials). "
            "Check the bucket name and project."
        ) from err
    except api_exceptions.Forbidden as err:
        raise GeminiInputError(
            f"Permission denied listing gs://{bucket}/{prefix or ''}: grant the worker's identity "
            "'Storage Object Viewer' (storage.objects.list) on the bucket, or use gcp_conn_id with a "
            "service account that has it."
        ) from err
    except api_exceptions.BadRequest as err:
        raise GeminiInputError(
            f"GCS refused listing bucket {bucket!r} with prefix {prefix!r} and match_glob {match_glob!r}: "
            f"{err.message}. Check the glob syntax (e.g. '**/*.pdf')."
        ) from err
    return [f"gs://{bucket}/{name}" for name in sorted(names)]


def get_blob(client: storage.Client, uri: str) -> storage.Blob:
    """The object at ``uri`` with its metadata loaded (size, content type, generation), or a clear error."""
    from google.api_core import exceptions as api_exceptions

    bucket_name, name = parse_gs_uri(uri)
    try:
        blob = client.bucket(bucket_name).get_blob(name)
    except api_exceptions.NotFound as err:
        raise _missing(uri, bucket_name, name, client) from err
    except api_exceptions.Forbidden as err:
        raise _forbidden(uri) from err
    if blob is None:
        raise _missing(uri, bucket_name, name, client)
    return blob


def media_url(blob: storage.Blob) -> str:
    """The URL of ``blob``'s bytes at its generation, with the object name properly percent-encoded.

    The server's ``mediaLink`` is not used as is: some servers (GCS emulators) put names with ``#``,
    ``?``, ``%`` or spaces into it unencoded, which then point at another object or none.
    """
    link = blob.media_link or ""
    base = link.split("/download/storage/", 1)[0] if "/download/storage/" in link else None
    if not base:
        base = str(blob.client._connection.API_BASE_URL).rstrip("/")
    url = f"{base}/download/storage/v1/b/{quote(blob.bucket.name, safe='')}/o/{quote(blob.name, safe='')}"
    query = "alt=media" + (f"&generation={int(blob.generation)}" if blob.generation is not None else "")
    return f"{url}?{query}"


def read_range(blob: storage.Blob, start: int, end: int, *, timeout: float = 120.0) -> bytes:
    """Bytes ``start`` to ``end - 1`` of the stored object, as stored (no decompressive transcoding)."""
    return b"".join(read_range_pieces(blob, start, end, timeout=timeout))


def read_range_pieces(blob: storage.Blob, start: int, end: int, *, timeout: float = 120.0) -> list[bytes]:
    """Bytes ``start`` to ``end - 1`` of the stored object as stored, in pieces of :data:`READ_PIECE`.

    One GET of :func:`media_url` through the client's authorized session, read in 1 MiB pieces rather
    than in the small ones ``Blob.download_as_bytes`` feeds through Python; the pieces are not joined
    (that would copy every byte once more).
    """
    from google.api_core import exceptions as api_exceptions

    session = blob.client._http
    headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "gzip"}  # gzip: stored bytes as is
    with session.get(media_url(blob), headers=headers, stream=True, timeout=timeout) as response:
        whole = start == 0 and end == int(blob.size or 0)
        if response.status_code != 206 and not (response.status_code == 200 and whole):
            raise api_exceptions.from_http_response(response)
        parts = []
        wanted = end - start
        while wanted > 0:
            part = response.raw.read(min(wanted, READ_PIECE), decode_content=False)
            if not part:
                break
            parts.append(part)
            wanted -= len(part)
        return parts


def read_head(blob: storage.Blob, n: int) -> bytes:
    """The first ``n`` bytes of an object (one ranged read), for content sniffing."""
    from google.api_core import exceptions as api_exceptions

    if not blob.size:
        return b""
    try:
        return read_range(blob, 0, min(n, int(blob.size)))
    except api_exceptions.Forbidden as err:
        raise _forbidden(f"gs://{blob.bucket.name}/{blob.name}") from err


def _forbidden(uri: str) -> GeminiInputError:
    return GeminiInputError(
        f"Permission denied reading {printable(uri)}: grant the worker's identity 'Storage Object Viewer' "
        "(storage.objects.get) on the bucket, or use gcp_conn_id with a service account that has it."
    )


def _missing(uri: str, bucket_name: str, name: str, client: storage.Client) -> GeminiInputError:
    from google.api_core import exceptions as api_exceptions

    try:
        bucket_exists = client.bucket(bucket_name).exists()
    except api_exceptions.GoogleAPIError:
        bucket_exists = True  # cannot tell: report the object
    if not bucket_exists:
        return GeminiInputError(
            f"GCS bucket {bucket_name!r} in {printable(uri)!r} does not exist. Check the bucket name (and "
            "project)."
        )
    folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
    return GeminiInputError(
        f"GCS object {printable(name)!r} does not exist in bucket {bucket_name!r} ({printable(uri)}). Check "
        f"the object name, e.g. with: gcloud storage ls gs://{bucket_name}/{printable(folder)}"
    )


# Streamed reads --------------------------------------------------------------------------------------
_POLL = 0.1  # seconds between checks of the stop flag while blocked
_EOF = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class GcsReadAhead(io.RawIOBase):
    """A read-only, forward-only file over a GCS blob, fetched in ranged chunks by a background thread.

    At most `depth` chunks are fetched ahead of the reader, so memory stays near
    `(depth + 1) x chunk_size` whatever the object's size. Every ranged read is pinned to the
    blob's generation, so an object overwritten mid-read fails instead of mixing two versions; the
    CRC32C of all bytes read is checked against the object's before the last chunk is handed over
    (`verify`), so a corrupted read fails before an upload is finalized. Transient errors
    (408/429/5xx, dropped connections) are retried per `retry`; other errors (404, 403) surface from
    `read()`. Use as a context manager, or `close()`.
    """

    def __init__(
        self,
        blob: Any,
        chunk_size: int = 8 * 1024 * 1024,
        depth: int = 2,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        verify: bool = True,
    ) -> None:
        super().__init__()
        if chunk_size < 1 or depth < 1:
            raise ValueError(f"chunk_size and depth must be >= 1, got {chunk_size} and {depth}")
        if blob.size is None or blob.generation is None:
            blob.reload()
        self.blob = blob
        self.size: int = int(blob.size)
        self.chunk_size = chunk_size
        self.depth = depth
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.retries = 0  # ranged reads tried again after a transient error
        self.wait_seconds = 0.0  # time the reader spent waiting for the fetcher
        # End-to-end check against the object's stored CRC32C (ranged reads carry no checksum).
        import google_crc32c

        self._crc = google_crc32c.Checksum() if verify and blob.crc32c else None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._pieces: list[bytes] = []  # the chunk being read, as fetched, and the read position in it
        self._index = self._at = 0
        self._position = 0
        self._done = False
        self._thread = threading.Thread(target=self._fetch_all, name="gcs-read-ahead", daemon=True)
        self._thread.start()

    # -- io.RawIOBase --------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (one fetched piece at most per call; all the rest when size < 0); b"" at end."""
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        if self._index >= len(self._pieces) and not self._next_chunk():
            return b""
        piece = self._pieces[self._index]
        # The fetched piece itself when it fits (no copy), else a slice of it.
        out = piece if self._at == 0 and size >= len(piece) else piece[self._at : self._at + size]
        self._at += len(out)
        if self._at >= len(piece):
            self._index, self._at = self._index + 1, 0
        self._position += len(out)
        return out

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(self.chunk_size):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Stop the fetcher and drop buffered chunks (safe to call twice, and from `__exit__`)."""
        if not self.closed and hasattr(self, "_thread"):  # __init__ may have failed (e.g. no such object)
            self._stop.set()
            self._thread.join(timeout=self.timeout + 5)
            self._pieces = []
            while not self._queue.empty():
                self._queue.get_nowait()
        super().close()

    # -- the reader side -----------------------------------------------------------------------

    def _next_chunk(self) -> bool:
        if self._done:
            return False
        if self.closed:
            raise ValueError("I/O operation on closed GcsReadAhead")
        started = time.monotonic()
        item = self._queue.get()
        self.wait_seconds += time.monotonic() - started
        if item is _EOF:
            self._done = True
            return False
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        self._slots.release()
        self._pieces, self._index, self._at = item, 0, 0
        return True

    # -- the fetcher thread --------------------------------------------------------------------

    def _fetch_all(self) -> None:
        try:
            for start in range(0, self.size, self.chunk_size):
                while not self._slots.acquire(timeout=_POLL):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                end = min(start + self.chunk_size, self.size)
                data = self._fetch(start, end)
                if self._crc is not None:
                    for piece in data:
                        self._crc.update(piece)
                    if end == self.size:
                        self._check_crc32c()  # before the last chunk is handed over, so before finalize
                self._queue.put(data)
            self._queue.put(_EOF)
        except BaseException as exc:  # handed to the reader, which raises it
            self._queue.put(_Failure(exc))

    def _where(self) -> str:
        return printable(f"gs://{self.blob.bucket.name}/{self.blob.name}")

    def _check_crc32c(self) -> None:
        assert self._crc is not None
        got = base64.b64encode(self._crc.digest()).decode()
        if got != self.blob.crc32c:
            raise OSError(
                f"{self._where()}: the bytes read have CRC32C {got} but GCS stores {self.blob.crc32c}; the "
                "read was corrupted or the object changed. Try again."
            )

    def _read_range(self, start: int, end: int) -> list[bytes]:
        return read_range_pieces(self.blob, start, end, timeout=self.timeout)

    def _fetch(self, start: int, end: int) -> list[bytes]:
        budget = RetryBudget(self.retry)
        while True:
            try:
                data = self._read_range(start, end)
            except Exception as exc:
                wait = budget.next_wait() if is_transient(exc) else None
                if wait is None:
                    raise
                self.retries += 1
                log.warning(
                    "Reading %s bytes %d-%d failed (%s); retry %d of %d in %.1f s.",
                    self._where(),
                    start,
                    end - 1,
                    type(exc).__name__,
                    budget.retries,
                    self.retry.attempts - 1,
                    wait,
                )
                if self._stop.wait(wait):
                    raise
                continue
            got = sum(len(piece) for piece in data)
            if got != end - start:
                raise OSError(
                    f"{self._where()}: asked for bytes {start}-{end - 1}, got {got} bytes; was the "
                    "object changed while it was read?"
                )
            return data
