"""Turning an LLM call's usage into a `cost_recorded` event, and summing them back.

The cost is computed once, when the call is recorded, with the price in force then; the
event carries the exact decimal strings and the price source (dataset and version), so
later price changes never rewrite history and every total is a sum over the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..errors import EventStoreError, InvalidCallError, InvalidUsageError, UnknownModelError
from ..events import COST_RECORDED, Event, RecordedEvent
from .money import ZERO, add_money, parse_money
from .prices import GenAIPrices, ModelPrice, PricingProvider, compute_cost


def _price(pricing: PricingProvider, provider: str, model: str, at: datetime) -> ModelPrice:
    try:
        if isinstance(pricing, GenAIPrices):
            return pricing.price_for(provider, model, at=at)  # the price on the call's date
        price = pricing.price_for(provider, model)
    except EventStoreError:
        raise
    except LookupError as exc:  # a user's provider saying "don't know" its own way
        raise UnknownModelError(provider, model, str(exc)) from exc
    if not isinstance(price, ModelPrice):
        raise TypeError(
            f"{type(pricing).__name__}.price_for returned {type(price).__name__}; it must "
            "return an eventstore.pricing.ModelPrice"
        )
    return price


def cost_event(
    pricing: PricingProvider,
    *,
    conversation_id: str | None,
    user_id: str | None,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    latency_ms: float | None,
    metadata: dict[str, Any] | None,
    occurred_at: datetime,
    cost: Decimal | None = None,
) -> Event:
    for name, value in (("provider", provider), ("model", model)):
        if not isinstance(value, str) or not value:
            raise UnknownModelError(str(provider), str(model),
                                    f"{name} must be a non-empty string")
    if latency_ms is not None and (
        isinstance(latency_ms, bool) or not isinstance(latency_ms, int | float)
        or not 0 <= latency_ms < float("inf")
    ):
        raise InvalidUsageError(f"latency_ms={latency_ms!r} must be a finite number >= 0 or None")
    if cost is not None:
        data = _provider_cost(provider, model, cost, input_tokens=input_tokens,
                              output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
                              cache_write_tokens=cache_write_tokens)
    else:
        price = _price(pricing, provider, model, occurred_at)
        breakdown = compute_cost(
            price, input_tokens=input_tokens, output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens, cache_write_tokens=cache_write_tokens,
        )
        data = {"provider": provider, "model": model, **breakdown.to_data()}
        data["price_source"] = price.source or type(pricing).__name__
    if latency_ms is not None:
        data["latency_ms"] = latency_ms
    return Event(type=COST_RECORDED, data=data, conversation_id=conversation_id,
                 user_id=user_id, metadata=dict(metadata or {}), occurred_at=occurred_at)


def _provider_cost(provider: str, model: str, cost: Decimal, **tokens: int) -> dict[str, Any]:
    """A cost the provider reported: recorded as given (price_source "provider"). Its split
    between input and output is not known, so both parts are 0 and `cost_split` says so."""
    if isinstance(cost, bool) or not isinstance(cost, Decimal) or not cost.is_finite() \
            or cost < 0:
        raise InvalidCallError(
            f"cost={cost!r} must be a finite Decimal >= 0 (floats lose cents: "
            "pass Decimal('0.0123'))")
    counts = {name: _count(name, value) for name, value in tokens.items()}
    return {"provider": provider, "model": model, **counts, "input_cost": "0",
            "output_cost": "0", "total_cost": format(cost, "f"), "cost_split": "unknown",
            "price_source": "provider"}


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidUsageError(f"{name}={value!r}: token counts are ints >= 0")
    return value


def matches(event: RecordedEvent, provider: str | None, model: str | None) -> bool:
    return (provider is None or event.data.get("provider") == provider) and (
        model is None or event.data.get("model") == model
    )


def has_tag(event: RecordedEvent, tag: str) -> bool:
    tags = event.metadata.get("tags")
    return isinstance(tags, list) and tag in tags


def total(events: Iterable[RecordedEvent]) -> Decimal:
    """The exact sum of `total_cost` (Decimal addition of decimal strings never rounds
    within the default 28 digits for realistic amounts; we still sum in a wide context)."""
    result = ZERO
    for event in events:
        result = add_money(result, parse_money(event.data["total_cost"]))
    return result
