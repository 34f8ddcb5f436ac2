"""Property test (hypothesis), on every backend: random cost sequences over random scopes
and windows produce exactly the alerts a direct computation over the log predicts."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Budget, RecordedEvent
from eventstore.budgets import ALERT_TYPES, window_of

from .conftest import StoreFactory
from .test_properties import run_examples

BUDGETS = [
    Budget(limit=Decimal("1"), per="user", window="day", warn_at=(0.5,), name="user-day"),
    Budget(limit=Decimal("3"), per="user", window="month", name="user-month"),
    Budget(limit=Decimal("0.8"), per="conversation", window="total", name="conv"),
    Budget(limit=Decimal("1.5"), per="tag", window="day", warn_at=(0.3, 0.6), name="tag-day"),
    Budget(limit=Decimal("6"), per="total", window="month", warn_at=(0.25,), name="all"),
]
START = datetime(2026, 1, 30, 12, tzinfo=UTC)  # the days drawn span a month boundary
EXAMPLES = {"memory": 25, "sqlite": 8, "jsonl": 5, "postgres": 5}

calls = st.lists(st.tuples(
    st.sampled_from([None, "u1", "u2"]),           # user
    st.sampled_from([None, "c1", "c2", "c3"]),     # conversation
    st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True),  # tags
    st.integers(0, 4),                             # day offset
    st.integers(1, 90),                            # cost in cents
), min_size=1, max_size=25)


def predicted(costs: list[RecordedEvent]) -> set[tuple[str, str, str, str]]:
    """The alerts, from the cost events of the log alone."""
    totals: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for event in costs:
        for budget in BUDGETS:
            window = window_of(budget.window, event.occurred_at).label
            for scope in budget.scopes_of(event):
                totals[budget.label, scope, window] += Decimal(event.data["total_cost"])
    expected = set()
    for (name, scope, window), spent in totals.items():
        budget = next(b for b in BUDGETS if b.label == name)
        for threshold in budget.thresholds:
            if spent >= threshold.amount:
                expected.add((name, scope, window, threshold.label))
    return expected


async def test_alerts_match_a_direct_computation_over_the_log(
        backend_kind: str, tmp_path: Path) -> None:
    @settings(max_examples=EXAMPLES.get(backend_kind, 5), deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(calls)
    def check(drawn: list[tuple[str | None, str | None, list[str], int, int]]) -> None:
        async def example() -> None:
            with anyio.fail_after(60):
                await one_example(backend_kind, tmp_path, drawn)

        asyncio.run(example())

    await run_examples(check)


async def one_example(kind: str, tmp_path: Path,
                      drawn: list[tuple[str | None, str | None, list[str], int, int]]) -> None:
    where = tmp_path / uuid.uuid4().hex
    where.mkdir()
    factory = StoreFactory(kind, where)
    try:
        async with factory(budgets=BUDGETS) as store:
            await asyncio.gather(*(store.record_cost(
                provider="test", model="m", input_tokens=1, output_tokens=1,
                cost=Decimal(cents) / 100, user_id=user, conversation_id=conversation,
                metadata={"tags": tags} if tags else None,
                occurred_at=START + timedelta(days=day))
                for user, conversation, tags, day, cents in drawn))
            (sub,) = [s for s in store.subscriptions if (s.name or "").startswith("budgets:")]
            await sub.caught_up()
            costs = [e async for e in store.read(type="cost_recorded")]
            found = [e async for e in store.read(type=set(ALERT_TYPES))]
            got = [(e.data["budget"], e.data["scope"], e.data["window"], e.data["threshold"])
                   for e in found]
            assert len(got) == len(set(got)), "an alert was written twice"
            assert set(got) == predicted(costs)
    finally:
        await factory.cleanup()
