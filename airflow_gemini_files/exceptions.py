"""Exceptions raised by the Gemini Files provider.

Every message names the value that was wrong and how to fix it; none ever contains an API key or a
GCP token. Which situation raises which error is decided in :mod:`airflow_gemini_files.hooks.policy`.

The classes that are also ``AirflowFailException`` fail a task without using up its retries: retrying
cannot help (bad input, a FAILED file, a file that no longer exists).
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout


class GeminiFilesError(AirflowException):
    """Base of every error this provider raises on purpose (Airflow retries it unless a subclass says)."""


class GeminiInputError(GeminiFilesError, AirflowFailException, ValueError):
    """
    Bad user input (path, URI, MIME type, name, connection, request): the message names the value and the fix.

    Fails the task without retries: retrying the same input cannot succeed.
    """


class GeminiFileExistsError(GeminiInputError):
    """An upload asked for a file name that is taken (``on_exists="fail"``); carries the name."""

    def __init__(self, message: str, *, file_name: str | None = None) -> None:
        super().__init__(message)
        self.file_name = file_name


class GeminiConnectionError(GeminiFilesError, ConnectionError):
    """The Gemini API could not be reached (refused, reset, timed out); names the URL and the connection."""


class GeminiFileNotUsableError(GeminiFilesError):
    """A file cannot be used now: not ACTIVE yet. Its subclasses are the cases that never get better."""

    def __init__(self, message: str, *, file_name: str | None = None) -> None:
        super().__init__(message)
        self.file_name = file_name


class GeminiFileGoneError(GeminiFileNotUsableError, AirflowFailException):
    """The file does not exist (any more): deleted, expired, or never there. Not retried."""


class GeminiFileFailedError(GeminiFileNotUsableError, AirflowFailException):
    """
    Gemini finished processing a file with state FAILED; carries the file name and Gemini's message.

    Fails the task without retries: a FAILED file stays FAILED.
    """

    def __init__(self, message: str, *, file_name: str | None = None, error: str | None = None) -> None:
        super().__init__(message, file_name=file_name)
        self.error = error


class GeminiWaitTimeoutError(GeminiFilesError, AirflowSensorTimeout, TimeoutError):
    """
    Files were still not ACTIVE when a wait's deadline passed; carries their names.

    An ``AirflowSensorTimeout``, so the sensor's timeout (in every mode) and the hook's ends a task alike:
    failed without retries (waiting longer needs a longer timeout, not another try).
    """

    def __init__(self, message: str, *, pending: list[str] | None = None) -> None:
        super().__init__(message)
        self.pending = list(pending or [])
