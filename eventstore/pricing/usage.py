"""Pricing a whole model call: usage read by genai-prices from the provider's response,
priced by genai-prices with the call's price context and date.

Hand-written usage readers and per-token arithmetic got long-context tiers, service
tiers, 1-hour cache writes and server-tool fees wrong (by 2x in both directions), so
both steps are the library's (`extract_usage`, `calc_price`, the latter with its
per-price work cached: see `calc`); what eventstore adds is
the policy around them: the price on the call's date, Decimal end to end (the library's
Decimals are recorded as they are, digit for digit), and an unknown price recorded as
*unpriced*, never as 0.

A store opened with its own `PriceTable` keeps its negotiated per-token prices for the
models it lists (priced by `compute_cost` on the same usage); models it does not list go
to its fallback, and a `GenAIPrices` fallback prices them here with the whole context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from ..errors import EventStoreError, UnknownModelError
from .calc import calculate
from .money import EXACT
from .prices import (
    OTEL_PROVIDER_IDS,
    GenAIPrices,
    ModelPrice,
    PriceTable,
    PricingProvider,
    compute_cost,
)

__all__ = ["CallPrice", "CallUsage", "price_call", "price_context_of", "read_usage"]

# eventstore's API flavour names -> genai-prices' extractor flavours, per provider id.
_FLAVORS: Final[Mapping[str, Mapping[str, str]]] = {
    "openai": {"chat": "chat", "responses": "responses"},
    "azure": {"chat": "chat", "responses": "responses", "messages": "anthropic"},
    "anthropic": {"messages": "default", "chat": "chat"},
    "google": {"gemini": "default", "messages": "anthropic", "chat": "chat"},
    "aws": {"messages": "anthropic"},
}
_SHAPE_PROVIDER: Final = {"chat": "openai", "responses": "openai", "messages": "anthropic",
                          "gemini": "google"}
_TOKEN_KEYS: Final = ("input_tokens", "output_tokens", "cache_read_tokens",
                      "cache_write_tokens")


def genai_provider_id(provider: str) -> str:
    """The genai-prices provider id for an eventstore / OpenTelemetry provider name."""
    name = provider.strip().lower()
    return OTEL_PROVIDER_IDS.get(name, name)


@dataclass(frozen=True, slots=True)
class CallUsage:
    """Everything a response reported about its usage, by genai-prices usage key (input
    includes cached tokens, as in OpenTelemetry); `model` is the model it names."""

    values: dict[str, int | Decimal]
    model: str | None = None

    def count(self, key: str) -> int:
        value = self.values.get(key, 0)
        return value if isinstance(value, int) else int(value)

    def tokens(self) -> dict[str, int]:
        return {key: self.count(key) for key in _TOKEN_KEYS}


@dataclass(frozen=True, slots=True)
class CallPrice:
    """The exact cost of one call, or why there is none (`unpriced_reason`)."""

    input_cost: Decimal | None = None
    output_cost: Decimal | None = None
    total_cost: Decimal | None = None
    price_source: str | None = None
    unpriced_reason: str | None = None
    context: dict[str, str] = field(default_factory=dict)

    @property
    def priced(self) -> bool:
        return self.total_cost is not None


def read_usage(provider: str, flavor: str, response: Mapping[str, Any] | None) -> CallUsage | None:
    """The usage of a response body, read by genai-prices' extractor for the provider and
    API flavour; None when the response reports none (or no extractor knows its shape)."""
    if not isinstance(response, Mapping):
        return None
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    provider_id = genai_provider_id(provider)
    try:
        gp_provider = snapshot.find_provider(None, provider_id, None)
    except LookupError:
        # A provider genai-prices does not list (a self-hosted server): its body has the
        # shape of the API flavour it speaks, and that provider's extractor reads it.
        provider_id = _SHAPE_PROVIDER.get(flavor, "openai")
        gp_provider = snapshot.find_provider(None, provider_id, None)
    api_flavor = _FLAVORS.get(gp_provider.id, {}).get(flavor, "default")
    try:
        # The provider's extractor, not `extract_usage`: that one also looks the model up
        # and raises for a model without a price, whose usage must still be recorded.
        _, usage = gp_provider.extract_usage(dict(response), api_flavor=api_flavor)
    except (LookupError, ValueError, TypeError):
        return None
    # A Usage keeps the reported values as its attributes.
    values = {key: value for key, value in vars(usage).items()
              if isinstance(value, int | Decimal) and not isinstance(value, bool)}
    if not values:
        return None
    model = response.get("model") or response.get("modelVersion")
    return CallUsage(values=values, model=model if isinstance(model, str) else None)


def price_context_of(flavor: str, request: Mapping[str, Any],
                     response: Mapping[str, Any] | None,
                     given: Mapping[str, str] | None = None) -> dict[str, str]:
    """The request context genai-prices selects price variants by: the service tier the
    provider says it served (the response's, else the request's unless "auto"), batch
    processing, Anthropic's fast mode. `given` (the caller's) wins key by key."""
    context: dict[str, str] = {}
    answered: Mapping[str, Any] = response if isinstance(response, Mapping) else {}
    reported = answered.get("usage")
    usage: Mapping[str, Any] = reported if isinstance(reported, Mapping) else {}
    tier = answered.get("service_tier") or usage.get("service_tier") \
        or request.get("service_tier")
    if isinstance(tier, str) and tier not in ("auto", "standard", "default", ""):
        if tier == "batch":
            context["processing"] = "batch"
        else:
            context["service_tier"] = tier
    speed = usage.get("speed") or request.get("speed")
    if isinstance(speed, str) and speed not in ("standard", ""):
        context["speed"] = speed
    context.update(given or {})
    return context


def _genai_price(usage: CallUsage, provider: str, model: str, at: datetime,
                 context: Mapping[str, str]) -> CallPrice:
    import genai_prices

    try:
        calc = calculate(usage.values, model_ref=model, provider_id=genai_provider_id(provider),
                         at=at, context=context)
    except LookupError as exc:
        return CallPrice(unpriced_reason=f"genai-prices: {exc}", context=dict(context))
    except ValueError as exc:  # usage the model's prices cannot take
        return CallPrice(unpriced_reason=f"genai-prices: {exc}", context=dict(context))
    source = f"genai-prices {genai_prices.__version__} {calc.provider_id}/{calc.model_id}"
    if context:
        source += " [" + ", ".join(f"{k}={v}" for k, v in sorted(context.items())) + "]"
    return CallPrice(input_cost=calc.input_price, output_cost=calc.output_price,
                     total_cost=calc.total_price, price_source=source, context=dict(context))


def _table_price(price: ModelPrice, usage: CallUsage, context: Mapping[str, str]) -> CallPrice:
    tokens = usage.tokens()
    try:
        breakdown = compute_cost(price, **tokens)
    except EventStoreError as exc:
        return CallPrice(unpriced_reason=str(exc), context=dict(context))
    return CallPrice(input_cost=breakdown.input_cost, output_cost=breakdown.output_cost,
                     total_cost=breakdown.total_cost,
                     price_source=price.source or "PriceTable", context=dict(context))


def price_call(pricing: PricingProvider, *, provider: str, model: str, usage: CallUsage | None,
               at: datetime, context: Mapping[str, str]) -> CallPrice:
    """The cost of a call with this usage on the call's date, or why it has none."""
    if usage is None:
        return CallPrice(unpriced_reason="the response reported no usage", context=dict(context))
    if not model:
        return CallPrice(unpriced_reason="the call names no model", context=dict(context))
    source: PricingProvider | None = pricing
    while isinstance(source, PriceTable):
        own = source.own_price(provider, model)
        if own is not None:
            return _table_price(own, usage, context)
        source = source.fallback
    if source is None:
        return CallPrice(unpriced_reason=f"{provider}/{model} is not in the PriceTable",
                         context=dict(context))
    if isinstance(source, GenAIPrices):
        return _genai_price(usage, provider, model, source.at or at, context)
    try:
        price = source.price_for(provider, model)
    except (UnknownModelError, LookupError) as exc:
        return CallPrice(unpriced_reason=str(exc), context=dict(context))
    if not isinstance(price, ModelPrice):
        return CallPrice(unpriced_reason=f"{type(source).__name__}.price_for returned "
                         f"{type(price).__name__}, not a ModelPrice", context=dict(context))
    return _table_price(price, usage, context)


def other_cost(price: CallPrice) -> Decimal:
    """What the total holds beyond input and output: per-request fees (web searches,
    code executions)."""
    if price.total_cost is None or price.input_cost is None or price.output_cost is None:
        return Decimal(0)
    return EXACT.subtract(price.total_cost, EXACT.add(price.input_cost, price.output_cost))
