"""What conversations cost: money, tokens and calls, sliced any way.

Every cost_recorded event lands in one aggregate row per (conversation, user, provider,
model, day); any AND-combination of filters is then an exact sum over the matching rows.
The table is as small as the number of distinct combinations, not the number of calls.

Days are the UTC date of `occurred_at`: the moment the call happened, which is what a
bill or a daily budget is about. `recorded_at` is when it was written, and a batch
flushed after midnight, or a replayed backfill, would land on the wrong day.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Literal

import msgspec

from ..errors import InvalidQueryError
from ..events import COST_RECORDED, RecordedEvent
from .base import (
    MALFORMED,
    ZERO,
    RowIndex,
    State,
    StructProjection,
    add_money,
    as_day,
    parse_money,
    utc_day,
)

__all__ = ["ConversationCosts", "CostDimension", "TokenCounts"]

CostDimension = Literal["conversation", "user", "model", "provider", "day"]

# Query dimension -> row field, in key order.
_FIELDS: dict[str, str] = {
    "conversation": "conversation_id",
    "user": "user_id",
    "provider": "provider",
    "model": "model",
    "day": "day",
}


class CostRow(msgspec.Struct, array_like=True, gc=False):
    """Totals of one (conversation, user, provider, model, day) combination."""

    conversation_id: str | None
    user_id: str | None
    provider: str
    model: str
    day: str
    calls: int = 0
    total_cost: Decimal = ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class CostsState(State, kw_only=True):
    rows: list[CostRow] = msgspec.field(default_factory=list)


class TokenCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of the cost records matching a query, and how many records that is."""

    calls: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0


def _sum(values: Iterable[Decimal]) -> Decimal:
    return functools.reduce(add_money, values, ZERO)


class ConversationCosts(StructProjection[CostsState]):
    """Cost totals, token counts and call counts by conversation, user, model, provider, day.

    Filters combine with AND and None means "any", so costs with no conversation or user
    count in the grand total but cannot be singled out by those filters; `by()` shows them
    under the key None.
    """

    name = "conversation_costs"
    types = frozenset({COST_RECORDED})

    _rows: RowIndex[CostRow]

    def _empty(self) -> CostsState:
        return CostsState()

    def _index(self) -> None:
        self._rows = RowIndex(tuple(_FIELDS.values()), self._state.rows)

    def apply(self, event: RecordedEvent) -> None:
        if event.type != COST_RECORDED:
            return
        data = event.data
        try:
            provider = data["provider"]
            model = data["model"]
            input_tokens = data["input_tokens"]
            output_tokens = data["output_tokens"]
            cache_read = data["cache_read_tokens"]
            cache_write = data["cache_write_tokens"]
            if (
                type(provider) is not str
                or type(model) is not str
                or type(input_tokens) is not int
                or type(output_tokens) is not int
                or type(cache_read) is not int
                or type(cache_write) is not int
            ):
                raise TypeError("cost_recorded fields of the wrong type")
            cost = parse_money(data["total_cost"])
            day = utc_day(event.occurred_at)
        except MALFORMED:
            self._state.skipped += 1
            return
        key = (event.conversation_id, event.user_id, provider, model, day)
        row = self._rows.by_key.get(key)
        if row is None:
            row = CostRow(*key)
            self._rows.insert(key, row)
        row.calls += 1
        row.total_cost = add_money(row.total_cost, cost)
        row.input_tokens += input_tokens
        row.output_tokens += output_tokens
        row.cache_read_tokens += cache_read
        row.cache_write_tokens += cache_write

    # --- queries ---------------------------------------------------------------------------

    def _select(
        self,
        conversation_id: str | None,
        user_id: str | None,
        model: str | None,
        provider: str | None,
        day: str | date | None,
    ) -> Sequence[CostRow]:
        return self._rows.select(
            {
                "conversation_id": conversation_id,
                "user_id": user_id,
                "model": model,
                "provider": provider,
                "day": as_day(day),
            },
        )

    def total(
        self,
        conversation_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        day: str | date | None = None,
    ) -> Decimal:
        """Total cost of the records matching every given filter (none: the grand total).

        `day` is "YYYY-MM-DD" or a date (a datetime is taken at its UTC date).
        """
        rows = self._select(conversation_id, user_id, model, provider, day)
        return _sum(r.total_cost for r in rows)

    def tokens(
        self,
        conversation_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        day: str | date | None = None,
    ) -> TokenCounts:
        """Token and call counts of the records matching every given filter."""
        calls = inp = out = cache_read = cache_write = 0
        for r in self._select(conversation_id, user_id, model, provider, day):
            calls += r.calls
            inp += r.input_tokens
            out += r.output_tokens
            cache_read += r.cache_read_tokens
            cache_write += r.cache_write_tokens
        return TokenCounts(
            calls=calls, input=inp, output=out, cache_read=cache_read, cache_write=cache_write
        )

    def calls(
        self,
        conversation_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        day: str | date | None = None,
    ) -> int:
        """How many cost records match every given filter."""
        return sum(r.calls for r in self._select(conversation_id, user_id, model, provider, day))

    def by(self, dimension: CostDimension) -> dict[str | None, Decimal]:
        """Total cost per value of one dimension, keys sorted (None, if present, first)."""
        field = _FIELDS.get(dimension)
        if field is None:
            raise InvalidQueryError(
                f"cannot group costs by {dimension!r}; use one of {', '.join(_FIELDS)}"
            )
        groups = self._rows.by_field(field)
        return {key: _sum(r.total_cost for r in groups[key]) for key in self._rows.values(field)}

    def top_conversations(self, n: int = 10) -> list[tuple[str, Decimal]]:
        """The n most expensive conversations, highest first; ties by conversation id."""
        totals = [
            (conv, total) for conv, total in self.by("conversation").items() if conv is not None
        ]
        totals.sort(key=lambda item: (-item[1], item[0]))
        return totals[: max(n, 0)]
