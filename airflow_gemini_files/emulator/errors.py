"""The errors the emulator answers with, shaped like the Gemini API's JSON error body, details included."""

from __future__ import annotations

import json
import math
from typing import Any

SERVICE = "generativelanguage.googleapis.com"
_TYPE = "type.googleapis.com/google.rpc."
RATE_LIMIT_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on "
    "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)

#: HTTP status -> canonical google.rpc status name, for the statuses the emulator produces.
STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: Default messages for injected faults (the texts the live service uses).
FAULT_MESSAGES: dict[int, str] = {
    408: "Request timed out.",
    429: RATE_LIMIT_MESSAGE,
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    502: "Bad gateway.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline exceeded.",
}


class ApiError(Exception):
    """An error reply: HTTP code, canonical status, message, ``details`` and extra response headers."""

    def __init__(
        self,
        code: int,
        message: str,
        status: str | None = None,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return json.dumps({"error": error}).encode()


def duration(seconds: float) -> str:
    """A ``google.protobuf.Duration`` in JSON: ``"47s"``, ``"0.500s"`` (0, 3, 6 or 9 fractional digits)."""
    nanos = round(seconds * 1e9)
    whole, frac = divmod(nanos, 1_000_000_000)
    return f"{whole}{_fraction(frac)}s"


def _fraction(nanos: int) -> str:
    """The protobuf JSON rule for fractional seconds: as few of 3, 6 or 9 digits as keep the value."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def error_info(reason: str, **metadata: str) -> dict[str, Any]:
    return {"@type": f"{_TYPE}ErrorInfo", "reason": reason, "domain": "googleapis.com", "metadata": metadata}


def invalid_api_key() -> ApiError:
    """A key that is not valid: 400 with ErrorInfo ``API_KEY_INVALID`` and a LocalizedMessage."""
    message = "API key not valid. Please pass a valid API key."
    return ApiError(
        400,
        message,
        "INVALID_ARGUMENT",
        details=[
            error_info("API_KEY_INVALID", service=SERVICE),
            {"@type": f"{_TYPE}LocalizedMessage", "locale": "en-US", "message": message},
        ],
    )


def missing_api_key() -> ApiError:
    return ApiError(
        403,
        "Method doesn't allow unregistered callers (callers without established identity). Please use API "
        "Key or other form of API consumer identity to call this API.",
        "PERMISSION_DENIED",
    )


def rate_limited(operation: str, retry_delay: float, model: str | None = None) -> ApiError:
    """A per-minute request quota hit: QuotaFailure, Help and RetryInfo details, plus ``Retry-After``."""
    dimensions = {"location": "global"}
    if model:
        dimensions["model"] = model
    metric, quota_id = (
        ("generate_content_free_tier_requests", "GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
        if operation in ("generate", "count_tokens")
        else ("requests", "RequestsPerMinutePerProject")
    )
    return ApiError(
        429,
        RATE_LIMIT_MESSAGE,
        "RESOURCE_EXHAUSTED",
        details=[
            {
                "@type": f"{_TYPE}QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": f"{SERVICE}/{metric}",
                        "quotaId": quota_id,
                        "quotaDimensions": dimensions,
                        "quotaValue": "10",
                    }
                ],
            },
            {
                "@type": f"{_TYPE}Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {"@type": f"{_TYPE}RetryInfo", "retryDelay": duration(retry_delay)},
        ],
        headers={"Retry-After": str(math.ceil(retry_delay))},
    )


def storage_full(limit: int, used: int, requested: int) -> ApiError:
    """The project's Files API storage is full: 429 naming ``file_storage_bytes``, no RetryInfo."""
    return ApiError(
        429,
        "You exceeded your current quota, please check your plan and billing details. "
        f"* Quota exceeded for metric: {SERVICE}/file_storage_bytes, limit: {limit} "
        f"(in use: {used}, requested: {requested})",
        "RESOURCE_EXHAUSTED",
        details=[
            {
                "@type": f"{_TYPE}QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": f"{SERVICE}/file_storage_bytes",
                        "quotaId": "FileStorageBytesPerProject",
                        "quotaValue": str(limit),
                    }
                ],
            }
        ],
    )


def unsupported_mime_type(mime_type: str) -> ApiError:
    return ApiError(400, f"Unsupported MIME type: {mime_type}", "INVALID_ARGUMENT")


def not_found_file(file_id: str) -> ApiError:
    """What the live API answers for a file that does not (or no longer) exist: 403, not 404."""
    return ApiError(
        403,
        f"You do not have permission to access the File {file_id} or it may not exist.",
        "PERMISSION_DENIED",
    )


REGISTER_METHOD = "google.ai.generativelanguage.v1beta.FileService.RegisterFiles"


def overloaded_credentials() -> ApiError:
    """An API key sent together with a bearer token where the server wants one form only."""
    return ApiError(
        401,
        "API key for authentication is used with other authentication credentials. Expected only one form "
        "of authentication.",
        "UNAUTHENTICATED",
        details=[
            {
                "@type": f"{_TYPE}ErrorInfo",
                "reason": "OVERLOADED_CREDENTIALS",
                "metadata": {"method": REGISTER_METHOD, "service": SERVICE},
            }
        ],
    )


def oauth_required() -> ApiError:
    return ApiError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential.",
        "UNAUTHENTICATED",
    )


def scope_insufficient() -> ApiError:
    """User credentials on a registration that only takes the API key."""
    return ApiError(
        403,
        "Request had insufficient authentication scopes.",
        "PERMISSION_DENIED",
        details=[error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", method=REGISTER_METHOD, service=SERVICE)],
    )


def service_accounts_refused() -> ApiError:
    """A service account's token on a registration that only takes the API key."""
    return ApiError(
        403,
        "Access to Gemini API is restricted with service accounts. Use authorization keys instead.",
        "PERMISSION_DENIED",
    )
