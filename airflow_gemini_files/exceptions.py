"""Exceptions raised by the Gemini Files provider.

Every message names the value that was wrong and how to fix it; none ever contains an API key or a
GCP token.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class GeminiFilesError(AirflowException):
    """Base class of every error this provider raises on purpose."""


class GeminiInputError(GeminiFilesError, AirflowFailException, ValueError):
    """
    Bad user input (path, URI, MIME type, name, connection): the message names the value and the fix.

    Fails the task without retries: retrying the same input cannot succeed.
    """


class GeminiFileFailedError(GeminiFilesError, AirflowFailException):
    """
    Gemini finished processing a file with state FAILED; carries the file name and Gemini's message.

    Fails the task without retries: a FAILED file stays FAILED.
    """

    def __init__(self, message: str, *, file_name: str | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.file_name = file_name
        self.error = error


class GeminiFileNotUsableError(GeminiFilesError):
    """A file cannot be used now: not ACTIVE yet, expired, deleted or never existed."""

    def __init__(self, message: str, *, file_name: str | None = None) -> None:
        super().__init__(message)
        self.file_name = file_name


class GeminiWaitTimeoutError(GeminiFilesError, TimeoutError):
    """Files were still PROCESSING when the wait's deadline passed; carries their names."""

    def __init__(self, message: str, *, pending: list[str] | None = None) -> None:
        super().__init__(message)
        self.pending = list(pending or [])
