"""Derived writes: what a commit adds besides the events, in the same transaction.

Every backend keeps a list of derived writers (`backend.derived_writers`), called in
order inside the commit's transaction with the rows being committed, after the events
are inserted and before COMMIT: a writer that raises rolls the whole group back, so the
derived tables can never disagree with the log. The cost rollup and the event counts
are the built-in ones; the integrity tree adds its nodes the same way. Each writer's
signature is the backend's own (SQLite: `fn(conn, rows)` on the writer thread;
PostgreSQL: `await fn(conn, rows)` on the transaction's connection; memory: `fn(rows)`).

`Deltas` computes, once per group, what the built-in writers add; it is plain Python so
every backend (and the tests' replay) derives exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..events import RecordedEvent
from ..pricing.money import parse_money
from ..rollup import BucketKey, CallFacts, CostTotals, call_facts, group_buckets

if TYPE_CHECKING:
    from .base import NewRow

CountKey = tuple[str, str | None, str | None]  # type, user_id, conversation_id


def count_key_bytes(key: CountKey) -> bytes:
    return msgspec.msgpack.encode(key)


class Deltas:
    """The rollup and count increments of some committed events."""

    __slots__ = ("buckets", "calls", "counts")

    def __init__(self, events: Iterable[RecordedEvent]) -> None:
        self.counts: dict[CountKey, int] = {}
        self.calls: list[CallFacts] = []
        counts = self.counts
        for event in events:
            key = (event.type, event.user_id, event.conversation_id)
            counts[key] = counts.get(key, 0) + 1
            facts = call_facts(event)
            if facts is not None:
                self.calls.append(facts)
        self.buckets: dict[BucketKey, CostTotals] = group_buckets(self.calls)

    @classmethod
    def of_rows(cls, rows: Sequence[NewRow]) -> Deltas:
        return cls(row.event for row in rows)


def call_row(facts: CallFacts) -> tuple[Any, ...]:
    """A cost_calls row in CALL_COLUMNS order (cost as decimal text, None if unpriced)."""
    return (facts.seq, facts.occurred_at, facts.user_id, facts.conversation_id,
            facts.provider, facts.model, tags_text(facts), facts.calls, int(facts.error),
            int(facts.unpriced), None if facts.cost is None else str(facts.cost),
            facts.input_tokens,
            facts.output_tokens, facts.cache_read_tokens, facts.cache_write_tokens,
            facts.latency_us)


CALL_COLUMNS = ("seq", "occurred_at", "user_id", "conversation_id", "provider", "model",
                "tags", "calls", "error", "unpriced", "cost", "input_tokens", "output_tokens",
                "cache_read_tokens", "cache_write_tokens", "latency_us")


def tags_text(facts: CallFacts) -> str | None:
    return msgspec.json.encode(list(facts.tags)).decode() if facts.tags else None


def facts_from_call_row(row: Sequence[Any]) -> CallFacts:
    (seq, occurred_at, user_id, conversation_id, provider, model, tags, calls, error,
     unpriced, cost, input_tokens, output_tokens, cache_read, cache_write, latency_us) = row
    return CallFacts(
        seq=int(seq), occurred_at=int(occurred_at), user_id=user_id,
        conversation_id=conversation_id, provider=provider, model=model,
        tags=tuple(msgspec.json.decode(tags)) if tags else (), calls=int(calls),
        error=bool(error), unpriced=bool(unpriced),
        cost=None if cost is None else parse_money(str(cost)),
        input_tokens=int(input_tokens), output_tokens=int(output_tokens),
        cache_read_tokens=int(cache_read), cache_write_tokens=int(cache_write),
        latency_us=None if latency_us is None else int(latency_us),
    )
