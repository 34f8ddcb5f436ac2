"""Append and read throughput on every backend, against raw sqlite3 on the same schema.

    python benchmarks/append.py [--events 20000] [--url postgresql://...] [--repeat 3]

Phases, each over --events events (1 KB-ish chat messages over 100 conversations):
- batch: append_many() of 1000 events at a time, one after another;
- concurrent single: 1000 tasks each awaiting its own append() (group commit turns them
  into a few transactions), repeated until --events are written;
- full read: `async for e in store.read()` over the whole log (decoded RecordedEvents).

Columns: memory (the store's own cost, no I/O), SQLite, jsonl (day files in a fresh
directory), PostgreSQL (a throwaway schema, dropped afterwards; skipped with a note when no
server answers), and two baselines run in the same process:
- raw sqlite3: the very rows the SQLite store wrote, inserted with `executemany` in
  transactions of 1000 into a fresh file with the same schema, indexes and pragmas, and
  read back with a plain SELECT (no decoding). It is the physical limit for SQLite;
  the `store/raw` line is the share of it the store keeps.
- raw asyncpg: the very rows the PostgreSQL store wrote, copied with binary COPY in
  transactions of 1000 into a fresh schema with the same tables and indexes (the store's
  own write path is COPY too), and read back with a plain SELECT: PostgreSQL's limit.
- eventsourcing (when installed: `python -m pip install -e '.[bench]'`): its
  Application on its SQLite persistence module, and on its PostgreSQL one (psycopg 3) in
  a throwaway schema, saving the same messages as aggregate events, 1000 per save, and
  reading them back through its notification log and mapper. It has no async API, so
  "concurrent single" does not apply to it.

Ratios: `SQLite/raw` and `PG/raw` (the share of the physical limit the store keeps), and
`SQLite/es`, `PG/es` (the store against eventsourcing on the same database).

Each figure is the best of --repeat runs (fresh files each time), which filters out a
machine's background noise rather than averaging it in.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pg_schema import DEFAULT_URL, drop_schema, throwaway_schema

from eventstore import Event, EventStore

BATCH = 1_000
CONCURRENT = 1_000
PHASES = ("batch append_many(1000)", "1000 concurrent single appends", "full read()")


def event(i: int) -> Event:
    return Event(type="message_sent", conversation_id=f"c{i % 100}", user_id=f"u{i % 10}",
                 data={"role": "user", "content": f"message {i} " + "x" * 80})


async def measure(url: str, events: int, **options: Any) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with EventStore.open(url, **options) as store:
        start = time.perf_counter()
        for offset in range(0, events, BATCH):
            await store.append_many([event(i) for i in range(offset, offset + BATCH)])
        figures[PHASES[0]] = events / (time.perf_counter() - start)

        start = time.perf_counter()
        for offset in range(events, 2 * events, CONCURRENT):
            await asyncio.gather(*(store.append(event(i))
                                   for i in range(offset, offset + CONCURRENT)))
        figures[PHASES[1]] = events / (time.perf_counter() - start)

        start = time.perf_counter()
        count = 0
        async for _ in store.read():
            count += 1
        assert count == 2 * events, count
        figures[PHASES[2]] = count / (time.perf_counter() - start)
    return figures


async def sqlite_and_raw(tmp: Path, events: int) -> tuple[dict[str, float], dict[str, float]]:
    """The SQLite store, then raw sqlite3 writing the same rows into the same schema."""
    source = tmp / f"store-{uuid.uuid4().hex}.db"
    store = await measure(f"sqlite:///{source}", events)

    target = tmp / f"raw-{uuid.uuid4().hex}.db"
    async with EventStore.open(f"sqlite:///{target}"):
        pass  # the store creates the schema, its indexes and the WAL file header
    with sqlite3.connect(source) as conn:
        rows = conn.execute(
            "SELECT seq, id, type, conversation_id, user_id, recorded_at, digest, body "
            "FROM events ORDER BY seq").fetchall()
    conn.close()
    raw: dict[str, float] = {}
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # the store's default
        start = time.perf_counter()
        for offset in range(0, events, BATCH):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (seq, id, type, conversation_id, user_id, recorded_at,"
                " digest, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows[offset:offset + BATCH])
            conn.execute("COMMIT")
        raw[PHASES[0]] = events / (time.perf_counter() - start)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (seq, id, type, conversation_id, user_id, recorded_at,"
            " digest, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[events:])
        conn.execute("COMMIT")

        start = time.perf_counter()
        cursor = conn.execute("SELECT seq, body FROM events ORDER BY seq")
        count = 0
        while chunk := cursor.fetchmany(1_000):
            count += len(chunk)
        raw[PHASES[2]] = count / (time.perf_counter() - start)
    finally:
        conn.close()
    return store, raw


@functools.cache
def _conversation_aggregate() -> Any:
    """eventsourcing's aggregate class, defined once: it registers each class by topic."""
    from eventsourcing.domain import Aggregate
    from eventsourcing.domain import event as es_event

    class Conversation(Aggregate):
        @es_event("Created")
        def __init__(self, name: str) -> None:
            self.name = name

        @es_event("MessageSent")
        def send(self, role: str, content: str, user_id: str) -> None:
            pass

    return Conversation


def eventsourcing_peer(tmp: Path, events: int,
                       env: dict[str, str] | None = None) -> dict[str, float] | str:
    try:
        from eventsourcing.application import Application
    except ImportError:
        return "not installed (python -m pip install -e '.[bench]')"
    Conversation = _conversation_aggregate()

    try:
        app = Application(env=env or {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(tmp / f"es-{uuid.uuid4().hex}.db")})
    except Exception as exc:  # e.g. psycopg missing for its PostgreSQL module
        return f"cannot start ({exc!r})"
    conversations = [Conversation(name=f"c{i}") for i in range(100)]
    app.save(*conversations)
    figures: dict[str, float] = {}
    start = time.perf_counter()
    for offset in range(0, events, BATCH):
        for i in range(offset, offset + BATCH):
            conversations[i % 100].send(role="user", content=f"message {i} " + "x" * 80,
                                        user_id=f"u{i % 10}")
        app.save(*conversations)
    figures[PHASES[0]] = events / (time.perf_counter() - start)

    recorder: Any = app.recorder
    start = time.perf_counter()
    position, count = 1, 0
    while notifications := recorder.select_notifications(start=position, limit=1_000):
        for notification in notifications:
            app.mapper.to_domain_event(notification)
        count += len(notifications)
        position = notifications[-1].id + 1
    figures[PHASES[2]] = count / (time.perf_counter() - start)
    return figures


async def postgres_and_raw(base: str, events: int
                           ) -> tuple[dict[str, float] | str, dict[str, float] | str]:
    """The PostgreSQL store, then raw asyncpg COPY of the same rows into the same tables."""
    found = await throwaway_schema(base)
    if isinstance(found, str):
        return found, found
    url, schema = found
    target = await throwaway_schema(base)
    assert not isinstance(target, str)
    raw_url, raw_schema = target
    import asyncpg

    try:
        store = await measure(url, events)
        async with EventStore.open(raw_url):
            pass  # the store creates the schema, its tables and indexes
        conn = await asyncpg.connect(base)
        try:
            rows = [tuple(r) for r in await conn.fetch(
                "SELECT seq, id, type, conversation_id, user_id, recorded_at, digest, body "
                f'FROM "{schema}".events ORDER BY seq')]
            columns = ["seq", "id", "type", "conversation_id", "user_id", "recorded_at",
                       "digest", "body"]
            raw: dict[str, float] = {}
            start = time.perf_counter()
            for offset in range(0, events, BATCH):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "events", schema_name=raw_schema, columns=columns,
                        records=rows[offset:offset + BATCH])
            raw[PHASES[0]] = events / (time.perf_counter() - start)
            await conn.copy_records_to_table("events", schema_name=raw_schema,
                                             columns=columns, records=rows[events:])
            start = time.perf_counter()
            count = 0
            async with conn.transaction():
                async for _ in conn.cursor(f'SELECT seq, body FROM "{raw_schema}".events '
                                           "ORDER BY seq", prefetch=1_000):
                    count += 1
            raw[PHASES[2]] = count / (time.perf_counter() - start)
        finally:
            await conn.close()
        return store, raw
    finally:
        await drop_schema(base, schema)
        await drop_schema(base, raw_schema)


async def eventsourcing_postgres(base: str, tmp: Path, events: int) -> dict[str, float] | str:
    """eventsourcing on its PostgreSQL module, in a throwaway schema of the same server."""
    found = await throwaway_schema(base)
    if isinstance(found, str):
        return found
    _, schema = found
    import asyncpg

    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    parts = urlsplit(base)
    env = {"PERSISTENCE_MODULE": "eventsourcing.postgres",
           "POSTGRES_DBNAME": parts.path.lstrip("/"), "POSTGRES_HOST": parts.hostname or "",
           "POSTGRES_PORT": str(parts.port or 5432), "POSTGRES_USER": parts.username or "",
           "POSTGRES_PASSWORD": parts.password or "", "POSTGRES_SCHEMA": schema}
    try:
        return await asyncio.to_thread(eventsourcing_peer, tmp, events, env)
    finally:
        await drop_schema(base, schema)


def best(runs: list[dict[str, float] | str]) -> dict[str, float] | str:
    figures = [r for r in runs if isinstance(r, dict)]
    if not figures:
        return runs[0]
    return {phase: max(f[phase] for f in figures if phase in f)
            for phase in PHASES if any(phase in f for f in figures)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000,
                        help="events per phase (a multiple of 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per column; best kept")
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    events = max(BATCH, args.events // BATCH * BATCH)

    columns: dict[str, list[dict[str, float] | str]] = {
        "memory": [], "SQLite": [], "raw sqlite3": [], "es SQLite": [], "jsonl": [],
        "PostgreSQL": [], "raw asyncpg": [], "es PostgreSQL": []}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for _ in range(args.repeat):  # interleaved, so a noisy moment hits every column
            columns["memory"].append(await measure("memory://", events))
            store, raw = await sqlite_and_raw(tmp, events)
            columns["SQLite"].append(store)
            columns["raw sqlite3"].append(raw)
            columns["es SQLite"].append(eventsourcing_peer(tmp, events))
            columns["jsonl"].append(
                await measure(f"jsonl:///{tmp / f'jsonl-{uuid.uuid4().hex}'}", events))
            store, raw = await postgres_and_raw(args.url, events)
            columns["PostgreSQL"].append(store)
            columns["raw asyncpg"].append(raw)
            columns["es PostgreSQL"].append(await eventsourcing_postgres(args.url, tmp, events))
    table = {name: best(runs) for name, runs in columns.items()}
    ratios = {"SQLite/raw": ("SQLite", "raw sqlite3"), "SQLite/es": ("SQLite", "es SQLite"),
              "PG/raw": ("PostgreSQL", "raw asyncpg"), "PG/es": ("PostgreSQL", "es PostgreSQL")}

    print(f"{events} events per phase, best of {args.repeat}; events/s")
    widths = {name: max(12, len(name) + 1) for name in table}
    print(f"{'':32s}" + "".join(f"{name:>{widths[name]}s}" for name in table)
          + "".join(f"{name:>11s}" for name in ratios))

    def cell(name: str, phase: str) -> str:
        figures = table[name]
        if isinstance(figures, dict) and phase in figures:
            return f"{figures[phase]:>{widths[name]},.0f}"
        return f"{'-':>{widths[name]}s}"

    def ratio(top: str, bottom: str, phase: str) -> str:
        a, b = table[top], table[bottom]
        if isinstance(a, dict) and isinstance(b, dict) and phase in a and phase in b:
            return f"{a[phase] / b[phase]:11.2f}"
        return f"{'-':>11s}"

    for phase in PHASES:
        print(f"{phase:32s}" + "".join(cell(name, phase) for name in table)
              + "".join(ratio(*pair, phase) for pair in ratios.values()))
    for name, figures in table.items():
        if not isinstance(figures, dict):
            print(f"{name} column skipped: {figures}")


if __name__ == "__main__":
    asyncio.run(main())
