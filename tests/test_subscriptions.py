"""Conformance suite for subscriptions and the guardian, on every backend."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from eventstore import Event, EventStore, RecordedEvent, SubscriptionError, signals
from eventstore.subscriptions import Status

from .conftest import StoreFactory, lose_commit_notices, wait_for

FAST = {"backoff": 0.001, "max_backoff": 0.01}


def violation(i: int, user: str = "u1") -> Event:
    return Event(type="policy_violation", conversation_id=f"c{i % 3}", user_id=user,
                 data={"policy": "pii", "reason": f"r{i}"})


def message(i: int) -> Event:
    return Event(type="message_sent", conversation_id=f"c{i % 3}", user_id="u1",
                 data={"role": "user", "content": f"m{i}"})


def mixed(n: int) -> list[Event]:
    return [violation(i) if i % 3 == 0 else message(i) for i in range(n)]


async def test_in_order_delivery_with_type_filter(store: EventStore) -> None:
    seen: list[RecordedEvent] = []
    sub = await store.subscribe(seen.append, name="alerts", types={"policy_violation"})
    recs = [await store.append(e) for e in mixed(12)]
    recs += await store.append_many(mixed(9))
    expected = [r.seq for r in recs if r.type == "policy_violation"]
    await wait_for(lambda: len(seen) == len(expected))
    assert [e.seq for e in seen] == expected
    await wait_for(lambda: sub.position == recs[-1].seq)
    assert sub.status == Status.RUNNING


async def test_sync_and_async_handlers_and_other_filters(store: EventStore) -> None:
    sync_seen: list[int] = []
    async_seen: list[int] = []

    async def on_async(event: RecordedEvent) -> None:
        await asyncio.sleep(0)
        async_seen.append(event.seq)

    await store.subscribe(lambda e: sync_seen.append(e.seq), conversation_id="c1")
    await store.subscribe(on_async, user_id="u2")
    recs = await store.append_many([violation(i, user="u2" if i % 2 else "u1")
                                    for i in range(10)])
    want_c1 = [r.seq for r in recs if r.conversation_id == "c1"]
    want_u2 = [r.seq for r in recs if r.user_id == "u2"]
    await wait_for(lambda: len(sync_seen) == len(want_c1) and len(async_seen) == len(want_u2))
    assert sync_seen == want_c1 and async_seen == want_u2


async def test_subscriber_starting_behind_catches_up_then_goes_live(store: EventStore) -> None:
    early = await store.append_many(mixed(30))
    seen: list[int] = []
    sub = await store.subscribe(lambda e: seen.append(e.seq), from_seq=5)
    late = [await store.append(e) for e in mixed(5)]
    want = [r.seq for r in early[4:] + late]
    await wait_for(lambda: seen[-1:] == [want[-1]])
    assert seen == want
    assert sub.position == late[-1].seq


async def test_events_appended_by_another_store_arrive_live_without_the_guardian(
    open_store: StoreFactory,
) -> None:
    # Another store on the same log stands for another process: its appends do not fire
    # this store's signal, so only the backend's commit notifications can bring them
    # (PostgreSQL NOTIFY, SQLite's data_version watcher, the shared in-memory log).
    async with open_store(guardian_interval=3600) as reader, open_store() as writer:
        seen: list[int] = []
        sub = await reader.subscribe(lambda e: seen.append(e.seq), name="remote")
        await wait_for(lambda: sub.idle)
        ticks = reader.guardian.ticks
        first = await writer.append_many([message(i) for i in range(3)])
        await wait_for(lambda: seen == [e.seq for e in first])
        more = [await writer.append(message(i)) for i in range(3, 6)]
        mine = await reader.append(message(6))
        await wait_for(lambda: seen == [e.seq for e in [*first, *more, mine]])
        assert reader.guardian.ticks == ticks  # no guardian tick did it


async def test_own_appends_are_delivered_live_without_reading_the_log(
    open_store: StoreFactory,
) -> None:
    # The backend also announces this store's own commits (NOTIFY, the watcher), maybe
    # before the commit's signal: the subscription must not read the log for them.
    async with open_store(guardian_interval=3600) as store:
        seen: list[int] = []
        sub = await store.subscribe(lambda e: seen.append(e.seq), name="own")
        await wait_for(lambda: sub.idle)
        reads = sub.catch_ups
        recs = [r for _ in range(10)
                for r in await asyncio.gather(*(store.append(message(i)) for i in range(8)))]
        await wait_for(lambda: len(seen) == len(recs))
        assert seen == sorted(r.seq for r in recs)
        assert sub.catch_ups == reads


async def test_another_stores_events_behind_a_busy_queue_are_not_left_behind(
    open_store: StoreFactory,
) -> None:
    async with open_store(guardian_interval=3600) as store, open_store() as other:
        seen: list[int] = []
        release = asyncio.Event()

        async def slow(event: RecordedEvent) -> None:
            await release.wait()
            seen.append(event.seq)

        sub = await store.subscribe(slow, name="busy")
        await wait_for(lambda: sub.idle)
        mine = await store.append_many([message(1), message(2)])  # queued, first one held
        theirs = await other.append(message(3))
        await wait_for(lambda: sub._known_head >= theirs.seq)  # heard of while busy
        release.set()
        await wait_for(lambda: seen == [*(r.seq for r in mine), theirs.seq])
        assert store.guardian.ticks == 0


async def test_resume_by_name_across_close_and_reopen(open_store: StoreFactory) -> None:
    seen: list[int] = []
    async with open_store() as store:
        sub = await store.subscribe(lambda e: seen.append(e.seq), name="audit",
                                    checkpoint_every=1000)
        first = await store.append_many(mixed(10))
        await wait_for(lambda: sub.position == first[-1].seq)
    # written while nobody listened
    async with open_store() as store:
        missed = await store.append_many(mixed(7))
    async with open_store() as store:
        sub = await store.subscribe(lambda e: seen.append(e.seq), name="audit")
        assert sub.position == first[-1].seq  # resumed from the checkpoint saved at close
        live = await store.append(message(99))
        await wait_for(lambda: seen[-1:] == [live.seq])
    assert seen == [r.seq for r in first + missed] + [live.seq]


async def test_same_name_twice_in_one_store_is_refused(store: EventStore) -> None:
    await store.subscribe(lambda e: None, name="once")
    with pytest.raises(SubscriptionError, match="once"):
        await store.subscribe(lambda e: None, name="once")
    with pytest.raises(SubscriptionError):
        await store.subscribe("not callable")  # type: ignore[arg-type]


async def test_handler_failing_once_gets_the_event_again_and_everything_after(
    store: EventStore,
) -> None:
    seen: list[int] = []
    failures: list[int] = []

    def flaky(event: RecordedEvent) -> None:
        if event.seq == 3 and not failures:
            failures.append(event.seq)
            raise RuntimeError("webhook timed out")
        seen.append(event.seq)

    sub = await store.subscribe(flaky, name="flaky", **FAST)
    await store.append_many(mixed(6))
    await wait_for(lambda: len(seen) == 6)
    assert seen == [1, 2, 3, 4, 5, 6] and failures == [3]
    assert sub.retries == 1 and sub.status == Status.RUNNING


async def test_always_failing_handler_ends_failed_and_others_keep_going(
    store: EventStore,
) -> None:
    healthy: list[int] = []
    failed_signals: list[tuple[str | None, int]] = []

    def on_failed(sender: Any, subscription: Any, event: RecordedEvent,
                  exception: BaseException) -> None:
        failed_signals.append((subscription.name, event.seq))

    def broken(event: RecordedEvent) -> None:
        if event.seq >= 2:
            raise ValueError("bad handler")

    signals.subscription_failed.connect(on_failed, sender=store)
    try:
        bad = await store.subscribe(broken, name="broken", max_attempts=3, **FAST)
        await store.subscribe(lambda e: healthy.append(e.seq), name="healthy")
        recs = await store.append_many(mixed(5))
        await wait_for(lambda: bad.status == Status.FAILED and len(healthy) == 5)
    finally:
        signals.subscription_failed.disconnect(on_failed, sender=store)
    assert bad.failed_event is not None and bad.failed_event.seq == 2
    assert isinstance(bad.last_error, ValueError) and bad.retries == 3
    assert bad.position == 1
    assert "failed" in bad.describe() and "bad handler" in bad.describe()
    assert failed_signals == [("broken", 2)]
    assert healthy == [r.seq for r in recs]
    assert (await store.guardian.check()) == []  # a failed subscription is left failed
    more = await store.append(message(50))
    await wait_for(lambda: healthy[-1] == more.seq)


async def test_guardian_repairs_cleared_receivers_and_replays_in_order(
    store: EventStore, backend_kind: str
) -> None:
    seen: list[int] = []
    repairs: list[str] = []

    def on_repair(sender: Any, subscription: Any, repair: str, detail: str) -> None:
        repairs.append(repair)

    sub = await store.subscribe(lambda e: seen.append(e.seq), name="watch")
    before = await store.append_many(mixed(3))
    await wait_for(lambda: len(seen) == 3)
    signals.event_appended.receivers.clear()
    missed = [await store.append(e) for e in mixed(10)]
    assert not sub.connected
    # (the backend's commit notification may wake it meanwhile: the repair is still due)
    signals.guardian_repair.connect(on_repair, sender=store)
    try:
        made = await store.guardian.check()
    finally:
        signals.guardian_repair.disconnect(on_repair, sender=store)
    assert "reconnected" in made and "reconnected" in repairs
    await wait_for(lambda: len(seen) == 13)
    assert seen == [r.seq for r in before + missed]
    live = await store.append(message(77))
    await wait_for(lambda: seen[-1] == live.seq)
    assert seen == sorted(set(seen))  # no duplicate either


async def test_guardian_restarts_a_crashed_subscription(store: EventStore) -> None:
    seen: list[int] = []
    sub = await store.subscribe(lambda e: seen.append(e.seq), name="crashy")
    await store.append(message(1))
    await wait_for(lambda: seen == [1])
    calls = {"n": 0}

    async def broken_read(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise RuntimeError("disk on fire")

    # make the next catch-up crash the task (a bug outside the handler)
    store.backend.query = broken_read  # type: ignore[method-assign]
    sub.nudge()
    await wait_for(lambda: sub.status == Status.CRASHED)
    assert not sub.alive and calls["n"] >= 1
    del store.backend.query  # type: ignore[attr-defined]
    await store.append(message(2))
    assert "restarted" in await store.guardian.check()
    await wait_for(lambda: seen == [1, 2])
    assert sub.restarts == 1 and sub.status == Status.RUNNING


async def test_guardian_catches_up_an_idle_subscription_left_behind(
    open_store: StoreFactory,
) -> None:
    seen: list[int] = []
    async with open_store(guardian_interval=3600) as store, open_store() as other:
        sub = await store.subscribe(lambda e: seen.append(e.seq), name="behind")
        await wait_for(lambda: sub.idle)
        # another store on the same log appends: this store sends no signal for it, and
        # the backend's notification of the commit is lost
        lose_commit_notices(store)
        rec = await other.append(message(1))
        if open_store.kind == "postgres":  # a lost listener is tested in test_postgres
            await wait_for(lambda: seen == [rec.seq])  # LISTEN/NOTIFY woke it
        else:
            assert seen == []
            assert "caught_up" in await store.guardian.check()
            await wait_for(lambda: seen == [rec.seq])


async def test_weakly_connected_receiver_loss_does_not_touch_subscriptions(
    store: EventStore,
) -> None:
    seen: list[int] = []
    await store.subscribe(lambda e: seen.append(e.seq))

    class Listener:
        def on_event(self, sender: Any, event: RecordedEvent) -> None:
            pass

    listener = Listener()
    signals.event_appended.connect(listener.on_event, sender=store)  # weak: vanishes
    del listener
    gc.collect()
    await store.append(message(1))
    await wait_for(lambda: seen == [1])


async def test_queue_overflow_falls_back_to_the_log(store: EventStore) -> None:
    seen: list[int] = []
    gate = asyncio.Event()

    async def slow(event: RecordedEvent) -> None:
        await gate.wait()
        seen.append(event.seq)

    sub = await store.subscribe(slow, queue_size=5)
    recs = await store.append_many(mixed(1))
    recs += [await store.append(e) for e in mixed(40)]
    gate.set()
    await wait_for(lambda: len(seen) == 41)
    assert seen == [r.seq for r in recs]
    assert sub.position == recs[-1].seq


async def test_blocked_handler_does_not_slow_appends(store: EventStore) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def blocked(event: RecordedEvent) -> None:
        started.set()
        await gate.wait()

    sub = await store.subscribe(blocked, name="blocked")
    await store.append(message(0))
    await asyncio.wait_for(started.wait(), 5)
    recs = await asyncio.wait_for(
        asyncio.gather(*(store.append(message(i)) for i in range(1000))), 10
    )
    assert len({r.seq for r in recs}) == 1000
    assert sub.position == 0  # still stuck on the first event, appends went through
    gate.set()
    await wait_for(lambda: sub.position == recs[-1].seq)


async def test_close_with_live_subscriptions_leaves_no_task_behind(
    open_store: StoreFactory,
) -> None:
    before = asyncio.all_tasks()
    gate = asyncio.Event()

    async def blocked(event: RecordedEvent) -> None:
        await gate.wait()

    async with open_store(guardian_interval=0.01) as store:
        subs = [await store.subscribe(blocked, name=f"s{i}") for i in range(3)]
        subs.append(await store.subscribe(lambda e: None))
        await store.append_many(mixed(5))
    assert asyncio.all_tasks() - before == set()
    assert all(s.status == Status.STOPPED for s in subs)
    assert store.subscriptions == []


async def test_stop_saves_the_checkpoint(open_store: StoreFactory) -> None:
    async with open_store() as store:
        seen: list[int] = []
        sub = await store.subscribe(lambda e: seen.append(e.seq), name="stopper",
                                    checkpoint_every=10_000, checkpoint_interval=3600)
        await store.append_many(mixed(4))
        await wait_for(lambda: sub.position == 4)
        await sub.stop()
        assert sub.status == Status.STOPPED and store.subscriptions == []
        checkpoint = await store.backend.load_checkpoint("stopper")
        assert checkpoint is not None and checkpoint.position == 4
        await store.append(message(5))
        assert seen == [1, 2, 3, 4]


async def test_guardian_runs_on_its_own_interval(open_store: StoreFactory) -> None:
    async with open_store(guardian_interval=0.01) as store:
        seen: list[int] = []
        sub = await store.subscribe(lambda e: seen.append(e.seq), name="auto")
        await wait_for(lambda: sub.idle)
        sub.disconnect()
        await store.append(message(1))
        await wait_for(lambda: seen == [1])
        # on PostgreSQL the store's own NOTIFY may deliver the event before the guardian's
        # next tick; the tick still finds the lost receiver and reattaches it
        await wait_for(lambda: store.guardian.repairs >= 1)
        assert sub.connected
        await store.append(message(2))
        await wait_for(lambda: seen == [1, 2])


async def test_a_closed_store_stops_listening_to_a_shared_memory_log() -> None:
    from eventstore.backends.memory import named_memory_backend

    name = f"shared-{id(object())}"
    backend = named_memory_backend(name)
    async with EventStore.open(f"memory://{name}") as first:
        async with EventStore.open(f"memory://{name}") as second:
            assert len(backend._listeners) == 2
            await second.append(message(1))
        assert len(backend._listeners) == 1
        assert (await first.append(message(2))).seq == 2
    assert backend._listeners == []
