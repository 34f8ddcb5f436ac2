"""The cost rollup (and the event counts) equal a replay of the log, on every backend:
after concurrent writers in several stores on one log, after forget_user, and after an
old database is upgraded (the migration rebuilds them from the log)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import Event, EventStore, ModelPrice, PriceTable
from eventstore.backends import CostTotalsReader
from eventstore.backends.sqlite import backend as sqlite_backend
from eventstore.encryption import Encryption
from eventstore.events import RecordedEvent
from eventstore.rollup import CostFilters, replay
from eventstore.testing import T0, sample_events

from ..conftest import StoreFactory

PRICES = PriceTable({("openai", "m0"): ModelPrice(input=Decimal("0.0000025"),
                                                  output=Decimal("0.00001"), source="t"),
                     ("anthropic", "m1"): ModelPrice(input=Decimal("0.000003"),
                                                     output=Decimal("0.000015"), source="t")})


def questions() -> list[CostFilters]:
    mid = T0 + timedelta(days=1, hours=7, minutes=13)
    return [
        CostFilters(), CostFilters(user_id="u1"), CostFilters(conversation_id="c2"),
        CostFilters(model="m1"), CostFilters(provider="openai", user_id="u2"),
        CostFilters(tag="a"), CostFilters(tag="b", user_id="u0"),
        CostFilters(after=mid), CostFilters(before=mid),
        CostFilters(after=T0 - timedelta(hours=3), before=mid + timedelta(days=2), tag="a"),
    ]


async def assert_rollup_is_a_replay(store: EventStore) -> None:
    backend = store.backend
    log: list[RecordedEvent] = [e async for e in store.read()]
    for question in questions():
        expected = replay(log, question)
        if isinstance(backend, CostTotalsReader):  # the rollup; others stream the log
            assert await backend.cost_totals(question) == expected, question
        assert await store.sum_cost(
            conversation_id=question.conversation_id, user_id=question.user_id,
            provider=question.provider, model=question.model, tag=question.tag,
            after=question.after, before=question.before) == expected.cost, question
        if isinstance(backend, CostTotalsReader):  # the counters metrics() reports
            totals, metrics = await backend.cost_totals(question), await store.metrics(
                conversation_id=question.conversation_id, user_id=question.user_id,
                provider=question.provider, model=question.model, tag=question.tag,
                after=question.after, before=question.before)
            assert (totals.calls, totals.errors, totals.unpriced_calls, totals.cost,
                    totals.input_tokens, totals.output_tokens, totals.cache_read_tokens) == (
                metrics.calls, metrics.errors, metrics.unpriced_calls, metrics.total_cost,
                metrics.input_tokens, metrics.output_tokens, metrics.cache_read_tokens
            ), question
            assert totals.avg_latency_ms == pytest.approx(metrics.avg_latency_ms)
    for filters in ({}, {"type": "cost_recorded"}, {"user_id": "u1"},
                    {"conversation_id": "c0", "type": {"llm_call", "message_sent"}}):
        query_matches = [e for e in log
                         if all(_field_matches(e, k, v) for k, v in filters.items())]
        assert await store.count_events(**filters) == len(query_matches), filters


def _field_matches(event: RecordedEvent, key: str, value: Any) -> bool:
    if key == "type":
        return event.type in ({value} if isinstance(value, str) else value)
    return bool(getattr(event, key) == value)


async def writer(store: EventStore, n: int, who: int) -> None:
    for i in range(n):
        user, conversation = f"u{(i + who) % 3}", f"c{i % 4}"
        moment = T0 + timedelta(hours=5 * i + who, minutes=i)
        if i % 4 == 0:
            await store.record_cost(provider="openai" if i % 8 else "anthropic",
                                    model="m0" if i % 8 else "m1", input_tokens=100 + i,
                                    output_tokens=7 * i, conversation_id=conversation,
                                    user_id=user, latency_ms=3.25 * i, pricing=PRICES,
                                    metadata={"tags": ["a", "b"][: 1 + i % 2]},
                                    occurred_at=moment)
        elif i % 5 == 0:  # a priced call: its llm_call and the cost_recorded of it
            call = Event(type="llm_call", user_id=user, conversation_id=conversation,
                         data={"provider": "anthropic", "model": "m1", "priced": True,
                               "latency_ms": 40.0 + i}, occurred_at=moment)
            await store.append_many([call, Event(
                type="cost_recorded", user_id=user, conversation_id=conversation,
                data={"provider": "anthropic", "model": "m1", "input_tokens": i,
                      "output_tokens": 3, "cache_read_tokens": 1, "cache_write_tokens": 0,
                      "input_cost": "0.001", "output_cost": "0.002",
                      "total_cost": f"0.00{i}3", "price_source": "t", "call_id": call.id},
                occurred_at=moment)])
        else:
            await store.append_many([
                Event(type="llm_call", user_id=user, conversation_id=conversation,
                      data={"provider": "openai", "model": "m0", "error": None if i % 3
                            else {"type": "RateLimit", "message": "slow down"},
                            "usage": {"input_tokens": i, "output_tokens": 2 * i},
                            "latency_ms": i + 0.5},
                      metadata={"tags": ["b"]} if i % 2 else {}, occurred_at=moment),
                Event(type="message_sent", user_id=user, conversation_id=conversation,
                      data={"role": "user", "content": f"hi {i}"}),
            ])


async def test_after_concurrent_writers_in_several_stores(open_store: StoreFactory) -> None:
    with anyio.fail_after(60):
        async with open_store() as one, open_store() as two:
            await asyncio.gather(*(writer(store, 40, who)
                                   for who, store in enumerate([one, two, one, two])))
            await one.append_many(sample_events(30))
            await assert_rollup_is_a_replay(one)
            await assert_rollup_is_a_replay(two)
            totals = replay([e async for e in one.read()], CostFilters())
            assert totals.calls == 4 * 40 + 10 and totals.errors > 0
            assert totals.unpriced_calls > 0 and totals.cost > 0


async def test_after_forget_user(open_store: StoreFactory) -> None:
    encryption = Encryption(os.urandom(32), fields=("data.content",))
    with anyio.fail_after(60):
        async with open_store(encryption=encryption) as store:
            await writer(store, 24, 0)
            before = replay([e async for e in store.read()], CostFilters())
            await store.forget_user("u1")
            await writer(store, 8, 1)
            await assert_rollup_is_a_replay(store)
            after = replay([e async for e in store.read()], CostFilters())
            assert after.calls > before.calls


async def test_an_old_sqlite_database_gets_its_rollup_from_the_log(
    tmp_path: Path, monkeypatch: Any
) -> None:
    db = tmp_path / "old.db"
    with monkeypatch.context() as m:  # a store of schema 2: no derived tables
        m.setattr(sqlite_backend, "SCHEMA_VERSION", 2)
        async with EventStore.open(f"sqlite:///{db}") as store:
            await writer(store, 20, 0)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'cost_buckets'"
                        ).fetchone() is None
    conn.close()
    async with EventStore.open(f"sqlite:///{db}") as store:
        await assert_rollup_is_a_replay(store)
        await writer(store, 8, 1)
        await assert_rollup_is_a_replay(store)
