"""Issue 12, items 7-11: one bad input fails alone, with a clear error, on every backend.

Values a database would refuse are refused before they reach a group (the same rules on
every backend); a group that fails in the database anyway is committed again request by
request, so only the bad one fails; a corrupt stored row is named by its seq; raw errors
(recursion, overflow) never leak; NaN and infinity are refused rather than stored as
null."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import (
    BackendError,
    CorruptEventError,
    Event,
    EventStore,
    InvalidEventError,
    InvalidQueryError,
)
from eventstore.backends.memory import MemoryBackend
from eventstore.backends.sqlite import SQLiteBackend

from ..conftest import StoreFactory


def msg(i: int, **fields: Any) -> Event:
    return Event(type="message_sent", data={"role": "user", "content": f"m{i}"}, **fields)


BAD_FIELDS: list[dict[str, Any]] = [
    {"id": "evt\x00nul"},
    {"conversation_id": "c\x00"},
    {"user_id": "u\x00"},
    {"conversation_id": "c" * 10_000},
    {"user_id": "u\udc80"},  # a lone surrogate
]


def _label(bad: dict[str, Any]) -> str:
    ((name, value),) = bad.items()
    return f"{name}-{len(value)}"


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=_label)
async def test_a_bad_value_among_99_good_fails_alone(store: EventStore,
                                                     bad: dict[str, Any]) -> None:
    events = [msg(i) for i in range(99)]
    poisoned = msg(99, **bad)
    with anyio.fail_after(30):
        results = await asyncio.gather(*(store.append(e) for e in [*events, poisoned]),
                                       return_exceptions=True)
    assert isinstance(results[-1], InvalidEventError)
    assert all(not isinstance(r, BaseException) for r in results[:-1])
    assert await store.count_events() == 99


async def test_a_nul_in_the_type_or_a_call_model_is_refused(store: EventStore) -> None:
    with pytest.raises(InvalidEventError, match="NUL"):
        await store.append(Event(type="x\x00y"))
    with pytest.raises(InvalidEventError, match="model"):
        await store.append(Event(type="llm_call", data={"provider": "p", "model": "m\x00"}))
    assert await store.count_events() == 0


def poison_writer(backend: Any) -> Any:
    """A derived writer that fails any group holding a "poison" event, as a database
    refusing one row would."""

    def check(rows: Sequence[Any]) -> None:
        if any(row.event.type == "poison" for row in rows):
            raise sqlite3.IntegrityError("refused") if isinstance(backend, SQLiteBackend) \
                else RuntimeError("refused")

    if isinstance(backend, MemoryBackend):
        return lambda rows, deltas: check(rows)
    if isinstance(backend, SQLiteBackend):
        return lambda conn, rows, deltas: check(rows)

    async def on_postgres(conn: Any, rows: Sequence[Any], deltas: Any) -> None:
        check(rows)

    return on_postgres


async def test_a_group_the_database_refuses_is_retried_request_by_request(
    store: EventStore,
) -> None:
    writers = getattr(store.backend, "derived_writers", None)
    if writers is None:
        pytest.skip("this backend has no derived writers to inject a failure with")
    writers.append(poison_writer(store.backend))
    events = [msg(i) for i in range(30)]
    with anyio.fail_after(30):
        results = await asyncio.gather(
            *(store.append(e) for e in events[:15]), store.append(Event(type="poison")),
            *(store.append(e) for e in events[15:]), return_exceptions=True)
    assert isinstance(results[15], BackendError)
    assert [r.id for r in results if not isinstance(r, BaseException)] == [e.id for e in events]
    assert [e.id async for e in store.read()] == [e.id for e in events]


async def test_deep_nesting_overflowing_times_and_huge_seqs_are_clear_errors(
    store: EventStore,
) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10_000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidEventError, match="deeply"):
        await store.append(Event(type="deep", data=deep))
    minus5 = timezone(timedelta(hours=-5))
    with pytest.raises(InvalidEventError, match="out of range"):
        await store.append(Event(type="late", occurred_at=datetime.max.replace(tzinfo=minus5)))
    with pytest.raises(InvalidQueryError):
        [e async for e in store.read(from_seq=10**19)]
    with pytest.raises(InvalidQueryError):
        await store.subscribe(lambda e: None, from_seq=2**64)
    assert await store.count_events() == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_nan_and_infinity_are_refused_not_stored_as_null(store: EventStore,
                                                                value: float) -> None:
    with pytest.raises(InvalidEventError, match="JSON cannot represent"):
        await store.append(Event(type="score", data={"scores": [1.0, {"v": value}]}))
    with pytest.raises(InvalidEventError, match="JSON cannot represent"):
        await store.append(Event(type="score", metadata={"v": value}))
    ok = await store.append(Event(type="score", data={"v": 1.5, "d": None}))
    assert [e async for e in store.read()] == [ok]


def corrupt_sqlite_row(path: Path, seq: int) -> None:
    conn = sqlite3.connect(path)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                "AND tbl_name = 'events'").fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')  # what someone editing the file would do
    conn.execute("UPDATE events SET body = substr(body, 1, 20) WHERE seq = ?", (seq,))
    conn.commit()
    conn.close()


async def corrupt_postgres_row(store: EventStore, schema: str, seq: int) -> None:
    import asyncpg

    from ..conftest import PG_URL

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'ALTER TABLE "{schema}".events DISABLE TRIGGER USER')
        await conn.execute(f'UPDATE "{schema}".events SET body = substring(body FROM 1 FOR 20) '
                           "WHERE seq = $1", seq)
    finally:
        await conn.close()


async def test_a_corrupt_row_is_named_by_its_seq(open_store: StoreFactory,
                                                 tmp_path: Path) -> None:
    if open_store.kind not in ("sqlite", "postgres"):
        pytest.skip("this backend keeps no stored bytes a test can damage")
    with anyio.fail_after(30):
        async with open_store() as store:
            written = await store.append_many([msg(i) for i in range(5)])
            if open_store.kind == "sqlite":
                corrupt_sqlite_row(tmp_path / "events.db", 3)
            else:
                await corrupt_postgres_row(store, open_store.pg_schema, 3)
            seen: list[int] = []
            with pytest.raises(CorruptEventError) as raised:
                async for event in store.read(batch_size=1):
                    seen.append(event.seq)
            assert raised.value.seq == 3 and "seq 3" in str(raised.value)
            assert seen == [1, 2]  # everything before it is still readable
            with pytest.raises(CorruptEventError):
                await store.list_events()
            assert [e.seq async for e in store.read(from_seq=4)] == [4, 5]
            with pytest.raises(CorruptEventError):  # a retry of it cannot be matched
                await store.append(written[2])


async def test_a_subscription_that_meets_a_corrupt_row_fails_with_its_seq(
        open_store: StoreFactory, tmp_path: Path) -> None:
    from eventstore import signals
    from eventstore.subscriptions import Status

    if open_store.kind not in ("sqlite", "postgres"):
        pytest.skip("this backend keeps no stored bytes a test can damage")
    with anyio.fail_after(30):
        async with open_store() as store:
            await store.append_many([msg(i) for i in range(5)])
            if open_store.kind == "sqlite":
                corrupt_sqlite_row(tmp_path / "events.db", 3)
            else:
                await corrupt_postgres_row(store, open_store.pg_schema, 3)
            failures: list[BaseException] = []
            failed = anyio.Event()

            def on_failed(sender: object, exception: BaseException, **_: object) -> None:
                failures.append(exception)
                failed.set()

            signals.subscription_failed.connect(on_failed, sender=store, weak=False)
            seen: list[int] = []
            sub = await store.subscribe(lambda e: seen.append(e.seq), name="reader")
            await failed.wait()
            assert sub.status is Status.FAILED
            assert seen == [1, 2]  # what comes before the bad row is delivered
            assert sub.failed_seq == 3 and "seq 3" in sub.describe()
            assert isinstance(failures[0], CorruptEventError) and failures[0].seq == 3
            assert sub.restarts == 0
            await store.guardian.check()
            assert sub.status is Status.FAILED and sub.restarts == 0  # no crash loop
            signals.subscription_failed.disconnect(on_failed, sender=store)
