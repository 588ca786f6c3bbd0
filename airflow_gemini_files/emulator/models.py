"""The model catalogue: which model names exist, their ``Model`` resources, and the API's 404 for the rest."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_gemini_files.emulator.errors import ApiError

METHODS = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Model:
    """One entry of the catalogue; ``thinks`` says whether it thinks unless told not to."""

    name: str
    display_name: str
    version: str = "001"
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    thinking: bool = True
    thinks: bool = True

    def resource(self) -> dict[str, Any]:
        """The ``Model`` as ``models.get`` and ``models.list`` serialise it."""
        data: dict[str, Any] = {
            "name": f"models/{self.name}",
            "version": self.version,
            "displayName": self.display_name,
            "description": f"{self.display_name} (served by the local Gemini emulator).",
            "inputTokenLimit": self.input_token_limit,
            "outputTokenLimit": self.output_token_limit,
            "supportedGenerationMethods": list(METHODS),
            "temperature": 1,
            "topP": 0.95,
            "topK": 64,
            "maxTemperature": 2,
        }
        if self.thinking:
            data["thinking"] = True
        return data


DEFAULT_MODELS: tuple[Model, ...] = (
    Model("gemini-2.5-flash", "Gemini 2.5 Flash"),
    Model("gemini-2.5-pro", "Gemini 2.5 Pro"),
    Model("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", thinks=False),
    Model("gemini-3-pro-preview", "Gemini 3 Pro Preview", version="3-pro-preview-11-2025"),
    Model("gemini-3-flash-preview", "Gemini 3 Flash Preview", version="3-flash-preview-12-2025"),
    Model("gemini-flash-latest", "Gemini Flash Latest", version="Gemini Flash Latest"),
    Model(
        "gemini-flash-lite-latest",
        "Gemini Flash-Lite Latest",
        version="Gemini Flash-Lite Latest",
        thinks=False,
    ),
    Model("gemini-2.0-flash", "Gemini 2.0 Flash", output_token_limit=8192, thinking=False, thinks=False),
    Model(
        "gemini-2.0-flash-001", "Gemini 2.0 Flash 001", output_token_limit=8192, thinking=False, thinks=False
    ),
    Model(
        "gemini-2.0-flash-lite",
        "Gemini 2.0 Flash-Lite",
        output_token_limit=8192,
        thinking=False,
        thinks=False,
    ),
)
"""Models the emulator knows out of the box (the current generation plus the ones the seed docs use)."""


def _display_name(name: str) -> str:
    return " ".join(word.capitalize() if word.isalpha() else word for word in name.split("-"))


class ModelCatalogue:
    """The models one emulated project may call; thread-safe, replaceable at run time."""

    def __init__(self, models: Iterable[str | Model] | None = None) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, Model] = {}
        self.replace(DEFAULT_MODELS if models is None else models)

    def replace(self, models: Iterable[str | Model]) -> None:
        """Serve exactly these models; a bare name gets the metadata of a current thinking model."""
        known = {m.name: m for m in DEFAULT_MODELS}
        chosen: dict[str, Model] = {}
        for entry in models:
            if isinstance(entry, Model):
                chosen[entry.name] = entry
                continue
            if not isinstance(entry, str) or not entry.strip() or "/" in entry.removeprefix("models/"):
                raise ValueError(f"a model name must be like 'gemini-2.5-flash', got {entry!r}")
            name = entry.strip().removeprefix("models/")
            chosen[name] = known.get(name) or Model(name, _display_name(name))
        with self._lock:
            self._models = chosen

    def names(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def find(self, name: str) -> Model | None:
        with self._lock:
            return self._models.get(name.removeprefix("models/"))

    def require(self, name: str, method: str, version: str) -> Model:
        """The model, or the API's 404 for a name it does not serve (``method`` as the API names it)."""
        model = self.find(name)
        if model is None:
            raise ApiError(
                404,
                f"models/{name.removeprefix('models/')} is not found for API version {version}, or is not "
                f"supported for {method}. Call ListModels to see the list of available models and their "
                "supported methods.",
                "NOT_FOUND",
            )
        return model

    def get(self, name: str) -> dict[str, Any]:
        """``models.get``: the resource, or 404 NOT_FOUND."""
        model = self.find(name)
        if model is None:
            raise ApiError(404, "Requested entity was not found.", "NOT_FOUND")
        return model.resource()

    def page(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``models.list``: one page (``pageSize`` default 50, at most 1000) and the next page's token."""
        try:
            size = int(query.get("pageSize") or DEFAULT_PAGE_SIZE)
            start = (
                int(base64.urlsafe_b64decode(query["pageToken"]).decode()) if query.get("pageToken") else 0
            )
        except ValueError as exc:
            raise ApiError(400, "Invalid pageSize or pageToken.") from exc
        if size < 0:
            raise ApiError(400, f"pageSize must not be negative (got {size}).")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        with self._lock:
            models = list(self._models.values())
        payload: dict[str, Any] = {"models": [m.resource() for m in models[start : start + size]]}
        if start + size < len(models):
            payload["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return payload
