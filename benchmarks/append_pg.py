"""Append and read figures on PostgreSQL, next to SQLite from the same run.

    python benchmarks/append_pg.py [--events 20000] [--url postgresql://...]

- batch: append_many() of 1000 events at a time, one after another;
- concurrent single: 1000 tasks each awaiting its own append() (group commit turns them
  into a few transactions), repeated until --events are written;
- full read: `async for e in store.read()` over the whole log.

PostgreSQL runs in a throwaway schema that is dropped afterwards; without a server its
column is skipped with a note. The URL defaults to EVENTSTORE_PG_URL or the local test
database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from eventstore import Event, EventStore

BATCH = 1_000
CONCURRENT = 1_000


def event(i: int) -> Event:
    return Event(type="message_sent", conversation_id=f"c{i % 100}", user_id=f"u{i % 10}",
                 data={"role": "user", "content": f"message {i} " + "x" * 80})


async def measure(url: str, events: int, **options: Any) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with EventStore.open(url, **options) as store:
        start = time.perf_counter()
        for offset in range(0, events, BATCH):
            await store.append_many([event(i) for i in range(offset, offset + BATCH)])
        figures["batch append_many(1000)"] = events / (time.perf_counter() - start)

        start = time.perf_counter()
        for offset in range(0, events, CONCURRENT):
            await asyncio.gather(*(store.append(event(i))
                                   for i in range(offset, offset + CONCURRENT)))
        figures["1000 concurrent single appends"] = events / (time.perf_counter() - start)

        start = time.perf_counter()
        count = 0
        async for _ in store.read():
            count += 1
        figures["full read()"] = count / (time.perf_counter() - start)
    return figures


async def postgres(url: str, events: int) -> dict[str, float] | str:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install 'eventstore[postgres]')"
    try:
        probe = await asyncpg.connect(url, timeout=5)
    except Exception as exc:  # no server: report and skip the column
        return f"no PostgreSQL server at {url} ({exc!r})"
    schema = f"es_bench_{uuid.uuid4().hex[:8]}"
    try:
        return await measure(url, events, schema=schema)
    finally:
        await probe.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await probe.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000,
                        help="events per phase (a multiple of 1000)")
    parser.add_argument("--url", default=os.environ.get(
        "EVENTSTORE_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    events = max(BATCH, args.events // BATCH * BATCH)

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await measure(f"sqlite:///{Path(tmp) / 'bench.db'}", events)
    pg = await postgres(args.url, events)

    print(f"{events} events per phase; events/s")
    print(f"{'':32s} {'SQLite':>10s} {'PostgreSQL':>12s} {'PG/SQLite':>10s}")
    for name, lite in sqlite.items():
        if isinstance(pg, dict):
            print(f"{name:32s} {lite:10,.0f} {pg[name]:12,.0f} {pg[name] / lite:10.2f}")
        else:
            print(f"{name:32s} {lite:10,.0f} {'-':>12s}")
    if not isinstance(pg, dict):
        print(f"PostgreSQL column skipped: {pg}")


if __name__ == "__main__":
    asyncio.run(main())
