"""Operators that put files into the Gemini Files API (upload, register from GCS) and delete them."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule, conf

from airflow_gemini_files.exceptions import GeminiFilesError, GeminiInputError
from airflow_gemini_files.gcs_uri import is_gs_uri
from airflow_gemini_files.hooks.sources import check_local_file
from airflow_gemini_files.ledger import FileRecords, TaskKey, record_run
from airflow_gemini_files.naming import (
    context_run_prefix,
    default_display_name,
    is_run_batch,
    upload_file_id,
)
from airflow_gemini_files.operators.base import (
    GeminiBaseOperator,
    dedupe,
    flatten,
    is_many,
    map_index_label,
    reject_rendered_text,
    set_map_index_label,
    states_summary,
)
from airflow_gemini_files.quota import upload_refusal
from airflow_gemini_files.refs import GeminiFileRef

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

MAX_BATCH_SIZE = 100
"""The Files API registers at most this many objects per call."""

DEFAULT_QUOTA_CHECK_MIN_BYTES = 256 * 1024**2
"""Uploads of at least this many bytes (per task) check the project's storage quota first."""


class GeminiStorageQuotaError(GeminiFilesError):
    """An upload would pass the project's file storage quota; names the usage and the biggest holders.

    Retried as Airflow's retries say: space frees up when files expire or are deleted.
    """


class GeminiUploadFileOperator(GeminiBaseOperator):
    """
    Upload local files or ``gs://`` objects to the Gemini Files API; return a GeminiFileRef (or a list).

    ``gs://`` objects are streamed from GCS to Gemini (never written whole to local disk). The MIME type is
    ``mime_type`` when given, else the GCS content type, else sniffed from the name and content. A source
    listed twice is uploaded once.

    Many sources are uploaded ``max_concurrency`` at a time. If any upload fails, the files this task already
    uploaded are deleted before the task fails, so nothing half-done is left behind.

    Retries never duplicate files: with ``deterministic_names`` (the default) each file's id is derived from
    the DAG run (in its deployment), task, map index and source (see :mod:`airflow_gemini_files.naming`).
    When that name is taken (a retry, or an attempt lost before Airflow recorded it) the existing file is
    reused only if it is usable and holds the source's bytes (same size and SHA-256); otherwise it is
    replaced, and the log says why. ``GeminiDeleteFilesOperator(delete_run_uploads=True)`` finds every upload
    of the run by its prefix even when no XCom was written.

    Mapped (``.expand(source=...)``), each task instance is labelled with its file's name in the grid.

    **Storage quota.** Before uploading ``quota_check_min_bytes`` or more, the task reads the project's
    file storage (:meth:`~airflow_gemini_files.hooks.gemini.GeminiHook.files_usage`). When the upload
    would pass the quota (20 GB; uploads count, registered files do not), it waits up to
    ``quota_wait_timeout`` for room (deferred to the triggerer with ``deferrable=True``, else polling in
    the worker) and then fails with :class:`GeminiStorageQuotaError` naming the usage and the biggest
    holders, instead of failing half-way through its files. Uploads running at the same time are not
    seen by each other's check: the API's own refusal then still rolls the task back. A retry does not
    count the files an earlier attempt left under the same deterministic names: it reuses them.

    With the connection's extra ``ledger`` set, the task records its DAG run there, so the orphan sweeper
    (:class:`~airflow_gemini_files.operators.sweep.GeminiSweepFilesOperator`) knows whose files these are.

    :param source: A local path, a ``gs://bucket/object`` URI, or a list of them. Templated.
    :param mime_type: MIME type for every source (default: detected per source). Templated.
    :param display_name: The display name (a list aligned with ``source`` for a list); default: the
        file's base name. Templated.
    :param gcp_conn_id: GCP connection for reading ``gs://`` sources (default: ``google_cloud_default``
        if defined, else Application Default Credentials).
    :param deterministic_names: Name files after the run, task and source (see above); False lets Gemini
        choose random names.
    :param quota_check_min_bytes: Check the storage quota before uploads of at least this many bytes
        (default 256 MiB); None never checks.
    :param quota_wait_timeout: Seconds (or a timedelta) to wait for room when the upload would pass the
        quota; 0 (the default) fails at once.
    :param quota_poll_interval: Seconds between looks at the storage while waiting.
    :param deferrable: Wait for room in the triggerer instead of the worker (default: the config
        ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("source", "mime_type", "display_name", "gemini_conn_id", "gcp_conn_id")
    ui_color = "#d2e3fc"
    prebuild_sdk_client = False  # uploads send their bytes through the hook's HTTP client, not the SDK's

    def __init__(
        self,
        *,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        mime_type: str | None = None,
        display_name: str | Sequence[str] | None = None,
        gcp_conn_id: str | None = None,
        deterministic_names: bool = True,
        quota_check_min_bytes: int | None = DEFAULT_QUOTA_CHECK_MIN_BYTES,
        quota_wait_timeout: float | timedelta = 0,
        quota_poll_interval: float = 60.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.mime_type = mime_type
        self.display_name = display_name
        self.gcp_conn_id = gcp_conn_id
        self.deterministic_names = deterministic_names
        if quota_check_min_bytes is not None and (
            isinstance(quota_check_min_bytes, bool)
            or not isinstance(quota_check_min_bytes, int)
            or quota_check_min_bytes < 0
        ):
            raise GeminiInputError(
                f"Task {self.task_id!r}: quota_check_min_bytes={quota_check_min_bytes!r} must be a whole "
                "number of bytes >= 0 (0 checks every upload), or None to never check."
            )
        self.quota_check_min_bytes = quota_check_min_bytes
        wait = (
            quota_wait_timeout.total_seconds()
            if isinstance(quota_wait_timeout, timedelta)
            else quota_wait_timeout
        )
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise GeminiInputError(
                f"Task {self.task_id!r}: quota_wait_timeout={quota_wait_timeout!r} must be seconds >= 0 (or "
                "a timedelta); 0 fails at once when the upload would pass the quota."
            )
        if (
            isinstance(quota_poll_interval, bool)
            or not isinstance(quota_poll_interval, int | float)
            or (quota_poll_interval <= 0)
        ):
            raise GeminiInputError(
                f"Task {self.task_id!r}: quota_poll_interval={quota_poll_interval!r} must be seconds > 0."
            )
        self.quota_wait_timeout = float(wait)
        self.quota_poll_interval = float(quota_poll_interval)
        self.deferrable = deferrable

    def _jobs(self) -> tuple[list[tuple[str, str | None]], bool]:
        """``(source, display name)`` per distinct source, and whether a list was given."""
        reject_rendered_text(self.source, param="source", task_id=self.task_id, expected="a path or list")
        reject_rendered_text(
            self.display_name, param="display_name", task_id=self.task_id, expected="a name or list"
        )
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
            text = os.fspath(item)
            sources.append(text if isinstance(text, str) else os.fsdecode(text))
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
        jobs = list(zip(sources, names, strict=True))
        unique = dedupe(jobs, key=lambda job: job[0])
        for source, name in jobs:
            first = next(job for job in unique if job[0] == source)
            if first[1] != name:
                raise GeminiInputError(
                    f"Task {self.task_id!r}: source {source!r} is listed twice with different display names "
                    f"({first[1]!r} and {name!r}); a source is uploaded once. Give it one name."
                )
        if len(unique) < len(jobs):
            self.log.info(
                "source lists %d file(s) more than once: each is uploaded once.", len(jobs) - len(unique)
            )
        return unique, many

    def _upload_one(self, context: Context, job: tuple[str, str | None]) -> GeminiFileRef:
        source, display_name = job
        name = upload_file_id(context, source) if self.deterministic_names else None
        return self.hook.upload_file(
            source, mime_type=self.mime_type, display_name=display_name, name=name, on_exists="reuse"
        )

    def execute(self, context: Context) -> GeminiFileRef | list[GeminiFileRef]:
        self._lineage_files: list[GeminiFileRef] = []
        jobs, _ = self._jobs()
        first = jobs[0][1] or default_display_name(jobs[0][0])
        set_map_index_label(context, first if len(jobs) == 1 else f"{first} (+{len(jobs) - 1} more)")
        for source, _ in jobs:  # fail before anything is uploaded
            if not is_gs_uri(source):
                check_local_file(source)
        refusal, size = self._quota_refusal(context, jobs)
        if refusal is not None:
            self._wait_for_room(refusal, size, len(jobs))
        return self._upload_all(context)

    def execute_complete(
        self, context: Context, event: Mapping[str, Any]
    ) -> GeminiFileRef | list[GeminiFileRef]:
        """Back from the quota trigger: upload when there is room, else fail with its message."""
        self._lineage_files = []
        if event.get("status") != "fits":
            raise GeminiStorageQuotaError(str(event.get("message") or event))
        self.log.info("There is room in the project's file storage now; uploading.")
        return self._upload_all(context)

    # Quota ----------------------------------------------------------------------------------------
    def _quota_refusal(
        self, context: Context, jobs: Sequence[tuple[str, str | None]]
    ) -> tuple[str | None, int]:
        """Why these uploads would pass the quota (None: they fit, or are too small to check); the bytes
        they add. Files this task already holds under the same deterministic names (an attempt killed
        after uploading them) are reused or replaced by the upload, so their bytes are not counted twice:
        a retry never waits for room that it holds itself."""
        if self.quota_check_min_bytes is None:
            return None, 0
        sizes = {source: self.hook.source_size(source) for source, _ in jobs}
        size = sum(sizes.values())
        if size < self.quota_check_min_bytes:
            return None, size
        usage = self.hook.files_usage()
        if self.deterministic_names:
            held = usage.held_by(upload_file_id(context, source) for source in sizes)
            if held:
                self.log.info("This task already holds %d of these bytes (an earlier attempt's files).", held)
            size = max(0, size - held)
        what = self._what(len(jobs))
        refusal = upload_refusal(usage, size, what=what)
        if refusal is None:
            self.log.info("The %s (%d bytes) fits: %s", what, size, usage.describe())
        return refusal, size

    def _what(self, count: int) -> str:
        return f"upload of {count} file(s) by task {self.task_id!r}"

    def _wait_for_room(self, refusal: str, size: int, count: int) -> None:
        """Wait up to ``quota_wait_timeout`` for room (deferred, or polling here); raise if none comes."""
        if self.quota_wait_timeout <= 0:
            raise GeminiStorageQuotaError(refusal)
        self.log.warning("%s Waiting up to %.0f s for room.", refusal, self.quota_wait_timeout)
        if self.deferrable:
            from airflow_gemini_files.triggers.quota import GeminiStorageQuotaTrigger

            self.defer(
                trigger=GeminiStorageQuotaTrigger(
                    gemini_conn_id=self.gemini_conn_id,
                    needed_bytes=size,
                    what=self._what(count),
                    poll_interval=self.quota_poll_interval,
                    end_time=time.time() + self.quota_wait_timeout,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.quota_wait_timeout + 10 * self.quota_poll_interval),
            )
        deadline = time.monotonic() + self.quota_wait_timeout
        while True:
            time.sleep(max(0.0, min(self.quota_poll_interval, deadline - time.monotonic())))
            refusal_now = upload_refusal(self.hook.files_usage(), size, what=self._what(count))
            if refusal_now is None:
                self.log.info("There is room in the project's file storage now; uploading.")
                return
            if time.monotonic() >= deadline:
                raise GeminiStorageQuotaError(
                    f"Waited {self.quota_wait_timeout:.0f} s in vain: {refusal_now}"
                )

    # Upload ---------------------------------------------------------------------------------------
    def _upload_all(self, context: Context) -> GeminiFileRef | list[GeminiFileRef]:
        jobs, many = self._jobs()
        ledger = self.hook.ledger
        if ledger is not None:
            record_run(ledger, TaskKey.from_context(context))
        self.log.info("Uploading %d file(s) to Gemini, %d at a time.", len(jobs), self.max_concurrency)
        outcomes = self.fan_out(
            lambda job: self._upload_one(context, job), jobs, action="uploads", stop_on_error=True
        )
        uploaded = [outcome.value for outcome in outcomes if outcome.ok and outcome.value is not None]
        self.raise_for_failures(
            outcomes,
            what="uploads",
            created=uploaded,
            after=f"Deleted the {len(uploaded)} file(s) this task had uploaded.",
            label=lambda job: job[0],
        )
        set_map_index_label(context, map_index_label(uploaded))
        self.log.info("Uploaded %d file(s): %s.", len(uploaded), states_summary(uploaded))
        self._lineage_files = uploaded
        return uploaded if many else uploaded[0]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the sources in, the Gemini files out (none when a failed task rolled back)."""
        from airflow_gemini_files import lineage

        return lineage.transfer_lineage(
            getattr(self, "_lineage_files", []), lineage.connection_base_url(self)
        )


class GeminiRegisterGcsFilesOperator(GeminiBaseOperator):
    """
    Register GCS objects with the Gemini Files API (no bytes pass through the worker); return their refs.

    Name the objects with ``uris``, or list them with ``bucket`` plus optional ``prefix`` and ``match_glob``
    (GCS glob syntax, e.g. ``**/*.pdf``). Objects are registered ``batch_size`` per API call, up to
    ``max_concurrency`` calls at once; an object listed twice is registered once. Each returned
    GeminiFileRef has ``source_uri`` set to its object. An empty object is refused, as an upload refuses
    it. If a batch fails, the files the other batches registered are deleted before the task fails.

    GCP credentials (Gemini reads the objects with them) come from ``gcp_conn_id`` (see
    :mod:`airflow_gemini_files.hooks.gcs`).

    A retried task registers the objects again (Gemini gives registered files new names); the earlier
    attempt's files are deleted on failure, and a registration lapses after at most 30 days in any case
    (registered files hold no bytes and use none of the 20 GB upload quota).

    Gemini names registered files itself and ``files:register`` takes no display name (its request holds
    only ``uris`` in every google-genai version this provider supports). With the connection's extra
    ``ledger`` set, the task therefore records the URIs of each call in the ledger *before* the call and
    the names Gemini gave right after: a task killed in between leaves a record from which the orphan
    sweeper (:class:`~airflow_gemini_files.operators.sweep.GeminiSweepFilesOperator`) finds its files.

    :param uris: ``gs://bucket/object`` URIs (one or a list). Templated.
    :param bucket: Bucket to list instead of ``uris``. Templated.
    :param prefix: Only objects whose names start with this. Templated.
    :param match_glob: Only objects matching this GCS glob. Templated.
    :param gcp_conn_id: GCP connection (default: ``google_cloud_default`` if defined, else ADC).
    :param batch_size: URIs per register call (the API takes up to 100).
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
        gcp_conn_id: str | None = None,
        batch_size: int = MAX_BATCH_SIZE,
        fail_if_empty: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.uris = uris
        self.bucket = bucket
        self.prefix = prefix
        self.match_glob = match_glob
        self.gcp_conn_id = gcp_conn_id
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= MAX_BATCH_SIZE
        ):
            raise GeminiInputError(
                f"Task {self.task_id!r}: batch_size={batch_size!r} must be a whole number from 1 to 100 "
                "(the Files API registers at most 100 objects per call)."
            )
        self.batch_size = batch_size
        self.fail_if_empty = fail_if_empty

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
            reject_rendered_text(self.uris, param="uris", task_id=self.task_id, expected="a list of URIs")
            uris = list(self.uris) if is_many(self.uris) else [self.uris]
            for uri in uris:
                if not is_gs_uri(uri):
                    raise GeminiInputError(
                        f"Task {self.task_id!r}: {uri!r} is not a 'gs://bucket/object' URI; only GCS objects "
                        "can be registered (upload local files with GeminiUploadFileOperator)."
                    )
            return dedupe([str(uri).strip() for uri in uris])
        assert self.bucket is not None
        uris = self.hook.list_gcs_objects(self.bucket, self.prefix, self.match_glob)
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
        ledger = self.hook.ledger
        records = FileRecords(ledger, TaskKey.from_context(context)) if ledger is not None else None

        def register(batch: list[str]) -> list[GeminiFileRef]:
            if records is None:
                return self.hook.register_gcs_files(batch, batch_size=self.batch_size)
            key = records.begin_registration(batch)
            refs = self.hook.register_gcs_files(batch, batch_size=self.batch_size)
            records.end_registration(key, batch, [ref.name for ref in refs])
            return refs

        outcomes = self.fan_out(register, batches, action="register calls", stop_on_error=True)
        registered = [ref for outcome in outcomes if outcome.ok for ref in outcome.value or []]
        self.raise_for_failures(
            outcomes,
            what="register calls",
            created=registered,
            after=f"Deleted the {len(registered)} file(s) already registered.",
            label=lambda batch: f"{batch[0]} (+{len(batch) - 1} more)",
        )
        set_map_index_label(context, map_index_label(registered))
        self.log.info("Registered %d file(s): %s.", len(registered), states_summary(registered))
        self._lineage_files = registered
        return registered

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the ``gs://`` objects in, the Gemini files out (none after a rollback)."""
        from airflow_gemini_files import lineage

        return lineage.transfer_lineage(
            getattr(self, "_lineage_files", []), lineage.connection_base_url(self)
        )


class GeminiDeleteFilesOperator(GeminiBaseOperator):
    """
    Delete files from the Gemini Files API; return the names it deleted.

    Runs with trigger rule ``ALL_DONE`` by default, so cleanup happens after upstream failures too. A file
    that is already gone (deleted, expired) is logged, not an error; ``None`` entries (from upstream tasks
    that pushed nothing) are skipped; a file listed twice is deleted once. Other failures are collected:
    every file is tried before the task fails naming the ones it could not delete. Mapped, each instance
    is labelled with its file's name.

    With ``delete_run_uploads`` it first ends and deletes every batch job of the DAG run (those
    ``GeminiBatchGenerateOperator`` created, found by their display names; a running one is cancelled and
    deleted once it has ended, with its results file), and only then deletes files: no file is deleted
    while a job of the run may still read it. If a job cannot be ended, no file is deleted and the task
    fails naming the job.

    :param files: GeminiFileRef(s), dicts or ``files/<id>`` names; may be empty or None. Templated.
    :param delete_run_uploads: Also delete every file ``GeminiUploadFileOperator`` created in this DAG run
        (found by its deterministic name prefix, in this deployment), even those no XCom recorded, and
        every batch job of the run with its input and results files.
    """

    template_fields: Sequence[str] = ("files", "gemini_conn_id")
    ui_color = "#fce8e6"

    def __init__(self, *, files: Any = None, delete_run_uploads: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)
        self.files = files
        self.delete_run_uploads = delete_run_uploads

    def _targets(self, context: Context) -> list[GeminiFileRef]:
        items = flatten(list(self.files)) if is_many(self.files) else [self.files]
        refs = self.file_refs([item for item in items if item is not None], allow_empty=True)
        if self.delete_run_uploads:
            prefix = context_run_prefix(context) + "-"
            found = [ref for ref in self.hook.list_files() if ref.file_id.startswith(prefix)]
            self.log.info("Found %d file(s) uploaded in this DAG run (prefix %s).", len(found), prefix)
            refs = dedupe(refs + found, key=lambda ref: ref.name)
        return refs

    def _end_run_batches(self, context: Context) -> None:
        """Cancel and delete the run's batch jobs (and their results files) before any file goes."""
        jobs = [job for job in self.hook.list_batches() if is_run_batch(job.display_name, context)]
        if not jobs:
            return
        self.log.info("Found %d batch job(s) of this DAG run: ending and deleting them first.", len(jobs))
        outcomes = self.fan_out(lambda job: self.hook.delete_batch(str(job.name)), jobs, action="job deletes")
        self.raise_for_failures(
            outcomes,
            what="batch job deletes",
            after="No file was deleted, since a job of this run may still read it; rerun the task.",
            label=lambda job: str(job.name),
            single_as_is=False,
        )

    def execute(self, context: Context) -> list[str]:
        self._lineage_deleted: list[GeminiFileRef] = []
        if self.delete_run_uploads:
            self._end_run_batches(context)
        refs = self._targets(context)
        set_map_index_label(context, map_index_label(refs))
        if not refs:
            self.log.info("No Gemini files to delete.")
            return []
        self.log.info("Deleting %d file(s), %d at a time.", len(refs), self.max_concurrency)
        outcomes = self.fan_out(self.hook.delete_file, refs, action="deletes")
        deleted = [outcome.item.name for outcome in outcomes if outcome.ok and outcome.value]
        self._lineage_deleted = [outcome.item for outcome in outcomes if outcome.ok and outcome.value]
        self.raise_for_failures(
            outcomes,
            what="deletes",
            after=f"Deleted {len(deleted)}; rerun the task to retry the others.",
            label=lambda ref: ref.name,
            single_as_is=False,
        )
        self.log.info("Deleted %d file(s); %d were already gone.", len(deleted), len(refs) - len(deleted))
        return deleted

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the files this task deleted, as outputs with the lifecycle state change DROP."""
        from airflow_gemini_files import lineage

        return lineage.deletion_lineage(
            getattr(self, "_lineage_deleted", []), lineage.connection_base_url(self)
        )
