"""The shared decisions (hooks/policy.py): file verdicts, error classes, the wait for ACTIVE, reuse."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSensorTimeout
from google.api_core import exceptions as api_exceptions
from google.genai import errors

from airflow_gemini_files.exceptions import (
    GeminiConnectionError,
    GeminiFileExistsError,
    GeminiFileFailedError,
    GeminiFileGoneError,
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
    GeminiWaitTimeoutError,
)
from airflow_gemini_files.hooks import policy
from airflow_gemini_files.hooks.policy import ActiveWait, ApiProblem, FileVerdict, PollSchedule
from airflow_gemini_files.refs import GeminiFileRef

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def ref(name: str = "files/a", state: str | None = "ACTIVE", **fields) -> GeminiFileRef:
    fields.setdefault("display_name", f"{name.removeprefix('files/')}.pdf")
    fields.setdefault("expiration_time", datetime.now(UTC) + timedelta(hours=40))
    return GeminiFileRef(name=name, state=state, mime_type="application/pdf", **fields)


def api_error(
    code: int, message: str = "", status: str | None = None, details: object = None
) -> errors.APIError:
    body = {"error": {"code": code, "message": message, "status": status, "details": details}}
    cls = errors.ClientError if code < 500 else errors.ServerError
    return cls(code, body)


# File verdicts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "expires_in", "verdict"),
    [
        ("ACTIVE", timedelta(hours=40), FileVerdict.USABLE),
        ("PROCESSING", timedelta(hours=40), FileVerdict.PENDING),
        ("STATE_UNSPECIFIED", timedelta(hours=40), FileVerdict.PENDING),
        (None, timedelta(hours=40), FileVerdict.PENDING),
        ("FAILED", timedelta(hours=40), FileVerdict.FAILED),
        ("FAILED", timedelta(hours=-1), FileVerdict.FAILED),
        ("ACTIVE", timedelta(seconds=-1), FileVerdict.EXPIRED),
        ("ACTIVE", timedelta(0), FileVerdict.EXPIRED),
        ("PROCESSING", timedelta(seconds=-1), FileVerdict.EXPIRED),
    ],
)
def test_file_verdict(state, expires_in, verdict):
    assert policy.file_verdict(ref(state=state, expiration_time=NOW + expires_in), now=NOW) is verdict


def test_file_verdict_with_a_margin_treats_a_file_about_to_expire_as_expired():
    soon = ref(expiration_time=NOW + timedelta(seconds=30))
    assert policy.file_verdict(soon, now=NOW) is FileVerdict.USABLE
    assert policy.file_verdict(soon, now=NOW, margin=policy.USE_EXPIRY_MARGIN) is FileVerdict.EXPIRED
    assert policy.file_verdict(ref(expiration_time=None), now=NOW) is FileVerdict.USABLE
    assert (
        policy.file_verdict(ref(expiration_time=datetime.now(UTC) - timedelta(seconds=1)))
        is FileVerdict.EXPIRED
    )


def test_the_margins():
    assert timedelta(minutes=1) == policy.USE_EXPIRY_MARGIN
    assert timedelta(hours=1) == policy.REUSE_EXPIRY_MARGIN
    assert policy.MAX_FILE_BYTES == 2 * 1024**3
    assert policy.MAX_CONSECUTIVE_POLL_FAILURES == 5
    assert {408, 429, 500, 502, 503, 504} == policy.RETRYABLE_STATUSES


def test_describe_names_the_file_and_its_label_once():
    assert policy.describe(ref()) == "files/a (a.pdf)"
    assert policy.describe(GeminiFileRef(name="files/a")) == "files/a"
    assert (
        policy.describe(GeminiFileRef(name="files/a", source_uri="gs://b/x.pdf")) == "files/a (gs://b/x.pdf)"
    )


# One error per verdict --------------------------------------------------------------------------------
def test_a_failed_file_gives_geminis_reason_and_the_fix():
    error = policy.verdict_error(ref(state="FAILED", error="Corrupt PDF."), FileVerdict.FAILED)
    assert type(error) is GeminiFileFailedError
    assert str(error) == (
        "files/a (a.pdf) FAILED processing: Corrupt PDF. Check that it is a valid application/pdf, then "
        "upload a valid copy of the document."
    )
    assert (error.file_name, error.error) == ("files/a", "Corrupt PDF.")
    assert isinstance(error, AirflowFailException)


def test_a_failed_reason_loses_only_its_final_full_stop():
    error = policy.verdict_error(ref(state="FAILED", error="Unsupported codec X."), FileVerdict.FAILED)
    assert str(error).startswith("files/a (a.pdf) FAILED processing: Unsupported codec X. Check")


def test_a_failed_file_without_a_reason_or_type_says_so():
    bare = GeminiFileRef(name="files/a", state="FAILED")
    assert str(policy.verdict_error(bare, FileVerdict.FAILED)) == (
        "files/a FAILED processing: Gemini gave no reason. Check that it is a valid document, then upload a "
        "valid copy of the document."
    )


def test_an_expired_file_says_when_and_how_to_fix():
    past = ref(expiration_time=datetime(2020, 1, 2, tzinfo=UTC), source="UPLOADED")
    error = policy.verdict_error(past, FileVerdict.EXPIRED)
    assert type(error) is GeminiFileGoneError
    assert str(error) == (
        "files/a (a.pdf) expired at 2020-01-02 00:00:00+00:00: Gemini deletes uploaded files 48 hours after "
        "they are created. Upload or register the source again."
    )
    assert error.file_name == "files/a"


@pytest.mark.parametrize(
    ("source", "lifetime"),
    [
        ("REGISTERED", "a registration gives access for up to 30 days."),
        ("UPLOADED", "Gemini deletes uploaded files 48 hours after they are created."),
        (None, "Gemini keeps uploads 48 hours and registrations up to 30 days."),
    ],
)
def test_an_expiry_message_states_the_lifetime_of_the_files_source(source, lifetime):
    past = ref(expiration_time=datetime(2020, 1, 2, tzinfo=UTC), source=source)
    assert f": {lifetime} Upload or register" in str(policy.verdict_error(past, FileVerdict.EXPIRED))


def test_a_registered_file_expires_at_its_own_expiration_time_not_after_48_hours():
    created = datetime.now(UTC) - timedelta(days=3)
    registered = ref(source="REGISTERED", create_time=created, expiration_time=created + timedelta(days=30))
    assert policy.file_verdict(registered, margin=policy.USE_EXPIRY_MARGIN) is FileVerdict.USABLE
    later = datetime.now(UTC) + timedelta(days=28)
    assert policy.file_verdict(registered, now=later) is FileVerdict.EXPIRED
    assert timedelta(days=30) == policy.REGISTRATION_LIFETIME
    assert timedelta(hours=48) == policy.UPLOAD_LIFETIME


def test_a_file_about_to_expire_says_it_is_too_soon():
    soon = ref(expiration_time=datetime(2999, 1, 2, tzinfo=UTC), source="UPLOADED")
    assert str(policy.verdict_error(soon, FileVerdict.EXPIRED)).startswith(
        "files/a (a.pdf) expires at 2999-01-02 00:00:00+00:00, too soon to use it: Gemini deletes"
    )


def test_a_gone_file_and_its_label():
    error = policy.gone_error(ref())
    assert type(error) is GeminiFileGoneError
    assert str(error) == (
        "files/a (a.pdf) does not exist: it was deleted, expired (uploads live 48 hours, registrations up to "
        "30 days) or belongs to another project. Upload or register the source again."
    )
    assert error.file_name == "files/a"
    assert str(policy.gone_error("files/b")).startswith("files/b does not exist:")


def test_a_pending_file_says_to_wait_and_is_retried():
    error = policy.verdict_error(ref(state="PROCESSING"), FileVerdict.PENDING)
    assert type(error) is GeminiFileNotUsableError
    assert error.file_name == "files/a"
    assert not isinstance(error, AirflowFailException)
    assert str(error) == (
        "files/a (a.pdf) is PROCESSING, not ACTIVE: wait for it with GeminiFileActiveSensor (or "
        "GeminiHook.wait_for_active) before using it."
    )
    assert "is in an unknown state, not ACTIVE" in str(
        policy.verdict_error(ref(state=None), FileVerdict.PENDING)
    )


def test_a_usable_file_has_no_error():
    with pytest.raises(ValueError, match="usable"):
        policy.verdict_error(ref(), FileVerdict.USABLE)


def test_first_error_is_the_one_error_or_the_first_no_retry_fixes():
    pending = policy.verdict_error(ref("files/p", state="PROCESSING"), FileVerdict.PENDING)
    gone = policy.gone_error("files/g")
    failed = policy.verdict_error(ref("files/f", state="FAILED", error="bad"), FileVerdict.FAILED)
    assert policy.first_error([pending]) is pending
    combined = policy.first_error([pending, gone, failed])
    assert type(combined) is GeminiFileGoneError
    assert combined.file_name == "files/g"
    assert str(combined) == f"3 files cannot be used. {gone} Also: {failed} {pending}"
    assert str(gone).startswith("files/g does not exist"), "the original is left as it was"
    with pytest.raises(ValueError, match=r"^no problems to report$"):
        policy.first_error([])


# Sizes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2 * 1024**3, None])
def test_sizes_gemini_takes(size):
    policy.check_source_size(size, "a.pdf")


def test_an_empty_source_is_refused_naming_it():
    with pytest.raises(GeminiInputError) as error:
        policy.check_source_size(0, "gs://b/_SUCCESS")
    assert str(error.value) == (
        "'gs://b/_SUCCESS' is empty (0 bytes): Gemini cannot use an empty file. Check that whatever writes "
        "it finished, or leave it out of the upload or register call."
    )


def test_a_source_over_2_gib_is_refused_naming_it():
    with pytest.raises(GeminiInputError) as error:
        policy.check_source_size(2 * 1024**3 + 1, "big\n.mp4")
    assert str(error.value) == (
        "'big\\\\n.mp4' is 2.00 GiB; the Files API takes at most 2 GiB per file. Split or compress it before "
        "uploading."
    )


@pytest.mark.parametrize(
    ("size", "mime_type", "refused"),
    [
        (100 * 1024**2, "image/png", False),
        (100 * 1024**2 + 1, "image/png", True),
        (100 * 1024**2 + 1, None, True),
        (50 * 1024**2, "application/pdf", False),
        (50 * 1024**2 + 1, "application/pdf", True),
        (50 * 1024**2 + 1, "Application/PDF; x=y", True),
        (50 * 1024**2 + 1, "image/png", False),
        (21 * 1024**2, "image/png", False),  # over the old 20 MB limit: accepted now
    ],
)
def test_inline_data_limits_follow_the_docs(size, mime_type, refused):
    assert (policy.MAX_INLINE_BYTES, policy.MAX_INLINE_PDF_BYTES) == (100 * 1024**2, 50 * 1024**2)
    if not refused:
        policy.check_inline_size(size, mime_type, "chart.png")
        return
    with pytest.raises(GeminiInputError) as error:
        policy.check_inline_size(size, mime_type, "big\n.bin")
    limit = "50 MiB for a PDF" if "pdf" in str(mime_type).lower() else "100 MiB for a request"
    assert str(error.value) == (
        f"'big\\\\n.bin' is {size / 1024**2:.1f} MiB; inline data is limited to {limit}. Upload it through "
        "the Files API instead (GeminiUploadFileOperator or GeminiHook.upload_file) and pass the file."
    )


# Reuse --------------------------------------------------------------------------------------------------
DATA = b"%PDF-1.4 the document"
HEX = hashlib.sha256(DATA).hexdigest()
LIVE_HASH = base64.b64encode(HEX.encode()).decode()  # what the live API reports


def existing(**fields) -> GeminiFileRef:
    fields.setdefault("size_bytes", len(DATA))
    fields.setdefault("sha256_hash", LIVE_HASH)
    fields.setdefault("expiration_time", datetime.now(UTC) + timedelta(hours=40))
    return ref(**fields)


def test_a_usable_file_with_the_same_size_and_hash_is_reused():
    assert policy.reuse_refusal(existing(), size=len(DATA), source_sha256=lambda: HEX) is None
    assert (
        policy.reuse_refusal(existing(state="PROCESSING"), size=len(DATA), source_sha256=lambda: HEX) is None
    )


def test_the_raw_digest_form_of_the_hash_is_compared_too():
    raw = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    assert policy.reuse_refusal(existing(sha256_hash=raw), size=len(DATA), source_sha256=lambda: HEX) is None


@pytest.mark.parametrize(
    ("fields", "size", "ours", "why"),
    [
        ({"state": "FAILED", "error": "bad"}, len(DATA), HEX, "it FAILED processing (bad)"),
        ({"state": "FAILED"}, len(DATA), HEX, "it FAILED processing (no reason given)"),
        ({"size_bytes": 5}, len(DATA), HEX, f"it holds 5 bytes and the source {len(DATA)}"),
        ({"sha256_hash": None}, len(DATA), HEX, "Gemini reports no SHA-256 for it"),
        ({}, len(DATA), None, "the source cannot be read twice"),
        (
            {},
            len(DATA),
            "0" * 64,
            f"its content differs from the source (SHA-256 {HEX[:12]}... against 000000000000",
        ),
    ],
)
def test_a_file_that_cannot_be_proven_the_same_is_not_reused(fields, size, ours, why):
    refusal = policy.reuse_refusal(existing(**fields), size=size, source_sha256=lambda: ours)
    assert refusal is not None
    assert refusal.startswith(why)


def test_a_file_that_expires_within_an_hour_is_not_reused():
    soon = existing(expiration_time=datetime.now(UTC) + timedelta(minutes=59))
    assert policy.reuse_refusal(soon, size=len(DATA), source_sha256=lambda: HEX).startswith("it expires at ")
    later = existing(expiration_time=datetime.now(UTC) + timedelta(minutes=61))
    assert policy.reuse_refusal(later, size=len(DATA), source_sha256=lambda: HEX) is None


def test_the_source_is_hashed_only_when_size_and_state_allow_reuse():
    def never() -> str:
        raise AssertionError("hashed although the size already differs")

    assert policy.reuse_refusal(existing(size_bytes=1), size=len(DATA), source_sha256=never) is not None
    assert policy.reuse_refusal(existing(size_bytes=None), size=len(DATA), source_sha256=lambda: HEX) is None


# API errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "about", "problem"),
    [
        (
            api_error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"),
            {},
            ApiProblem.BAD_KEY,
        ),
        (
            api_error(400, "Bad request", "INVALID_ARGUMENT", [{"reason": "API_KEY_INVALID"}]),
            {},
            ApiProblem.BAD_KEY,
        ),
        (api_error(401, "unauthenticated"), {}, ApiProblem.BAD_KEY),
        (
            api_error(
                403,
                "Method doesn't allow unregistered callers (no established identity). Please use API Key",
            ),
            {},
            ApiProblem.BAD_KEY,
        ),
        (
            api_error(403, "You do not have permission to access the File x or it may not exist."),
            {},
            ApiProblem.FILE_GONE,
        ),
        (api_error(403, "Permission denied"), {"about_file": True}, ApiProblem.FILE_GONE),
        (api_error(404, "not found"), {"about_file": True}, ApiProblem.FILE_GONE),
        (api_error(403, "Permission denied"), {}, ApiProblem.REFUSED),
        (api_error(404, "models/x is not found"), {"about_model": True}, ApiProblem.MODEL_NOT_FOUND),
        (api_error(404, "not found"), {}, ApiProblem.REFUSED),
        (api_error(429, "Quota exceeded for quota metric file_storage_bytes"), {}, ApiProblem.QUOTA_FULL),
        (api_error(429, "Resource exhausted"), {}, ApiProblem.TRANSIENT),
        (
            api_error(400, "The File x is not in an ACTIVE state", "FAILED_PRECONDITION"),
            {},
            ApiProblem.NOT_ACTIVE,
        ),
        (api_error(400, "bad schema", "INVALID_ARGUMENT"), {}, ApiProblem.REFUSED),
        (api_error(409, "already exists", "ALREADY_EXISTS"), {}, ApiProblem.NAME_TAKEN),
        (api_error(408, "timeout"), {}, ApiProblem.TRANSIENT),
        (api_error(500, "internal"), {}, ApiProblem.TRANSIENT),
        (api_error(503, "overloaded"), {}, ApiProblem.TRANSIENT),
        (api_error(504, "deadline"), {}, ApiProblem.TRANSIENT),
        (api_error(501, "not implemented"), {}, ApiProblem.OTHER),
        (api_error(499, "cancelled"), {}, ApiProblem.REFUSED),
    ],
)
def test_classify_api_error(error, about, problem):
    assert policy.classify_api_error(error, **about) is problem


@pytest.mark.parametrize(
    ("code", "text", "details", "bad"),
    [
        (400, "API key not valid", "", True),
        (403, "api key expired", "", True),
        (400, "x", "API_KEY_INVALID", True),
        (401, "", "", True),
        (404, "API key not valid", "", False),
        (400, "invalid schema", "", False),
        (None, "api key", "", False),
    ],
)
def test_is_bad_key(code, text, details, bad):
    assert policy.is_bad_key(code, text, details) is bad


# Registration authentication: the bodies as quoted in python-genai #2535 and reported by a public project.
OVERLOADED = api_error(
    401,
    "API key for authentication is used with other authentication credentials. Expected only one form of "
    "authentication.",
    "UNAUTHENTICATED",
    [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "OVERLOADED_CREDENTIALS",
            "metadata": {"method": "google.ai.generativelanguage.v1beta.FileService.RegisterFiles"},
        }
    ],
)
TOKEN_WANTED = api_error(
    401,
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential.",
    "UNAUTHENTICATED",
)
SCOPE = api_error(
    403,
    "Request had insufficient authentication scopes.",
    "PERMISSION_DENIED",
    [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT"}],
)
SERVICE_ACCOUNT = api_error(
    403,
    "Access to Gemini API is restricted with service accounts. Use authorization keys instead.",
    "PERMISSION_DENIED",
)


@pytest.mark.parametrize(
    ("error", "refusal"),
    [
        (OVERLOADED, policy.RegisterAuthRefusal.BOTH_CREDENTIALS),
        (
            api_error(401, "x", None, [{"reason": "OVERLOADED_CREDENTIALS"}]),
            policy.RegisterAuthRefusal.BOTH_CREDENTIALS,
        ),
        (
            api_error(401, "API key for authentication is used with other authentication credentials."),
            policy.RegisterAuthRefusal.BOTH_CREDENTIALS,
        ),
        (TOKEN_WANTED, policy.RegisterAuthRefusal.TOKEN_REFUSED),
        (SCOPE, policy.RegisterAuthRefusal.SCOPE_INSUFFICIENT),
        (
            api_error(403, "Request had insufficient authentication scopes."),
            policy.RegisterAuthRefusal.SCOPE_INSUFFICIENT,
        ),
        (SERVICE_ACCOUNT, policy.RegisterAuthRefusal.SERVICE_ACCOUNT),
        (api_error(401, "unauthenticated"), None),
        (api_error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"), None),
        (api_error(403, "Expected OAuth 2 access token"), None),
        (api_error(403, "Permission denied", None, [{"reason": "IAM_PERMISSION_DENIED"}]), None),
    ],
)
def test_register_auth_refusals_are_told_apart(error, refusal):
    assert policy.register_auth_refusal(error) is refusal
    expected = ApiProblem.AUTH_REFUSED if refusal else policy.classify_api_error(error)
    assert policy.classify_api_error(error) is expected
    if refusal:
        assert not policy.is_transient(error), "an authentication refusal is never retried"


KEY_ONLY = (
    "set the Gemini connection's extra register_auth to 'key_only' (the API key alone; Gemini then reads "
    "the bucket as the API key's project: grant that project's Gemini API service agent 'Storage Object "
    "Viewer' on the bucket)"
)


@pytest.mark.parametrize(
    ("refusal", "mode", "advice"),
    [
        (
            policy.RegisterAuthRefusal.BOTH_CREDENTIALS,
            "key_and_bearer",
            f"Gemini wants one form of authentication here: {KEY_ONLY}.",
        ),
        (
            policy.RegisterAuthRefusal.TOKEN_REFUSED,
            "key_only",
            "Gemini wants an OAuth token for files:register: set the Gemini connection's extra register_auth "
            "to 'key_and_bearer' (the default: the API key plus the GCP identity of gcp_conn_id, which needs "
            "'Storage Object Viewer' on the bucket).",
        ),
        (
            policy.RegisterAuthRefusal.TOKEN_REFUSED,
            "key_and_bearer",
            "Gemini did not accept the GCP access token: check the credentials of gcp_conn_id (valid, with "
            f"the cloud-platform scope), or {KEY_ONLY}.",
        ),
        (
            policy.RegisterAuthRefusal.SCOPE_INSUFFICIENT,
            "key_and_bearer",
            "The GCP identity's token lacks a scope Gemini needs: use credentials with the "
            "'https://www.googleapis.com/auth/cloud-platform' scope (a service-account key in gcp_conn_id, "
            "or `gcloud auth application-default login --scopes=openid,"
            f"https://www.googleapis.com/auth/cloud-platform`), or {KEY_ONLY}.",
        ),
        (
            policy.RegisterAuthRefusal.SERVICE_ACCOUNT,
            "key_and_bearer",
            f"Gemini does not take a service account's token here: {KEY_ONLY}; or register with user "
            "credentials.",
        ),
    ],
)
def test_register_auth_advice_names_the_setting_to_try(refusal, mode, advice):
    assert policy.register_auth_advice(refusal, mode) == advice


def test_error_reasons_reads_every_error_info():
    assert policy.error_reasons(OVERLOADED) == {"OVERLOADED_CREDENTIALS"}
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
    mixed = api_error(429, "x", None, [retry_info, "text", {"reason": "RATE_LIMIT_EXCEEDED"}, {"reason": ""}])
    assert policy.error_reasons(mixed) == {"RATE_LIMIT_EXCEEDED"}
    unwrapped = errors.ClientError(401, {"code": 401, "details": [{"reason": "OVERLOADED_CREDENTIALS"}]})
    assert policy.error_reasons(unwrapped) == {"OVERLOADED_CREDENTIALS"}
    assert policy.error_reasons(api_error(400, "x", None, "not a list")) == set()
    not_a_dict = errors.ClientError(400, {})  # google-genai < 1.62 cannot build one from a list
    not_a_dict.details = ["not", "a", "dict"]
    assert policy.error_reasons(not_a_dict) == set()


def test_a_scope_refusal_is_known_by_its_reason_alone():
    forbidden = api_error(403, "Forbidden", None, [{"reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT"}])
    assert policy.register_auth_refusal(forbidden) is policy.RegisterAuthRefusal.SCOPE_INSUFFICIENT


def test_is_quota_full_needs_429_and_the_storage_quota():
    assert policy.is_quota_full(429, "... file_storage_bytes ...")
    assert not policy.is_quota_full(429, "requests per minute")
    assert not policy.is_quota_full(400, "file_storage_bytes")


@pytest.mark.parametrize(
    ("error", "transient", "permanent"),
    [
        (api_error(503, "overloaded"), True, False),
        (api_error(429, "slow down"), True, False),
        (api_error(429, "file_storage_bytes"), False, False),
        (api_error(400, "bad"), False, True),
        (api_error(404, "gone"), False, True),
        (api_error(408, "timeout"), True, False),
        (api_error(501, "not implemented"), False, False),
        (httpx.ConnectError("refused"), True, False),
        (httpx.ReadTimeout("slow"), True, False),
        (requests.ConnectionError("reset"), True, False),
        (requests.exceptions.ChunkedEncodingError("cut"), True, False),
        (ConnectionResetError("reset"), True, False),
        (TimeoutError("slow"), True, False),
        (OSError("disk"), False, False),
        (RuntimeError("bug"), False, False),
        (api_exceptions.ServiceUnavailable("gcs 503"), True, False),
        (api_exceptions.TooManyRequests("gcs 429"), True, False),
        (api_exceptions.Forbidden("gcs 403"), False, True),
        (api_exceptions.NotFound("gcs 404"), False, True),
        (GeminiConnectionError("unreachable"), True, False),
        (GeminiFilesError("quota full"), False, False),
        (GeminiInputError("bad key"), False, True),
        (GeminiFileGoneError("gone"), False, True),
        (GeminiFileFailedError("failed"), False, True),
        (GeminiFileNotUsableError("processing"), False, False),
        (AirflowNotFoundException("no connection"), False, True),
    ],
)
def test_transient_and_permanent_errors(error, transient, permanent):
    assert policy.is_transient(error) is transient
    assert policy.is_permanent(error) is permanent


@pytest.mark.parametrize(
    ("error", "unprocessed"),
    [
        (api_error(429, "slow down"), True),
        (api_error(429, "Quota exceeded for quota metric file_storage_bytes"), False),
        (api_error(503, "overloaded"), False),
        (api_error(500, "internal"), False),
        (api_error(504, "deadline"), False),
        (api_error(408, "timeout"), False),
        (httpx.ConnectError("refused"), True),
        (httpx.ConnectTimeout("no route"), True),
        (ConnectionRefusedError(), True),
        (httpx.ReadTimeout("slow"), False),
        (httpx.RemoteProtocolError("peer closed"), False),
        (ConnectionResetError(), False),
    ],
)
def test_was_not_processed_only_when_the_server_certainly_did_nothing(error, unprocessed):
    assert policy.was_not_processed(error) is unprocessed


def test_a_resumable_media_error_is_classified_by_its_status():
    class InvalidResponse(Exception):  # google.resumable_media's shape: a response with a status code
        def __init__(self, status: int) -> None:
            self.response = type("Response", (), {"status_code": status})()

    assert policy.is_transient(InvalidResponse(503))
    assert not policy.is_transient(InvalidResponse(404))
    assert policy.is_permanent(InvalidResponse(404))

    class OtherError(Exception):
        response = type("Response", (), {"status_code": 503})()

    assert not policy.is_transient(OtherError())


def test_a_google_error_without_a_code_is_neither():
    error = api_exceptions.GoogleAPICallError("no code")
    error.code = None
    assert not policy.is_transient(error)
    assert not policy.is_permanent(error)


# The wait for ACTIVE -----------------------------------------------------------------------------------
def test_poll_schedule_grows_by_half_up_to_the_cap_and_resets_on_progress():
    schedule = PollSchedule(2.0, cap=10.0)
    assert [schedule.next(False) for _ in range(6)] == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0]
    assert schedule.next(True) == 2.0
    assert schedule.next(False) == 3.0


def test_poll_schedule_cap_is_at_least_the_first_interval():
    schedule = PollSchedule(90.0)
    assert [schedule.next(False) for _ in range(3)] == [90.0, 90.0, 90.0]
    assert PollSchedule(1.0).cap == policy.MAX_POLL_INTERVAL == 60.0


def test_active_wait_keeps_order_duplicates_once_and_what_each_poll_said():
    wait = ActiveWait(
        [ref("files/a", "PROCESSING"), ref("files/b", "PROCESSING"), ref("files/a", "PROCESSING")]
    )
    assert [r.name for r in wait.files] == ["files/a", "files/b"]
    assert not wait.done
    assert wait.record({"files/b": ref("files/b")}) is True
    assert [r.name for r in wait.pending] == ["files/a"]
    assert wait.progress() == "1 of 2 file(s) ACTIVE, 1 still PROCESSING"
    assert wait.record({"files/a": ref("files/a", "PROCESSING")}) is False
    assert wait.record({"files/a": ref("files/a")}) is True
    assert wait.done
    assert [r.name for r in wait.result()] == ["files/a", "files/b"]


def test_active_wait_keeps_the_source_a_fresh_ref_does_not_know():
    wait = ActiveWait([GeminiFileRef(name="files/a", source_uri="gs://b/a.pdf")])
    wait.record({"files/a": ref("files/a")})
    assert wait.result()[0].source_uri == "gs://b/a.pdf"
    wait = ActiveWait([GeminiFileRef(name="files/a", source_uri="gs://b/a.pdf")])
    wait.record({"files/a": ref("files/a", source_uri="gs://b/other.pdf")})
    assert wait.result()[0].source_uri == "gs://b/other.pdf"


def test_active_wait_ends_on_a_failed_or_expired_file():
    wait = ActiveWait([ref("files/a", "PROCESSING")])
    with pytest.raises(GeminiFileFailedError, match="FAILED processing: bad"):
        wait.record({"files/a": ref("files/a", "FAILED", error="bad")})
    wait = ActiveWait([ref("files/a", "PROCESSING")])
    with pytest.raises(GeminiFileGoneError, match="expired at"):
        wait.record({"files/a": ref("files/a", "PROCESSING", expiration_time=NOW - timedelta(days=1))})


def test_active_wait_names_a_vanished_file_with_what_it_knew():
    wait = ActiveWait([ref("files/a", "PROCESSING", display_name="scan.pdf")])
    with pytest.raises(GeminiFileGoneError) as error:
        wait.record({"files/a": GeminiFileGoneError("files/a does not exist")})
    assert str(error.value).startswith("files/a (scan.pdf) does not exist")


def test_active_wait_raises_a_permanent_error_at_once():
    bad_key = GeminiInputError("rejected key")
    wait = ActiveWait([ref("files/a", "PROCESSING")])
    with pytest.raises(GeminiInputError) as error:
        wait.record({"files/a": bad_key})
    assert error.value is bad_key


def test_active_wait_tolerates_failed_polls_until_five_in_a_row():
    wait = ActiveWait([ref("files/a", "PROCESSING"), ref("files/b", "PROCESSING")])
    for count in range(1, 5):
        assert wait.record({"files/a": RuntimeError("503"), "files/b": ref("files/b", "PROCESSING")}) is False
        assert wait.failures == count
    wait.record({"files/a": ref("files/a", "PROCESSING")})  # a clean poll starts the count again
    assert wait.failures == 0
    for _ in range(4):
        wait.record({"files/a": ConnectionError("reset")})
    with pytest.raises(GeminiFilesError) as error:
        wait.record({"files/a": ConnectionError("reset\nby peer")})
    assert type(error.value) is GeminiFilesError
    assert str(error.value) == (
        "Gave up waiting for files/a (a.pdf), files/b (b.pdf) after 5 polls in a row could not check them; "
        "the last error: reset\\nby peer. Check the network and the Gemini API's status, then retry the task."
    )
    assert isinstance(error.value.__cause__, ConnectionError)


def test_active_wait_with_its_own_tolerance():
    wait = ActiveWait([ref("files/a", "PROCESSING")], max_failures=1)
    with pytest.raises(GeminiFilesError, match="after 1 polls in a row"):
        wait.record({"files/a": RuntimeError("503")})


def test_active_wait_ignores_answers_for_files_it_does_not_wait_for():
    wait = ActiveWait([ref("files/a", "PROCESSING")])
    wait.record({"files/a": ref("files/a")})
    assert wait.record({"files/a": RuntimeError("late"), "files/z": ref("files/z")}) is False
    assert wait.failures == 0
    assert wait.done


def test_timeout_error_names_at_most_five_files_and_the_fix():
    pending = [ref(f"files/f{i}", "PROCESSING") for i in range(7)]
    error = policy.timeout_error(pending, total=9, timeout=30)
    assert isinstance(error, AirflowSensorTimeout)
    assert error.pending == [f"files/f{i}" for i in range(7)]
    assert str(error) == (
        "7 of 9 Gemini file(s) still not ACTIVE after the timeout of 30 s: files/f0 (f0.pdf), files/f1 "
        "(f1.pdf), files/f2 (f2.pdf), files/f3 (f3.pdf), files/f4 (f4.pdf) and 2 more. Raise the timeout "
        "(videos and large PDFs can take minutes to process), or check the files' state with "
        "GeminiHook.get_file."
    )
    assert " and " not in str(policy.timeout_error(pending[:5], total=5, timeout=1.5)).split(". Raise")[0]
    wait = ActiveWait(pending[:2])
    assert str(wait.timeout_error(0.5)) == str(policy.timeout_error(pending[:2], total=2, timeout=0.5))


# Errors through trigger events ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        GeminiFileFailedError("failed msg", file_name="files/a", error="Corrupt"),
        GeminiFileGoneError("gone msg", file_name="files/a"),
        GeminiFileNotUsableError("pending msg", file_name="files/a"),
        GeminiFileExistsError("exists msg", file_name="files/a"),
        GeminiInputError("input msg"),
        GeminiWaitTimeoutError("timeout msg", pending=["files/a", "files/b"]),
        GeminiConnectionError("connection msg"),
        GeminiFilesError("error msg"),
    ],
)
def test_an_error_survives_a_trigger_event_with_its_type_and_message(error):
    payload = policy.error_to_event(error)
    assert all(isinstance(value, str | list | type(None)) for value in payload.values()), "primitive"
    rebuilt = policy.error_from_event(payload)
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    for attribute in ("file_name", "error", "pending"):
        assert getattr(rebuilt, attribute, None) == getattr(error, attribute, None)


def test_a_foreign_error_travels_as_a_provider_error_naming_its_type():
    payload = policy.error_to_event(RuntimeError("boom"))
    assert payload == {
        "kind": "error",
        "message": "RuntimeError: boom",
        "file_name": None,
        "error": None,
        "pending": [],
    }
    rebuilt = policy.error_from_event(payload)
    assert type(rebuilt) is GeminiFilesError
    assert str(rebuilt) == "RuntimeError: boom"


def test_an_unknown_event_kind_is_a_provider_error():
    rebuilt = policy.error_from_event({"kind": "martian"})
    assert type(rebuilt) is GeminiFilesError
    assert str(rebuilt) == "no message"


def test_a_refusal_for_different_content_shows_12_hex_digits_of_each_hash():
    refusal = policy.reuse_refusal(existing(), size=len(DATA), source_sha256=lambda: "f" * 64)
    assert refusal == f"its content differs from the source (SHA-256 {HEX[:12]}... against ffffffffffff...)"


def test_active_wait_records_a_later_file_when_an_earlier_one_has_no_answer():
    wait = ActiveWait([ref("files/a", "PROCESSING"), ref("files/b", "PROCESSING")])
    assert wait.record({"files/b": ref("files/b")}) is True
    assert list(wait.active) == ["files/b"]


def test_active_wait_logs_each_failed_poll(caplog):
    caplog.set_level("WARNING", logger="airflow_gemini_files.hooks.policy")
    wait = ActiveWait([ref("files/a", "PROCESSING"), ref("files/b", "PROCESSING")])
    wait.record({"files/a": RuntimeError("503\nunavailable"), "files/b": RuntimeError("reset")})
    assert caplog.messages == [
        "Could not check 2 file(s) (1 poll(s) in a row failed; giving up after 5): 503\\nunavailable"
    ]


def test_active_wait_gives_up_naming_five_files_and_500_characters_of_the_error():
    wait = ActiveWait([ref(f"files/f{i}", "PROCESSING") for i in range(6)], max_failures=1)
    with pytest.raises(GeminiFilesError) as error:
        wait.record({"files/f0": RuntimeError("e" * 600)})
    names = ", ".join(f"files/f{i} (f{i}.pdf)" for i in range(5))
    assert str(error.value) == (
        f"Gave up waiting for {names} after 1 polls in a row could not check them; the last error: "
        f"{'e' * 500}. Check the network and the Gemini API's status, then retry the task."
    )


@pytest.mark.parametrize(("count", "more"), [(5, ""), (6, " and 1 more")])
def test_timeout_error_adds_how_many_more_past_five(count, more):
    pending = [ref(f"files/f{i}", "PROCESSING") for i in range(count)]
    names = ", ".join(f"files/f{i} (f{i}.pdf)" for i in range(5))
    assert str(policy.timeout_error(pending, total=count, timeout=2)).startswith(
        f"{count} of {count} Gemini file(s) still not ACTIVE after the timeout of 2 s: {names}{more}. Raise"
    )
