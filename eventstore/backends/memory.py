"""An in-process backend for tests and throwaway stores: the same contract, no disk."""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec

from ..clock import utcnow
from ..codec import PreparedEvent, decode_recorded
from ..events import RecordedEvent
from ..query import Query
from ..rollup import BucketKey, CallFacts, CostFilters, CostTotals
from .base import Checkpoint, KeyRecord, NewRow, Outcome, StoredId, plan_group, request_ids
from .derived import CountKey, Deltas

DerivedWrite = Callable[[Sequence[NewRow], Deltas], None]
_EVERYTHING = Query()

_NAMED: dict[str, MemoryBackend] = {}


def named_memory_backend(name: str) -> MemoryBackend:
    """`memory://name`: one log per name, shared by every store of this process that opens it
    (so a store can be closed and opened again, as with a file)."""
    backend = _NAMED.get(name)
    if backend is None:
        backend = _NAMED[name] = MemoryBackend()
    return backend


class MemoryBackend:
    """The log in a list; derived data (cost rollup, counts) in dicts beside it."""

    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._by_id: dict[str, StoredId] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._secret = os.urandom(32)
        self._meta: dict[str, bytes] = {}
        self._keys: dict[str, dict[int, KeyRecord]] = {}
        self._last_recorded: datetime | None = None
        # Stores sharing a named log hear each other's commits, as processes sharing a
        # SQLite file or a PostgreSQL schema do (each on the loop it listened from).
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[int], None]]] = []
        self._buckets: dict[BucketKey, CostTotals] = {}
        self._calls: list[CallFacts] = []  # by occurred_at, for partial days of a window
        self._counts: dict[CountKey, int] = {}
        # Derived writes of each commit (see eventstore.backends.derived); the integrity
        # tree appends its writer here too.
        self.derived_writers: list[DerivedWrite] = [self._add_rollup, self._add_counts]

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        stored = {i: self._by_id[i] for i in request_ids(requests) if i in self._by_id}
        now = utcnow()
        if self._last_recorded is not None and now < self._last_recorded:
            now = self._last_recorded  # keep recorded_at non-decreasing in seq order
        plan = plan_group(requests, stored, len(self._events) + 1, now)
        if plan.rows and self.derived_writers:
            # First, as a database transaction would: a writer that raises leaves the log
            # as it was.
            deltas = Deltas.of_rows(plan.rows)
            for write in self.derived_writers:
                write(plan.rows, deltas)
        for row in plan.rows:
            # What is stored is the document, as on disk: with encryption on it differs
            # from the event the caller sees.
            stored_event = decode_recorded(row.document)
            self._events.append(stored_event)
            self._by_id[row.event.id] = StoredId(row.digest, stored_event)
        if plan.rows:
            self._last_recorded = now
            head = len(self._events)
            for loop, on_head in list(self._listeners):
                try:
                    loop.call_soon_threadsafe(on_head, head)
                except RuntimeError:  # its loop is closed: a store that was never closed
                    self.unlisten(on_head)
        return plan.outcomes, [row.event for row in plan.rows]

    async def listen(self, on_head: Callable[[int], None]) -> None:
        self._listeners.append((asyncio.get_running_loop(), on_head))

    def unlisten(self, on_head: Callable[[int], None]) -> None:
        self._listeners = [(loop, f) for loop, f in self._listeners if f != on_head]

    async def check_listener(self) -> bool:
        return False  # calls on a loop cannot be lost

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        for event in self._events[after_seq:]:
            if query.matches(event, event.recorded_at):
                out.append(event)
                if len(out) >= limit:
                    break
        return out

    def _add_rollup(self, rows: Sequence[NewRow], deltas: Deltas) -> None:
        for key, totals in deltas.buckets.items():
            known = self._buckets.get(key)
            if known is None:
                self._buckets[key] = known = CostTotals()
            known.add(totals)
        for facts in deltas.calls:
            bisect.insort(self._calls, facts, key=lambda f: f.occurred_at)

    def _add_counts(self, rows: Sequence[NewRow], deltas: Deltas) -> None:
        for key, n in deltas.counts.items():
            self._counts[key] = self._counts.get(key, 0) + n

    async def cost_totals(self, filters: CostFilters) -> CostTotals:
        """Totals of the matching model calls from the rollup (see eventstore.rollup)."""
        totals = CostTotals()
        days, edges = filters.split()
        tag = filters.bucket_tag
        wanted = filters.key_clauses()
        if days is not None:
            first, last = days
            for (day, user_id, conversation_id, provider, model, bucket_tag), bucket in \
                    self._buckets.items():
                row = {"user_id": user_id, "conversation_id": conversation_id,
                       "provider": provider, "model": model}
                if bucket_tag == tag and first <= day <= last and all(
                        row[column] == value for column, value in wanted):
                    totals.add(bucket)
        for low, high in edges:
            start = bisect.bisect_left(self._calls, low, key=lambda f: f.occurred_at)
            end = bisect.bisect_right(self._calls, high, key=lambda f: f.occurred_at)
            for facts in self._calls[start:end]:
                if filters.matches(facts):
                    totals.add_call(facts)
        return totals

    async def count(self, query: Query) -> int:
        if query.after is None and query.before is None:
            if query == _EVERYTHING:
                return len(self._events)
            return sum(n for (type_, user_id, conversation_id), n in self._counts.items()
                       if (query.types is None or type_ in query.types)
                       and (query.user_id is None or user_id == query.user_id)
                       and (query.conversation_id is None
                            or conversation_id == query.conversation_id))
        return sum(1 for e in self._events if query.matches(e, e.recorded_at))

    async def head(self) -> int:
        return len(self._events)

    async def secret(self) -> bytes:
        return self._secret

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        return self._checkpoints.get(name)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._checkpoints[checkpoint.name] = checkpoint

    async def list_checkpoints(self) -> list[Checkpoint]:
        return sorted(self._checkpoints.values(), key=lambda c: c.name)

    async def delete_checkpoint(self, name: str) -> None:
        self._checkpoints.pop(name, None)

    async def get_meta(self, key: str) -> bytes | None:
        return self._meta.get(key)

    async def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        return self._meta.setdefault(key, value)

    async def load_keys(self, user_ids: Sequence[str]) -> dict[str, KeyRecord]:
        newest: dict[str, KeyRecord] = {}
        for user_id in user_ids:
            generations = self._keys.get(user_id)
            if generations:
                newest[user_id] = generations[max(generations)]
        return newest

    async def create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        generations = self._keys.setdefault(user_id, {})
        return generations.setdefault(generation, KeyRecord(
            user_id=user_id, generation=generation, wrapped=wrapped, created_at=utcnow()))

    async def destroy_keys(self, user_id: str) -> KeyRecord:
        now = utcnow()
        generations = self._keys.setdefault(user_id, {})
        if not generations:
            generations[1] = KeyRecord(user_id=user_id, generation=1, wrapped=None,
                                       created_at=now, forgotten_at=now)
        for generation, key in generations.items():
            if key.wrapped is not None:
                generations[generation] = msgspec.structs.replace(
                    key, wrapped=None, forgotten_at=now)
        return generations[max(generations)]

    async def key_owners(self, prefix: str | None = None) -> list[str]:
        return [owner for owner, generations in self._keys.items()
                if (not prefix or owner.startswith(prefix))
                and any(key.wrapped is not None for key in generations.values())]

    async def scrub(self) -> None:
        """Nothing to do: what was overwritten in memory is gone."""
