"""What operators derive from the running task instance: deterministic file names and the map-index label."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_gemini_files.refs import GeminiFileRef

MAP_INDEX_LABEL_KEY = "gemini_file_label"
"""Context variable holding the display name(s) of the files a task works on."""

DEFAULT_MAP_INDEX_TEMPLATE = "{{ " + MAP_INDEX_LABEL_KEY + " }}"
"""The ``map_index_template`` a mapped task gets when its author set none: the file's display name."""

_MAX_LABEL = 250  # Airflow stores the rendered map index in a 250-character column.


def files_label(refs: Sequence[GeminiFileRef]) -> str:
    """Display name of one file, or ``"first (+N more)"`` for several."""
    if not refs:
        return "no files"
    first = refs[0].label
    return first if len(refs) == 1 else f"{first} (+{len(refs) - 1} more)"


def states_summary(refs: Sequence[GeminiFileRef]) -> str:
    """``"3 ACTIVE, 2 PROCESSING"``: how many files are in each state."""
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.state or "UNKNOWN"] = counts.get(ref.state or "UNKNOWN", 0) + 1
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))


def set_map_index_label(context: Context, label: str) -> None:
    """
    Publish ``label`` as the context variable ``gemini_file_label`` and use it as the mapped task's name.

    Airflow renders ``map_index_template`` with the task's context after ``execute`` returns (or fails),
    so a mapped task shows the document instead of ``0, 1, 2``. An explicit ``map_index_template`` set by
    the DAG author always wins; they can use ``{{ gemini_file_label }}`` in it.
    """
    values = cast(dict[str, Any], context)
    values[MAP_INDEX_LABEL_KEY] = label[:_MAX_LABEL]
    ti = values.get("ti")
    map_index = getattr(ti, "map_index", None)
    if values.get("map_index_template") is None and isinstance(map_index, int) and map_index >= 0:
        values["map_index_template"] = DEFAULT_MAP_INDEX_TEMPLATE


def run_file_prefix(dag_id: str, run_id: str) -> str:
    """The 14-character prefix shared by the ids of every file uploads in one DAG run create."""
    return "af" + hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:12]


def context_run_prefix(context: Context) -> str:
    """:func:`run_file_prefix` of the running task's DAG run."""
    ti = context["ti"]
    return run_file_prefix(ti.dag_id, ti.run_id)


def upload_file_id(context: Context, position: int, source: str) -> str:
    """
    A deterministic Files API id for one upload: same DAG run, task, map index, list position and source
    give the same id, so a retried task finds the file its earlier attempt created instead of duplicating
    it, and cleanup can find every upload of a run by its prefix even when no XCom was written.
    """
    ti = context["ti"]
    key = f"{ti.task_id}\x00{ti.map_index}\x00{position}\x00{source}"
    return f"{context_run_prefix(context)}-{hashlib.sha256(key.encode()).hexdigest()[:25]}"
