"""Deterministic answers to ``models/{model}:generateContent`` and ``:countTokens``.

The emulated model validates the request the way the live service does (missing or unusable files,
MIME types Gemini cannot read, oversized inline data) and then describes what it was given, part by
part: file name, display name, MIME type, size, sha256 prefix and a cheap fact about the content. With
``response_mime_type: application/json`` it answers JSON built from the response schema and checked
against it with ``jsonschema``. The same request always gets the same answer. Usage metadata counts
prompt tokens per modality and, for thinking models, thought tokens, all summed in ``totalTokenCount``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from airflow_gemini_files.emulator.content import describe_content, is_text
from airflow_gemini_files.emulator.errors import ApiError, not_found_file, unsupported_mime_type
from airflow_gemini_files.emulator.models import Model
from airflow_gemini_files.emulator.store import FileStore, StoredFile
from airflow_gemini_files.mime import SUPPORTED_MIME_TYPES, base_type

MODALITIES = {"document": "DOCUMENT", "text": "TEXT", "image": "IMAGE", "audio": "AUDIO", "video": "VIDEO"}
_FILE_URI = re.compile(r"(?:^|/)files/([a-z0-9][a-z0-9-]*)$")
_URLSAFE = str.maketrans("-_", "+/")
_INT64_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


@dataclass
class PartInfo:
    """What the model was given in one non-text part."""

    kind: str  # "file" or "inline"
    mime_type: str
    size: int
    sha256: str | None
    fact: str
    name: str | None = None
    display_name: str | None = None

    def describe(self) -> str:
        bits = [self.mime_type, f"{self.size} bytes"]
        if self.sha256:
            bits.append(f"sha256 {self.sha256[:12]}")
        head = f"file {self.name}" if self.kind == "file" else "inline data"
        if self.display_name:
            head += f" {self.display_name!r}"
        text = f"{head} ({', '.join(bits)})"
        return f"{text}: {self.fact}" if self.fact else text

    @property
    def label(self) -> str:
        return self.display_name or self.name or f"inline {self.mime_type}"

    @property
    def modality(self) -> str:
        return MODALITIES[SUPPORTED_MIME_TYPES[base_type(self.mime_type)]]

    def tokens(self) -> int:
        if is_text(self.mime_type):
            return max(1, math.ceil(self.size / 4))
        if self.mime_type.startswith("image/"):
            return 258
        return max(1, math.ceil(self.size / 1024))


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def _check_mime_type(mime_type: str) -> str:
    """Refuse a part whose type Gemini cannot read, as the live API does."""
    if base_type(mime_type) not in SUPPORTED_MIME_TYPES:
        raise unsupported_mime_type(mime_type)
    return mime_type


def _file_part(data: dict[str, Any], store: FileStore) -> PartInfo:
    uri = _get(data, "fileUri", "file_uri")
    if not uri:
        raise ApiError(400, "fileData.fileUri is required.")
    match = _FILE_URI.search(uri)
    if match is None:
        raise ApiError(400, f"Unsupported file uri: {uri}")
    stored = store.get(match.group(1))
    mime_type = _check_mime_type(_get(data, "mimeType", "mime_type") or stored.mime_type)
    if stored.state(store.clock.now()) != "ACTIVE":
        raise ApiError(
            400,
            f"The File {stored.file_id} is not in an ACTIVE state and usage is not allowed.",
            "FAILED_PRECONDITION",
        )
    return PartInfo(
        kind="file",
        name=stored.name,
        display_name=stored.display_name,
        mime_type=mime_type,
        size=stored.size,
        sha256=stored.sha256 or (f"md5:{stored.md5_hash}" if stored.md5_hash else None),
        fact=_file_fact(stored),
    )


def _file_fact(stored: StoredFile) -> str:
    if stored.path is None:
        return f"registered from {stored.source_uri}"
    try:
        with open(stored.path, "rb") as fh:
            return describe_content(fh, stored.mime_type)
    except FileNotFoundError as exc:  # deleted while we were looking
        raise not_found_file(stored.file_id) from exc


def _inline_part(data: dict[str, Any]) -> PartInfo:
    mime_type = _get(data, "mimeType", "mime_type") or ""
    if not mime_type:
        raise ApiError(400, "inlineData.mimeType is required.")
    _check_mime_type(mime_type)
    try:
        text = str(data.get("data") or "").translate(_URLSAFE)  # the SDK sends URL-safe base64
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "inlineData.data is not valid base64.") from exc
    sha = base64.b64encode(hashlib.sha256(raw).digest()).decode()
    return PartInfo(
        kind="inline",
        mime_type=mime_type,
        size=len(raw),
        sha256=sha,
        fact=describe_content(io.BytesIO(raw), mime_type),
    )


@dataclass
class Prompt:
    texts: list[str]
    parts: list[PartInfo]
    config: dict[str, Any]


def read_prompt(body: dict[str, Any], store: FileStore) -> Prompt:
    """Validate a generateContent request body and resolve its parts."""
    contents = body.get("contents")
    if not contents or not isinstance(contents, list):
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    texts: list[str] = []
    parts: list[PartInfo] = []
    inline_total = 0
    pdf_limit = store.max_inline_pdf_bytes
    for content in contents:
        content_parts = content.get("parts") if isinstance(content, dict) else None
        if not content_parts:
            raise ApiError(400, "* GenerateContentRequest.contents.parts: contents.parts must not be empty.")
        for part in content_parts:
            if "text" in part:
                texts.append(str(part["text"]))
            elif (file_data := _get(part, "fileData", "file_data")) is not None:
                parts.append(_file_part(file_data, store))
            elif (inline := _get(part, "inlineData", "inline_data")) is not None:
                info = _inline_part(inline)
                inline_total += info.size
                if inline_total > store.max_inline_bytes:
                    raise ApiError(
                        400, f"Request payload size exceeds the limit: {store.max_inline_bytes} bytes."
                    )
                if base_type(info.mime_type) == "application/pdf" and info.size > pdf_limit:
                    raise ApiError(
                        400,
                        f"Inline PDF data of {info.size} bytes exceeds the limit of {pdf_limit} bytes; "
                        "upload the document with the Files API instead.",
                    )
                parts.append(info)
    config = _get(body, "generationConfig", "generation_config") or {}
    return Prompt(texts=texts, parts=parts, config=config)


def usage(prompt: Prompt) -> tuple[int, list[dict[str, Any]]]:
    """Prompt token count and its split per modality (text parts first, then in order of appearance)."""
    counts: dict[str, int] = {}
    text_tokens = sum(max(1, math.ceil(len(t) / 4)) for t in prompt.texts)
    if text_tokens:
        counts["TEXT"] = text_tokens
    for part in prompt.parts:
        counts[part.modality] = counts.get(part.modality, 0) + part.tokens()
    details = [{"modality": modality, "tokenCount": count} for modality, count in counts.items()]
    return sum(counts.values()), details


def thought_tokens(model: Model, config: dict[str, Any], answer_tokens: int) -> int:
    """Tokens a thinking model spends thinking: none when told not to (``thinkingBudget: 0``) or when it
    does not think by default and no budget was given; otherwise a deterministic share, within the budget."""
    thinking = _get(config, "thinkingConfig", "thinking_config") or {}
    budget = _get(thinking, "thinkingBudget", "thinking_budget")
    level = _get(thinking, "thinkingLevel", "thinking_level")
    if not model.thinking or budget == 0:
        return 0
    if not model.thinks and not budget and not level:
        return 0
    thoughts = 16 + answer_tokens // 2
    return min(thoughts, budget) if isinstance(budget, int) and budget > 0 else thoughts


def count_tokens(body: dict[str, Any], store: FileStore) -> dict[str, Any]:
    """``models/{model}:countTokens``: the prompt's tokens, validated like a generateContent request."""
    request = _get(body, "generateContentRequest", "generate_content_request") or body
    total, details = usage(read_prompt(request, store))
    return {"totalTokens": total, "promptTokensDetails": details}


def answer_text(model: str, prompt: Prompt) -> str:
    lines = [f"[emulated {model}] Prompt: {' '.join(prompt.texts)[:200]!r}"]
    for i, part in enumerate(prompt.parts, 1):
        lines.append(f"Part {i}: {part.describe()}")
    if not prompt.parts:
        lines.append("No files or inline data were given.")
    return "\n".join(lines)


# ---- structured output ------------------------------------------------------------------------
def to_json_schema(schema: Any) -> Any:
    """Turn an API ``Schema`` (upper-case types, ``nullable``, int64 strings) into JSON Schema."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("propertyOrdering", "property_ordering", "example", "nullable"):
            continue
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key in _INT64_KEYS and isinstance(value, str):
            out[key] = int(value)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf", "any_of"):
            out["anyOf" if key == "any_of" else key] = to_json_schema(value)
        else:
            out[key] = value
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


class _Builder:
    """Builds a value for a JSON Schema, filling strings from what the model was given."""

    def __init__(self, root: dict[str, Any], prompt: Prompt) -> None:
        self.root = root
        self.prompt = prompt

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/"):
                raise ApiError(400, f"Unsupported $ref {ref!r} in response_json_schema.")
            node: Any = self.root
            for token in ref[2:].split("/"):
                node = node[token.replace("~1", "/").replace("~0", "~")]
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def _part(self, index: int) -> PartInfo | None:
        parts = self.prompt.parts
        return parts[index % len(parts)] if parts else None

    def build(self, schema: Any, key: str, index: int) -> Any:
        if not isinstance(schema, dict):
            return None
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._choose(schema["enum"], index)
        for combo in ("anyOf", "oneOf"):
            if schema.get(combo):
                options = [o for o in schema[combo] if self._resolve(o).get("type") != "null"]
                return self.build((options or schema[combo])[0], key, index)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for sub in schema["allOf"]:
                merged.update(self._resolve(sub))
            return self.build(merged, key, index)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        builder = getattr(self, f"_{kind}", None)
        if builder is None:
            raise ApiError(400, f"Unsupported schema type {kind!r} in response schema.")
        return builder(schema, key, index)

    def _choose(self, options: list[Any], index: int) -> Any:
        """
        The option whose words best match the part (name, MIME type, content facts); the first on a tie.

        Deterministic, and plausible enough for a demo: ``revenue_chart_q3.png`` answers ``chart``,
        a WAV file ``audio_recording``, anything unmatched the first option.
        """
        part = self._part(index)
        if part is None:
            return options[0]
        evidence = set(re.findall(r"[a-z0-9]+", f"{part.label} {part.mime_type} {part.fact}".lower()))

        def score(option: Any) -> int:
            words = re.findall(r"[a-z0-9]+", str(option).lower())
            return sum(1 for word in words if word in evidence)

        best = max(options, key=score)
        return best if score(best) > 0 else options[0]

    def _object(self, schema: dict[str, Any], key: str, index: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        return {name: self.build(sub, name, index) for name, sub in props.items()}

    def _array(self, schema: dict[str, Any], key: str, index: int) -> list[Any]:
        count = max(len(self.prompt.parts), 1)
        count = max(count, int(schema.get("minItems", 0)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [self.build(schema.get("items", {}), key, i) for i in range(count)]

    def _string(self, schema: dict[str, Any], key: str, index: int) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2026-01-01T00:00:00Z"
        if fmt == "date":
            return "2026-01-01"
        part = self._part(index)
        lowered = key.lower()
        if part is None:
            value = " ".join(self.prompt.texts)[:200] or key
        elif "mime" in lowered:
            value = part.mime_type
        elif "language" in lowered:
            value = "unknown"  # the emulator reads no language; it says so rather than guess
        elif "name" in lowered or "title" in lowered or "file" in lowered:
            value = part.label
        else:
            value = part.describe()
        min_len = int(schema.get("minLength", 0))
        if len(value) < min_len:
            value = value.ljust(min_len, ".")
        if "maxLength" in schema:
            value = value[: int(schema["maxLength"])]
        return value

    def _number_value(self, schema: dict[str, Any], key: str, index: int) -> float:
        part = self._part(index)
        lowered = key.lower()
        value: float = 1
        if part is not None and ("size" in lowered or "bytes" in lowered):
            value = part.size
        elif part is not None and ("word" in lowered or "page" in lowered or "count" in lowered):
            found = re.search(r"(\d+) (?:words|page)", part.fact)
            value = int(found.group(1)) if found else 1
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            value = schema["exclusiveMinimum"] + 1
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            value = schema["exclusiveMaximum"] - 1
        return value

    def _integer(self, schema: dict[str, Any], key: str, index: int) -> int:
        return math.floor(self._number_value(schema, key, index))

    def _number(self, schema: dict[str, Any], key: str, index: int) -> float:
        return float(self._number_value(schema, key, index))

    def _boolean(self, schema: dict[str, Any], key: str, index: int) -> bool:
        return True

    def _null(self, schema: dict[str, Any], key: str, index: int) -> None:
        return None


def answer_json(prompt: Prompt) -> str:
    """JSON text for a structured-output request, validated against its schema."""
    config = prompt.config
    json_schema = _get(config, "responseJsonSchema", "response_json_schema")
    if json_schema is None and (api_schema := _get(config, "responseSchema", "response_schema")) is not None:
        json_schema = to_json_schema(api_schema)
    if json_schema is None:
        value: Any = {"text": answer_text("model", prompt).splitlines(), "parts": len(prompt.parts)}
        return json.dumps(value)
    value = _Builder(json_schema, prompt).build(json_schema, "value", 0)
    import jsonschema  # a few ms to import: only paid by structured-output requests

    try:
        jsonschema.validate(value, json_schema)
    except jsonschema.ValidationError as exc:
        # Not retryable on purpose: the same request would fail the same way (e.g. a ``pattern``).
        raise ApiError(
            400, f"The emulator cannot produce a value satisfying this response schema: {exc.message}"
        ) from exc
    except jsonschema.SchemaError as exc:
        raise ApiError(400, f"Invalid response schema: {exc.message}") from exc
    return json.dumps(value)


def generate(model: Model, body: dict[str, Any], store: FileStore) -> dict[str, Any]:
    """The full ``GenerateContentResponse`` JSON for one request."""
    prompt = read_prompt(body, store)
    mime = _get(prompt.config, "responseMimeType", "response_mime_type") or "text/plain"
    if mime == "application/json":
        text = answer_json(prompt)
    elif mime == "text/x.enum":
        schema = _get(prompt.config, "responseSchema", "response_schema") or {}
        if not schema.get("enum"):
            raise ApiError(400, "response_mime_type text/x.enum needs a response_schema with an enum.")
        text = str(schema["enum"][0])
    elif mime == "text/plain":
        text = answer_text(model.name, prompt)
    else:
        raise ApiError(400, f"Unsupported response_mime_type {mime!r}: use text/plain or application/json.")
    prompt_tokens, details = usage(prompt)
    answer_tokens = max(1, math.ceil(len(text) / 4))
    thoughts = thought_tokens(model, prompt.config, answer_tokens)
    metadata: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": answer_tokens,
        "totalTokenCount": prompt_tokens + answer_tokens + thoughts,
        "promptTokensDetails": details,
    }
    if thoughts:
        metadata["thoughtsTokenCount"] = thoughts
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode() + model.name.encode()).hexdigest()
    return {
        "candidates": [
            {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": metadata,
        "modelVersion": model.name,
        "responseId": digest[:24],
    }
