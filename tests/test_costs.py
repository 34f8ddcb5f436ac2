"""Conformance suite for cost tracking and projections kept by the store, on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Event, EventStore, InvalidQueryError, UnknownModelError, signals
from eventstore.pricing import (
    GenAIPrices,
    InvalidUsageError,
    ModelPrice,
    PriceTable,
    compute_cost,
)
from eventstore.projections import (
    ConversationCosts,
    GuardrailViolations,
    LatencyStats,
    MemoryTrims,
    PromptVersions,
)
from eventstore.projections.base import Projection

from .conftest import StoreFactory, wait_for

PRICES = PriceTable({
    ("openai", "gpt-4o"): ModelPrice(input=Decimal("0.0000025"), output=Decimal("0.00001"),
                                     cache_read=Decimal("0.00000125")),
    ("anthropic", "claude-x"): ModelPrice(input=Decimal("0.000003"),
                                          output=Decimal("0.000015"),
                                          cache_read=Decimal("0.0000003"),
                                          cache_write=Decimal("0.00000375")),
})


def builtin_projections() -> list[Projection]:
    return [ConversationCosts(), GuardrailViolations(), MemoryTrims(), LatencyStats(),
            PromptVersions()]


async def test_record_cost_is_exact_for_an_override_table(open_store: StoreFactory) -> None:
    async with open_store(pricing=PRICES) as store:
        rec = await store.record_cost(
            conversation_id="c1", user_id="u1", provider="anthropic", model="claude-x",
            input_tokens=10_000, output_tokens=777, cache_read_tokens=6_000,
            cache_write_tokens=1_000, latency_ms=812.5, metadata={"prompt_name": "greet"},
        )
    # uncached 3000 * 0.000003 + 6000 * 0.0000003 + 1000 * 0.00000375 = 0.009 + 0.0018 +
    # 0.00375; output 777 * 0.000015 = 0.011655
    assert Decimal(rec.data["input_cost"]) == Decimal("0.01455")
    assert Decimal(rec.data["output_cost"]) == Decimal("0.011655")
    assert Decimal(rec.data["total_cost"]) == Decimal("0.026205")
    assert rec.data["price_source"] == "override"
    assert rec.data["latency_ms"] == 812.5
    assert rec.data["cache_read_tokens"] == 6_000 and rec.data["cache_write_tokens"] == 1_000
    assert rec.metadata == {"prompt_name": "greet"} and rec.type == "cost_recorded"


async def test_record_cost_with_the_default_dataset(store: EventStore) -> None:
    rec = await store.record_cost(conversation_id="c1", user_id="u1", provider="openai",
                                  model="gpt-4o", input_tokens=1200, output_tokens=300)
    price = GenAIPrices().price_for("openai", "gpt-4o", at=rec.occurred_at)
    expected = compute_cost(price, input_tokens=1200, output_tokens=300)
    assert Decimal(rec.data["total_cost"]) == expected.total_cost > 0
    assert rec.data["price_source"].startswith("genai-prices ")


async def test_per_call_pricing_overrides_the_store_default(store: EventStore) -> None:
    rec = await store.record_cost(provider="openai", model="gpt-4o", input_tokens=1000,
                                  output_tokens=100, cache_read_tokens=400, pricing=PRICES)
    # 600 * 0.0000025 + 400 * 0.00000125 + 100 * 0.00001
    assert Decimal(rec.data["total_cost"]) == Decimal("0.003")


async def test_unknown_model_records_nothing(store: EventStore) -> None:
    with pytest.raises(UnknownModelError) as info:
        await store.record_cost(provider="openai", model="gpt-nonexistent-9", input_tokens=1,
                                output_tokens=1)
    assert "gpt-nonexistent-9" in str(info.value) and "openai" in str(info.value)
    with pytest.raises(UnknownModelError):
        await store.record_cost(provider="acme", model="gpt-4o", input_tokens=1,
                                output_tokens=1, pricing=PRICES)
    assert await store.count_events() == 0


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -1, "output_tokens": 1},
        {"input_tokens": 1.5, "output_tokens": 1},
        {"input_tokens": 1, "output_tokens": "2"},
        {"input_tokens": True, "output_tokens": 1},
        {"input_tokens": 10, "output_tokens": 1, "cache_read_tokens": 11},
        {"input_tokens": 10, "output_tokens": 1, "latency_ms": -3},
    ],
)
async def test_bad_usage_is_rejected_and_records_nothing(
    store: EventStore, usage: dict[str, Any]
) -> None:
    with pytest.raises(InvalidUsageError):
        await store.record_cost(provider="openai", model="gpt-4o", pricing=PRICES, **usage)
    assert await store.count_events() == 0


async def seed_costs(store: EventStore) -> list[Any]:
    recs = []
    for i in range(24):
        provider, model = (("openai", "gpt-4o") if i % 3 else ("anthropic", "claude-x"))
        recs.append(await store.record_cost(
            conversation_id=f"c{i % 4}", user_id=f"u{i % 3}", provider=provider, model=model,
            input_tokens=1000 + 37 * i, output_tokens=100 + 11 * i, pricing=PRICES,
        ))
        if i % 5 == 0:  # other event types never count
            await store.append(Event(type="message_sent", conversation_id=f"c{i % 4}",
                                     user_id=f"u{i % 3}",
                                     data={"role": "user", "content": "x"}))
    return recs


@pytest.mark.parametrize(
    "filters",
    [
        {}, {"user_id": "u1"}, {"conversation_id": "c2"}, {"provider": "anthropic"},
        {"model": "gpt-4o"}, {"user_id": "u0", "model": "claude-x"},
        {"conversation_id": "c1", "user_id": "u1", "provider": "openai"},
        {"user_id": "nobody"},
    ],
)
async def test_sum_cost_filters_combine_with_and(
    store: EventStore, filters: dict[str, Any]
) -> None:
    recs = await seed_costs(store)
    expected = sum(
        (Decimal(r.data["total_cost"]) for r in recs
         if all((r.data.get(k) if k in ("provider", "model") else getattr(r, k)) == v
                for k, v in filters.items())),
        Decimal(0),
    )
    assert await store.sum_cost(**filters) == expected
    if "conversation_id" in filters:
        records = await store.get_cost_records(filters["conversation_id"])
        assert records == [r for r in recs if r.conversation_id == filters["conversation_id"]]


async def test_sum_cost_time_bounds(store: EventStore) -> None:
    """Cost questions bound the call's time (occurred_at), inclusive: a backdated call
    counts in its own window, not in the one it was written in."""
    recs = await seed_costs(store)
    lo, hi = recs[3].occurred_at, recs[10].occurred_at
    expected = sum((Decimal(r.data["total_cost"]) for r in recs
                    if lo <= r.occurred_at <= hi), Decimal(0))
    assert await store.sum_cost(after=lo, before=hi) == expected
    assert await store.sum_cost(after=hi + timedelta(days=1)) == 0
    backdated = await store.record_cost(provider="openai", model="gpt-4o", input_tokens=10,
                                        output_tokens=1, occurred_at=lo - timedelta(days=30),
                                        pricing=PRICES)
    assert await store.sum_cost(after=lo - timedelta(days=7)) == sum(
        (Decimal(r.data["total_cost"]) for r in recs), Decimal(0))
    assert await store.sum_cost(before=lo - timedelta(days=29)) == Decimal(
        backdated.data["total_cost"])
    with pytest.raises(InvalidQueryError):
        await store.sum_cost(model=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError):
        await store.sum_cost(after=datetime(2026, 1, 1))


# --- projections ----------------------------------------------------------------------

EVENT = st.one_of(
    st.builds(
        lambda c, u, m, i, o, lat, prompt: ("cost", c, u, m, i, o, lat, prompt),
        st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(["u1", "u2"]),
        st.sampled_from(["gpt-4o", "claude-x"]), st.integers(0, 5000), st.integers(0, 2000),
        st.one_of(st.none(), st.floats(1, 5000)),
        st.one_of(st.none(), st.tuples(st.sampled_from(["greet", "sum"]),
                                       st.sampled_from(["1", "2"]))),
    ),
    st.builds(lambda c, u, p: ("violation", c, u, p), st.sampled_from(["c1", "c2"]),
              st.sampled_from(["u1", "u2"]), st.sampled_from(["pii", "toxicity"])),
    st.builds(lambda c, n: ("trim", c, n), st.sampled_from(["c1", "c3"]),
              st.integers(0, 900)),
    st.builds(lambda c, r: ("feedback", c, r), st.sampled_from(["c1", "c2"]),
              st.integers(1, 5)),
    st.just(("message",)),
)


async def append_generated(store: EventStore, item: tuple[Any, ...], day: int) -> None:
    at = datetime(2026, 5, 1 + day % 3, 12, tzinfo=UTC)
    kind = item[0]
    if kind == "cost":
        _, conv, user, model, inp, out, latency, prompt = item
        provider = "openai" if model == "gpt-4o" else "anthropic"
        meta = {"prompt_name": prompt[0], "prompt_version": prompt[1]} if prompt else {}
        await store.record_cost(conversation_id=conv, user_id=user, provider=provider,
                                model=model, input_tokens=inp, output_tokens=out,
                                latency_ms=latency, metadata=meta, pricing=PRICES,
                                occurred_at=at)
    elif kind == "violation":
        await store.append(Event(type="policy_violation", conversation_id=item[1],
                                 user_id=item[2], occurred_at=at,
                                 data={"policy": item[3], "reason": "r", "severity": "high"}))
    elif kind == "trim":
        await store.append(Event(type="memory_trimmed", conversation_id=item[1], occurred_at=at,
                                 data={"strategy": "window", "messages_before": 10,
                                       "messages_after": 4, "tokens_removed": item[2]}))
    elif kind == "feedback":
        await store.track("user_feedback", data={"rating": item[2]}, conversation_id=item[1])
    else:
        await store.append(Event(type="message_sent", data={"role": "user", "content": "x"}))


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(EVENT, max_size=25))
async def test_rebuild_equals_live_equals_a_direct_fold(
    open_store: StoreFactory, items: list[tuple[Any, ...]]
) -> None:
    name = uuid.uuid4().hex[:8]
    async with open_store() as store:
        live = builtin_projections()
        subs = [await store.project(p, name=f"{name}-{p.name}") for p in live]
        for day, item in enumerate(items):
            await append_generated(store, item, day)
        head = await store.head()
        await wait_for(lambda: all(s.position == head for s in subs))
        fresh = builtin_projections()
        await store.rebuild(fresh[0], *fresh[1:])
        events = [e async for e in store.read()]
        for s in subs:
            await s.stop()
    for live_p, rebuilt_p in zip(live, fresh, strict=True):
        direct = type(rebuilt_p)()
        for event in events:
            direct.apply_event(event)
        assert rebuilt_p.state() == live_p.state() == direct.state(), rebuilt_p.name
    costs = fresh[0]
    assert isinstance(costs, ConversationCosts)
    expected = sum((Decimal(e.data["total_cost"]) for e in events if e.type == "cost_recorded"),
                   Decimal(0))
    assert costs.total() == expected


async def test_projection_resumes_from_its_snapshot_after_restart(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store:
        costs = ConversationCosts()
        sub = await store.project(costs)
        await seed_costs(store)
        head = await store.head()
        await wait_for(lambda: sub.position == head)
        total = costs.total()
    async with open_store() as store:
        again = ConversationCosts()
        sub = await store.project(again)
        # restored from the snapshot before any event was delivered again
        assert again.total() == total and sub.position == head
        rec = await store.record_cost(conversation_id="c9", user_id="u9", provider="openai",
                                      model="gpt-4o", input_tokens=10, output_tokens=10,
                                      pricing=PRICES)
        await wait_for(lambda: sub.position == rec.seq)
        assert sub.delivered == 1  # only the new event: nothing was replayed
        assert again.total() == total + Decimal(rec.data["total_cost"])
        assert again.total(conversation_id="c9") == Decimal(rec.data["total_cost"])


async def test_a_changed_projection_version_is_rebuilt_not_resumed(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store:
        sub = await store.project(ConversationCosts())
        await seed_costs(store)
        head = await store.head()
        await wait_for(lambda: sub.position == head)
        total = await store.sum_cost()

    class ConversationCostsV2(ConversationCosts):
        version = ConversationCosts.version + 1

    async with open_store() as store:
        v2 = ConversationCostsV2()
        sub = await store.project(v2)
        await wait_for(lambda: sub.position == head)
        assert sub.delivered == 24  # replayed from seq 0
        assert v2.total() == total


async def test_rebuild_reports_progress(store: EventStore, monkeypatch: Any) -> None:
    import eventstore.projections.runner as runner_module

    monkeypatch.setattr(runner_module, "PROGRESS_EVERY", 5)
    await seed_costs(store)
    head = await store.head()
    seen: list[tuple[int, int]] = []

    def on_progress(sender: Any, projection: Any, position: int, head: int) -> None:
        seen.append((position, head))

    signals.rebuild_progress.connect(on_progress, sender=store)
    try:
        costs = await store.rebuild(ConversationCosts())
    finally:
        signals.rebuild_progress.disconnect(on_progress, sender=store)
    assert len(seen) == 24 // 5 + 1
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert seen[-1] == (head, head)
    assert costs.total() == await store.sum_cost()
