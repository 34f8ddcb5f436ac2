"""Every SQL statement the SQLite and PostgreSQL backends run to append, to count and to
answer cost questions has a plan that neither scans a table nor walks a whole index, on
a log of a few thousand rows (so a plan that grows with the log is caught here, not at a
million events in production).

The statements are the ones the backends really ran (traced through `backend.trace`),
then each is explained on its own: EXPLAIN QUERY PLAN on SQLite; EXPLAIN (FORMAT JSON)
on PostgreSQL with sequential scans disabled, which makes the planner use an index when
one can serve (on tables this small it would rightly prefer to read them whole).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import Event, EventStore
from eventstore.testing import sample_events

from ..conftest import PG_URL, drop_pg_schema, require_pg

COUNTS: list[dict[str, Any]] = [
    {}, {"type": "message_sent"}, {"type": {"message_sent", "cost_recorded"}},
    {"user_id": "u1"}, {"conversation_id": "c2"}, {"user_id": "u1", "type": "llm_call"},
]


def cost_questions(t0: Any) -> list[dict[str, Any]]:
    return [
        {}, {"user_id": "u1"}, {"conversation_id": "c1"}, {"model": "m1"},
        {"provider": "openai"}, {"tag": "b"}, {"user_id": "u0", "model": "m0"},
        {"after": t0 + timedelta(days=2)}, {"before": t0 + timedelta(days=5, hours=3)},
        {"after": t0 + timedelta(hours=30), "before": t0 + timedelta(days=9), "tag": "a"},
    ]


def fresh(events: list[Event]) -> list[Event]:
    """The same events under new ids (to grow the log with the sample's shape)."""
    return [Event(type=e.type, data=e.data, conversation_id=e.conversation_id,
                  user_id=e.user_id, metadata=e.metadata, occurred_at=e.occurred_at)
            for e in events]


async def exercise(store: EventStore, other: EventStore | None = None) -> None:
    """What the plan tests trace: appends (new, retried, conflicting, with and without
    calls; with `other`, one after another store committed, so the writer reads the
    tree's frontier back), counts, cost questions, tree heads and proofs."""
    sample = sample_events(30)
    batch = fresh(sample)
    await store.append_many(batch)
    await store.append(batch[0])  # an idempotent retry
    if other is not None:
        await other.append_many(fresh(sample))
    await store.append(Event(type="message_sent", data={"role": "user", "content": "x"}))
    for filters in COUNTS:
        await store.count_events(**filters)
    for filters in cost_questions(sample[0].occurred_at):
        await store.sum_cost(**filters)
    head = await store.tree_head()
    for seq in (1, 7, head.size // 2, head.size):
        await store.prove(seq)
    for old in (1, 5, 100, head.size // 3, head.size - 1):
        await store.prove_consistency(old)


async def grow(store: EventStore, n: int = 3000) -> None:
    sample = sample_events(30)
    for _ in range(n // len(sample)):
        await store.append_many(fresh(sample))


def unique(statements: list[str]) -> Iterator[str]:
    seen: set[str] = set()
    for sql in statements:
        if sql not in seen:
            seen.add(sql)
            yield sql


async def test_sqlite_statements_search_never_scan(tmp_path: Path) -> None:
    db = tmp_path / "plans.db"
    statements: list[str] = []
    with anyio.fail_after(60):
        async with EventStore.open(f"sqlite:///{db}") as store, \
                EventStore.open(f"sqlite:///{db}") as other:
            await grow(store)
            await store.backend.trace(statements.append)  # type: ignore[attr-defined]
            await exercise(store, other)
            await store.backend.trace(None)  # type: ignore[attr-defined]
    conn = sqlite3.connect(db)
    tables = {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    explained, bad = 0, []
    for sql in unique(statements):
        if sql.split(None, 1)[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
            continue
        explained += 1
        for *_, detail in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
            # a scan of a stored table or its index, not of a statement's own VALUES
            words = detail.split()
            if words[0] == "SCAN" and (words[1] in tables or "INDEX" in words):
                bad.append(f"{detail}: {sql[:300]}")
    conn.close()
    assert explained >= 20  # the trace saw the statements it is meant to check
    assert not bad, "\n".join(bad)


def _scans(node: dict[str, Any], parent: str | None = None) -> Iterator[str]:
    kind = node["Node Type"]
    relation = node.get("Relation Name", node.get("Index Name", ""))
    if kind == "Seq Scan":
        yield f"Seq Scan on {relation}"
    # An index walked without a condition reads all of it, unless a Limit stops it
    # (the head: the last entry of the primary key).
    if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") \
            and "Index Cond" not in node and parent != "Limit":
        yield f"{kind} of the whole {node.get('Index Name')}"
    for child in node.get("Plans", []):
        yield from _scans(child, kind)


async def test_postgres_statements_search_never_scan() -> None:
    require_pg()
    import asyncpg

    schema = f"es_plans_{uuid.uuid4().hex[:12]}"
    logged: list[tuple[str, tuple[Any, ...]]] = []
    try:
        with anyio.fail_after(60):
            async with EventStore.open(PG_URL, schema=schema) as store, \
                    EventStore.open(PG_URL, schema=schema) as other:
                await grow(store)
                await store.backend.trace(  # type: ignore[attr-defined]
                    lambda q: logged.append((q.query, tuple(q.args))))
                await exercise(store, other)
                await store.backend.trace(None)  # type: ignore[attr-defined]
            conn = await asyncpg.connect(PG_URL)
            try:
                explained, bad = 0, []
                await conn.execute(f'ANALYZE "{schema}".events')
                for sql, args in {repr(entry): entry for entry in logged}.values():
                    parts = [p.strip() for p in sql.split(";")] if not args else [sql]
                    for part in parts:
                        head = part.split(None, 1)[0].upper() if part else ""
                        if head not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
                            continue
                        if schema not in part:
                            continue  # asyncpg's own introspection of the catalog
                        explained += 1
                        async with conn.transaction():
                            await conn.execute("SET LOCAL enable_seqscan = off")
                            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                            (plan,) = json.loads(await conn.fetchval(
                                f"EXPLAIN (FORMAT JSON) {part}", *args))
                        bad.extend(f"{scan}: {part[:300]}" for scan in _scans(plan["Plan"]))
            finally:
                await conn.close()
        assert explained >= 15
        assert not bad, "\n".join(bad)
    finally:
        await drop_pg_schema(schema)


@pytest.mark.parametrize("names", [1, 3, 600])
async def test_sqlite_many_type_names_are_one_query(tmp_path: Path, names: int) -> None:
    async with EventStore.open(f"sqlite:///{tmp_path / 'types.db'}") as store:
        await store.append_many(sample_events(12))
        types = {f"t{i}" for i in range(names - 1)} | {"message_sent"}
        page = await store.list_events(type=types, limit=2)
        assert [e.type for e in page.events] == ["message_sent"] * 2
        rest = await store.list_events(type=types, limit=10, cursor=page.next_cursor)
        assert len(page.events + rest.events) == await store.count_events(type=types) == 4


PAGES: list[tuple[dict[str, Any], str]] = [
    ({"conversation_id": "c1", "type": "message_sent"}, "events_by_conversation"),
    ({"conversation_id": "c1", "type": {"message_sent", "cost_recorded"}},
     "events_by_conversation"),
    ({"conversation_id": "c1", "type": {f"t{i}" for i in range(100)}},
     "events_by_conversation"),
    ({"conversation_id": "c1", "user_id": "u1"}, "events_by_conversation"),
    ({"conversation_id": "c1", "user_id": "u1", "type": "cost_recorded"},
     "events_by_conversation"),
    ({"user_id": "u1", "type": "cost_recorded"}, "events_by_user"),
    ({"user_id": "u1", "type": {"message_sent", "cost_recorded"}}, "events_by_user"),
    ({"type": "cost_recorded"}, "events_by_type"),
]


@pytest.mark.parametrize(("filters", "index"), PAGES)
async def test_sqlite_pages_read_the_narrowest_filters_index(
        tmp_path: Path, filters: dict[str, Any], index: str) -> None:
    # A conversation holds fewer events than its user, a user fewer than a type (one
    # type can be most of the log): the page must walk that index, not the type's.
    db = tmp_path / "pages.db"
    statements: list[str] = []
    with anyio.fail_after(60):
        async with EventStore.open(f"sqlite:///{db}") as store:
            await grow(store, 600)
            await store.backend.trace(statements.append)  # type: ignore[attr-defined]
            await store.list_events(**filters, limit=5)
            await store.count_events(**filters, after=sample_events(1)[0].occurred_at)
            await store.backend.trace(None)  # type: ignore[attr-defined]
    conn = sqlite3.connect(db)
    # the page and the count (a time bound makes the count read events, not the counts
    # table), not the lookups that turn its time bound into a seq range
    reads = [sql for sql in unique(statements)  # traced with their values in place
             if " FROM events WHERE " in sql and "seq > " in sql and "recorded_at" not in sql]
    assert len(reads) >= 2
    for sql in reads:
        used = [detail for *_, detail in conn.execute(f"EXPLAIN QUERY PLAN {sql}")
                if " USING " in detail]
        assert used and all(f"INDEX {index} " in d for d in used), (sql, used)
    conn.close()
