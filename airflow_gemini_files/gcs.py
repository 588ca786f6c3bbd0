"""Google Cloud Storage helpers: ``gs://`` URIs, object listing, the storage client and GCP credentials.

Credentials, in order:

1. ``gcp_conn_id`` names an Airflow connection holding a service-account key. Both forms work:

   - a ``google_cloud_platform`` connection (the Google provider's) with the extra ``keyfile_dict``
     (the key JSON, as an object or a string) or ``key_path`` (a path on the worker), optionally
     ``project`` and ``scope`` (comma-separated); the old ``extra__google_cloud_platform__`` prefixed
     names are read too;
   - any connection whose password is the key JSON (the simple form, e.g.
     ``AIRFLOW_CONN_GCP_KEY='{"conn_type": "generic", "password": "<key json>"}'``).

2. Otherwise, with ``STORAGE_EMULATOR_HOST`` set (a local GCS emulator), no GCP configuration at all:
   anonymous storage access, and for ``files:register`` a fixed offline bearer token.
3. Otherwise Application Default Credentials (``gcloud auth application-default login``, a metadata
   server, or ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.exceptions import GeminiInputError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud import storage

GCS_SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/devstorage.read_only",
)
"""Scopes requested for service-account and default credentials (the ones Gemini's register needs)."""

OFFLINE_TOKEN = "offline-gcs-emulator-token"  # a fixed public placeholder, not a secret
"""Bearer token sent to ``files:register`` when ``STORAGE_EMULATOR_HOST`` is set and no key is configured."""

HTTP_POOL_SIZE = 64
"""Connections per host the storage client keeps open (one per concurrent ranged read, with headroom)."""

_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_FIX_URI = "Use the form 'gs://<bucket>/<object>', e.g. 'gs://my-bucket/reports/2026/q3.pdf'."


def is_gs_uri(value: object) -> bool:
    """Whether ``value`` is a string that claims to be a ``gs://`` URI (valid or not)."""
    return isinstance(value, str) and value.strip().lower().startswith("gs:")


def emulator_host() -> str | None:
    """The GCS emulator address from ``STORAGE_EMULATOR_HOST``, or None when talking to real GCS."""
    return os.environ.get("STORAGE_EMULATOR_HOST") or None


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
    if name in (".", "..") or "\n" in name or "\r" in name or len(name.encode()) > 1024:
        raise GeminiInputError(
            f"GCS URI {uri!r} has an invalid object name: object names are 1 to 1024 bytes, without "
            f"line breaks, and not '.' or '..'. {_FIX_URI}"
        )
    return bucket, name


def _keyfile_from_connection(gcp_conn_id: str) -> tuple[dict[str, Any] | None, str | None, dict[str, Any]]:
    """Return ``(key info, key path, extras)`` from an Airflow connection holding a service-account key."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(gcp_conn_id)
    except AirflowNotFoundException as err:
        raise GeminiInputError(
            f"GCP connection {gcp_conn_id!r} (gcp_conn_id) is not defined. Create it with a service-account "
            "key in the extra 'keyfile_dict' or 'key_path', or leave gcp_conn_id unset to use Application "
            "Default Credentials."
        ) from err
    raw = conn.extra_dejson or {}
    extras = {k.removeprefix("extra__google_cloud_platform__"): v for k, v in raw.items()}
    keyfile: Any = extras.get("keyfile_dict") or conn.password or None
    key_path = extras.get("key_path") or None
    if isinstance(keyfile, str):
        try:
            keyfile = json.loads(keyfile)
        except json.JSONDecodeError as err:
            raise GeminiInputError(
                f"GCP connection {gcp_conn_id!r}: the service-account key (extra 'keyfile_dict' or the "
                "password) is not valid JSON. Paste the whole key file downloaded from the Cloud console."
            ) from err
    if keyfile is not None and not isinstance(keyfile, Mapping):
        raise GeminiInputError(
            f"GCP connection {gcp_conn_id!r}: 'keyfile_dict' must be the key file's JSON object."
        )
    if keyfile is None and key_path is None:
        raise GeminiInputError(
            f"GCP connection {gcp_conn_id!r} holds no service-account key: set the extra 'keyfile_dict' "
            "(the key JSON) or 'key_path' (a path on the worker), or put the key JSON in the password."
        )
    if keyfile is not None:
        from airflow.sdk.log import mask_secret

        if keyfile.get("private_key"):
            mask_secret(keyfile["private_key"])
    return (dict(keyfile) if keyfile is not None else None), key_path, extras


def _scopes(extras: Mapping[str, Any]) -> list[str]:
    scope = extras.get("scope")
    if isinstance(scope, str) and scope.strip():
        return [s.strip() for s in scope.split(",") if s.strip()]
    return list(GCS_SCOPES)


def service_account_credentials(gcp_conn_id: str) -> tuple[Credentials, str | None]:
    """Service-account credentials and project from the Airflow connection ``gcp_conn_id``."""
    from google.oauth2 import service_account

    keyfile, key_path, extras = _keyfile_from_connection(gcp_conn_id)
    scopes = _scopes(extras)
    try:
        if keyfile is not None:
            creds = service_account.Credentials.from_service_account_info(keyfile, scopes=scopes)
        else:
            creds = service_account.Credentials.from_service_account_file(str(key_path), scopes=scopes)
    except FileNotFoundError as err:
        raise GeminiInputError(
            f"GCP connection {gcp_conn_id!r}: key_path {key_path!r} does not exist on this worker. "
            "Fix the path or paste the key JSON into the extra 'keyfile_dict'."
        ) from err
    except (ValueError, KeyError) as err:
        raise GeminiInputError(
            f"GCP connection {gcp_conn_id!r}: the service-account key is incomplete or not a "
            f"service-account key ({type(err).__name__}: missing or bad field). Download a fresh JSON key "
            "for the service account."
        ) from err
    project = extras.get("project") or extras.get("project_id") or getattr(creds, "project_id", None)
    return creds, project


def offline_credentials() -> Credentials:
    """Credentials carrying :data:`OFFLINE_TOKEN`, never refreshed: for emulators only."""
    from google.oauth2.credentials import Credentials as OAuthCredentials

    return OAuthCredentials(token=OFFLINE_TOKEN)


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
            "service-account key."
        ) from err
    return creds, project


def register_credentials(gcp_conn_id: str | None = None) -> Credentials:
    """Credentials for ``files.register_files``: connection key, offline token, or ADC (in that order)."""
    if gcp_conn_id:
        return service_account_credentials(gcp_conn_id)[0]
    if emulator_host():
        return offline_credentials()
    return default_credentials()[0]


def storage_client(gcp_conn_id: str | None = None, *, pool_size: int = HTTP_POOL_SIZE) -> storage.Client:
    """A ``google.cloud.storage.Client``: connection key, anonymous on an emulator, or ADC.

    Its HTTP session keeps up to ``pool_size`` connections per host (requests' default is 10), so many
    concurrent ``gs://`` uploads, each with a read-ahead thread, reuse connections instead of churning them.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from requests.adapters import HTTPAdapter

    if gcp_conn_id:
        creds, project = service_account_credentials(gcp_conn_id)
    elif emulator_host():
        creds, project = AnonymousCredentials(), os.environ.get("GOOGLE_CLOUD_PROJECT", "test")
    else:
        creds, project = default_credentials()
    client = storage.Client(project=project, credentials=creds)
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


def list_objects(
    bucket: str,
    prefix: str | None = None,
    match_glob: str | None = None,
    *,
    client: storage.Client | None = None,
    gcp_conn_id: str | None = None,
) -> list[str]:
    """
    The ``gs://`` URIs of the objects in ``bucket`` under ``prefix`` matching ``match_glob``, sorted.

    ``match_glob`` uses GCS syntax (``**`` crosses ``/``, ``*`` does not, ``{a,b}`` alternatives).
    Folder placeholders (names ending in ``/``) are skipped. A missing bucket or a refused listing
    raises :class:`GeminiInputError`.
    """
    from google.api_core import exceptions as gexc

    if not bucket or "/" in bucket or bucket.startswith("gs:"):
        raise GeminiInputError(
            f"bucket {bucket!r} is not a bucket name: pass the bare name (e.g. 'my-bucket') and put any "
            "path into prefix."
        )
    client = client or storage_client(gcp_conn_id)
    try:
        blobs = client.list_blobs(bucket, prefix=prefix or None, match_glob=match_glob or None)
        names = [blob.name for blob in blobs if not blob.name.endswith("/")]
    except gexc.NotFound as err:
        raise GeminiInputError(
            f"GCS bucket {bucket!r} does not exist (or is not visible to these credentials). "
            "Check the bucket name and project."
        ) from err
    except gexc.Forbidden as err:
        raise GeminiInputError(
            f"Permission denied listing gs://{bucket}/{prefix or ''}: grant the worker's identity "
            "'Storage Object Viewer' (storage.objects.list) on the bucket, or use gcp_conn_id with a "
            "service account that has it."
        ) from err
    except gexc.BadRequest as err:
        raise GeminiInputError(
            f"GCS refused listing bucket {bucket!r} with prefix {prefix!r} and match_glob {match_glob!r}: "
            f"{err.message}. Check the glob syntax (e.g. '**/*.pdf')."
        ) from err
    return [f"gs://{bucket}/{name}" for name in sorted(names)]


def get_blob(uri: str, client: storage.Client) -> storage.Blob:
    """The object at ``uri`` with its metadata loaded (size, content type), or a clear error."""
    from google.api_core import exceptions as gexc

    bucket_name, name = parse_gs_uri(uri)
    bucket = client.bucket(bucket_name)
    try:
        blob = bucket.get_blob(name)
    except gexc.NotFound as err:
        raise _missing(uri, bucket_name, name, client) from err
    except gexc.Forbidden as err:
        raise _forbidden(uri) from err
    if blob is None:
        raise _missing(uri, bucket_name, name, client)
    return blob


def read_head(blob: storage.Blob, n: int) -> bytes:
    """The first ``n`` bytes of an object (one ranged read), for content sniffing."""
    from google.api_core import exceptions as gexc

    if not blob.size:
        return b""
    try:
        return bytes(blob.download_as_bytes(start=0, end=min(n, int(blob.size)) - 1, checksum=None))
    except gexc.Forbidden as err:
        raise _forbidden(f"gs://{blob.bucket.name}/{blob.name}") from err


def _forbidden(uri: str) -> GeminiInputError:
    return GeminiInputError(
        f"Permission denied reading {uri}: grant the worker's identity 'Storage Object Viewer' "
        "(storage.objects.get) on the bucket, or use gcp_conn_id with a service account that has it."
    )


def _missing(uri: str, bucket_name: str, name: str, client: storage.Client) -> GeminiInputError:
    from google.api_core import exceptions as gexc

    try:
        bucket_exists = client.bucket(bucket_name).exists()
    except gexc.GoogleAPIError:
        bucket_exists = True  # cannot tell: report the object
    if not bucket_exists:
        return GeminiInputError(
            f"GCS bucket {bucket_name!r} in {uri!r} does not exist. Check the bucket name (and project)."
        )
    folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
    return GeminiInputError(
        f"GCS object {name!r} does not exist in bucket {bucket_name!r} ({uri}). Check the object name, "
        f"e.g. with: gcloud storage ls gs://{bucket_name}/{folder}"
    )
