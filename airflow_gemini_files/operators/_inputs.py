"""Checks and coercions of operator arguments, with errors that name the value and the fix."""

from __future__ import annotations

from typing import Any

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.refs import GeminiFileRef


def is_many(value: Any) -> bool:
    """Whether an argument holds a list of items (a list, tuple or lazy XCom sequence) rather than one."""
    if isinstance(value, str | bytes | dict | GeminiFileRef):
        return False
    return hasattr(value, "__iter__") and not hasattr(value, "keys")


def coerce_files(value: Any, *, param: str, task_id: str, allow_empty: bool = False) -> list[GeminiFileRef]:
    """
    Turn a ``files``-like argument into refs: a GeminiFileRef, a dict, a ``files/<id>`` name, or a list.

    Raises GeminiInputError naming the task, the argument and the value when it is none of those.
    """
    if is_many(value):
        value = list(value)
    if value is None or value == []:
        if allow_empty:
            return []
        raise GeminiInputError(
            f"Task {task_id!r}: {param}={value!r} names no Gemini file. Pass a GeminiFileRef, a list of "
            "them, dicts with a 'name', or 'files/<id>' names (for example the XCom of an upload, register "
            "or sensor task); if it comes from an upstream XCom, check that the upstream task pushed one."
        )
    if isinstance(value, str) and value.lstrip().startswith(("[", "{", "GeminiFileRef(")):
        raise GeminiInputError(
            f"Task {task_id!r}: {param} was rendered to the text {value[:200]!r} instead of file references. "
            "Pass the upstream task's output (e.g. files=upload.output) rather than a '{{ ... }}' string, "
            "or set render_template_as_native_obj=True on the DAG."
        )
    try:
        return GeminiFileRef.coerce_many(value)
    except (TypeError, ValueError) as error:
        raise GeminiInputError(f"Task {task_id!r}: bad {param}: {error}") from error


def check_max_concurrency(value: Any, *, task_id: str) -> int:
    """Validate ``max_concurrency`` (a whole number of parallel calls, at least 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GeminiInputError(
            f"Task {task_id!r}: max_concurrency={value!r} is not a positive whole number: "
            "pass how many Gemini calls may run at once, e.g. max_concurrency=8."
        )
    return value


def dedupe(refs: list[GeminiFileRef]) -> list[GeminiFileRef]:
    """Drop repeated file names, keeping the first occurrence and the order."""
    seen: set[str] = set()
    unique: list[GeminiFileRef] = []
    for ref in refs:
        if ref.name not in seen:
            seen.add(ref.name)
            unique.append(ref)
    return unique
