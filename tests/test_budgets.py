"""Budgets and alerts (issue 18), on every backend: one alert per budget, scope, window and
threshold, however the costs arrive and however often the watcher replays."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import (
    Budget,
    BudgetExceededError,
    BudgetStatus,
    EventStore,
    EventStoreError,
    RecordedEvent,
    signals,
)
from eventstore.budgets import ALERT_TYPES, BUDGET_EXCEEDED, BUDGET_WARNING, window_of
from eventstore.projections import ConversationCosts

from .conftest import StoreFactory, require_pg

DAY1 = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
USER_DAY = Budget(limit=Decimal("1.00"), per="user", window="day", warn_at=(0.5, 0.8),
                  name="user-daily")


async def spend(store: EventStore, amount: str, *, user_id: str | None = "u1",
                conversation_id: str | None = None, tags: list[str] | None = None,
                at: datetime = DAY1) -> RecordedEvent:
    return await store.record_cost(
        provider="test", model="m", input_tokens=1, output_tokens=1, cost=Decimal(amount),
        user_id=user_id, conversation_id=conversation_id, occurred_at=at,
        metadata={"tags": tags} if tags else None)


async def settled(store: EventStore) -> None:
    """Wait until the budget watcher has handled everything committed so far."""
    (sub,) = [s for s in store.subscriptions if (s.name or "").startswith("budgets:")]
    with anyio.fail_after(30):
        await sub.caught_up()


async def alerts(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read(type=set(ALERT_TYPES))]


def summary(events: list[RecordedEvent]) -> list[tuple[str, str, str, str]]:
    return sorted((e.type, e.data["scope"], e.data["window"], e.data["threshold"])
                  for e in events)


class Received:
    def __init__(self, store: EventStore) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.store = store

    def __enter__(self) -> Received:
        signals.budget_warning.connect(self.warning, sender=self.store)
        signals.budget_exceeded.connect(self.exceeded, sender=self.store)
        return self

    def __exit__(self, *exc: object) -> None:
        signals.budget_warning.disconnect(self.warning, sender=self.store)
        signals.budget_exceeded.disconnect(self.exceeded, sender=self.store)

    def warning(self, sender: EventStore, **kw: Any) -> None:
        self.calls.append(("warning", kw))

    def exceeded(self, sender: EventStore, **kw: Any) -> None:
        self.calls.append(("exceeded", kw))


async def test_each_threshold_alerts_once_per_scope_and_window(open_store: StoreFactory) -> None:
    async with open_store(budgets=[USER_DAY]) as store:
        with Received(store) as received:
            await spend(store, "0.40")
            await settled(store)
            assert await alerts(store) == []
            await spend(store, "0.20")  # 0.60: past the 0.5 warning
            await settled(store)
            await spend(store, "0.25")  # 0.85: past the 0.8 warning
            await spend(store, "0.10", user_id="u2")  # another scope, far below
            await settled(store)
            await spend(store, "0.30")  # 1.15: exceeded
            await settled(store)
            await spend(store, "2.00")  # more spend after exceeding adds nothing
            await spend(store, "0.01")
            await settled(store)
            found = await alerts(store)
            assert summary(found) == [
                (BUDGET_EXCEEDED, "u1", "2026-03-14", "exceeded"),
                (BUDGET_WARNING, "u1", "2026-03-14", "warn_at=0.5"),
                (BUDGET_WARNING, "u1", "2026-03-14", "warn_at=0.8"),
            ]
            exceeded = next(e for e in found if e.type == BUDGET_EXCEEDED)
            assert exceeded.user_id == "u1" and exceeded.conversation_id is None
            assert Decimal(exceeded.data["spent"]) == Decimal("1.15")
            assert Decimal(exceeded.data["limit"]) == Decimal("1.00")
            crossing = await store.list_events(type="cost_recorded", user_id="u1")
            assert exceeded.data["cost_event_id"] == crossing.events[3].id
            # one signal per alert, carrying what the event carries
            await _wait(lambda: len(received.calls) == 3)
            kinds = sorted(kind for kind, _ in received.calls)
            assert kinds == ["exceeded", "warning", "warning"]
            (_, kw), = [c for c in received.calls if c[0] == "exceeded"]
            assert kw["scope"] == "u1" and kw["spent"] == Decimal("1.15")
            assert kw["limit"] == Decimal("1.00") and kw["event"].id == exceeded.id
            assert kw["window"].label == "2026-03-14" and kw["budget"] == USER_DAY


async def test_the_next_window_starts_fresh(open_store: StoreFactory) -> None:
    month = Budget(limit=Decimal("2.5"), per="user", window="month", name="monthly")
    async with open_store(budgets=[USER_DAY, month]) as store:
        await spend(store, "1.50", at=DAY1)
        await spend(store, "0.45", at=DAY2)  # a new day: below every daily threshold
        await settled(store)
        assert summary(await alerts(store)) == [
            (BUDGET_EXCEEDED, "u1", "2026-03-14", "exceeded"),
            (BUDGET_WARNING, "u1", "2026-03-14", "warn_at=0.5"),
            (BUDGET_WARNING, "u1", "2026-03-14", "warn_at=0.8"),
        ]
        statuses = {s.budget.label: s for s in await store.budget_status(user_id="u1", at=DAY2)}
        assert statuses["user-daily"].spent == Decimal("0.45")
        assert statuses["user-daily"].remaining == Decimal("0.55")
        assert statuses["monthly"].spent == Decimal("1.95")
        await store.check_budget(user_id="u1", at=DAY2)  # day 2 is not exhausted
        await spend(store, "0.60", at=DAY2)  # day 2 now exhausted, and the month too
        await settled(store)
        days = {(e.data["budget"], e.data["window"]) for e in await alerts(store)
                if e.type == BUDGET_EXCEEDED}
        assert days == {("user-daily", "2026-03-14"), ("user-daily", "2026-03-15"),
                        ("monthly", "2026-03")}


async def test_check_budget_raises_when_exhausted_and_status_counts_unpriced_calls(
        open_store: StoreFactory) -> None:
    async with open_store(budgets=[USER_DAY]) as store:
        await spend(store, "0.99")
        (status,) = await store.check_budget(user_id="u1", at=DAY1)
        assert status == BudgetStatus(budget=USER_DAY, scope="u1",
                                      window=window_of("day", DAY1), spent=Decimal("0.99"),
                                      limit=Decimal("1.00"), remaining=Decimal("0.01"))
        await store.record_llm_call(
            provider="acme", model="mystery-1", user_id="u1", occurred_at=DAY1,
            request={"model": "mystery-1", "messages": [{"role": "user", "content": "hi"}]},
            response={"usage": {"input_tokens": 5, "output_tokens": 2}}, latency_ms=1.0)
        (status,) = await store.budget_status(user_id="u1", at=DAY1)
        assert (status.spent, status.unpriced_calls) == (Decimal("0.99"), 1)
        await spend(store, "0.01")
        with pytest.raises(BudgetExceededError, match="user-daily") as raised:
            await store.check_budget(user_id="u1", at=DAY1)
        assert [s.scope for s in raised.value.statuses] == ["u1"]  # type: ignore[attr-defined]
        await store.check_budget(user_id="u2", at=DAY1)  # another scope is unaffected
        await store.check_budget(user_id="u1", at=DAY2)  # and so is another day
        assert await store.budget_status(conversation_id="c1") == []  # no budget matches


async def test_conversation_tag_and_total_scopes(open_store: StoreFactory) -> None:
    budgets = [Budget(limit=Decimal("1"), per="conversation", window="total", name="conv"),
               Budget(limit=Decimal("1"), per="tag", window="day", name="tag"),
               Budget(limit=Decimal("2"), per="total", window="total", name="all")]
    async with open_store(budgets=budgets) as store:
        await spend(store, "0.60", conversation_id="c1", tags=["alpha", "beta"])
        await spend(store, "0.60", conversation_id="c2", tags=["alpha"])
        await spend(store, "0.90", conversation_id="c1", user_id=None)
        await settled(store)
        found = await alerts(store)
        assert sorted((e.data["budget"], e.data["scope"]) for e in found) == [
            ("all", ""), ("conv", "c1"), ("tag", "alpha")]
        conv = next(e for e in found if e.data["budget"] == "conv")
        assert conv.conversation_id == "c1" and conv.user_id is None
        with pytest.raises(BudgetExceededError):
            await store.check_budget(tags=["beta", "alpha"], at=DAY1)
        statuses = await store.budget_status(conversation_id="c2", tags=["beta"], at=DAY1)
        assert {(s.budget.label, s.scope, s.spent) for s in statuses} == {
            ("conv", "c2", Decimal("0.60")), ("tag", "beta", Decimal("0.60")),
            ("all", "", Decimal("2.10"))}


async def test_a_restart_a_replay_and_a_rebuild_add_no_duplicate(
        open_store: StoreFactory) -> None:
    async with open_store(budgets=[USER_DAY]) as store:
        await spend(store, "1.20")
        await settled(store)
        before = summary(await alerts(store))
        assert len(before) == 3
    async with open_store(budgets=[USER_DAY]) as store:  # a restart
        with Received(store) as received:
            await settled(store)
            await store.rebuild(ConversationCosts())
            await spend(store, "0.10")
            await settled(store)
            assert summary(await alerts(store)) == before
            assert received.calls == []
            # as after a crash that lost the checkpoint: the next start replays it all
            (sub,) = [s for s in store.subscriptions if (s.name or "").startswith("budgets:")]
            await sub.stop()
            await store.backend.delete_checkpoint(sub.name or "")
    async with open_store(budgets=[USER_DAY]) as store:
        with Received(store) as received:
            await settled(store)
            assert summary(await alerts(store)) == before
            assert received.calls == []


async def test_a_crossing_committed_while_no_watcher_ran_is_alerted_on_the_next_start(
        open_store: StoreFactory) -> None:
    # A crash between the cost's commit and its alert leaves the watcher's checkpoint
    # behind the cost: the same as costs recorded by a store with no watcher at all.
    async with open_store() as plain:
        await spend(plain, "1.50")
        assert await alerts(plain) == []
    async with open_store(budgets=[USER_DAY]) as store:
        await settled(store)
        assert [e.type for e in await alerts(store)].count(BUDGET_EXCEEDED) == 1


async def test_two_stores_on_one_log_write_and_signal_each_alert_once(
        open_store: StoreFactory) -> None:
    async with open_store(budgets=[USER_DAY]) as one, open_store(budgets=[USER_DAY]) as two:
        with Received(one) as got_one, Received(two) as got_two:
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(spend, one if i % 2 else two, "0.15")
            await settled(one)
            await settled(two)
            assert len(summary(await alerts(one))) == 3
            await _wait(lambda: len(got_one.calls) + len(got_two.calls) == 3)
            kinds = sorted(k for k, _ in got_one.calls + got_two.calls)
            assert kinds == ["exceeded", "warning", "warning"]


@pytest.mark.parametrize("bad, message", [
    ({"limit": Decimal("0")}, "positive"),
    ({"limit": 5.0}, "Decimal"),
    ({"limit": "lots"}, "decimal amount"),
    ({"per": "team"}, "per="),
    ({"window": "week"}, "window="),
    ({"warn_at": (1.0,)}, "between 0 and 1"),
    ({"warn_at": 0.8}, "tuple"),
    ({"name": ""}, "name"),
])
def test_a_malformed_budget_is_refused_clearly(bad: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"limit": Decimal("5"), "per": "user", "window": "day", **bad}
    with pytest.raises(EventStoreError, match=message):
        Budget(**fields)


async def test_budgets_with_one_name_are_refused() -> None:
    with pytest.raises(EventStoreError, match="share a name"):
        EventStore.open("memory://", budgets=[USER_DAY, USER_DAY])


async def _wait(predicate: Any) -> None:
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - signals are delivered by the store's pump
            await anyio.sleep(0.005)


BUDGET_WRITER = Path(__file__).with_name("budget_writer.py")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_four_processes_crossing_one_limit_at_once_write_one_alert(
        kind: str, tmp_path: Path) -> None:
    if kind == "postgres":
        require_pg()
    factory = StoreFactory(kind, tmp_path)
    options = ["--schema", factory.pg_schema] if kind == "postgres" else []
    try:
        async with factory():  # create the schema once, before the race
            pass
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, str(BUDGET_WRITER), factory.url, *options,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE) for _ in range(4)]
        try:
            with anyio.fail_after(120):
                for proc in procs:
                    assert proc.stdout is not None
                    assert (await proc.stdout.readline()).strip() == b"READY"
                for proc in procs:  # all at once: 4 x 10 calls of 0.30 against a limit of 1
                    assert proc.stdin is not None
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
                outputs = [await proc.communicate() for proc in procs]
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        lines = [line for out, err in outputs for line in out.decode().split("\n")]
        assert all(p.returncode == 0 for p in procs), [err.decode()[-2000:] for _, err in outputs]
        assert lines.count("DONE") == 4
        # each alert signalled once, by the one process whose append wrote it
        assert sorted(line for line in lines if line.startswith("SIGNAL")) == [
            "SIGNAL budget_exceeded", "SIGNAL budget_warning"]
        async with factory() as store:
            found = await alerts(store)
            assert sorted(e.type for e in found) == [BUDGET_EXCEEDED, BUDGET_WARNING]
            assert await store.sum_cost(user_id="u1") == Decimal("12.00")
    finally:
        await factory.cleanup()
