"""Conformance suite for the core log: runs on every backend through `store` / `open_store`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from eventstore import (
    DuplicateEventError,
    Event,
    EventStore,
    InvalidCursorError,
    InvalidEventError,
    InvalidQueryError,
    PIIRedactor,
    RecordedEvent,
    RedactionError,
    StoreClosedError,
    UnsupportedURLError,
    signals,
)

from .conftest import StoreFactory, wait_for


def msg(conv: str = "c1", user: str = "u1", content: str = "hi", **kw: Any) -> Event:
    return Event(type="message_sent", conversation_id=conv, user_id=user,
                 data={"role": "user", "content": content}, **kw)


async def all_events(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read()]


# --- appending ------------------------------------------------------------------------


async def test_append_assigns_seq_id_and_utc_commit_time(store: EventStore) -> None:
    before = datetime.now(UTC)
    first = await store.append(msg(content="one"))
    second = await store.append(msg(content="two"))
    assert (first.seq, second.seq) == (1, 2)
    assert first.data == {"role": "user", "content": "one"}
    assert first.conversation_id == "c1" and first.user_id == "u1"
    assert first.recorded_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= first.recorded_at <= second.recorded_at
    assert len(first.id) == 36 and first.id < second.id  # time-ordered UUIDv7
    assert await all_events(store) == [first, second]


async def test_occurred_at_is_normalised_to_utc(store: EventStore) -> None:
    local = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    rec = await store.append(msg(occurred_at=local))
    assert rec.occurred_at == local and rec.occurred_at.utcoffset() == timedelta(0)
    (stored,) = await all_events(store)
    assert stored.occurred_at.hour == 10


async def test_append_many_is_all_or_nothing(store: EventStore) -> None:
    existing = await store.append(msg(content="kept"))
    conflicting = msg(content="other content", id=existing.id)
    with pytest.raises(DuplicateEventError):
        await store.append_many([msg(content="a"), conflicting, msg(content="b")])
    with pytest.raises(InvalidEventError):
        await store.append_many([msg(content="a"), Event(type="message_sent", data={})])
    assert await store.count_events() == 1
    recs = await store.append_many([msg(content=str(i)) for i in range(5)])
    assert [r.seq for r in recs] == [2, 3, 4, 5, 6]
    assert await store.append_many([]) == []


async def test_same_id_same_content_returns_stored_event(store: EventStore) -> None:
    seen: list[RecordedEvent] = []

    def on_event(sender: Any, event: RecordedEvent) -> None:
        seen.append(event)

    signals.event_appended.connect(on_event, sender=store)
    try:
        event = msg()
        first = await store.append(event)
        again = await store.append(event)
        assert again == first
        assert await store.count_events() == 1
        assert seen == [first]  # the retry committed nothing, so it signals nothing
    finally:
        signals.event_appended.disconnect(on_event, sender=store)


async def test_same_id_other_content_is_an_error_and_writes_nothing(store: EventStore) -> None:
    first = await store.append(msg(content="original"))
    with pytest.raises(DuplicateEventError) as info:
        await store.append(msg(content="changed", id=first.id))
    assert first.id in str(info.value)
    assert [e.data["content"] for e in await all_events(store)] == ["original"]


async def test_concurrent_duplicates_resolve_to_one_event(store: EventStore) -> None:
    event = msg()
    results = await asyncio.gather(*(store.append(event) for _ in range(20)))
    assert {r.seq for r in results} == {1}
    assert await store.count_events() == 1


async def test_duplicate_in_one_batch_with_other_content_fails_the_batch(
    store: EventStore,
) -> None:
    event = msg(content="x")
    with pytest.raises(DuplicateEventError):
        await store.append_many([event, msg(content="y", id=event.id)])
    assert await store.count_events() == 0


async def test_group_commit_isolates_each_callers_error(store: EventStore) -> None:
    stored = await store.append(msg(content="stored"))
    good = [msg(content=f"good {i}") for i in range(50)]
    bad = msg(content="conflict", id=stored.id)
    results = await asyncio.gather(
        *(store.append(e) for e in good[:25]), store.append(bad),
        *(store.append(e) for e in good[25:]), return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], DuplicateEventError)
    events = await all_events(store)
    assert [e.seq for e in events] == list(range(1, 52))  # no gap left by the failed one
    assert {e.data["content"] for e in events[1:]} == {f"good {i}" for i in range(50)}


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "message_sent", "data": {"role": "user"}},  # missing content
        {"type": "message_sent", "data": {"role": "user", "content": 5}},
        {"type": "cost_recorded", "data": {"provider": "openai"}},
        {"type": "", "data": {}},
        {"type": 7, "data": {}},
        {"type": "custom", "data": "not a dict"},
        {"type": "custom", "data": {1: "non-string key"}},
        {"type": "custom", "data": {"x": object()}},
        {"type": "custom", "data": {"x": [1, {"y": 2 + 3j}]}},
        {"type": "custom", "data": {}, "conversation_id": 12},
        {"type": "custom", "data": {}, "occurred_at": datetime(2026, 1, 1)},
        {"type": "custom", "data": {}, "metadata": []},
        {"type": "custom", "data": {}, "id": ""},
    ],
)
async def test_malformed_events_are_refused_and_nothing_is_written(
    store: EventStore, bad: dict[str, Any]
) -> None:
    with pytest.raises(InvalidEventError):
        await store.append(Event(**bad))
    assert await store.count_events() == 0


async def test_append_refuses_non_events(store: EventStore) -> None:
    with pytest.raises(InvalidEventError, match="Event"):
        await store.append({"type": "message_sent"})  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError):
        await store.append_many(msg())  # type: ignore[arg-type]


async def test_custom_events_and_track(store: EventStore) -> None:
    rec = await store.track("user_feedback", data={"rating": 5}, conversation_id="c1",
                            user_id="u1", metadata={"prompt_name": "greet"})
    assert rec.type == "user_feedback" and rec.data == {"rating": 5}
    assert rec.metadata == {"prompt_name": "greet"}
    page = await store.list_events(type="user_feedback")
    assert page.events == [rec]


async def test_decimals_and_datetimes_in_data_read_back_as_strings(store: EventStore) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rec = await store.track("custom", data={"cost": Decimal("0.0000125"), "at": moment})
    assert rec.data == {"cost": "0.0000125", "at": "2026-01-02T03:04:05Z"}
    assert (await all_events(store)) == [rec]


# --- reading --------------------------------------------------------------------------


async def seed(store: EventStore) -> list[RecordedEvent]:
    events = []
    for i in range(30):
        conv, user = f"c{i % 3}", f"u{i % 2}"
        if i % 5 == 0:
            ev = Event(type="policy_violation", conversation_id=conv, user_id=user,
                       data={"policy": "pii", "reason": "email"})
        else:
            ev = msg(conv, user, content=f"m{i}")
        events.append(await store.append(ev))
    return events


async def walk(store: EventStore, limit: int, **filters: Any) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    cursor = None
    while True:
        page = await store.list_events(limit=limit, cursor=cursor, **filters)
        assert len(page.events) <= limit
        out.extend(page.events)
        if page.next_cursor is None:
            return out
        assert len(page.events) == limit
        cursor = page.next_cursor


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"conversation_id": "c1"},
        {"user_id": "u0"},
        {"type": "policy_violation"},
        {"type": {"policy_violation", "message_sent"}},
        {"conversation_id": "c2", "user_id": "u1"},
        {"conversation_id": "c0", "type": "message_sent"},
        {"user_id": "u1", "type": "policy_violation"},
        {"conversation_id": "nope"},
    ],
)
async def test_filters_combine_with_and_and_pages_cover_everything(
    store: EventStore, filters: dict[str, Any]
) -> None:
    events = await seed(store)
    types = filters.get("type")
    if isinstance(types, str):
        types = {types}
    expected = [
        e for e in events
        if ("conversation_id" not in filters or e.conversation_id == filters["conversation_id"])
        and ("user_id" not in filters or e.user_id == filters["user_id"])
        and (types is None or e.type in types)
    ]
    for limit in (1, 4, 100):
        assert await walk(store, limit, **filters) == expected
    assert await store.count_events(**filters) == len(expected)


async def test_time_bounds_are_inclusive_on_recorded_at(store: EventStore) -> None:
    events = []
    for i in range(6):
        events.append(await store.append(msg(content=str(i))))
    # commit times are non-decreasing; pick bounds that sit exactly on recorded values
    lo, hi = events[1].recorded_at, events[4].recorded_at
    expected = [e for e in events if lo <= e.recorded_at <= hi]
    assert events[1] in expected and events[4] in expected
    assert await walk(store, 2, after=lo, before=hi) == expected
    assert await store.count_events(after=lo, before=hi) == len(expected)
    assert await walk(store, 10, after=hi + timedelta(days=1)) == []
    assert await walk(store, 10, before=events[0].recorded_at - timedelta(microseconds=1)) == []


async def test_next_cursor_is_none_exactly_on_the_last_page(store: EventStore) -> None:
    for i in range(4):
        await store.append(msg(content=str(i)))
    first = await store.list_events(limit=2)
    assert first.next_cursor is not None
    second = await store.list_events(limit=2, cursor=first.next_cursor)
    assert len(second.events) == 2 and second.next_cursor is None
    assert (await store.list_events(limit=4)).next_cursor is None


async def test_cursor_keeps_working_after_new_appends(store: EventStore) -> None:
    for i in range(3):
        await store.append(msg(content=str(i)))
    page = await store.list_events(limit=2)
    assert page.next_cursor is not None
    late = [await store.append(msg(content=f"late {i}")) for i in range(2)]
    rest = await store.list_events(limit=10, cursor=page.next_cursor)
    assert [e.data["content"] for e in rest.events] == ["2", "late 0", "late 1"]
    assert rest.events[-2:] == late


async def test_cursor_is_url_safe_and_bound_to_its_filters(store: EventStore) -> None:
    await seed(store)
    page = await store.list_events(conversation_id="c1", limit=2)
    cursor = page.next_cursor
    assert cursor is not None
    assert all(ch.isalnum() or ch in "-_" for ch in cursor)
    for other in ({}, {"conversation_id": "c2"}, {"conversation_id": "c1", "user_id": "u1"},
                  {"conversation_id": "c1", "type": "message_sent"}):
        with pytest.raises(InvalidCursorError):
            await store.list_events(cursor=cursor, **other)


async def test_tampered_and_malformed_cursors_are_refused(store: EventStore) -> None:
    await seed(store)
    cursor = (await store.list_events(limit=2)).next_cursor
    assert cursor is not None
    flipped = [cursor[:i] + ("A" if cursor[i] != "A" else "B") + cursor[i + 1:]
               for i in range(len(cursor))]
    for bad in [*flipped, cursor[:-1], cursor + "A", "", "!!!", "a" * 500, "e30"]:
        with pytest.raises(InvalidCursorError):
            await store.list_events(limit=2, cursor=bad)
    with pytest.raises(InvalidCursorError):
        await store.list_events(cursor=123)  # type: ignore[arg-type]


async def test_a_cursor_from_another_store_is_refused(
    store: EventStore, tmp_path: Any
) -> None:
    await seed(store)
    async with EventStore.open("memory://") as other:
        await seed(other)
        foreign = (await other.list_events(limit=2)).next_cursor
    assert foreign is not None
    with pytest.raises(InvalidCursorError):
        await store.list_events(limit=2, cursor=foreign)


async def test_cursors_survive_reopening_the_store(open_store: StoreFactory) -> None:
    async with open_store() as store:
        for i in range(5):
            await store.append(msg(content=str(i)))
        cursor = (await store.list_events(limit=2)).next_cursor
    async with open_store() as again:
        page = await again.list_events(limit=10, cursor=cursor)
        assert [e.data["content"] for e in page.events] == ["2", "3", "4"]


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": 0}, {"limit": -1}, {"limit": 10_001}, {"limit": "10"}, {"limit": True},
        {"conversation_id": 5}, {"user_id": b"u1"}, {"type": 3}, {"type": set()},
        {"type": {"a", 1}}, {"after": "2026-01-01"}, {"before": datetime(2026, 1, 1)},
    ],
)
async def test_bad_filters_raise_invalid_query(
    store: EventStore, filters: dict[str, Any]
) -> None:
    with pytest.raises(InvalidQueryError):
        await store.list_events(**filters)
    if "limit" not in filters:
        with pytest.raises(InvalidQueryError):
            await store.count_events(**filters)


async def test_read_from_seq_is_inclusive_and_pages_inside(store: EventStore) -> None:
    events = await store.append_many([msg(content=str(i)) for i in range(25)])
    got = [e async for e in store.read(from_seq=10, batch_size=4)]
    assert got == events[9:]
    assert [e async for e in store.read(batch_size=7)] == events
    assert [e async for e in store.read(from_seq=26)] == []
    with pytest.raises(InvalidQueryError):
        async for _ in store.read(from_seq=-1):
            pass


async def test_read_can_stop_early(store: EventStore) -> None:
    await store.append_many([msg(content=str(i)) for i in range(30)])
    seen = []
    async for event in store.read(batch_size=5):
        seen.append(event.seq)
        if len(seen) == 7:
            break
    assert seen == list(range(1, 8))
    assert await store.head() == 30


# --- redaction ------------------------------------------------------------------------


def scrub(event: Event) -> Event:
    content = event.data.get("content")
    if isinstance(content, str):
        return msgspec.structs.replace(event, data={**event.data,
                                                    "content": content.replace("secret", "***")})
    return event


async def tag(event: Event) -> Event:
    await asyncio.sleep(0)
    return msgspec.structs.replace(event, metadata={**event.metadata, "redacted": True})


async def test_redacted_form_is_stored_returned_and_signalled(
    open_store: StoreFactory,
) -> None:
    seen: list[RecordedEvent] = []
    async with open_store(redact=[scrub, tag]) as store:
        def on_event(sender: Any, event: RecordedEvent) -> None:
            seen.append(event)

        signals.event_appended.connect(on_event, sender=store)
        try:
            rec = await store.append(msg(content="my secret is 42"))
        finally:
            signals.event_appended.disconnect(on_event, sender=store)
        assert rec.data["content"] == "my *** is 42" and rec.metadata == {"redacted": True}
        assert seen == [rec]
        assert await all_events(store) == [rec]
        # a retry of the raw event is recognised as the same event after redaction
        assert await store.append(msg(content="my secret is 42", id=rec.id,
                                      occurred_at=rec.occurred_at)) == rec


@pytest.mark.parametrize(
    "hook",
    [
        lambda ev: 1 / 0,
        lambda ev: {"not": "an event"},
        lambda ev: msgspec.structs.replace(ev, id="changed"),
        lambda ev: msgspec.structs.replace(ev, data={"role": "user"}),  # now invalid
    ],
)
async def test_failing_redact_hook_fails_closed(open_store: StoreFactory, hook: Any) -> None:
    async with open_store(redact=[scrub, hook]) as store:
        with pytest.raises(RedactionError):
            await store.append(msg(content="secret"))
        with pytest.raises(RedactionError):
            await store.append_many([msg(content="fine"), msg(content="secret")])
        assert await store.count_events() == 0


def drop_content_in_place(event: Event) -> Event:
    event.data.pop("content", None)  # a careless hook: edits the event, hands it back
    return event


@pytest.mark.parametrize("chain", [[drop_content_in_place],
                                   [PIIRedactor(), drop_content_in_place]],
                         ids=["alone", "after-pii"])
async def test_a_hook_that_edits_in_place_is_still_validated(
    open_store: StoreFactory, chain: list[Any]
) -> None:
    async with open_store(redact=chain) as store:
        with pytest.raises(RedactionError, match="invalid event"):
            await store.append(msg(content="nothing personal"))
        assert await store.count_events() == 0


async def test_async_hook_that_raises_fails_closed(open_store: StoreFactory) -> None:
    async def broken(event: Event) -> Event:
        raise RuntimeError("vault unreachable")

    async with open_store(redact=[broken]) as store:
        with pytest.raises(RedactionError, match="vault unreachable"):
            await store.append(msg())
        assert await store.count_events() == 0


# --- signals --------------------------------------------------------------------------


async def test_event_appended_fires_after_commit_for_sync_and_async_receivers(
    store: EventStore,
) -> None:
    sync_seen: list[int] = []
    async_seen: list[int] = []
    counts_at_delivery: list[int] = []
    done = asyncio.Event()

    def on_sync(sender: Any, event: RecordedEvent) -> None:
        sync_seen.append(event.seq)

    async def on_async(sender: Any, event: RecordedEvent) -> None:
        counts_at_delivery.append(await sender.count_events())  # committed already
        async_seen.append(event.seq)
        if len(async_seen) == 10:
            done.set()

    signals.event_appended.connect(on_sync, sender=store)
    signals.event_appended.connect(on_async, sender=store)
    try:
        await asyncio.gather(*(store.append(msg(content=str(i))) for i in range(5)))
        await store.append_many([msg(content=f"b{i}") for i in range(5)])
        await asyncio.wait_for(done.wait(), 5)
    finally:
        signals.event_appended.disconnect(on_sync, sender=store)
        signals.event_appended.disconnect(on_async, sender=store)
    assert sync_seen == list(range(1, 11))
    assert async_seen == list(range(1, 11))
    assert all(count >= seq for count, seq in zip(counts_at_delivery, async_seen, strict=True))


async def test_raising_receivers_never_fail_an_append_nor_each_other(
    store: EventStore,
) -> None:
    good: list[int] = []

    def bad_sync(sender: Any, event: RecordedEvent) -> None:
        raise RuntimeError("receiver bug")

    async def bad_async(sender: Any, event: RecordedEvent) -> None:
        raise RuntimeError("async receiver bug")

    def on_good(sender: Any, event: RecordedEvent) -> None:
        good.append(event.seq)

    for receiver in (bad_sync, bad_async, on_good):
        signals.event_appended.connect(receiver, sender=store)
    try:
        recs = [await store.append(msg(content=str(i))) for i in range(3)]
        await store.dispatcher.drain()
    finally:
        for receiver in (bad_sync, bad_async, on_good):
            signals.event_appended.disconnect(receiver, sender=store)
    assert [r.seq for r in recs] == [1, 2, 3] and good == [1, 2, 3]
    assert store.dispatcher.errors >= 6


async def test_failed_appends_send_no_event_signal(open_store: StoreFactory) -> None:
    seen: list[RecordedEvent] = []

    def on_event(sender: Any, event: RecordedEvent) -> None:
        seen.append(event)

    async with open_store(redact=[lambda ev: 1 / 0]) as store:
        signals.event_appended.connect(on_event, sender=store)
        try:
            with pytest.raises(RedactionError):
                await store.append(msg())
        finally:
            signals.event_appended.disconnect(on_event, sender=store)
    assert seen == []


async def test_operation_signals_carry_name_and_duration(store: EventStore) -> None:
    spans: list[tuple[str, str, float | None]] = []

    def on_start(sender: Any, operation: str) -> None:
        spans.append(("start", operation, None))

    def on_stop(sender: Any, operation: str, duration: float) -> None:
        spans.append(("stop", operation, duration))

    def on_exception(sender: Any, operation: str, duration: float,
                     exception: BaseException) -> None:
        spans.append(("exception", f"{operation}:{type(exception).__name__}", duration))

    pairs = [(signals.operation_start, on_start), (signals.operation_stop, on_stop),
             (signals.operation_exception, on_exception)]
    for signal, receiver in pairs:
        signal.connect(receiver, sender=store)
    try:
        await store.append(msg())
        await store.list_events(limit=5)
        await store.count_events()
        async for _ in store.read():
            pass
        with pytest.raises(InvalidQueryError):
            await store.list_events(limit=0)
    finally:
        for signal, receiver in pairs:
            signal.disconnect(receiver, sender=store)
    names = [(kind, op) for kind, op, _ in spans]
    assert names == [
        ("start", "append"), ("stop", "append"),
        ("start", "list_events"), ("stop", "list_events"),
        ("start", "count_events"), ("stop", "count_events"),
        ("start", "read"), ("stop", "read"),
        ("start", "list_events"), ("exception", "list_events:InvalidQueryError"),
    ]
    assert all(d is not None and d >= 0 for kind, _, d in spans if kind != "start")


async def test_signals_are_scoped_by_sender(open_store: StoreFactory) -> None:
    seen: list[str] = []
    async with open_store() as one, EventStore.open("memory://") as two:
        def on_one(sender: Any, event: RecordedEvent) -> None:
            seen.append("one")

        signals.event_appended.connect(on_one, sender=one)
        try:
            await two.append(msg())
            await one.append(msg())
        finally:
            signals.event_appended.disconnect(on_one, sender=one)
    assert seen == ["one"]


# --- lifecycle ------------------------------------------------------------------------


async def test_closed_store_refuses_work(open_store: StoreFactory) -> None:
    store = open_store()
    with pytest.raises(StoreClosedError):
        await store.append(msg())
    async with store:
        await store.append(msg())
    with pytest.raises(StoreClosedError):
        await store.append(msg())
    with pytest.raises(StoreClosedError):
        await store.list_events()


async def test_appends_in_flight_at_close_are_committed(open_store: StoreFactory) -> None:
    async with open_store() as store:
        tasks = [asyncio.ensure_future(store.append(msg(content=str(i)))) for i in range(200)]
        await asyncio.sleep(0)  # let them queue
        await store.close()
        done = [t.result() for t in tasks]
    async with open_store() as again:
        if open_store.kind != "memory" or open_store.url != "memory://":
            assert await again.count_events() == len(done) == 200


async def test_data_survives_reopen(open_store: StoreFactory) -> None:
    async with open_store() as store:
        recs = await store.append_many([msg(content=str(i)) for i in range(10)])
    async with open_store() as again:
        assert await all_events(again) == recs
        more = await again.append(msg(content="after"))
        assert more.seq == 11


def test_unknown_url_scheme_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedURLError, match="memory://"):
        EventStore.open("mysql://localhost/db")
    with pytest.raises(UnsupportedURLError):
        EventStore.open("sqlite://")
    with pytest.raises(UnsupportedURLError):
        EventStore.open(42)  # type: ignore[arg-type]


async def test_wait_for_helper_times_out() -> None:
    with pytest.raises(AssertionError):
        await wait_for(lambda: False, within=0.05)
