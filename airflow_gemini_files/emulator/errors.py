"""The error the emulator answers with, shaped like the Gemini API's JSON error body."""

from __future__ import annotations

import json
from typing import Any

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
    429: "Resource has been exhausted (e.g. check quota).",
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    502: "Bad gateway.",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline exceeded.",
}


class ApiError(Exception):
    """An error reply: HTTP code, canonical status and message, serialised as the live API does."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")

    def body(self) -> bytes:
        payload: dict[str, Any] = {
            "error": {"code": self.code, "message": self.message, "status": self.status}
        }
        return json.dumps(payload).encode()


def not_found_file(file_id: str) -> ApiError:
    """What the live API answers for a file that does not (or no longer) exist: 403, not 404."""
    return ApiError(
        403,
        f"You do not have permission to access the File {file_id} or it may not exist.",
        "PERMISSION_DENIED",
    )
