"""metrics(): calls, errors, cost, tokens and latency of the recorded model calls.

A call is an `llm_call` event (record_llm_call and the integrations) or a
`cost_recorded` event of `record_cost` (no `call_id`). Cost and tokens of a priced call
come from its `cost_recorded`, of an unpriced one from its `llm_call`, so each call
counts once. `after` / `before` are inclusive bounds on the call's time (occurred_at);
percentiles are nearest-rank over every matching call that has a latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from ..errors import InvalidQueryError
from ..events import COST_RECORDED, RecordedEvent
from ..pricing.money import ZERO, add_money, cost_or_none
from ..query import Query
from ..reads import LogReader
from .reader import in_window
from .record import LLM_CALL

__all__ = ["Metrics", "compute_metrics", "nearest_rank"]


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    calls: int
    errors: int
    total_cost: Decimal
    unpriced_calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    avg_latency_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None


def nearest_rank(sorted_values: list[float], percent: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least `percent`% of the
    values at or below it."""
    if not sorted_values:
        return None
    rank = max(math.ceil(percent / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def _tags(event: RecordedEvent) -> list[Any]:
    tags = event.metadata.get("tags")
    return tags if isinstance(tags, list) else []


def _count(value: Any) -> int:
    return value if type(value) is int else 0


def _latency(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def summarize(events: Iterable[RecordedEvent]) -> Metrics:
    calls = errors = unpriced = 0
    total = ZERO
    tokens = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
              "cache_write_tokens": 0}
    latencies: list[float] = []
    for event in events:
        data = event.data
        if event.type == LLM_CALL:
            calls += 1
            if data.get("error"):
                errors += 1
            latency = _latency(data.get("latency_ms"))
            if latency is not None:
                latencies.append(latency)
            if data.get("priced"):
                continue  # tokens and cost come from its cost_recorded
            if data.get("usage") or not data.get("error"):
                unpriced += 1
            for key in tokens:
                tokens[key] += _count(data.get(key))
        elif event.type == COST_RECORDED:
            cost = cost_or_none(data.get("total_cost"))
            if cost is None:
                continue
            total = add_money(total, cost)
            for key in tokens:
                tokens[key] += _count(data.get(key))
            if data.get("call_id") is None:  # record_cost by hand: the call itself
                calls += 1
                latency = _latency(data.get("latency_ms"))
                if latency is not None:
                    latencies.append(latency)
    latencies.sort()
    return Metrics(
        calls=calls, errors=errors, total_cost=total, unpriced_calls=unpriced, **tokens,
        avg_latency_ms=sum(latencies) / len(latencies) if latencies else None,
        p50_latency_ms=nearest_rank(latencies, 50), p95_latency_ms=nearest_rank(latencies, 95),
    )


async def compute_metrics(reader: LogReader, query: Query, *, provider: str | None = None,
                          model: str | None = None, tag: str | None = None) -> Metrics:
    """The metrics of the calls matching the query (conversation, user, and `after` /
    `before` on occurred_at) and the provider / model / tag filters."""
    for name, value in (("provider", provider), ("model", model), ("tag", tag)):
        if value is not None and not isinstance(value, str):
            raise InvalidQueryError(f"{name}= must be a string or None")

    def wanted(event: RecordedEvent) -> bool:
        data = event.data
        return ((provider is None or data.get("provider") == provider)
                and (model is None or data.get("model") == model)
                and (tag is None or tag in _tags(event))
                and in_window(event, query))

    calls = Query(conversation_id=query.conversation_id, user_id=query.user_id,
                  types=frozenset({LLM_CALL, COST_RECORDED}))
    return summarize([e async for e in reader.read(calls) if wanted(e)])
