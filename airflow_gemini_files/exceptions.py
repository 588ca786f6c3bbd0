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


class GeminiBatchJobError(GeminiFilesError):
    """
    A Batch API job ended without results (FAILED, CANCELLED or EXPIRED), or cannot be handled in its
    state; carries the job's name and its state (the SDK's ``JOB_STATE_*`` name).

    Retried by Airflow: a retry submits a new job (the ended one is deleted first).
    """

    def __init__(self, message: str, *, job_name: str | None = None, state: str | None = None) -> None:
        super().__init__(message)
        self.job_name = job_name
        self.state = state


class GeminiBatchJobGoneError(GeminiBatchJobError, AirflowFailException):
    """The batch job does not exist (deleted, or created with another API key). Not retried."""


class GeminiBatchDocumentsError(GeminiFilesError, AirflowFailException):
    """
    Too many documents of a batch failed (more than ``max_failed_fraction``), or its results could not
    be read. Raised after what succeeded was written; the manifest names each failed document.

    Fails the task without retries: a retry would pay for a new job that fails the same documents.
    """
