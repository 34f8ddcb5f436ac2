"""Per-token model prices and exact cost arithmetic.

A pricing provider is any object with `price_for(provider, model) -> ModelPrice`. The
default, `GenAIPrices`, reads the dataset bundled with the `genai-prices` package (offline);
`PriceTable` holds a user's negotiated prices and can fall back to another provider.
`compute_cost` turns a price and a token usage into a `CostBreakdown` with exact Decimals.

Money is `decimal.Decimal` end to end: a float price is refused, because binary floats
cannot hold most cent fractions and an audit total must add up to the last digit.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import msgspec

from ..errors import InvalidPriceError, InvalidUsageError, UnknownModelError
from .money import EXACT

if TYPE_CHECKING:
    from genai_prices import types as gp_types
    from genai_prices.data_snapshot import DataSnapshot

__all__ = [
    "CostBreakdown",
    "GenAIPrices",
    "ModelPrice",
    "PriceTable",
    "PricingProvider",
    "compute_cost",
    "default_pricing",
]




def _to_price(name: str, value: object) -> Decimal:
    if isinstance(value, float):
        raise InvalidPriceError(
            f"price {name}={value!r} is a float; floats lose cents, so pass a Decimal or a "
            f"string, e.g. Decimal({str(value)!r})"
        )
    # bool is an int subclass, and True as a price is a bug, not one dollar per token.
    if isinstance(value, bool):
        raise InvalidPriceError(f"price {name}={value!r} is a bool; pass a Decimal")
    if isinstance(value, Decimal):
        price = value
    elif isinstance(value, int):
        price = Decimal(value)
    elif isinstance(value, str):
        try:
            price = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise InvalidPriceError(
                f"price {name}={value!r} is not a decimal number; pass e.g. '0.000005'"
            ) from None
    else:
        raise InvalidPriceError(
            f"price {name}={value!r} has type {type(value).__name__}; pass a Decimal, an int "
            "or a decimal string"
        )
    if not price.is_finite():
        raise InvalidPriceError(f"price {name}={value!r} is not finite; pass a real amount")
    if price < 0:
        raise InvalidPriceError(f"price {name}={value!r} is negative; prices are >= 0")
    return price


@dataclass(frozen=True, slots=True, init=False)
class ModelPrice:
    """USD per token (not per million) for one model.

    Prices may be given as `Decimal`, int or decimal string and are stored as `Decimal`;
    a float is refused. A cache price left as None means those tokens cost the plain
    input price. `source` says where the price came from and is recorded with every cost.
    `ModelPrice.per_million(...)` takes the per-million-token figures price lists show.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None
    cache_write: Decimal | None
    source: str | None

    def __init__(
        self,
        input: Decimal | int | str,
        output: Decimal | int | str,
        *,
        cache_read: Decimal | int | str | None = None,
        cache_write: Decimal | int | str | None = None,
        source: str | None = None,
    ) -> None:
        if source is not None and not isinstance(source, str):
            raise InvalidPriceError(f"source={source!r} must be a string or None")
        # Frozen, so values go in through object.__setattr__.
        setattr_ = object.__setattr__
        setattr_(self, "input", _to_price("input", input))
        setattr_(self, "output", _to_price("output", output))
        setattr_(self, "cache_read", _to_optional_price("cache_read", cache_read))
        setattr_(self, "cache_write", _to_optional_price("cache_write", cache_write))
        setattr_(self, "source", source)

    @classmethod
    def per_million(
        cls,
        *,
        input: Decimal | int | str,
        output: Decimal | int | str,
        cache_read: Decimal | int | str | None = None,
        cache_write: Decimal | int | str | None = None,
        source: str | None = None,
    ) -> ModelPrice:
        """A price from USD per million tokens, e.g. `per_million(input="2.5", output="10")`."""

        def scale(name: str, value: Decimal | int | str | None) -> Decimal | None:
            if value is None:
                return None
            return _to_price(name, value).scaleb(-6, EXACT)

        return cls(
            _to_price("input", input).scaleb(-6, EXACT),
            _to_price("output", output).scaleb(-6, EXACT),
            cache_read=scale("cache_read", cache_read),
            cache_write=scale("cache_write", cache_write),
            source=source,
        )


def _to_optional_price(name: str, value: object) -> Decimal | None:
    return None if value is None else _to_price(name, value)


@runtime_checkable
class PricingProvider(Protocol):
    """Anything that can price a model: returns USD per token, or raises UnknownModelError."""

    def price_for(self, provider: str, model: str) -> ModelPrice: ...


# --- the default provider: genai-prices -----------------------------------------------------

# OpenTelemetry `gen_ai.provider.name` values that genai-prices' own matching gets wrong or
# misses (e.g. "azure.ai.openai" would match its "openai" provider by substring and lose
# Azure's prices). Others ("gcp.gemini", "aws.bedrock", "mistral_ai") already resolve.
OTEL_PROVIDER_IDS: Final[Mapping[str, str]] = {
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gcp.gen_ai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
}

# Bounds the lookup cache: model names come from callers, and a stream of distinct bad
# names must not grow memory without limit.
_CACHE_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A matched dataset model with its price(s) already converted to per-token Decimals."""

    model: gp_types.ModelInfo
    provider_id: str
    # Set when the model has one unconditional price: the hot path needs no clock at all.
    static: ModelPrice | str | None
    # Keyed by id() of the dataset's price objects, which `model` keeps alive. A str is
    # the reason that price cannot be used (raised as UnknownModelError).
    by_price_id: Mapping[int, ModelPrice | str]


class GenAIPrices:
    """Prices from the dataset bundled with the `genai-prices` package (never the network).

    Lookup: `provider` is matched by genai-prices (case-insensitive id, then its provider
    aliases such as "gemini"/"vertex" -> google, "bedrock" -> aws, "xai" -> x-ai), with the
    OpenTelemetry `gen_ai.provider.name` values mapped first. `model` is matched against the
    provider's model refs and aliases (case-insensitive; dated snapshots such as
    "gpt-4o-2024-08-06" resolve to their family), including providers that resell another
    provider's models (Azure -> OpenAI, Google -> Anthropic).

    What is priced:
    - Prices in force at `at` (default: the time of each call) are used: the dataset dates
      price changes and DeepSeek's off-peak hours. `at` must be timezone-aware.
    - Context-size tiers: `price_for` does not know the prompt size, so the base tier is
      returned (the price up to the first threshold, e.g. 200k input tokens); the source
      string says so, since longer prompts on those models cost more.
    - `cache_write` is the default (5-minute) cache write price; the 1-hour price is not used.
    - Standard prices only: batch, flex and priority service tiers are not applied.
    - Models listed without an input token price (free tiers, subscriptions, per-request or
      per-audio-hour billing) raise UnknownModelError rather than costing 0. Models listed
      with an input but no output price (embeddings, rerankers) get output price 0, and the
      source says so.

    The source is "genai-prices <version> <provider>/<model id>", plus the data fetch
    time if the application itself started genai-prices' `UpdatePrices` (this class never
    starts it; it uses whichever snapshot genai-prices holds, and re-reads it if it changes).
    """

    def __init__(self, *, at: datetime | None = None) -> None:
        if at is not None:
            _check_aware(at)
        self._at = at
        # genai-prices is imported on the first lookup, not with eventstore: it pulls in
        # pydantic and an HTTP client, and loading its dataset takes a noticeable moment.
        self._get_snapshot: Callable[[], DataSnapshot] | None = None
        self._snapshot: DataSnapshot | None = None
        self._label = ""
        self._cache: dict[tuple[str, str], _Resolved | str] = {}

    @property
    def at(self) -> datetime | None:
        """The moment prices are taken at; None means the time of each call."""
        return self._at

    def price_for(self, provider: str, model: str, *, at: datetime | None = None) -> ModelPrice:
        """USD per token for `model` of `provider`; `at` overrides the instance's moment."""
        if at is not None:
            _check_aware(at)
        get_snapshot = self._get_snapshot
        if get_snapshot is None:
            from genai_prices import data_snapshot

            get_snapshot = self._get_snapshot = data_snapshot.get_snapshot
        # The application may swap in fetched data (genai-prices' UpdatePrices); cached
        # prices from the old snapshot must not outlive it.
        snapshot = get_snapshot()
        if snapshot is not self._snapshot:
            self._load(snapshot)
        key = (provider, model)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._resolve(snapshot, provider, model)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = entry
        if isinstance(entry, str):
            raise UnknownModelError(provider, model, entry)

        price = entry.static
        if price is None:
            when = at or self._at or datetime.now(UTC)
            dataset_price = entry.model.get_prices(when)
            price = entry.by_price_id.get(id(dataset_price))
            if price is None:
                # get_prices returns one of the model's own price objects today; should a
                # later genai-prices return a copy, convert it rather than fail.
                price = self._convert(dataset_price, entry.provider_id, entry.model.id)
        if isinstance(price, str):
            raise UnknownModelError(provider, model, price)
        return price

    def _load(self, snapshot: DataSnapshot) -> None:
        import genai_prices

        label = f"genai-prices {genai_prices.__version__}"
        if snapshot.from_auto_update:
            label += f" (data fetched {snapshot.timestamp.isoformat(timespec='seconds')})"
        self._cache = {}
        self._label = label
        self._snapshot = snapshot

    def _resolve(self, snapshot: DataSnapshot, provider: str, model: str) -> _Resolved | str:
        from genai_prices import types as gp

        if not provider.strip():
            return "the provider name is empty"
        if not model.strip():
            return "the model name is empty"
        provider_id = OTEL_PROVIDER_IDS.get(provider.strip().lower(), provider)
        try:
            gp_provider, info = snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError as exc:
            return f"{self._label}: {exc}"

        converted: dict[int, ModelPrice | str] = {}
        if isinstance(info.prices, gp.ModelPrice):
            static = self._convert(info.prices, gp_provider.id, info.id)
            converted[id(info.prices)] = static
            return _Resolved(
                model=info, provider_id=gp_provider.id, static=static, by_price_id=converted
            )
        for conditional in info.prices:
            converted[id(conditional.prices)] = self._convert(
                conditional.prices, gp_provider.id, info.id
            )
        return _Resolved(model=info, provider_id=gp_provider.id, static=None, by_price_id=converted)

    def _convert(
        self, prices: gp_types.ModelPrice, provider_id: str, model_id: str
    ) -> ModelPrice | str:
        source = f"{self._label} {provider_id}/{model_id}"
        notes: list[str] = []

        def per_token(price_key: str) -> Decimal | None:
            value = prices.__dict__.get(price_key)
            if value is None:
                return None
            if isinstance(value, Decimal):
                return value.scaleb(-6, EXACT)
            # A TieredPrices: all tokens pay the tier the prompt size falls in, which a
            # per-model price cannot know, so the base tier stands and the source says so.
            start = min(tier.start for tier in value.tiers) if value.tiers else None
            if start is not None:
                note = f"base tier, prompts up to {start} input tokens"
                if note not in notes:
                    notes.append(note)
            base: Decimal = value.base
            return base.scaleb(-6, EXACT)

        input_price = per_token("input_mtok")
        if input_price is None:
            return (
                f"{source} has no per-token input price (free tier, subscription, or billed "
                "per request or per audio hour)"
            )
        output_price = per_token("output_mtok")
        if output_price is None:
            output_price = Decimal(0)
            notes.append("no output price listed")
        cache_read = per_token("cache_read_mtok")
        cache_write = per_token("cache_write_mtok")
        if notes:
            source += f" ({'; '.join(notes)})"
        return ModelPrice(
            input=input_price,
            output=output_price,
            cache_read=cache_read,
            cache_write=cache_write,
            source=source,
        )


def _check_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"at={moment!r} is naive; pass a timezone-aware datetime, e.g. datetime.now(UTC)"
        )


@functools.cache
def default_pricing() -> GenAIPrices:
    """The shared default provider, so every store reuses one lookup cache."""
    return GenAIPrices()


# --- user overrides ---------------------------------------------------------------------------

PriceKey = tuple[str, str] | str


class PriceTable:
    """Negotiated or custom prices, checked before an optional fallback provider.

    Keys are `(provider, model)` tuples or `"provider/model"` strings (split at the first
    "/", so "openrouter/meta-llama/llama-3-70b" is provider "openrouter"). A model of "*"
    matches every model of that provider. Matching ignores case and surrounding spaces;
    an exact model entry wins over the provider's "*" entry, and both win over `fallback`.

        PriceTable({"openai/gpt-4o": ModelPrice.per_million(input="2", output="8"),
                    ("acme", "*"): ModelPrice(input=Decimal("0.000001"), output=0)},
                   fallback=GenAIPrices())

    Prices without a source get source "override". With `fallback=None` a model not in the
    table raises UnknownModelError; with a fallback, its price (and source) is returned.
    """

    def __init__(
        self,
        prices: Mapping[PriceKey, ModelPrice],
        *,
        fallback: PricingProvider | None = None,
    ) -> None:
        table: dict[tuple[str, str], ModelPrice] = {}
        for raw_key, price in prices.items():
            key = _table_key(raw_key)
            if not isinstance(price, ModelPrice):
                raise TypeError(
                    f"PriceTable value for {raw_key!r} is a {type(price).__name__}; "
                    "pass a ModelPrice"
                )
            if price.source is None:
                price = dataclasses.replace(price, source="override")
            if key in table and table[key] != price:
                raise ValueError(
                    f"PriceTable has two different prices for {key[0]}/{key[1]} (keys differ "
                    "only by case, spacing or form); keep one"
                )
            table[key] = price
        if fallback is not None and not isinstance(fallback, PricingProvider):
            raise TypeError(f"fallback={fallback!r} has no price_for(provider, model) method")
        self._table = table
        self._fallback = fallback

    @property
    def fallback(self) -> PricingProvider | None:
        return self._fallback

    def own_price(self, provider: str, model: str) -> ModelPrice | None:
        """The table's own price for the model (no fallback), or None."""
        p = provider.strip().lower()
        m = model.strip().lower()
        return self._table.get((p, m)) or self._table.get((p, "*"))

    def price_for(self, provider: str, model: str) -> ModelPrice:
        price = self.own_price(provider, model)
        if price is not None:
            return price
        if self._fallback is not None:
            return self._fallback.price_for(provider, model)
        raise UnknownModelError(provider, model, "not in the PriceTable, which has no fallback")


def _table_key(raw_key: object) -> tuple[str, str]:
    if isinstance(raw_key, str):
        provider, sep, model = raw_key.partition("/")
        if not sep:
            raise ValueError(
                f"PriceTable key {raw_key!r} has no '/'; write 'provider/model' or "
                "('provider', 'model')"
            )
    elif (
        isinstance(raw_key, tuple)
        and len(raw_key) == 2
        and all(isinstance(part, str) for part in raw_key)
    ):
        provider, model = raw_key
    else:
        raise ValueError(
            f"PriceTable key {raw_key!r} must be 'provider/model' or ('provider', 'model')"
        )
    provider = provider.strip().lower()
    model = model.strip().lower()
    if not provider or not model:
        raise ValueError(f"PriceTable key {raw_key!r} needs both a provider and a model")
    if provider == "*":
        # A catch-all price for any provider is how unknown models end up mispriced.
        raise ValueError(
            f"PriceTable key {raw_key!r}: the provider cannot be '*'; name the provider, "
            "or use a fallback"
        )
    return provider, model


# --- cost arithmetic ----------------------------------------------------------------------


# A msgspec Struct rather than a frozen dataclass: one is built per LLM call, and a frozen
# dataclass's __init__ (object.__setattr__ per field) costs about 3 us against 0.2 us.
class CostBreakdown(msgspec.Struct, frozen=True, kw_only=True):
    """The exact cost of one LLM call in USD, with the token counts it was computed from.

    Token semantics follow OpenTelemetry: `input_tokens` includes cache reads and writes.
    """

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    input_cost: Decimal
    output_cost: Decimal
    total_cost: Decimal
    price_source: str | None = None

    def to_data(self) -> dict[str, Any]:
        """The token counts and costs as a `cost_recorded` payload fragment.

        Costs are plain positional decimal strings ("0.00000075", never "7.5E-7"), so any
        reader can parse them and no digit is lost. `price_source` is included when known.
        """
        data: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "input_cost": format(self.input_cost, "f"),
            "output_cost": format(self.output_cost, "f"),
            "total_cost": format(self.total_cost, "f"),
        }
        if self.price_source is not None:
            data["price_source"] = self.price_source
        return data


def _check_count(name: str, value: object) -> int:
    # bool is an int subclass; True tokens is a caller bug, not one token.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsageError(
            f"{name}={value!r} is a {type(value).__name__}; token counts are ints >= 0"
        )
    if value < 0:
        raise InvalidUsageError(f"{name}={value} is negative; token counts are ints >= 0")
    return value


def compute_cost(
    price: ModelPrice,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> CostBreakdown:
    """The exact cost of a call: every digit kept, no rounding.

    `input_tokens` is the total input, cache reads and writes included (OpenTelemetry's
    `gen_ai.usage.input_tokens`); Anthropic reports them apart, so add them first. Cache
    tokens without a cache price cost the plain input price.
    """
    if not isinstance(price, ModelPrice):
        raise TypeError(f"price={price!r} is a {type(price).__name__}; pass a ModelPrice")
    inp = _check_count("input_tokens", input_tokens)
    out = _check_count("output_tokens", output_tokens)
    cr = _check_count("cache_read_tokens", cache_read_tokens)
    cw = _check_count("cache_write_tokens", cache_write_tokens)
    if cr + cw > inp:
        raise InvalidUsageError(
            f"cache_read_tokens ({cr}) + cache_write_tokens ({cw}) exceed input_tokens ({inp}); "
            "input_tokens must include cached tokens (for Anthropic, add "
            "cache_read_input_tokens and cache_creation_input_tokens to input_tokens)"
        )
    mul = EXACT.multiply
    add = EXACT.add
    read_price = price.input if price.cache_read is None else price.cache_read
    write_price = price.input if price.cache_write is None else price.cache_write
    input_cost = add(
        add(mul(Decimal(inp - cr - cw), price.input), mul(Decimal(cr), read_price)),
        mul(Decimal(cw), write_price),
    )
    output_cost = mul(Decimal(out), price.output)
    return CostBreakdown(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        input_cost=input_cost,
        output_cost=output_cost,
        total_cost=add(input_cost, output_cost),
        price_source=price.source,
    )
