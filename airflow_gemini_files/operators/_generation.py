"""What a generate request asks for and how its reply is read: shared by the generate and batch operators.

- :func:`check_request` / :func:`check_response_schema`: a prompt, a model, a config dict; a JSON schema
  dict (valid as one) or a pydantic model class.
- :func:`request_config` / :func:`request_contents`: the ``GenerateContentConfig`` fields and the prompt
  parts (the prompt, then each file after a ``<<<File: display name>>>`` label) of one request.
- :class:`ReplyReader`: the reply's text, or its JSON parsed and validated against the schema.

Token usage and its price live in :mod:`airflow_gemini_files.pricing` (both operators use it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_gemini_files.exceptions import GeminiFilesError, GeminiInputError
from airflow_gemini_files.naming import printable, prompt_label

if TYPE_CHECKING:
    from google.genai import types

    from airflow_gemini_files.refs import GeminiFileRef

JSON_MIME_TYPE = "application/json"


def is_model_class(value: Any) -> bool:
    """Whether ``value`` is a pydantic model class (it can validate JSON text)."""
    return isinstance(value, type) and hasattr(value, "model_validate_json")


def check_response_schema(schema: Any, *, task_id: str) -> Mapping[str, Any] | type | None:
    """``schema`` when it is None, a pydantic model class, or a dict that is a valid JSON schema; else a
    GeminiInputError naming the task, the schema and the problem."""
    if schema is None or is_model_class(schema):
        return schema
    if not isinstance(schema, Mapping):
        raise GeminiInputError(
            f"Task {task_id!r}: response_schema={schema!r} is neither a JSON schema dict nor a pydantic "
            "model class."
        )
    import jsonschema

    try:
        jsonschema.validators.validator_for(dict(schema)).check_schema(dict(schema))
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.path) or "the top level"
        raise GeminiInputError(
            f"Task {task_id!r}: response_schema is not a valid JSON schema: {error.message} (at {where}). "
            f"Fix the schema: {printable(json.dumps(dict(schema), default=str))[:300]}"
        ) from None
    return schema


def check_request(prompt: Any, model: Any, generation_config: Any, *, task_id: str) -> None:
    """Refuse an empty prompt or model, or a ``generation_config`` that is not a dict, naming the task."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise GeminiInputError(
            f"Task {task_id!r}: the prompt is empty (rendered to {prompt!r}). Pass the question for the "
            "model, e.g. prompt='Summarise this report in 5 bullet points.'"
        )
    if not isinstance(model, str) or not model.strip():
        raise GeminiInputError(
            f"Task {task_id!r}: model={model!r} is empty; pass a model name such as 'gemini-2.5-flash'."
        )
    if generation_config is not None and not isinstance(generation_config, Mapping):
        raise GeminiInputError(
            f"Task {task_id!r}: generation_config={generation_config!r} must be a dict of "
            "GenerateContentConfig fields, e.g. {'temperature': 0.2}."
        )


def request_config(
    generation_config: Mapping[str, Any] | None,
    system_instruction: str | None,
    response_schema: Mapping[str, Any] | type | None,
) -> dict[str, Any]:
    """The ``GenerateContentConfig`` fields of a request: the caller's, the system instruction, and JSON
    output for a response schema."""
    config: dict[str, Any] = dict(generation_config or {})
    if system_instruction:
        config["system_instruction"] = system_instruction
    if response_schema is not None:
        config["response_mime_type"] = JSON_MIME_TYPE
        if is_model_class(response_schema):
            config["response_schema"] = response_schema
        else:
            config["response_json_schema"] = dict(response_schema)  # type: ignore[arg-type]
    return config


def request_contents(prompt: str, refs: Sequence[GeminiFileRef], *, label_files: bool = True) -> list[Any]:
    """The prompt, then each file's part, preceded by ``<<<File: display name>>>`` when ``label_files``."""
    contents: list[Any] = [prompt]
    for ref in refs:
        if label_files:
            contents.append(f"<<<File: {prompt_label(ref.label)}>>>")
        contents.append(ref.to_part())
    return contents


class ReplyReader:
    """Reads replies of ``model``: the text, or with a response schema the JSON, parsed and validated."""

    def __init__(
        self, model: str, response_schema: Mapping[str, Any] | type | None, *, json_reply: bool
    ) -> None:
        self.model = model
        self.schema = response_schema
        self.json_reply = json_reply
        self._validator: Any = None
        if isinstance(response_schema, Mapping):
            import jsonschema

            schema = dict(response_schema)
            self._validator = jsonschema.validators.validator_for(schema)(schema)

    def read(self, response: types.GenerateContentResponse) -> Any:
        """The reply's value; a GeminiFilesError naming the model and the reply when there is none or it
        does not match the schema."""
        text = response.text
        if not text:
            candidate = response.candidates[0] if response.candidates else None
            feedback = response.prompt_feedback
            raise GeminiFilesError(
                f"Model {self.model!r} returned no text (finish reason "
                f"{getattr(candidate, 'finish_reason', None)}, block reason "
                f"{getattr(feedback, 'block_reason', None)}). Check the prompt and the safety settings."
            )
        if not self.json_reply:
            return text
        try:
            if is_model_class(self.schema):
                return self.schema.model_validate_json(text).model_dump(mode="json")  # type: ignore[union-attr]
            value = json.loads(text)
            if self._validator is not None:
                import jsonschema

                error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
                if error is not None:
                    raise error
            return value
        except Exception as error:
            detail = getattr(error, "message", None) or str(error)
            raise GeminiFilesError(
                f"Model {self.model!r} replied with JSON that does not match response_schema: "
                f"{detail[:500]}. Reply starts with {text[:200]!r}. Tighten the prompt or the schema."
            ) from error
