"""The provider's shared decisions: is a file usable, is an error worth another try, when a wait gives up.

Every caller asks this module (the hook's ``wait_for_active`` and uploads, the sensor in poke and
reschedule mode, the trigger of a deferred sensor, the generate operator), so the same situation ends the
same way, with the same exception and message, wherever it happens:

- :func:`file_verdict` reads a file's state (the SDK's ``FileState``) and expiry: usable, pending, failed,
  expired; a fetch that finds no file is *gone*. :func:`verdict_error` gives each its one message.
- :func:`classify_api_error`, :func:`is_transient` and :func:`is_permanent` sort errors: a rejected key,
  a file that is gone, a full storage quota, a refused request, or a transient failure worth another try.
- :class:`ActiveWait` is one wait for ACTIVE files: it takes each poll's answers, keeps what is known
  between polls, and raises the error that ends the wait (a FAILED, expired or vanished file, an error no
  poll can fix, or :data:`MAX_CONSECUTIVE_POLL_FAILURES` failed polls in a row).
- :func:`reuse_refusal` decides whether an existing file may stand in for an upload: only when it is
  usable and provably holds the source's bytes (same size and SHA-256).
- Batch jobs: :func:`job_verdict` reads every job state (the REST API's ``BATCH_STATE_*``, the SDK's
  ``JOB_STATE_*``), :class:`JobWait` is one wait for a job to end (the trigger's and the worker's),
  :func:`job_error` / :func:`job_timeout_error` give each ending its message, :func:`batch_file_problem`
  decides whether a document's file may be sent in a batch, and :func:`request_error_reason` explains a
  failed request of a batch.
- :func:`check_source_size` and :func:`check_inline_size` hold the API's size limits;
  :func:`register_auth_refusal` and :func:`register_auth_advice` say which ``register_auth`` setting to
  try when Gemini refuses how ``files:register`` authenticated.
"""

from __future__ import annotations

import copy
import enum
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from airflow_gemini_files.exceptions import (
    GeminiBatchDocumentsError,
    GeminiBatchJobError,
    GeminiBatchJobGoneError,
    GeminiConnectionError,
    GeminiFileExistsError,
    GeminiFileFailedError,
    GeminiFileGoneError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
    GeminiWaitTimeoutError,
)
from airflow_gemini_files.naming import printable
from airflow_gemini_files.refs import GeminiFileRef

if TYPE_CHECKING:
    from google.genai import errors

log = logging.getLogger(__name__)

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth another try: the set the google-genai SDK retries."""

MAX_CONSECUTIVE_POLL_FAILURES = 5
"""A wait for ACTIVE gives up after this many polls in a row in which a file could not be checked."""

MAX_POLL_INTERVAL = 60.0
"""Seconds between polls at most, however long nothing changes."""

POLL_BACKOFF = 1.5
"""While nothing changes, each poll waits this much longer than the one before."""

USE_EXPIRY_MARGIN = timedelta(minutes=1)
"""A file this close to its expiration time is not sent to a model: it could vanish while it reads it."""

REUSE_EXPIRY_MARGIN = timedelta(hours=1)
"""A file this close to its expiration time is uploaded again rather than reused by a retry."""

MAX_FILE_BYTES = 2 * 1024**3
"""The Files API's limit per file (2 GB); larger sources are refused before any byte is sent."""

MAX_INLINE_BYTES = 100 * 1024**2
"""Inline data (bytes sent in the request itself) per request: 100 MB (the Gemini docs, since 2026-01)."""

MAX_INLINE_PDF_BYTES = 50 * 1024**2
"""Inline data of one PDF: 50 MB (the Gemini docs); larger documents go through the Files API."""

UPLOAD_LIFETIME = timedelta(hours=48)
"""How long Gemini keeps an uploaded file (the docs). A file's own ``expirationTime`` is what counts."""

REGISTRATION_LIFETIME = timedelta(days=30)
"""How long one registration of a GCS object gives access at most (the docs); ``expirationTime`` counts."""

REGISTER_AUTH_MODES: tuple[str, ...] = ("key_and_bearer", "key_only")
"""How ``files:register`` authenticates (connection extra ``register_auth``): the API key plus the GCP
identity's OAuth token (the seed notebook's way, the default), or the API key alone (Gemini then reads the
bucket as the key's project)."""

DEFAULT_REGISTER_AUTH = "key_and_bearer"


@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx
    import requests

    found: list[type[BaseException]] = [
        httpx.TransportError,  # connect, read, write, protocol errors and timeouts
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        ConnectionError,
        TimeoutError,
    ]
    try:  # google-genai talks through httpx2 (a fork with its own exception classes) when present
        import httpx2

        found.append(httpx2.TransportError)
    except ImportError:  # pragma: no cover - depends on the SDK's optional transport
        pass
    return tuple(found)


@functools.cache
def _connect_errors() -> tuple[type[BaseException], ...]:
    import httpx

    found: list[type[BaseException]] = [httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError]
    try:
        import httpx2

        found += [httpx2.ConnectError, httpx2.ConnectTimeout]
    except ImportError:  # pragma: no cover - depends on the SDK's optional transport
        pass
    return tuple(found)


if TYPE_CHECKING:
    NETWORK_ERRORS: tuple[type[BaseException], ...]
    """Connection-level failures (refused, reset, dropped mid-body, timed out) from every client we use."""
    CONNECT_ERRORS: tuple[type[BaseException], ...]
    """Failures to open a connection at all: the request never reached the server."""

_LAZY_ERRORS = {"NETWORK_ERRORS": _network_errors, "CONNECT_ERRORS": _connect_errors}


def __getattr__(name: str) -> Any:
    # The error tuples are built on first use: they import the HTTP clients, which a DAG file's parse
    # never needs.
    if name in _LAZY_ERRORS:
        return _LAZY_ERRORS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Files ---------------------------------------------------------------------------------------------
class FileVerdict(enum.Enum):
    """What a file's state means for whoever wants to use it."""

    USABLE = "usable"
    PENDING = "pending"
    FAILED = "failed"
    EXPIRED = "expired"
    GONE = "gone"


def file_verdict(
    ref: GeminiFileRef, *, now: datetime | None = None, margin: timedelta = timedelta(0)
) -> FileVerdict:
    """Usable (ACTIVE), pending (still processing), failed, or expired (within ``margin``) of a fresh ref.

    A file that a fetch did not find is :attr:`FileVerdict.GONE`; that is known from the fetch, not the ref.
    """
    from google.genai import types

    if ref.state == types.FileState.FAILED.value:
        return FileVerdict.FAILED
    if ref.is_expired(now=now, margin=margin):
        return FileVerdict.EXPIRED
    if ref.state == types.FileState.ACTIVE.value:
        return FileVerdict.USABLE
    return FileVerdict.PENDING


def describe(ref: GeminiFileRef) -> str:
    """``files/<id> (label)``, or only the name when that is all a ref knows."""
    return ref.name if ref.label == ref.name else f"{ref.name} ({ref.label})"


def verdict_error(ref: GeminiFileRef, verdict: FileVerdict) -> GeminiFileNotUsableError:
    """The one error (type and message) for a file that cannot be used, whoever finds out."""
    who = describe(ref)
    if verdict is FileVerdict.FAILED:
        reason = printable(ref.error).rstrip(". ") if ref.error else "Gemini gave no reason"
        return GeminiFileFailedError(
            f"{who} FAILED processing: {reason}. Check that it is a valid {ref.mime_type or 'document'}, "
            "then upload a valid copy of the document.",
            file_name=ref.name,
            error=ref.error,
        )
    if verdict is FileVerdict.EXPIRED:
        when = "expired at" if ref.is_expired() else "expires at"
        soon = "" if ref.is_expired() else ", too soon to use it"
        return GeminiFileGoneError(
            f"{who} {when} {ref.expiration_time}{soon}: {_lifetime(ref)}. Upload or register the source "
            "again.",
            file_name=ref.name,
        )
    if verdict is FileVerdict.GONE:
        return GeminiFileGoneError(
            f"{who} does not exist: it was deleted, expired (uploads live 48 hours, registrations up to 30 "
            "days) or belongs to another project. Upload or register the source again.",
            file_name=ref.name,
        )
    if verdict is FileVerdict.PENDING:
        return GeminiFileNotUsableError(
            f"{who} is {ref.state or 'in an unknown state'}, not ACTIVE: wait for it with "
            "GeminiFileActiveSensor (or GeminiHook.wait_for_active) before using it.",
            file_name=ref.name,
        )
    raise ValueError(f"{who} is usable; there is no error to raise.")


def _lifetime(ref: GeminiFileRef) -> str:
    """How long Gemini keeps a file like ``ref``, for messages (its ``expiration_time`` is what counts)."""
    from google.genai import types

    if ref.source == types.FileSource.REGISTERED.value:
        return "a registration gives access for up to 30 days"
    if ref.source == types.FileSource.UPLOADED.value:
        return "Gemini deletes uploaded files 48 hours after they are created"
    return "Gemini keeps uploads 48 hours and registrations up to 30 days"


def gone_error(file: GeminiFileRef | str) -> GeminiFileGoneError:
    """:func:`verdict_error` for a file a fetch did not find."""
    ref = file if isinstance(file, GeminiFileRef) else GeminiFileRef(name=file)
    error = verdict_error(ref, FileVerdict.GONE)
    assert isinstance(error, GeminiFileGoneError)
    return error


def first_error(problems: Sequence[GeminiFilesError]) -> GeminiFilesError:
    """One error for several files that cannot be used: the first no retry can fix, naming the others.

    With one problem, that error itself: the same type and message any other task gives for that file.
    """
    if not problems:
        raise ValueError("no problems to report")
    ordered = sorted(problems, key=lambda error: not isinstance(error, AirflowFailException))
    first = ordered[0]
    if len(ordered) == 1:
        return first
    combined = copy.copy(first)
    others = " ".join(str(error) for error in ordered[1:])
    combined.args = (f"{len(ordered)} files cannot be used. {first} Also: {others}",)
    return combined


def check_source_size(size: int | None, source: str) -> None:
    """Refuse a source Gemini cannot take: empty, or over 2 GiB (``source`` names it in the error)."""
    if size == 0:
        raise GeminiInputError(
            f"{printable(source)!r} is empty (0 bytes): Gemini cannot use an empty file. Check that "
            "whatever writes it finished, or leave it out of the upload or register call."
        )
    if size is not None and size > MAX_FILE_BYTES:
        raise GeminiInputError(
            f"{printable(source)!r} is {size / 1024**3:.2f} GiB; the Files API takes at most 2 GiB per "
            "file. Split or compress it before uploading."
        )


def check_inline_size(size: int, mime_type: str | None, source: str) -> None:
    """Refuse inline data Gemini would refuse: over 100 MB per request, or over 50 MB for a PDF."""
    is_pdf = (mime_type or "").split(";")[0].strip().lower() == "application/pdf"
    limit = MAX_INLINE_PDF_BYTES if is_pdf else MAX_INLINE_BYTES
    if size > limit:
        kind = "a PDF" if is_pdf else "a request"
        raise GeminiInputError(
            f"{printable(source)!r} is {size / 1024**2:.1f} MiB; inline data is limited to "
            f"{limit // 1024**2} MiB for {kind}. Upload it through the Files API instead "
            "(GeminiUploadFileOperator or GeminiHook.upload_file) and pass the file."
        )


def reuse_refusal(
    existing: GeminiFileRef, *, size: int, source_sha256: Callable[[], str | None]
) -> str | None:
    """
    Why ``existing`` must not stand in for an upload of ``size`` bytes, or None when it may.

    It may only when it is usable or still processing, not about to expire, and provably holds the same
    bytes: the same size and the same SHA-256 (``source_sha256`` hashes the source only when needed and
    returns None when it cannot read it twice).
    """
    verdict = file_verdict(existing, margin=REUSE_EXPIRY_MARGIN)
    if verdict is FileVerdict.FAILED:
        return f"it FAILED processing ({printable(existing.error or 'no reason given')})"
    if verdict is FileVerdict.EXPIRED:
        return f"it expires at {existing.expiration_time}, within {REUSE_EXPIRY_MARGIN}"
    if existing.size_bytes is not None and existing.size_bytes != size:
        return f"it holds {existing.size_bytes} bytes and the source {size}"
    stored = existing.sha256_hex
    if stored is None:
        return "Gemini reports no SHA-256 for it, so its content cannot be compared with the source"
    ours = source_sha256()
    if ours is None:
        return (
            "the source cannot be read twice (a stream that cannot seek), so its content cannot be compared"
        )
    if ours != stored:
        return f"its content differs from the source (SHA-256 {stored[:12]}... against {ours[:12]}...)"
    return None


# Errors --------------------------------------------------------------------------------------------
class ApiProblem(enum.Enum):
    """What an error answer of the Gemini API means for the caller."""

    AUTH_REFUSED = "auth_refused"  # how files:register authenticated was refused: another register_auth
    BAD_KEY = "bad_key"  # the API key was rejected: fix the connection
    FILE_GONE = "file_gone"  # the file does not exist (the live API answers 403, not 404)
    MODEL_NOT_FOUND = "model_not_found"
    QUOTA_FULL = (
        "quota_full"  # the project's 20 GB of file storage are used up: waiting seconds frees nothing
    )
    NOT_ACTIVE = "not_active"  # a file in the request is not ACTIVE yet
    NAME_TAKEN = "name_taken"  # 409: a file with the requested name exists
    JOB_GONE = "job_gone"  # the batch job does not exist (deleted, or another API key's)
    JOB_STATE = "job_state"  # the job's state does not allow it (cancel a finished job, delete a running one)
    REFUSED = "refused"  # any other 4xx: the request itself is wrong
    TRANSIENT = "transient"  # 408, 429, 5xx: another try may work
    OTHER = "other"


def is_quota_full(code: int | None, text: str) -> bool:
    """A 429 for the project's file storage quota (``file_storage_bytes``), which no quick retry frees."""
    return code == 429 and "file_storage_bytes" in text


def is_bad_key(code: int | None, text: str, details: str = "") -> bool:
    """An answer that rejects the API key (400 API_KEY_INVALID, 401, or 403 naming the key)."""
    return code == 401 or (code in (400, 403) and ("api key" in text.lower() or "API_KEY" in details))


class RegisterAuthRefusal(enum.Enum):
    """Why Gemini refused the authentication of a ``files:register`` call."""

    BOTH_CREDENTIALS = "both_credentials"  # the key and a token together (ErrorInfo OVERLOADED_CREDENTIALS)
    TOKEN_REFUSED = "token_refused"  # no valid OAuth token, where one is wanted (401)
    SCOPE_INSUFFICIENT = "scope_insufficient"  # the token lacks a scope (ACCESS_TOKEN_SCOPE_INSUFFICIENT)
    SERVICE_ACCOUNT = "service_account"  # "Access to Gemini API is restricted with service accounts"


def error_reasons(err: errors.APIError) -> set[str]:
    """The ``reason`` of every ErrorInfo detail of an error answer."""
    body = err.details.get("error", err.details) if isinstance(err.details, dict) else None
    details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return set()
    return {str(d["reason"]) for d in details if isinstance(d, dict) and d.get("reason")}


def register_auth_refusal(err: errors.APIError) -> RegisterAuthRefusal | None:
    """Which authentication refusal an error answer is, or None when it is none of them."""
    message = str(err.message or "")
    reasons = error_reasons(err)
    if "OVERLOADED_CREDENTIALS" in reasons or "used with other authentication credentials" in message:
        return RegisterAuthRefusal.BOTH_CREDENTIALS
    if "ACCESS_TOKEN_SCOPE_INSUFFICIENT" in reasons or "insufficient authentication scopes" in message:
        return RegisterAuthRefusal.SCOPE_INSUFFICIENT
    if "restricted with service accounts" in message:
        return RegisterAuthRefusal.SERVICE_ACCOUNT
    if err.code == 401 and "Expected OAuth 2 access token" in message:
        return RegisterAuthRefusal.TOKEN_REFUSED
    return None


_SERVICE_AGENT = (
    "Gemini then reads the bucket as the API key's project: grant that project's Gemini API service agent "
    "'Storage Object Viewer' on the bucket"
)


def register_auth_advice(refusal: RegisterAuthRefusal, mode: str) -> str:
    """Which ``register_auth`` setting to try after ``refusal``, given the ``mode`` that was refused."""
    key_only = (
        f"set the Gemini connection's extra register_auth to 'key_only' (the API key alone; {_SERVICE_AGENT})"
    )
    if refusal is RegisterAuthRefusal.BOTH_CREDENTIALS:
        return f"Gemini wants one form of authentication here: {key_only}."
    if refusal is RegisterAuthRefusal.TOKEN_REFUSED and mode == "key_only":
        return (
            "Gemini wants an OAuth token for files:register: set the Gemini connection's extra "
            "register_auth to 'key_and_bearer' (the default: the API key plus the GCP identity of "
            "gcp_conn_id, which needs 'Storage Object Viewer' on the bucket)."
        )
    if refusal is RegisterAuthRefusal.TOKEN_REFUSED:
        return (
            "Gemini did not accept the GCP access token: check the credentials of gcp_conn_id (valid, with "
            f"the cloud-platform scope), or {key_only}."
        )
    if refusal is RegisterAuthRefusal.SCOPE_INSUFFICIENT:
        return (
            "The GCP identity's token lacks a scope Gemini needs: use credentials with the "
            "'https://www.googleapis.com/auth/cloud-platform' scope (a service-account key in gcp_conn_id, "
            "or `gcloud auth application-default login --scopes=openid,"
            "https://www.googleapis.com/auth/cloud-platform`), or "
            f"{key_only}."
        )
    return (
        f"Gemini does not take a service account's token here: {key_only}; or register with user credentials."
    )


def classify_api_error(
    err: errors.APIError, *, about_file: bool = False, about_model: bool = False, about_job: bool = False
) -> ApiProblem:
    """Sort an SDK error answer; ``about_file`` / ``_model`` / ``_job`` say what the request named."""
    code = err.code
    message = str(err.message or "")
    if register_auth_refusal(err) is not None:
        return ApiProblem.AUTH_REFUSED
    if is_bad_key(code, message, str(err.details or "")):
        return ApiProblem.BAD_KEY
    if about_job and code in (403, 404):
        return ApiProblem.JOB_GONE
    if about_job and code == 400 and err.status == "FAILED_PRECONDITION":
        return ApiProblem.JOB_STATE
    if code in (403, 404) and (about_file or "access the File" in message):
        return ApiProblem.FILE_GONE
    if code == 404 and about_model:
        return ApiProblem.MODEL_NOT_FOUND
    if is_quota_full(code, message):
        return ApiProblem.QUOTA_FULL
    if code == 400 and err.status == "FAILED_PRECONDITION":
        return ApiProblem.NOT_ACTIVE
    if code == 409:
        return ApiProblem.NAME_TAKEN
    if code in RETRYABLE_STATUSES:
        return ApiProblem.TRANSIENT
    if 400 <= code < 500:
        return ApiProblem.REFUSED
    return ApiProblem.OTHER


def is_network_error(error: BaseException) -> bool:
    """A connection-level failure: refused, reset, dropped mid-body or timed out."""
    return isinstance(error, _network_errors())


def is_transient(error: BaseException) -> bool:
    """Whether trying the same call again soon may work: 408/429/5xx answers and network failures."""
    from google.genai import errors

    if isinstance(error, GeminiFilesError):
        return isinstance(error, GeminiConnectionError)
    if isinstance(error, errors.APIError):
        return error.code in RETRYABLE_STATUSES and not is_quota_full(error.code, str(error.message or ""))
    code = _google_status(error)
    if code is not None:
        return code in RETRYABLE_STATUSES
    return is_network_error(error)


def was_not_processed(error: BaseException) -> bool:
    """Whether a failed call certainly did nothing on the server, so repeating it cannot do it twice.

    True for a rate-limit 429 (refused before any work) and a connection never opened. A 5xx, a timeout
    or a connection cut after the request was sent may come after the work was done: a call that creates
    something (a registration, a batch job) is not repeated after those.
    """
    from google.genai import errors

    if isinstance(error, errors.APIError):
        return error.code == 429 and not is_quota_full(error.code, str(error.message or ""))
    return isinstance(error, _connect_errors())


def is_permanent(error: BaseException) -> bool:
    """Whether no retry can help: bad input, a FAILED or vanished file, a rejected key or request."""
    from google.genai import errors

    if isinstance(error, AirflowFailException | AirflowNotFoundException):
        return True
    code = error.code if isinstance(error, errors.APIError) else _google_status(error)
    return code is not None and 400 <= code < 500 and code not in RETRYABLE_STATUSES


def _google_status(error: BaseException) -> int | None:
    """The HTTP status of a google-cloud (api_core) or google-resumable-media error, if it is one."""
    from google.api_core import exceptions as api_exceptions

    if isinstance(error, api_exceptions.GoogleAPICallError):
        return int(error.code) if error.code is not None else None
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int) and type(error).__name__ == "InvalidResponse":
        return status
    return None


# Waiting for ACTIVE --------------------------------------------------------------------------------
class PollSchedule:
    """How long to wait before each poll: ``first`` seconds, 1.5x longer while nothing changes (up to
    ``cap``, at least ``first``), and ``first`` again after a poll that saw progress."""

    def __init__(self, first: float, *, cap: float = MAX_POLL_INTERVAL) -> None:
        self.first = first
        self.cap = max(cap, first)
        self.current = first

    def next(self, progressed: bool) -> float:
        """The wait before the next poll, given whether the last poll saw a file turn ACTIVE."""
        if progressed:
            self.current = self.first
        wait = self.current
        self.current = min(self.current * POLL_BACKOFF, self.cap)
        return wait


class ActiveWait:
    """
    One wait until files are ACTIVE: what is known between polls, and the decision after each poll.

    Give :meth:`record` each poll's answers (a fresh ref, or the exception its fetch raised, by file
    name). It keeps the latest state of every file and raises the error that ends the wait; transient
    errors are tolerated until :data:`MAX_CONSECUTIVE_POLL_FAILURES` polls in a row had one.
    """

    def __init__(self, files: Sequence[GeminiFileRef], *, max_failures: int = MAX_CONSECUTIVE_POLL_FAILURES):
        first: dict[str, GeminiFileRef] = {}
        for ref in files:
            first.setdefault(ref.name, ref)
        self.files = list(first.values())
        self.latest: dict[str, GeminiFileRef] = dict(first)
        self.active: dict[str, GeminiFileRef] = {}
        self.failures = 0
        self.max_failures = max_failures

    @property
    def pending(self) -> list[GeminiFileRef]:
        """The latest ref of every file not ACTIVE yet, in input order."""
        return [self.latest[ref.name] for ref in self.files if ref.name not in self.active]

    @property
    def done(self) -> bool:
        """Whether every file is ACTIVE."""
        return len(self.active) == len(self.files)

    def record(self, answers: Mapping[str, GeminiFileRef | BaseException]) -> bool:
        """Take one poll's answers; True when a file turned ACTIVE. Raises the error that ends the wait."""
        failed: list[BaseException] = []
        progressed = False
        for ref in self.pending:
            if ref.name not in answers:
                continue
            answer = answers[ref.name]
            if isinstance(answer, BaseException):
                if isinstance(answer, GeminiFileGoneError):
                    raise gone_error(ref) from answer
                if is_permanent(answer):
                    raise answer
                failed.append(answer)
                continue
            fresh = answer if answer.source_uri or not ref.source_uri else _with_source(answer, ref)
            self.latest[ref.name] = fresh
            verdict = file_verdict(fresh)
            if verdict is FileVerdict.USABLE:
                self.active[ref.name] = fresh
                progressed = True
            elif verdict is not FileVerdict.PENDING:
                raise verdict_error(fresh, verdict)
        if not failed:
            self.failures = 0
            return progressed
        self.failures += 1
        log.warning(
            "Could not check %d file(s) (%d poll(s) in a row failed; giving up after %d): %s",
            len(failed),
            self.failures,
            self.max_failures,
            printable(failed[0]),
        )
        if self.failures >= self.max_failures:
            names = ", ".join(describe(ref) for ref in self.pending[:5])
            raise GeminiFilesError(
                f"Gave up waiting for {names} after {self.failures} polls in a row could not check them; "
                f"the last error: {printable(failed[0])[:500]}. Check the network and the Gemini API's "
                "status, then retry the task."
            ) from failed[0]
        return progressed

    def result(self) -> list[GeminiFileRef]:
        """The ACTIVE refs, in input order (call when :attr:`done`)."""
        return [self.active[ref.name] for ref in self.files]

    def progress(self) -> str:
        """``"2 of 3 file(s) ACTIVE, 1 still PROCESSING"``."""
        pending = len(self.files) - len(self.active)
        return f"{len(self.active)} of {len(self.files)} file(s) ACTIVE, {pending} still PROCESSING"

    def timeout_error(self, timeout: float) -> GeminiWaitTimeoutError:
        """The error for a deadline that passed with files still pending (see :func:`timeout_error`)."""
        return timeout_error(self.pending, total=len(self.files), timeout=timeout)


def _with_source(fresh: GeminiFileRef, known: GeminiFileRef) -> GeminiFileRef:
    import dataclasses

    return dataclasses.replace(fresh, source_uri=known.source_uri)


def timeout_error(pending: Sequence[GeminiFileRef], *, total: int, timeout: float) -> GeminiWaitTimeoutError:
    """The one message for a wait whose ``timeout`` (seconds) passed with ``pending`` files not ACTIVE."""
    names = ", ".join(describe(ref) for ref in pending[:5])
    more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
    return GeminiWaitTimeoutError(
        f"{len(pending)} of {total} Gemini file(s) still not ACTIVE after the timeout of {timeout:g} s: "
        f"{names}{more}. Raise the timeout (videos and large PDFs can take minutes to process), or check "
        "the files' state with GeminiHook.get_file.",
        pending=[ref.name for ref in pending],
    )


# Batch jobs ----------------------------------------------------------------------------------------
JOB_FIRST_POLL = 5.0
"""Seconds before the first check of a batch job; later checks back off to the caller's poll interval."""

JOB_END_WAIT = 30.0
"""Seconds a cancelled job is given to reach CANCELLED before whoever cancelled it gives up."""


class JobVerdict(enum.Enum):
    """What a batch job's state means for whoever waits for its results."""

    RUNNING = "running"  # not finished yet: wait
    SUCCEEDED = "succeeded"  # results to read (some requests may still have failed)
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        """Whether the job will not change any more."""
        return self is not JobVerdict.RUNNING


_JOB_VERDICTS: dict[str, JobVerdict] = {
    "PENDING": JobVerdict.RUNNING,
    "QUEUED": JobVerdict.RUNNING,
    "RUNNING": JobVerdict.RUNNING,
    "UPDATING": JobVerdict.RUNNING,  # goes back to RUNNING
    "PAUSED": JobVerdict.RUNNING,  # may resume; the caller's timeout bounds the wait
    "CANCELLING": JobVerdict.RUNNING,  # ends CANCELLED, SUCCEEDED or FAILED: wait for which
    "UNSPECIFIED": JobVerdict.RUNNING,
    "SUCCEEDED": JobVerdict.SUCCEEDED,
    "PARTIALLY_SUCCEEDED": JobVerdict.SUCCEEDED,  # results exist; the failed requests say why
    "FAILED": JobVerdict.FAILED,
    "CANCELLED": JobVerdict.CANCELLED,
    "EXPIRED": JobVerdict.EXPIRED,
}


def job_state_name(state: object) -> str:
    """The SDK's name (``JOB_STATE_*``) of a batch job state given as the SDK's ``JobState``, its name,
    the REST API's ``BATCH_STATE_*`` or the bare ``SUCCEEDED``; ``JOB_STATE_UNSPECIFIED`` for None."""
    text = str(getattr(state, "value", state) or "").strip().upper()
    for prefix in ("JOB_STATE_", "BATCH_STATE_"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return f"JOB_STATE_{text or 'UNSPECIFIED'}"


def job_verdict(state: object) -> JobVerdict:
    """Running, succeeded (results to read), failed, cancelled or expired, for every state of every API.

    A state this module does not know (a newer API's) counts as running: the wait goes on until its
    timeout rather than abandoning a job that may still deliver paid-for results.
    """
    return _JOB_VERDICTS.get(job_state_name(state).removeprefix("JOB_STATE_"), JobVerdict.RUNNING)


def job_error(job_name: str, state: object) -> GeminiBatchJobError:
    """The one error for a batch job that ended without results (FAILED, CANCELLED or EXPIRED)."""
    name = job_state_name(state)
    verdict = job_verdict(state)
    if verdict is JobVerdict.FAILED:
        why = (
            "Gemini does not say why through the API (look the job up in AI Studio). A retry of the task "
            "submits a new job."
        )
    elif verdict is JobVerdict.CANCELLED:
        why = (
            "it was cancelled (by a user, a killed task or a cleanup task) before it finished. A retry of "
            "the task submits a new job."
        )
    elif verdict is JobVerdict.EXPIRED:
        why = (
            "Gemini did not finish it within 48 hours of its creation. Retry later, or split the documents "
            "into smaller batches."
        )
    else:
        raise ValueError(f"{job_name} is {name}: not an ending without results.")
    return GeminiBatchJobError(
        f"Batch job {job_name} ended {name.removeprefix('JOB_STATE_')} with no results: {why}",
        job_name=job_name,
        state=name,
    )


def job_timeout_error(
    job_name: str, state: object, *, timeout: float, cancelled: bool
) -> GeminiWaitTimeoutError:
    """The error for a batch job still unfinished ``timeout`` seconds after it was created."""
    name = job_state_name(state).removeprefix("JOB_STATE_")
    outcome = (
        "Cancelled it: nothing was published"
        if cancelled
        else "Could not cancel it (see the log); cancel it in AI Studio"
    )
    return GeminiWaitTimeoutError(
        f"Batch job {job_name} was still {name} {timeout:g} s after it was created (the task's timeout). "
        f"{outcome}. Raise timeout (the Batch API's target turnaround is 24 hours; jobs have been seen "
        "PENDING for longer) or retry later.",
        pending=[job_name],
    )


def job_poll_schedule(poll_interval: float) -> PollSchedule:
    """The waits between checks of a batch job: :data:`JOB_FIRST_POLL` seconds first (a small job is done
    within seconds), 1.5x longer each time, up to ``poll_interval``."""
    return PollSchedule(min(poll_interval, JOB_FIRST_POLL), cap=poll_interval)


class JobWait:
    """
    One wait until a batch job ends: the same decisions in the triggerer and in a worker.

    Give :meth:`record` each check's answer (the job's state, or the exception its fetch raised). It
    returns the verdict; a gone job or another error no check can fix ends the wait at once, transient
    errors are tolerated until :data:`MAX_CONSECUTIVE_POLL_FAILURES` checks in a row failed.
    """

    def __init__(self, job_name: str, *, max_failures: int = MAX_CONSECUTIVE_POLL_FAILURES) -> None:
        self.job_name = job_name
        self.state = job_state_name(None)
        self.failures = 0
        self.max_failures = max_failures

    def record(self, answer: object) -> JobVerdict:
        """Take one check's answer (a state, or an exception); the verdict, or raise what ends the wait."""
        if not isinstance(answer, BaseException):
            self.failures = 0
            self.state = job_state_name(answer)
            return job_verdict(self.state)
        if is_permanent(answer) or isinstance(answer, GeminiBatchJobError):
            raise answer
        self.failures += 1
        log.warning(
            "Could not check batch job %s (%d check(s) in a row failed; giving up after %d): %s",
            self.job_name,
            self.failures,
            self.max_failures,
            printable(answer),
        )
        if self.failures >= self.max_failures:
            raise GeminiFilesError(
                f"Gave up waiting for batch job {self.job_name} after {self.failures} checks in a row "
                f"failed; the last error: {printable(answer)[:500]}. The job may still run: retry the task "
                "to re-attach to it."
            ) from answer
        return JobVerdict.RUNNING

    def progress(self) -> str:
        """``"Batch job batches/x is RUNNING"``."""
        return f"Batch job {self.job_name} is {self.state.removeprefix('JOB_STATE_')}"


def batch_file_problem(
    ref: GeminiFileRef, *, deadline: datetime, now: datetime | None = None
) -> GeminiFilesError | None:
    """
    Why a document's file must not be sent in a batch job that may run until ``deadline``, or None.

    Not ACTIVE, FAILED or expired: :func:`verdict_error`'s error. ACTIVE but expiring before the deadline
    (files live 48 hours, a batch may take 24 or more): an error naming the file and both times, since
    Gemini could delete it before the job reads it.
    """
    moment = now or datetime.now(UTC)
    verdict = file_verdict(ref, now=moment, margin=USE_EXPIRY_MARGIN)
    if verdict is not FileVerdict.USABLE:
        return verdict_error(ref, verdict)
    if ref.expiration_time is not None and ref.expiration_time <= deadline:
        return GeminiFileGoneError(
            f"{describe(ref)} expires at {ref.expiration_time.isoformat()}, before the batch job's deadline "
            f"{deadline.isoformat()}: Gemini could delete it before the job reads it (files live 48 hours, a "
            "batch may take 24 or more). Upload or register it again just before the batch, or lower the "
            "task's timeout.",
            file_name=ref.name,
        )
    return None


_RPC_CODES: dict[int, str] = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
}

_RPC_ADVICE: dict[str, str] = {
    "INVALID_ARGUMENT": "Gemini refused the request: check the prompt, generation_config and response_schema",
    "NOT_FOUND": "a file of the request is gone (deleted, expired, or another API key's)",
    "PERMISSION_DENIED": "a file of the request is gone (deleted, expired, or another API key's)",
    "FAILED_PRECONDITION": "a file of the request was not ACTIVE when the job ran",
}


def request_error_reason(status: object) -> str:
    """Why one request of a batch failed, from its ``google.rpc.Status`` (``{"code", "message"}``)."""
    if not isinstance(status, Mapping):
        return f"Gemini returned an error it did not describe: {printable(status)[:300]}"
    code = status.get("code")
    name = _RPC_CODES.get(code, "ERROR") if isinstance(code, int) else "ERROR"
    message = printable(status.get("message") or "no message").strip()[:500]
    advice = _RPC_ADVICE.get(name)
    return f"{name} ({code}): {message}" + (f" ({advice})" if advice else "")


# Errors through a trigger event ---------------------------------------------------------------------
_EVENT_KINDS: tuple[tuple[str, type[GeminiFilesError]], ...] = (
    ("batch_gone", GeminiBatchJobGoneError),
    ("batch_job", GeminiBatchJobError),
    ("batch_documents", GeminiBatchDocumentsError),
    ("failed", GeminiFileFailedError),
    ("gone", GeminiFileGoneError),
    ("exists", GeminiFileExistsError),
    ("input", GeminiInputError),
    ("timeout", GeminiWaitTimeoutError),
    ("not_usable", GeminiFileNotUsableError),
    ("connection", GeminiConnectionError),
    ("error", GeminiFilesError),
)


def error_to_event(error: BaseException) -> dict[str, Any]:
    """A primitive dict (for a TriggerEvent) from which :func:`error_from_event` rebuilds the same error."""
    kind = next((kind for kind, cls in _EVENT_KINDS if isinstance(error, cls)), "error")
    message = str(error) if isinstance(error, GeminiFilesError) else f"{type(error).__name__}: {error}"
    return {
        "kind": kind,
        "message": message,
        "file_name": getattr(error, "file_name", None),
        "error": getattr(error, "error", None) if isinstance(error, GeminiFileFailedError) else None,
        "pending": list(getattr(error, "pending", None) or []),
        "job_name": getattr(error, "job_name", None),
        "state": getattr(error, "state", None),
    }


def error_from_event(payload: Mapping[str, Any]) -> GeminiFilesError:
    """The error :func:`error_to_event` described: same type, same message."""
    kinds = dict(_EVENT_KINDS)
    cls = kinds.get(str(payload.get("kind")), GeminiFilesError)
    message = str(payload.get("message") or "no message")
    if cls is GeminiFileFailedError:
        return GeminiFileFailedError(message, file_name=payload.get("file_name"), error=payload.get("error"))
    if issubclass(cls, GeminiFileNotUsableError):
        return cls(message, file_name=payload.get("file_name"))
    if cls is GeminiFileExistsError:
        return GeminiFileExistsError(message, file_name=payload.get("file_name"))
    if cls is GeminiWaitTimeoutError:
        return GeminiWaitTimeoutError(message, pending=list(payload.get("pending") or []))
    if issubclass(cls, GeminiBatchJobError):
        return cls(message, job_name=payload.get("job_name"), state=payload.get("state"))
    return cls(message)
