"""
OpenLineage for Gemini Files: what each task read and wrote, as OpenLineage datasets and facets.

The OpenLineage listener (``apache-airflow-providers-openlineage``) calls the operators'
``get_openlineage_facets_on_complete`` (also for a failed task); they call the builders at the end of
this module with values the task already holds. Nothing here goes through Airflow's asset URI handlers,
so lineage is the same with or without the Google provider installed; the OpenLineage client is imported
only when a builder runs, so the provider works without OpenLineage installed.

Datasets (namespace, name):

===============  ==============================  ======================================================
What             Namespace                       Name
===============  ==============================  ======================================================
GCS object       ``gs://<bucket>``               ``<object name>`` (OpenLineage naming spec)
local file       ``file``                        ``<absolute path>`` (OpenLineage naming spec)
Gemini file      ``gemini://<API host[:port]>``  ``files/<id>``
model response   ``gemini://<API host[:port]>``  ``models/<model>/responses/<file id>[+<file id>...]``
===============  ==============================  ======================================================

The Gemini namespace is the host of the file's URI (the API that holds it), else of the connection's
base URL, else ``generativelanguage.googleapis.com``; never the URL's credentials, path or query, and
never the API key (which only ever travels in a request header).

Facets: ``gemini_file`` on Gemini files (source URI, MIME type, size, display name, hash, times),
``lifecycleStateChange`` ``DROP`` on deleted files, ``schema`` (from ``response_schema``) on model
responses, the job facet ``gemini`` (model and API method) and the run facet ``gemini_usage`` (token
counts of the run) on tasks that generated content.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from airflow_gemini_files.gcs_uri import is_gs_uri, parse_gs_uri

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from openlineage.client.event_v2 import Dataset

    from airflow_gemini_files.refs import GeminiFileRef

GEMINI_SCHEME = "gemini"
"""Scheme of the namespace of Gemini files and model responses."""

DEFAULT_API_HOST = "generativelanguage.googleapis.com"
"""The Gemini API's host, used when neither the file nor the connection names another."""

MAX_RESPONSE_KEY = 200
"""Longest ``<file id>+<file id>...`` kept verbatim in a response name; longer keys are shortened."""

_DEFAULT_PORTS = {"https": 443, "http": 80}


class DatasetName(NamedTuple):
    """An OpenLineage dataset identifier: the datasource ``namespace`` and the dataset ``name`` in it."""

    namespace: str
    name: str


# Naming (plain functions, no OpenLineage import) -------------------------------------------------------
def gemini_namespace(url: str | None = None) -> str:
    """
    ``gemini://<host[:port]>`` of a Gemini API URL (a file URI or the connection's base URL).

    Only the host and a non-default port are kept: credentials, path, query and fragment never enter
    lineage. No URL (or one without a host) means the public API, ``gemini://generativelanguage.googleapis.com``.
    """
    parts = urlsplit(url.strip()) if url else None
    host = parts.hostname if parts else None
    if parts is None or not host:
        return f"{GEMINI_SCHEME}://{DEFAULT_API_HOST}"
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: keep the host alone
        port = None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return f"{GEMINI_SCHEME}://{host}"


def uri_dataset(source: str | os.PathLike[str]) -> DatasetName:
    """
    The dataset of a ``gs://bucket/object`` URI (``gs://bucket``, ``object``) or of a local path
    (``file``, its absolute path), as the OpenLineage naming spec names them.

    A malformed ``gs://`` URI raises :class:`~airflow_gemini_files.exceptions.GeminiInputError`.
    """
    text = os.fspath(source).strip()
    if is_gs_uri(text):
        bucket, name = parse_gs_uri(text)
        return DatasetName(f"gs://{bucket}", name)
    return DatasetName("file", os.path.abspath(text))


def gemini_file_dataset(ref: GeminiFileRef, base_url: str | None = None) -> DatasetName:
    """The dataset of a Gemini file: ``files/<id>`` in the namespace of its URI (else of ``base_url``)."""
    return DatasetName(gemini_namespace(ref.uri or base_url), ref.name)


def response_dataset(files: Sequence[GeminiFileRef], model: str, base_url: str | None = None) -> DatasetName:
    """
    The dataset of a model's response about ``files``: ``models/<model>/responses/<file ids joined by +>``.

    A task that stores what :class:`~airflow_gemini_files.operators.generate.GeminiGenerateContentOperator`
    returned names its input with this (same files, same model), which links the two in lineage. Keys
    longer than :data:`MAX_RESPONSE_KEY` become ``<first id>+<N>-more-<hash of all ids>``.
    """
    if not files:
        raise ValueError("A model response is named after the files it is about; got no files.")
    model_name = model.strip()
    if "/" not in model_name:
        model_name = f"models/{model_name}"
    key = "+".join(ref.file_id for ref in files)
    if len(key) > MAX_RESPONSE_KEY:
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        key = f"{files[0].file_id}+{len(files) - 1}-more-{digest}"
    return DatasetName(gemini_namespace(files[0].uri or base_url), f"{model_name}/responses/{key}")


@dataclass(frozen=True)
class SchemaField:
    """One field of a JSON schema as OpenLineage's schema facet lists it (nested for objects and arrays)."""

    name: str
    type: str | None = None
    description: str | None = None
    fields: tuple[SchemaField, ...] = field(default=())


def schema_fields(schema: Mapping[str, Any] | type) -> tuple[SchemaField, ...]:
    """
    The fields of a ``response_schema`` (a JSON schema dict or a pydantic model class).

    An object schema gives one field per property; anything else one field named ``value``. Nested
    objects list their properties, arrays one ``_element`` field (OpenLineage's convention for array
    items); ``$ref`` to ``$defs`` is followed (a recursive reference stops the nesting), ``anyOf`` /
    ``oneOf`` types are joined with ``|``, and an ``enum`` is named in the description.
    """
    root = schema.model_json_schema() if isinstance(schema, type) else dict(schema)  # type: ignore[attr-defined]
    resolved, seen = _resolve(root, root, frozenset())
    if "properties" in resolved:
        return _properties(root, resolved, seen)
    return (_field("value", root, resolved, seen),)


def _resolve(root: Mapping[str, Any], node: Mapping[str, Any], seen: frozenset[str]) -> tuple[Any, Any]:
    """Follow ``$ref`` to ``#/$defs/...`` or ``#/definitions/...``; return the node and the refs followed."""
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:  # recursive: stop here
            return {}, seen
        seen = seen | {ref}
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        node = target
    return node, seen


def _properties(
    root: Mapping[str, Any], node: Mapping[str, Any], seen: frozenset[str]
) -> tuple[SchemaField, ...]:
    properties = node.get("properties")
    if not isinstance(properties, Mapping):
        return ()
    return tuple(_field(name, root, *_resolve(root, value, seen)) for name, value in properties.items())


def _field(name: str, root: Mapping[str, Any], node: Any, seen: frozenset[str]) -> SchemaField:
    if not isinstance(node, Mapping):
        return SchemaField(name)
    types = _types(root, node, seen)
    nested: tuple[SchemaField, ...] = ()
    if "properties" in node:
        nested = _properties(root, node, seen)
    elif "items" in node:
        nested = (_field("_element", root, *_resolve(root, node["items"], seen)),)
    description = node.get("description")
    if isinstance(node.get("enum"), list):
        allowed = "one of: " + ", ".join(str(value) for value in node["enum"])
        description = f"{description} ({allowed})" if description else allowed
    return SchemaField(name, "|".join(types) or None, description, nested)


def _types(root: Mapping[str, Any], node: Mapping[str, Any], seen: frozenset[str]) -> list[str]:
    """The node's ``type`` (a name or a list), else the types of its ``anyOf`` / ``oneOf`` options."""
    options = node.get("anyOf") or node.get("oneOf") or []
    nodes = [node] if "type" in node else [_resolve(root, option, seen)[0] for option in options]
    kinds: list[str] = []
    for option in nodes:
        declared = option.get("type") if isinstance(option, Mapping) else None
        for kind in declared if isinstance(declared, list) else [declared]:
            if isinstance(kind, str) and kind not in kinds:
                kinds.append(kind)
    return kinds


def connection_base_url(operator: Any) -> str | None:
    """
    The base URL of the Gemini connection that ``operator.hook`` has already read, else None.

    Lineage is built by the listener, possibly in a forked process that must not talk to Airflow's API:
    it never reads a connection itself, it only looks at the hook the task built while it ran.
    """
    hook = vars(operator).get("hook")
    settings = vars(hook).get("settings") if hook is not None else None
    return getattr(settings, "base_url", None)


# OpenLineage objects (the client is imported here, when the listener asks) -----------------------------
def _dataset(name: DatasetName, facets: Mapping[str, Any] | None = None) -> Dataset:
    from openlineage.client.event_v2 import Dataset

    return Dataset(namespace=name.namespace, name=name.name, facets=dict(facets or {}))


def _file_facet(ref: GeminiFileRef) -> Any:
    """The ``gemini_file`` dataset facet: where the file came from and what it is (no transient state)."""
    from openlineage.client.facet_v2 import DatasetFacet

    values = {
        "displayName": ref.display_name,
        "mimeType": ref.mime_type,
        "sizeBytes": ref.size_bytes,
        "sha256Hash": ref.sha256_hash,
        "source": ref.source,
        "sourceUri": ref.source_uri,
        "createTime": ref.create_time.isoformat() if ref.create_time else None,
        "expirationTime": ref.expiration_time.isoformat() if ref.expiration_time else None,
    }
    return DatasetFacet().with_additional_properties(**{k: v for k, v in values.items() if v is not None})


def _file_datasets(
    files: Iterable[GeminiFileRef], base_url: str | None, extra: Mapping[str, Any] | None = None
) -> list[Dataset]:
    datasets: dict[DatasetName, Dataset] = {}
    for ref in files:
        name = gemini_file_dataset(ref, base_url)
        datasets.setdefault(name, _dataset(name, {"gemini_file": _file_facet(ref), **(extra or {})}))
    return list(datasets.values())


def _schema_facet(fields: Sequence[SchemaField]) -> Any:
    from openlineage.client.facet_v2 import schema_dataset

    def convert(items: Sequence[SchemaField]) -> list[Any]:
        return [
            schema_dataset.SchemaDatasetFacetFields(
                name=item.name, type=item.type, description=item.description, fields=convert(item.fields)
            )
            for item in items
        ]

    return schema_dataset.SchemaDatasetFacet(fields=convert(fields))


def _lineage(**kwargs: Any) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(**kwargs)


def transfer_lineage(files: Sequence[GeminiFileRef], base_url: str | None = None) -> OperatorLineage:
    """Upload and register: each file's source (``gs://`` object or local file) in, the Gemini files out."""
    sources = dict.fromkeys(uri_dataset(ref.source_uri) for ref in files if ref.source_uri)
    return _lineage(inputs=[_dataset(name) for name in sources], outputs=_file_datasets(files, base_url))


def wait_lineage(files: Sequence[GeminiFileRef], base_url: str | None = None) -> OperatorLineage:
    """The sensor: the Gemini files it waited for, as inputs."""
    return _lineage(inputs=_file_datasets(files, base_url))


def generation_lineage(
    *,
    files: Sequence[GeminiFileRef],
    answered: Sequence[Sequence[GeminiFileRef]],
    model: str,
    response_schema: Mapping[str, Any] | type | None = None,
    usage: Mapping[str, int] | None = None,
    method: str = "generateContent",
    base_url: str | None = None,
) -> OperatorLineage:
    """
    Content generation: the Gemini files in, one model response per answered call out (see
    :func:`response_dataset`), with a ``schema`` facet from ``response_schema``; the job facet ``gemini``
    (model, API ``method``) and the run facet ``gemini_usage`` (``usage``, summed over the task's calls).
    """
    outputs = dict.fromkeys(response_dataset(group, model, base_url) for group in answered if group)
    return _generated_lineage(files, outputs, model, response_schema, usage, method, base_url)


def batch_lineage(
    *,
    files: Sequence[GeminiFileRef],
    results: Sequence[str],
    manifest: str | None,
    model: str,
    response_schema: Mapping[str, Any] | type | None = None,
    usage: Mapping[str, int] | None = None,
    base_url: str | None = None,
) -> OperatorLineage:
    """
    A batch job: the Gemini files it sent in, each document's result object (``gs://``, with the ``schema``
    facet) and the manifest out; the job facet ``gemini`` (model, ``batchGenerateContent``) and the run
    facet ``gemini_usage`` (the batch's token counts).
    """
    outputs = dict.fromkeys(uri_dataset(uri) for uri in results)
    extra = [_dataset(uri_dataset(manifest))] if manifest else []
    return _generated_lineage(
        files, outputs, model, response_schema, usage, "batchGenerateContent", base_url, extra
    )


def _generated_lineage(
    files: Sequence[GeminiFileRef],
    outputs: Iterable[DatasetName],
    model: str,
    response_schema: Mapping[str, Any] | type | None,
    usage: Mapping[str, int] | None,
    method: str,
    base_url: str | None,
    extra_outputs: Sequence[Dataset] = (),
) -> OperatorLineage:
    from openlineage.client.facet_v2 import JobFacet, RunFacet

    facets = {"schema": _schema_facet(schema_fields(response_schema))} if response_schema is not None else {}
    run_facets = {"gemini_usage": RunFacet().with_additional_properties(**usage)} if usage else {}
    return _lineage(
        inputs=_file_datasets(files, base_url),
        outputs=[*(_dataset(name, facets) for name in outputs), *extra_outputs],
        job_facets={"gemini": JobFacet().with_additional_properties(model=model, method=method)},
        run_facets=run_facets,
    )


def deletion_lineage(files: Sequence[GeminiFileRef], base_url: str | None = None) -> OperatorLineage:
    """Delete: the deleted Gemini files as outputs with the ``lifecycleStateChange`` facet ``DROP``."""
    from openlineage.client.facet_v2 import lifecycle_state_change_dataset as lifecycle

    drop = lifecycle.LifecycleStateChangeDatasetFacet(
        lifecycleStateChange=lifecycle.LifecycleStateChange.DROP
    )
    return _lineage(outputs=_file_datasets(files, base_url, {"lifecycleStateChange": drop}))


def add_task_lineage(
    context: Context, *, inputs: Iterable[DatasetName] = (), outputs: Iterable[DatasetName] = ()
) -> None:
    """
    Report what a TaskFlow task (``@task``) read and wrote on its OpenLineage COMPLETE (or FAIL) event.

    The OpenLineage provider has no extractor for ``@task`` functions; for them it reports the task's
    ``inlets`` and ``outlets`` that are OpenLineage datasets (unless a hook in the task reported lineage of
    its own). The names are known only while the task runs, so this adds them to the running task's
    inlets and outlets. Does nothing when OpenLineage is not installed.
    """
    try:
        import openlineage.client.event_v2  # noqa: F401
    except ImportError:
        return
    task = context["task"]
    # New lists (never extend in place): the running task is a copy that shares them with the DAG's task.
    task.inlets = [*task.inlets, *(_dataset(name) for name in inputs)]
    task.outlets = [*task.outlets, *(_dataset(name) for name in outputs)]
