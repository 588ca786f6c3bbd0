"""Operators that put files into the Gemini Files API (upload, register from GCS) and delete them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, TriggerRule

from airflow_gemini_files.exceptions import (
    GeminiFileNotUsableError,
    GeminiFilesError,
    GeminiInputError,
)
from airflow_gemini_files.gcs import is_gs_uri, list_objects
from airflow_gemini_files.hooks.gemini import GeminiHook
from airflow_gemini_files.operators._context import (
    context_run_prefix,
    files_label,
    set_map_index_label,
    states_summary,
    upload_file_id,
)
from airflow_gemini_files.operators._fanout import Outcome, fan_out
from airflow_gemini_files.operators._inputs import check_max_concurrency, coerce_files, dedupe, is_many
from airflow_gemini_files.refs import GeminiFileRef

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

DEFAULT_MAX_CONCURRENCY = 8


def _summarize_failures(
    what: str, outcomes: Sequence[Outcome[Any, Any]], cleanup: str, label: Callable[[Any], str] = str
) -> GeminiFilesError:
    """One error listing every failed item (their own messages name the value and the fix)."""
    failed = [outcome for outcome in outcomes if outcome.started and not outcome.ok]
    lines = "; ".join(f"{label(outcome.item)}: {outcome.error}" for outcome in failed[:20])
    more = f" (and {len(failed) - 20} more)" if len(failed) > 20 else ""
    return GeminiFilesError(f"{len(failed)} of {len(outcomes)} {what} failed: {lines}{more}. {cleanup}")


def _delete_quietly(hook: GeminiHook, refs: Sequence[GeminiFileRef], log: Any) -> list[str]:
    """Best-effort rollback: delete ``refs``, log what could not be deleted, return the names deleted."""
    deleted: list[str] = []
    for ref in refs:
        try:
            hook.delete_file(ref)
            deleted.append(ref.name)
        except Exception as error:
            log.warning("Could not delete %s (%s) while rolling back: %s", ref.name, ref.label, error)
    if deleted:
        log.info("Rolled back: deleted %d file(s) this task had created.", len(deleted))
    return deleted


class GeminiUploadFileOperator(BaseOperator):
    """
    Upload local files or ``gs://`` objects to the Gemini Files API; return a GeminiFileRef (or a list).

    ``gs://`` objects are streamed from GCS to Gemini (never written whole to local disk). The MIME type is
    ``mime_type`` when given, else the GCS content type, else sniffed from the name and content.

    Many sources are uploaded ``max_concurrency`` at a time. If any upload fails, the files this task already
    uploaded are deleted before the task fails, so nothing half-done is left behind.

    Retries never duplicate files: with ``deterministic_names`` (the default) each file's id is derived from
    the DAG run, task, map index, list position and source (``files/af<run hash>-<hash>``). A retry
    (``try_number > 1``) first looks for the file an earlier attempt created and reuses it (unless it FAILED
    or expired, then it is replaced); a first try uploads at once and only looks when the name is taken; and
    ``GeminiDeleteFilesOperator(delete_run_uploads=True)`` finds every upload of the run by its prefix even
    when no XCom was written.

    Mapped (``.expand(source=...)``), each task instance is labelled with its file's name in the grid (see
    :func:`~airflow_gemini_files.operators._context.set_map_index_label`).

    :param source: A local path, a ``gs://bucket/object`` URI, or a list of them. Templated.
    :param mime_type: MIME type for every source (default: detected per source). Templated.
    :param display_name: The display name (a list aligned with ``source`` for a list); default: the
        file's base name. Templated.
    :param gemini_conn_id: Airflow connection of type ``gemini`` (the API key is its password).
    :param gcp_conn_id: Airflow connection with a GCP service-account key for reading ``gs://`` sources;
        default: Application Default Credentials (anonymous against a GCS emulator).
    :param max_concurrency: Uploads in flight at once.
    :param deterministic_names: Name files after the run, task and source (see above); False lets Gemini
        choose random names.
    """

    template_fields: Sequence[str] = ("source", "mime_type", "display_name", "gemini_conn_id", "gcp_conn_id")
    ui_color = "#d2e3fc"

    def __init__(
        self,
        *,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        mime_type: str | None = None,
        display_name: str | Sequence[str] | None = None,
        gemini_conn_id: str = GeminiHook.default_conn_name,
        gcp_conn_id: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        deterministic_names: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.mime_type = mime_type
        self.display_name = display_name
        self.gemini_conn_id = gemini_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.max_concurrency = check_max_concurrency(max_concurrency, task_id=self.task_id)
        self.deterministic_names = deterministic_names

    @cached_property
    def hook(self) -> GeminiHook:
        """The hook, built from ``gemini_conn_id`` and ``gcp_conn_id``."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id, gcp_conn_id=self.gcp_conn_id)
        hook.get_conn()  # read the connection once, not in every worker thread
        return hook

    def _sources(self) -> tuple[list[str], list[str | None], bool]:
        many = is_many(self.source)
        raw = list(self.source) if many else [self.source]  # type: ignore[arg-type]
        if not raw:
            raise GeminiInputError(
                f"Task {self.task_id!r}: source is an empty list. Pass a local path, a 'gs://bucket/object' "
                "URI, or a non-empty list of them."
            )
        sources: list[str] = []
        for item in raw:
            if not isinstance(item, str | os.PathLike) or not os.fspath(item).strip():
                raise GeminiInputError(
                    f"Task {self.task_id!r}: source {item!r} is not a path or URI. Pass a local path or a "
                    "'gs://bucket/object' URI (or a list of them)."
                )
            sources.append(str(os.fspath(item)))
        names: list[str | None]
        if self.display_name is None:
            names = [None] * len(sources)
        elif many:
            if not is_many(self.display_name) or len(list(self.display_name)) != len(sources):
                raise GeminiInputError(
                    f"Task {self.task_id!r}: display_name={self.display_name!r} must be a list with one name "
                    f"per source ({len(sources)}) when source is a list, or None for the file names."
                )
            names = [str(name) if name is not None else None for name in self.display_name]
        elif isinstance(self.display_name, str):
            names = [self.display_name]
        else:
            raise GeminiInputError(
                f"Task {self.task_id!r}: display_name={self.display_name!r} must be a string for one source."
            )
        return sources, names, many

    def _check_local_sources(self, sources: Sequence[str]) -> None:
        """Fail before anything is uploaded when a local source is missing or is not a regular file."""
        for source in sources:
            if is_gs_uri(source):
                continue
            if not os.path.exists(source):
                raise GeminiInputError(
                    f"Task {self.task_id!r}: local source {source!r} does not exist (relative to "
                    f"{os.getcwd()!r}). Check the path, or use a 'gs://bucket/object' URI for GCS objects."
                )
            if not os.path.isfile(source):
                raise GeminiInputError(
                    f"Task {self.task_id!r}: local source {source!r} is not a regular file (a directory?). "
                    "Pass one path per file, e.g. a list built with glob."
                )

    def _reusable(self, hook: GeminiHook, name: str, source: str) -> GeminiFileRef | None:
        """The file an earlier attempt of this task created under ``name``, if it is still usable."""
        try:
            existing = hook.get_file(name)
        except GeminiFileNotUsableError:
            return None
        if existing.state == "FAILED" or existing.is_expired():
            self.log.info("Replacing %s from an earlier attempt (state %s).", name, existing.state)
            hook.delete_file(existing)
            return None
        self.log.info(
            "Reusing %s (%s) uploaded from %s by an earlier attempt of this task.",
            name,
            existing.state,
            source,
        )
        return dataclasses.replace(existing, source_uri=source)

    def _upload_one(
        self, hook: GeminiHook, context: Context, job: tuple[int, str, str | None]
    ) -> GeminiFileRef:
        position, source, display_name = job
        name = upload_file_id(context, position, source) if self.deterministic_names else None
        retried = getattr(context["ti"], "try_number", 1) > 1
        if name is not None and retried and (existing := self._reusable(hook, name, source)) is not None:
            return existing
        try:
            return hook.upload_file(source, mime_type=self.mime_type, display_name=display_name, name=name)
        except GeminiInputError:
            # A first try can still meet its name taken (an attempt lost to a crash before try_number moved).
            if name is not None and not retried and (existing := self._reusable(hook, name, source)):
                return existing
            raise

    def execute(self, context: Context) -> GeminiFileRef | list[GeminiFileRef]:
        self._lineage_files: list[GeminiFileRef] = []
        sources, names, many = self._sources()
        set_map_index_label(context, _sources_label(sources, names))
        self._check_local_sources(sources)
        jobs = [(position, source, names[position]) for position, source in enumerate(sources)]
        self.log.info("Uploading %d file(s) to Gemini, %d at a time.", len(jobs), self.max_concurrency)
        hook = self.hook
        outcomes = fan_out(
            lambda job: self._upload_one(hook, context, job),
            jobs,
            max_concurrency=self.max_concurrency,
            log=self.log,
            action="uploads",
            stop_on_error=True,
        )
        uploaded = [outcome.value for outcome in outcomes if outcome.ok and outcome.value is not None]
        if len(uploaded) < len(jobs):
            _delete_quietly(hook, uploaded, self.log)
            failed = [outcome for outcome in outcomes if outcome.started and not outcome.ok]
            if len(failed) == 1 and failed[0].error is not None:
                raise failed[0].error
            raise _summarize_failures(
                "uploads",
                outcomes,
                f"Deleted the {len(uploaded)} file(s) this task had uploaded.",
                label=lambda job: job[1],
            )
        set_map_index_label(context, files_label(uploaded))
        self.log.info("Uploaded %d file(s): %s.", len(uploaded), states_summary(uploaded))
        self._lineage_files = uploaded
        return uploaded if many else uploaded[0]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the sources in, the Gemini files out (none when a failed task rolled back)."""
        from airflow_gemini_files import lineage

        return lineage.transfer_lineage(
            getattr(self, "_lineage_files", []), lineage.connection_base_url(self)
        )


class GeminiRegisterGcsFilesOperator(BaseOperator):
    """
    Register GCS objects with the Gemini Files API (no bytes pass through the worker); return their refs.

    Name the objects with ``uris``, or list them with ``bucket`` plus optional ``prefix`` and ``match_glob``
    (GCS glob syntax, e.g. ``**/*.pdf``). Objects are registered ``batch_size`` per API call, up to
    ``max_concurrency`` calls at once. Each returned GeminiFileRef has ``source_uri`` set to its object.
    If a batch fails, the files the other batches registered are deleted before the task fails.

    GCP credentials (Gemini reads the objects with them): Application Default Credentials, or the
    service-account key of ``gcp_conn_id``; with ``STORAGE_EMULATOR_HOST`` set none are needed.

    A retried task registers the objects again (Gemini gives registered files new names); the earlier
    attempt's files are deleted on failure, and expire after 48 hours in any case.

    :param uris: ``gs://bucket/object`` URIs (one or a list). Templated.
    :param bucket: Bucket to list instead of ``uris``. Templated.
    :param prefix: Only objects whose names start with this. Templated.
    :param match_glob: Only objects matching this GCS glob. Templated.
    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param gcp_conn_id: Airflow connection with a GCP service-account key (default: ADC).
    :param batch_size: URIs per register call (the API takes up to 100).
    :param max_concurrency: Register calls in flight at once.
    :param fail_if_empty: Fail when the listing finds no objects (else return an empty list).
    """

    template_fields: Sequence[str] = (
        "uris",
        "bucket",
        "prefix",
        "match_glob",
        "gemini_conn_id",
        "gcp_conn_id",
    )
    ui_color = "#d2e3fc"

    def __init__(
        self,
        *,
        uris: str | Sequence[str] | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        match_glob: str | None = None,
        gemini_conn_id: str = GeminiHook.default_conn_name,
        gcp_conn_id: str | None = None,
        batch_size: int = 100,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        fail_if_empty: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.uris = uris
        self.bucket = bucket
        self.prefix = prefix
        self.match_glob = match_glob
        self.gemini_conn_id = gemini_conn_id
        self.gcp_conn_id = gcp_conn_id
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100:
            raise GeminiInputError(
                f"Task {self.task_id!r}: batch_size={batch_size!r} must be a whole number from 1 to 100 "
                "(the Files API registers at most 100 objects per call)."
            )
        self.batch_size = batch_size
        self.max_concurrency = check_max_concurrency(max_concurrency, task_id=self.task_id)
        self.fail_if_empty = fail_if_empty

    @cached_property
    def hook(self) -> GeminiHook:
        """The hook, built from ``gemini_conn_id`` and ``gcp_conn_id``."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id, gcp_conn_id=self.gcp_conn_id)
        hook.get_conn()  # read the connection once, not in every worker thread
        return hook

    def _resolve_uris(self) -> list[str]:
        if (self.uris is None) == (self.bucket is None):
            raise GeminiInputError(
                f"Task {self.task_id!r}: pass either uris (gs:// URIs) or bucket (with optional prefix and "
                f"match_glob), not {'both' if self.uris is not None else 'neither'}."
            )
        if self.uris is not None:
            if self.prefix is not None or self.match_glob is not None:
                raise GeminiInputError(
                    f"Task {self.task_id!r}: prefix and match_glob filter a bucket listing; with uris they "
                    "would be ignored. Pass bucket instead of uris, or drop them."
                )
            uris = list(self.uris) if is_many(self.uris) else [self.uris]
            for uri in uris:
                if not is_gs_uri(uri):
                    raise GeminiInputError(
                        f"Task {self.task_id!r}: {uri!r} is not a 'gs://bucket/object' URI; only GCS objects "
                        "can be registered (upload local files with GeminiUploadFileOperator)."
                    )
            return list(dict.fromkeys(str(uri) for uri in uris))
        assert self.bucket is not None
        uris = list_objects(self.bucket, self.prefix, self.match_glob, gcp_conn_id=self.gcp_conn_id)
        self.log.info(
            "Found %d object(s) in gs://%s/%s%s.",
            len(uris),
            self.bucket,
            self.prefix or "",
            f" matching {self.match_glob!r}" if self.match_glob else "",
        )
        return uris

    def execute(self, context: Context) -> list[GeminiFileRef]:
        self._lineage_files: list[GeminiFileRef] = []
        uris = self._resolve_uris()
        if not uris:
            where = f"gs://{self.bucket}/{self.prefix or ''}" + (
                f" matching {self.match_glob!r}" if self.match_glob else ""
            )
            if self.fail_if_empty:
                raise GeminiInputError(
                    f"Task {self.task_id!r}: no objects to register in {where}. Check bucket, prefix and "
                    "match_glob, or set fail_if_empty=False to succeed with an empty list."
                )
            self.log.info("No objects in %s; nothing to register.", where)
            return []
        batches = [uris[start : start + self.batch_size] for start in range(0, len(uris), self.batch_size)]
        self.log.info(
            "Registering %d object(s) in %d call(s), %d at a time.",
            len(uris),
            len(batches),
            self.max_concurrency,
        )
        hook = self.hook
        outcomes = fan_out(
            lambda batch: hook.register_gcs_files(batch, batch_size=self.batch_size),
            batches,
            max_concurrency=self.max_concurrency,
            log=self.log,
            action="register calls",
            stop_on_error=True,
        )
        registered = [ref for outcome in outcomes if outcome.ok for ref in outcome.value or []]
        if any(not outcome.ok for outcome in outcomes):
            _delete_quietly(hook, registered, self.log)
            failed = [outcome for outcome in outcomes if outcome.started and not outcome.ok]
            if len(failed) == 1 and failed[0].error is not None:
                raise failed[0].error
            raise _summarize_failures(
                "register calls",
                outcomes,
                f"Deleted the {len(registered)} file(s) already registered.",
                label=lambda batch: f"{batch[0]} (+{len(batch) - 1} more)",
            )
        set_map_index_label(context, files_label(registered))
        self.log.info("Registered %d file(s): %s.", len(registered), states_summary(registered))
        self._lineage_files = registered
        return registered

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the ``gs://`` objects in, the Gemini files out (none after a rollback)."""
        from airflow_gemini_files import lineage

        return lineage.transfer_lineage(
            getattr(self, "_lineage_files", []), lineage.connection_base_url(self)
        )


class GeminiDeleteFilesOperator(BaseOperator):
    """
    Delete files from the Gemini Files API; return the names it deleted.

    Runs with trigger rule ``ALL_DONE`` by default, so cleanup happens after upstream failures too. A file
    that is already gone (deleted, expired) is logged, not an error; ``None`` entries (from upstream tasks
    that pushed nothing) are skipped. Other failures are collected: every file is tried before the task
    fails naming the ones it could not delete. Mapped, each instance is labelled with its file's name.

    :param files: GeminiFileRef(s), dicts or ``files/<id>`` names; may be empty or None. Templated.
    :param gemini_conn_id: Airflow connection of type ``gemini``.
    :param max_concurrency: Deletes in flight at once.
    :param delete_run_uploads: Also delete every file ``GeminiUploadFileOperator`` created in this DAG run
        (found by its deterministic name prefix), even those no XCom recorded.
    """

    template_fields: Sequence[str] = ("files", "gemini_conn_id")
    ui_color = "#fce8e6"

    def __init__(
        self,
        *,
        files: Any = None,
        gemini_conn_id: str = GeminiHook.default_conn_name,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        delete_run_uploads: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.files = files
        self.gemini_conn_id = gemini_conn_id
        self.max_concurrency = check_max_concurrency(max_concurrency, task_id=self.task_id)
        self.delete_run_uploads = delete_run_uploads

    @cached_property
    def hook(self) -> GeminiHook:
        """The hook, built from ``gemini_conn_id``."""
        hook = GeminiHook(gemini_conn_id=self.gemini_conn_id)
        hook.get_conn()  # read the connection once, not in every worker thread
        return hook

    def _targets(self, context: Context) -> list[GeminiFileRef]:
        items = list(self.files) if is_many(self.files) else [self.files]
        refs = coerce_files(
            [item for item in _flatten(items) if item is not None],
            param="files",
            task_id=self.task_id,
            allow_empty=True,
        )
        if self.delete_run_uploads:
            prefix = context_run_prefix(context) + "-"
            found = [ref for ref in self.hook.list_files() if ref.file_id.startswith(prefix)]
            self.log.info("Found %d file(s) uploaded in this DAG run (prefix %s).", len(found), prefix)
            refs += found
        return dedupe(refs)

    def execute(self, context: Context) -> list[str]:
        self._lineage_deleted: list[GeminiFileRef] = []
        refs = self._targets(context)
        set_map_index_label(context, files_label(refs))
        if not refs:
            self.log.info("No Gemini files to delete.")
            return []
        self.log.info("Deleting %d file(s), %d at a time.", len(refs), self.max_concurrency)
        outcomes = fan_out(
            self.hook.delete_file, refs, max_concurrency=self.max_concurrency, log=self.log, action="deletes"
        )
        deleted: list[str] = []
        for outcome in outcomes:
            if outcome.ok and outcome.value:
                deleted.append(outcome.item.name)
            elif outcome.ok:
                self.log.info("%s (%s) was already gone.", outcome.item.name, outcome.item.label)
        self._lineage_deleted = [outcome.item for outcome in outcomes if outcome.ok and outcome.value]
        if any(not outcome.ok for outcome in outcomes):
            raise _summarize_failures(
                "deletes",
                outcomes,
                f"Deleted {len(deleted)}; rerun the task to retry the others.",
                label=lambda ref: ref.name,
            )
        self.log.info("Deleted %d file(s).", len(deleted))
        return deleted

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the files this task deleted, as outputs with the lifecycle state change DROP."""
        from airflow_gemini_files import lineage

        return lineage.deletion_lineage(
            getattr(self, "_lineage_deleted", []), lineage.connection_base_url(self)
        )


def _sources_label(sources: Sequence[str], names: Sequence[str | None]) -> str:
    first = names[0] or os.path.basename(sources[0].rstrip("/")) or sources[0]
    return first if len(sources) == 1 else f"{first} (+{len(sources) - 1} more)"


def _flatten(items: Sequence[Any]) -> list[Any]:
    """Flatten one level of nested lists (a mapped upstream task pushes one list per map index)."""
    flat: list[Any] = []
    for item in items:
        if is_many(item):
            flat.extend(item)
        else:
            flat.append(item)
    return flat
