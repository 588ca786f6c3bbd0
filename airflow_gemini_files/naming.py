"""How the provider names things: deterministic upload ids, run prefixes, display names, printable text.

This module is a public contract; DAGs and cleanup jobs may rely on it.

**Upload ids.** With ``deterministic_names`` (the default) ``GeminiUploadFileOperator`` names every file
``files/<run prefix>-<25 hex of sha256(task_id, map_index, source)>`` where the run prefix is
``af<12 hex of sha256(scope, dag_id, run_id)>`` (40 characters in all, the Files API's limit). The try
number is not part of it, so a retried task computes the id its earlier attempt used and finds that file,
and :func:`run_file_prefix` finds every upload of a run even when no XCom recorded it.

**Scope.** Two Airflow deployments that share an API key and a DAG (staging and production) have equal
scheduled run ids; the scope keeps their prefixes apart. It is the configured deployment id when one is
set (``[gemini_files] deployment_id``, env ``AIRFLOW__GEMINI_FILES__DEPLOYMENT_ID``), else the DAG run's
start time: it differs between deployments (to the microsecond) and stays the same for every try of every
task while the run runs. Clearing a *finished* run restarts it with a new start time, and so a new scope
(the earlier start's files were its own cleanup's business); with a deployment id set, a cleared run
keeps its prefix.

**Batch jobs.** ``GeminiBatchGenerateOperator`` names its job ``<run prefix>-batch-<16 hex of sha256(task_id,
map_index)>`` (:func:`batch_display_name`) and its JSONL input file like an upload of the source
:data:`BATCH_INPUT_SOURCE` (:func:`batch_input_file_id`). A retried task finds the job its earlier attempt
created instead of paying for a second one, and cleanup finds every job of a run (:func:`is_run_batch`).
Each document of a batch gets a key (:func:`document_keys`): its file's base name, made safe for an
object name, unique within the batch; results map back by it and are stored as ``<key>.json``.

**Which run a file belongs to.** :func:`run_prefix_of` reads the run prefix back from a file name of
that shape (``None`` for any other name): the storage report groups uploads by it and the orphan sweeper
asks whether its run is still running. A batch job's input file is named the same way
(:func:`batch_input_file_id`), so the sweeper finds it too. Registrations (Gemini names them) are traced
through the ledger instead (:mod:`airflow_gemini_files.ledger`); a batch job's results file goes with its
job (cleanup ends and deletes the run's jobs, :func:`is_run_batch`).

**Display names and logs.** File names come from users and from the data: :func:`printable` shows
control characters, ANSI escapes, bidirectional overrides and undecodable bytes as escapes, so a name can
never forge a log line; :func:`check_display_name` refuses them in a display name given explicitly.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.exceptions import GeminiInputError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_gemini_files.refs import GeminiFileRef

RUN_PREFIX_MARK = "af"
"""The two letters every deterministic upload id starts with."""

MAX_DISPLAY_NAME = 512
"""The Files API's limit on ``display_name`` (characters)."""

CONFIG_SECTION = "gemini_files"
CONFIG_DEPLOYMENT_ID = "deployment_id"

# C0 and C1 control characters (newline, ESC of ANSI sequences, DEL...), line and paragraph separators,
# bidirectional overrides and isolates, and lone surrogates (bytes a file name did not decode from).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: object) -> str:
    """``text`` with every character that could forge or garble a log line shown as an escape.

    A newline becomes ``\\n``, ESC ``\\x1b``, a byte that was not valid UTF-8 in a file name (decoded by
    Python as a lone surrogate) ``\\xff``; everything else is left as it is.
    """
    return _UNPRINTABLE.sub(_escape, str(text))


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if "\udc80" <= char <= "\udcff":  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


def prompt_label(text: object) -> str:
    """:func:`printable` text that also cannot close or open a ``<<<File: ...>>>`` marker in a prompt."""
    return printable(text).replace("<", "\u2039").replace(">", "\u203a")


def check_display_name(display_name: object) -> str:
    """Return ``display_name`` if the Files API accepts it and it is printable, else raise naming it."""
    if not isinstance(display_name, str) or not display_name.strip():
        raise GeminiInputError(
            f"display_name {display_name!r} must be a non-empty string; omit it to use the file's base name."
        )
    if len(display_name) > MAX_DISPLAY_NAME:
        raise GeminiInputError(
            f"display_name {display_name[:40]!r}... has {len(display_name)} characters; the Files API allows "
            f"at most {MAX_DISPLAY_NAME}. Shorten it, or omit it to use the file's base name."
        )
    bad = _UNPRINTABLE.search(display_name)
    if bad:
        raise GeminiInputError(
            f"display_name '{printable(display_name)[:200]}' contains the control character "
            f"'{printable(bad.group())}' at position {bad.start()}: display names end up in logs and "
            "prompts. Remove line breaks, escape sequences and other control characters."
        )
    return display_name


def default_display_name(source: str) -> str:
    """The display name of an upload nobody named: the source's base name, made printable (<= 512)."""
    base = source.rstrip("/").rsplit("/", 1)[-1] or source
    return printable(base)[-MAX_DISPLAY_NAME:]


def configured_deployment_id() -> str | None:
    """``[gemini_files] deployment_id`` from the Airflow configuration, or None when it is not set."""
    from airflow.sdk import conf

    value = conf.get(CONFIG_SECTION, CONFIG_DEPLOYMENT_ID, fallback=None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def deployment_scope(context: Context | dict[str, Any], deployment_id: str | None = None) -> str:
    """What keeps this run's upload ids apart from another deployment's run with the same ids.

    ``deployment_id`` when given; else the DAG run's start time; "" outside a DAG run (a bare
    ``operator.execute(context)`` without ``dag_run``).
    """
    if deployment_id:
        return f"deployment:{deployment_id}"
    dag_run = dict(context).get("dag_run")
    started = getattr(dag_run, "start_date", None)
    if isinstance(started, datetime):
        return f"run-start:{started.isoformat()}"
    return ""


def run_file_prefix(dag_id: str, run_id: str, scope: str = "") -> str:
    """The 14-character prefix every upload id of one DAG run starts with (see :func:`deployment_scope`)."""
    key = f"{scope}\x00{dag_id}\x00{run_id}"
    return RUN_PREFIX_MARK + hashlib.sha256(_utf8(key)).hexdigest()[:12]


def context_run_prefix(context: Context | dict[str, Any]) -> str:
    """:func:`run_file_prefix` of the running task's DAG run, in the configured deployment scope."""
    ti = context["ti"]
    return run_file_prefix(ti.dag_id, ti.run_id, deployment_scope(context, configured_deployment_id()))


def upload_file_id(context: Context | dict[str, Any], source: str) -> str:
    """
    The deterministic Files API id of one upload: same run, task, map index and source give the same id.

    A retried task finds the file its earlier attempt created instead of duplicating it, and cleanup
    finds every upload of a run by its prefix even when no XCom was written.
    """
    ti = context["ti"]
    key = f"{ti.task_id}\x00{ti.map_index}\x00{source}"
    return f"{context_run_prefix(context)}-{hashlib.sha256(_utf8(key)).hexdigest()[:25]}"


BATCH_INPUT_SOURCE = "gemini-batch-input.jsonl"
"""The source name a batch task's JSONL input file is named after (see :func:`upload_file_id`)."""

MANIFEST_KEY = "_manifest"
"""The results object every batch writes beside the documents' results (``_manifest.json``); no document
key is ever this."""

MAX_KEY_CHARS = 200
"""Longest document key (before a ``~<file id>`` that keeps two documents of the same name apart)."""

_UNSAFE_IN_KEY = re.compile(r"[^\w.+=@,() -]")  # no "~": only the suffix has one


def batch_display_name(context: Context | dict[str, Any]) -> str:
    """The deterministic display name of the batch job of the running task (same for every try)."""
    ti = context["ti"]
    key = f"{ti.task_id}\x00{ti.map_index}"
    return f"{context_run_prefix(context)}-batch-{hashlib.sha256(_utf8(key)).hexdigest()[:16]}"


def is_run_batch(display_name: str | None, context: Context | dict[str, Any]) -> bool:
    """Whether a batch job's display name says that a task of this DAG run (in this deployment) made it."""
    return bool(display_name) and str(display_name).startswith(f"{context_run_prefix(context)}-batch-")


def batch_input_file_id(context: Context | dict[str, Any]) -> str:
    """The Files API id of the running task's batch input (found by cleanup's run-prefix scan too)."""
    return upload_file_id(context, BATCH_INPUT_SOURCE)


def document_keys(refs: Sequence[GeminiFileRef]) -> list[str]:
    """
    One key per document, in order: the base name of its source (else its display name, else its file
    id), with characters unsafe in an object name (and ``~``) replaced by ``_``; documents that share a
    name (or are called :data:`MANIFEST_KEY`) get ``~<file id>`` appended, so keys are unique. The same
    files give the same keys.
    """
    bases = [_document_base(ref) for ref in refs]
    counts: dict[str, int] = {}
    for base in bases:
        counts[base] = counts.get(base, 0) + 1
    return [
        f"{base}~{ref.file_id}" if counts[base] > 1 or base == MANIFEST_KEY else base
        for base, ref in zip(bases, refs, strict=True)
    ]


def _document_base(ref: GeminiFileRef) -> str:
    raw = ref.source_uri or ref.display_name or ""
    base = raw.rstrip("/").rsplit("/", 1)[-1] if raw else ""
    safe = _UNSAFE_IN_KEY.sub("_", printable(base)).strip(" .")[:MAX_KEY_CHARS].strip(" .")
    return safe or ref.file_id


_RUN_FILE_ID = re.compile(rf"^({RUN_PREFIX_MARK}[0-9a-f]{{12}})-[0-9a-f]{{25}}$")


def run_prefix_of(name: str) -> str | None:
    """The run prefix of a file named by :func:`upload_file_id` (``files/<id>`` or ``<id>``), else None."""
    match = _RUN_FILE_ID.match(str(name).removeprefix("files/"))
    return match.group(1) if match else None


def _utf8(text: str) -> bytes:
    # surrogatepass: a local path that was not valid UTF-8 (lone surrogates) hashes instead of crashing.
    return text.encode("utf-8", "surrogatepass")
