"""Cost questions: record a priced call, sum the recorded costs, list the cost records.

The ledger prices a call with the store's `PricingProvider` (default: the genai-prices
dataset, loaded on first use) and appends it through the store's normal write path, so a
cost record is redacted, encrypted, committed and signalled like any other event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..backends.protocols import Backend, CostTotalsReader
from ..errors import InvalidQueryError
from ..events import COST_RECORDED, Event, RecordedEvent
from ..query import Query
from ..reads import LogReader
from ..rollup import CALL_TYPES, CostFilters, CostTotals, call_facts
from .prices import PricingProvider, default_pricing
from .records import cost_event, has_tag, matches

__all__ = ["CostLedger"]


class CostLedger:
    def __init__(self, reader: LogReader, append: Callable[[Event], Awaitable[RecordedEvent]],
                 pricing: PricingProvider | None = None, *,
                 backend: Backend | None = None) -> None:
        self._reader = reader
        self._totals = backend if isinstance(backend, CostTotalsReader) else None
        self._append = append
        self._pricing = pricing

    @property
    def pricing(self) -> PricingProvider:
        if self._pricing is None:
            self._pricing = default_pricing()
        return self._pricing

    async def record_cost(self, *, pricing: PricingProvider | None = None,
                          occurred_at: datetime | None = None, **call: Any) -> RecordedEvent:
        event = cost_event(pricing or self.pricing, occurred_at=occurred_at or datetime.now(UTC),
                           **call)
        return await self._append(event)

    async def cost_records(self, query: Query, provider: str | None, model: str | None,
                           tag: str | None = None) -> list[RecordedEvent]:
        for name, value in (("provider", provider), ("model", model), ("tag", tag)):
            if value is not None and not isinstance(value, str):
                raise InvalidQueryError(f"{name}= must be a string or None")
        # One clock for cost questions: the call's time (occurred_at), not the commit's,
        # so a backdated call counts in its own day and window.
        costs = Query(conversation_id=query.conversation_id, user_id=query.user_id,
                      types=frozenset((COST_RECORDED,)))
        after, before = query.after, query.before
        return [e async for e in self._reader.read(costs) if matches(e, provider, model)
                and (tag is None or has_tag(e, tag))
                and (after is None or e.occurred_at >= after)
                and (before is None or e.occurred_at <= before)]

    async def cost_totals(self, filters: CostFilters) -> CostTotals:
        """Totals of the matching model calls: from the backend's rollup when it keeps one
        (O(matching buckets)), else by streaming the call events of the log (bounded
        memory). The `metrics()` counters (calls, errors, unpriced_calls, tokens by kind,
        average latency) come from here too."""
        if self._totals is not None:
            return await self._totals.cost_totals(filters)
        totals = CostTotals()
        calls = Query(conversation_id=filters.conversation_id, user_id=filters.user_id,
                      types=CALL_TYPES)
        async for event in self._reader.read(calls):
            facts = call_facts(event)
            if facts is not None and filters.matches(facts):
                totals.add_call(facts)
        return totals

    async def sum_cost(self, filters: CostFilters) -> Decimal:
        """The exact cost of the matching priced calls."""
        return (await self.cost_totals(filters)).cost
