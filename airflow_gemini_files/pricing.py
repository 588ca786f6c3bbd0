"""What a call cost: token usage normalised, and a price estimate from a dated price table.

**Usage.** :class:`TokenUsage` is a response's ``usageMetadata`` with every count present (0 when the
API left it out): ``prompt`` (every input token, cached ones included, as ``promptTokenCount`` counts
them), ``cached`` (the part of the prompt read from a context cache), ``candidates`` (the answer),
``thoughts`` (thinking; billed as output), ``tool_use_prompt`` (tool results fed back, billed as input),
``audio_prompt`` / ``cached_audio`` (the audio share of the prompt and of the cache, priced apart) and
``total``. :func:`usage_from_response` reads it from an SDK response (or its metadata, or a dict in
either spelling); usages add up with ``+``.

**Price.** :func:`estimate_cost` prices a usage for a model, online or through the Batch API::

    estimate_cost("gemini-2.5-flash", usage)               # online
    estimate_cost("gemini-2.5-flash", usage, batch=True)   # Batch API
    estimate_cost(model, usage, batch=True, prices=hook.prices)  # the connection's table

The table (:data:`DEFAULT_PRICES`) holds USD per million tokens per model and token kind (``input``,
``input_audio``, ``cached_input``, ``cached_input_audio``, ``output``), a long-context tier where the
model has one (prompts above 200,000 tokens), and the Batch API discount (50 % off input and output;
cached input keeps its price). It states its date and source (:data:`PRICES_AS_OF`,
:data:`PRICES_SOURCE`). A deployment with other prices (a contract, a newer model) overrides or adds
models in the Gemini connection's extra ``prices`` (:func:`price_table_from_extra`, checked: an
unknown token kind, a missing one, a price that is negative or not a number are errors naming the
value). A model the table does not know is an error naming it and the close names
(:class:`UnknownModelPriceError`): nothing is priced at a guess.

These are estimates: Gemini bills what its own meter counts (also search grounding, cache storage
hours and other items this table does not price).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_gemini_files.exceptions import GeminiInputError

PRICES_AS_OF = "2026-11-30"
"""When the default prices were read."""

PRICES_SOURCE = "https://ai.google.dev/gemini-api/docs/pricing"
"""Where the default prices come from: the Gemini Developer API pricing page, paid tier, "Standard" and
"Batch" columns. Read on 2026-11-30 through the stored transcriptions of that page available here
(api-evangelist/gemini ``plans/gemini-plans-pricing.yml``, read from the page on 2026-09-20, and the
``model_prices_and_context_window.json`` of litellm 1.110.2, which cites the page per model): the page
itself could not be fetched from this machine, and the Gemini docs this project was built from (the Files
API guides) state no prices. Check the page before you rely on a figure."""

CURRENCY = "USD"
PER_TOKENS = 1_000_000
"""Prices are per this many tokens."""

DEFAULT_BATCH_DISCOUNT = 0.5
"""The Batch API costs 50 % less than the online API for input and output tokens (the pricing page's
"Batch" column); cached input is priced as online."""

LONG_CONTEXT_ABOVE = 200_000
"""Models with a long-context tier price a whole request at it when its prompt has more tokens."""

REQUIRED_KINDS: tuple[str, ...] = ("input", "cached_input", "output")
"""Token kinds every model's prices must state."""

OPTIONAL_KINDS: dict[str, str] = {"input_audio": "input", "cached_input_audio": "cached_input"}
"""Token kinds a model may price apart, and the kind they cost as when it does not."""

TOKEN_KINDS: tuple[str, ...] = (*REQUIRED_KINDS, *OPTIONAL_KINDS)

_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_EXTRA_KEYS = ("models", "batch_discount", "as_of", "source")


class UnknownModelPriceError(GeminiInputError):
    """The price table has no prices for a model; the message names it, the close names and the fix."""


# Usage ------------------------------------------------------------------------------------------
_FIELDS = {
    # TokenUsage field -> (usageMetadata field in the SDK's snake_case, in the API's camelCase)
    "prompt": ("prompt_token_count", "promptTokenCount"),
    "cached": ("cached_content_token_count", "cachedContentTokenCount"),
    "candidates": ("candidates_token_count", "candidatesTokenCount"),
    "thoughts": ("thoughts_token_count", "thoughtsTokenCount"),
    "tool_use_prompt": ("tool_use_prompt_token_count", "toolUsePromptTokenCount"),
    "total": ("total_token_count", "totalTokenCount"),
}
_OWN_FIELDS = {"audio_prompt": "audio_prompt_token_count", "cached_audio": "cached_audio_token_count"}


@dataclasses.dataclass(frozen=True)
class TokenUsage:
    """Token counts of one call or summed over many (``calls``); every count is an int >= 0."""

    prompt: int = 0
    cached: int = 0
    candidates: int = 0
    thoughts: int = 0
    tool_use_prompt: int = 0
    audio_prompt: int = 0
    cached_audio: int = 0
    total: int = 0
    calls: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)}
        )

    @property
    def output(self) -> int:
        """Tokens billed as output: the answer and the thinking."""
        return self.candidates + self.thoughts

    def as_dict(self) -> dict[str, int]:
        """The counts under the SDK's names (``prompt_token_count``, ...) plus ours and ``calls``."""
        values = {sdk: getattr(self, name) for name, (sdk, _) in _FIELDS.items()}
        values.update({key: getattr(self, name) for name, key in _OWN_FIELDS.items()})
        values["calls"] = self.calls
        return values

    def counts(self) -> dict[str, int]:
        """The token counts under this class's own names (``prompt``, ``cached``, ``candidates``,
        ``thoughts``, ``tool_use_prompt``, ``audio_prompt``, ``cached_audio``, ``total``), without
        ``calls``: the spelling of the batch operator's results and manifest."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "calls"}


def _count(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"token count {name}={value!r} is not a whole number >= 0")
    return value


def _modality_tokens(details: Any, modality: str) -> int:
    """Tokens of ``modality`` (``AUDIO``) in a list of ``ModalityTokenCount`` (objects or dicts)."""
    total = 0
    for item in details or []:
        if isinstance(item, Mapping):
            kind, count = item.get("modality"), item.get("token_count", item.get("tokenCount"))
        else:
            kind, count = getattr(item, "modality", None), getattr(item, "token_count", None)
        kind = getattr(kind, "value", kind)
        if str(kind).upper() == modality:
            total += _count(count, f"{modality} tokens")
    return total


def usage_from_response(response: Any, *, calls: int = 1) -> TokenUsage:
    """
    The normalised usage of a ``GenerateContentResponse``, its ``usage_metadata``, or a dict of either
    (the SDK's snake_case or the API's camelCase, as in a Batch API results line). A response without
    usage metadata counts as one call with no tokens. ``total`` is the API's ``totalTokenCount``, or the
    sum of the parts when it gave none.
    """
    metadata = getattr(response, "usage_metadata", response)
    if isinstance(response, Mapping):
        metadata = response.get("usage_metadata", response.get("usageMetadata", response))
    if metadata is None:
        return TokenUsage(calls=calls)

    def get(snake: str, camel: str) -> Any:
        if isinstance(metadata, Mapping):
            return metadata.get(snake, metadata.get(camel))
        return getattr(metadata, snake, None)

    counts = {name: _count(get(snake, camel), snake) for name, (snake, camel) in _FIELDS.items()}
    audio = _modality_tokens(get("prompt_tokens_details", "promptTokensDetails"), "AUDIO")
    cached_audio = _modality_tokens(get("cache_tokens_details", "cacheTokensDetails"), "AUDIO")
    if not counts["total"]:
        parts = ("prompt", "candidates", "thoughts", "tool_use_prompt")
        counts["total"] = sum(counts[name] for name in parts)
    return TokenUsage(**counts, audio_prompt=audio, cached_audio=cached_audio, calls=calls)


def usage_from_dict(values: Mapping[str, Any]) -> TokenUsage:
    """The usage :meth:`TokenUsage.as_dict` wrote (the ``usage`` XCom); other keys are ignored."""
    counts = {name: _count(values.get(sdk), sdk) for name, (sdk, _) in _FIELDS.items()}
    counts.update({name: _count(values.get(key), key) for name, key in _OWN_FIELDS.items()})
    return TokenUsage(**counts, calls=_count(values.get("calls"), "calls"))


def sum_usage(usages: Iterable[TokenUsage]) -> TokenUsage:
    """The sum of ``usages`` (an empty sum is zero calls, zero tokens)."""
    total = TokenUsage()
    for usage in usages:
        total = total + usage
    return total


# Prices -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rates:
    """USD per million tokens of each kind (one tier of one model)."""

    input: float
    cached_input: float
    output: float
    input_audio: float | None = None
    cached_input_audio: float | None = None

    def rate(self, kind: str) -> float:
        value = getattr(self, kind)
        return float(getattr(self, OPTIONAL_KINDS[kind])) if value is None else float(value)

    def batch(self, discount: float) -> Rates:
        """These rates through the Batch API: ``discount`` off input and output, cached input as is."""
        keep = 1.0 - discount
        return Rates(
            input=self.input * keep,
            cached_input=self.cached_input,
            output=self.output * keep,
            input_audio=None if self.input_audio is None else self.input_audio * keep,
            cached_input_audio=self.cached_input_audio,
        )


@dataclasses.dataclass(frozen=True)
class ModelPrices:
    """A model's rates, and its long-context rates (for prompts above ``long_context_above`` tokens)."""

    rates: Rates
    long_context: Rates | None = None
    long_context_above: int = LONG_CONTEXT_ABOVE

    def tier(self, prompt_tokens: int) -> Rates:
        """The rates a request with ``prompt_tokens`` input tokens is billed at."""
        if self.long_context is not None and prompt_tokens > self.long_context_above:
            return self.long_context
        return self.rates


@dataclasses.dataclass(frozen=True)
class PriceTable:
    """Prices per model, the Batch API discount, and when and where the prices were read."""

    models: Mapping[str, ModelPrices]
    batch_discount: float = DEFAULT_BATCH_DISCOUNT
    as_of: str = PRICES_AS_OF
    source: str = PRICES_SOURCE
    currency: str = CURRENCY

    def prices_for(self, model: str) -> ModelPrices:
        """The prices of ``model`` (``gemini-2.5-flash`` or ``models/gemini-2.5-flash``), or raise."""
        model_id = str(model).strip().removeprefix("models/")
        found = self.models.get(model_id)
        if found is not None:
            return found
        close = difflib.get_close_matches(model_id, list(self.models), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownModelPriceError(
            f"No price for model {model_id!r} in the price table (as of {self.as_of}; it prices "
            f"{', '.join(sorted(self.models))}).{hint} Add its prices (USD per million tokens) to the Gemini "
            f'connection\'s extra "prices", e.g. {{"models": {{"{model_id}": {{"input": 0.3, '
            '"cached_input": 0.03, "output": 2.5}}}}.'
        )

    def cost(self, model: str, usage: TokenUsage, *, batch: bool = False) -> float:
        """The estimated price of ``usage`` with ``model`` (USD), online or through the Batch API."""
        prices = self.prices_for(model)
        rates = prices.tier(usage.prompt)
        if batch:
            rates = rates.batch(self.batch_discount)
        cached_audio = min(usage.cached_audio, usage.cached)
        audio = max(0, min(usage.audio_prompt, usage.prompt) - cached_audio)
        fresh = max(0, usage.prompt - usage.cached) - audio + usage.tool_use_prompt
        amount = (
            fresh * rates.rate("input")
            + audio * rates.rate("input_audio")
            + (usage.cached - cached_audio) * rates.rate("cached_input")
            + cached_audio * rates.rate("cached_input_audio")
            + usage.output * rates.rate("output")
        )
        return amount / PER_TOKENS

    def describe(self) -> dict[str, str]:
        """Where the prices come from, for reports: date, source, currency."""
        return {"prices_as_of": self.as_of, "prices_source": self.source, "currency": self.currency}


def _rates(
    input_: float, cached: float, output: float, audio: float | None = None, cached_audio: float | None = None
) -> Rates:
    return Rates(
        input=input_, cached_input=cached, output=output, input_audio=audio, cached_input_audio=cached_audio
    )


DEFAULT_MODEL_PRICES: dict[str, ModelPrices] = {
    # Gemini 3 Pro Preview: priced as Gemini 3.1 Pro Preview, its successor at the same published rates.
    "gemini-3-pro-preview": ModelPrices(_rates(2.00, 0.20, 12.00), long_context=_rates(4.00, 0.40, 18.00)),
    "gemini-3-flash-preview": ModelPrices(_rates(0.50, 0.05, 3.00, audio=1.00, cached_audio=0.10)),
    "gemini-2.5-pro": ModelPrices(_rates(1.25, 0.125, 10.00), long_context=_rates(2.50, 0.25, 15.00)),
    "gemini-2.5-flash": ModelPrices(_rates(0.30, 0.03, 2.50, audio=1.00, cached_audio=0.10)),
    "gemini-2.5-flash-lite": ModelPrices(_rates(0.10, 0.01, 0.40, audio=0.30, cached_audio=0.03)),
    # Gemini 2.0 (deprecated): the last rates the page listed; Flash-Lite had no context caching.
    "gemini-2.0-flash": ModelPrices(_rates(0.10, 0.025, 0.40, audio=0.70, cached_audio=0.175)),
    "gemini-2.0-flash-001": ModelPrices(_rates(0.10, 0.025, 0.40, audio=0.70, cached_audio=0.175)),
    "gemini-2.0-flash-lite": ModelPrices(_rates(0.075, 0.075, 0.30)),
}
"""USD per million tokens, paid tier, online ("Standard"); see :data:`PRICES_SOURCE`. The ``-latest``
aliases (``gemini-flash-latest``, ...) are left out on purpose: they move to newer models with other
prices without notice. Price them in the connection's extra ``prices`` if you use them."""

DEFAULT_PRICES = PriceTable(models=DEFAULT_MODEL_PRICES)
"""The price table a connection without the extra ``prices`` uses."""


def estimate_cost(model: str, usage: Any, *, batch: bool = False, prices: PriceTable | None = None) -> float:
    """
    Estimated price (USD) of ``usage`` with ``model``: online, or through the Batch API (``batch=True``).

    ``usage`` is a :class:`TokenUsage`, a response, its ``usage_metadata``, or a usage dict (either the
    ``usage`` XCom or an API ``usageMetadata``). ``prices`` defaults to :data:`DEFAULT_PRICES`; pass
    ``hook.prices`` for the connection's own. Raises :class:`UnknownModelPriceError` for a model the
    table does not price.
    """
    table = prices or DEFAULT_PRICES
    if not isinstance(usage, TokenUsage):
        usage = usage_from_dict(usage) if _is_usage_dict(usage) else usage_from_response(usage)
    return table.cost(model, usage, batch=batch)


def _is_usage_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and "prompt_token_count" in value and "calls" in value


def usage_report(
    model: str, usage: TokenUsage, *, batch: bool = False, prices: PriceTable | None = None
) -> dict[str, Any]:
    """
    The ``usage`` XCom / manifest entry: the counts (:meth:`TokenUsage.as_dict`), ``estimated_cost``
    (USD, rounded to 1e-6; None when the table does not price ``model``), ``pricing`` (``online`` or
    ``batch``) and where the prices come from.
    """
    cost = cost_report(model, usage, batch=batch, prices=prices)
    return {
        **usage.as_dict(),
        "estimated_cost": cost.pop("estimated"),
        "pricing": cost.pop("pricing"),
        "model": str(model).strip().removeprefix("models/"),
        **cost,
    }


def cost_report(
    model: str, usage: TokenUsage, *, batch: bool = False, prices: PriceTable | None = None
) -> dict[str, Any]:
    """
    A manifest's ``cost`` entry: ``estimated`` (USD, rounded to 1e-6; None when the table does not price
    ``model``), ``pricing`` (``online`` or ``batch``) and where the prices come from (``prices_as_of``,
    ``prices_source``, ``currency``).
    """
    table = prices or DEFAULT_PRICES
    try:
        cost: float | None = round(table.cost(model, usage, batch=batch), 6)
    except UnknownModelPriceError:
        cost = None
    return {"estimated": cost, "pricing": "batch" if batch else "online", **table.describe()}


# The connection's extra "prices" --------------------------------------------------------------------
def _price(where: str, kind: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise GeminiInputError(f"{where}: {kind}={value!r} is not a number (USD per million tokens).")
    try:
        number = float(value)
    except ValueError:
        raise GeminiInputError(
            f"{where}: {kind}={value!r} is not a number (USD per million tokens), e.g. 0.3."
        ) from None
    if not math.isfinite(number) or number < 0:
        raise GeminiInputError(
            f"{where}: {kind}={value!r} must be a finite number >= 0 (USD per million tokens)."
        )
    return number


def _parse_rates(where: str, values: Any, *, allow_tier: bool) -> tuple[Rates, Any]:
    if not isinstance(values, Mapping):
        raise GeminiInputError(
            f"{where} must be an object of prices per token kind, e.g. "
            '{"input": 0.3, "cached_input": 0.03, "output": 2.5}; got ' + f"{values!r}."
        )
    allowed = set(TOKEN_KINDS) | ({"long_context"} if allow_tier else set())
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise GeminiInputError(
            f"{where}: unknown token kind(s) {unknown}; the kinds are {', '.join(TOKEN_KINDS)}"
            + (" (and long_context)." if allow_tier else ".")
        )
    missing = [kind for kind in REQUIRED_KINDS if kind not in values]
    if missing:
        raise GeminiInputError(
            f"{where}: missing token kind(s) {missing}; every model needs {', '.join(REQUIRED_KINDS)} "
            "(USD per million tokens)."
        )
    rates = Rates(**{kind: _price(where, kind, values[kind]) for kind in TOKEN_KINDS if kind in values})
    return rates, values.get("long_context")


def _parse_model(model: Any, values: Any) -> tuple[str, ModelPrices]:
    model_id = str(model).strip().removeprefix("models/") if isinstance(model, str) else ""
    if not _MODEL_ID.match(model_id):
        raise GeminiInputError(
            f'Gemini connection extra "prices": {model!r} is not a model id such as "gemini-2.5-flash".'
        )
    where = f'Gemini connection extra "prices", model {model_id!r}'
    rates, tier = _parse_rates(where, values, allow_tier=True)
    if tier is None:
        return model_id, ModelPrices(rates)
    if not isinstance(tier, Mapping):
        raise GeminiInputError(f"{where}: long_context={tier!r} must be an object.")
    above = tier.get("above_tokens", LONG_CONTEXT_ABOVE)
    if isinstance(above, bool) or not isinstance(above, int) or above < 1:
        raise GeminiInputError(
            f"{where}: long_context.above_tokens={above!r} must be a whole number of tokens, e.g. 200000."
        )
    long_rates, _ = _parse_rates(
        f"{where}, long_context",
        {k: v for k, v in tier.items() if k != "above_tokens"},
        allow_tier=False,
    )
    return model_id, ModelPrices(rates, long_context=long_rates, long_context_above=above)


def price_table_from_extra(value: Any, *, base: PriceTable = DEFAULT_PRICES) -> PriceTable:
    """
    ``base`` with the connection's extra ``prices`` applied (None: ``base`` itself). The extra is an
    object (or its JSON text) with ``models`` (model id -> ``{"input", "cached_input", "output"`` and
    optionally ``"input_audio"``, ``"cached_input_audio"``, ``"long_context": {"above_tokens", ...}}``,
    USD per million tokens; a model listed replaces the default entry, others are added),
    ``batch_discount`` (0 to 1, the share the Batch API takes off), ``as_of`` and ``source``.
    """
    if value is None or value == "":
        return base
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise GeminiInputError(f'Gemini connection extra "prices" is not valid JSON: {err}.') from None
    if not isinstance(value, Mapping):
        raise GeminiInputError(
            'Gemini connection extra "prices" must be an object such as {"models": {...}}, '
            f"got {value!r}."
        )
    unknown = sorted(set(value) - set(_EXTRA_KEYS))
    if unknown:
        raise GeminiInputError(
            f'Gemini connection extra "prices": unknown key(s) {unknown}; it takes {", ".join(_EXTRA_KEYS)}.'
        )
    models = dict(base.models)
    given = value.get("models", {})
    if not isinstance(given, Mapping):
        raise GeminiInputError(
            f'Gemini connection extra "prices": models={given!r} must map model ids to their prices.'
        )
    for model, prices in given.items():
        model_id, parsed = _parse_model(model, prices)
        models[model_id] = parsed
    discount = value.get("batch_discount", base.batch_discount)
    if (
        isinstance(discount, bool)
        or not isinstance(discount, int | float)
        or not math.isfinite(discount)
        or not 0 <= discount <= 1
    ):
        raise GeminiInputError(
            f'Gemini connection extra "prices": batch_discount={discount!r} must be a number from 0 to 1 '
            "(0.5: the Batch API costs half as much)."
        )
    as_of = value.get("as_of")
    source = value.get("source")
    changed = bool(given) or "batch_discount" in value
    return PriceTable(
        models=models,
        batch_discount=float(discount),
        as_of=str(as_of) if as_of else (f"{base.as_of} with connection overrides" if changed else base.as_of),
        source=str(source) if source else base.source,
        currency=base.currency,
    )
