"""Subscription figures: append-to-handler latency and catch-up throughput.

    python benchmarks/subscribe.py [--events 10000] [--behind 100000] [--idle 10000]
                                   [--url postgresql://...]

Latency: 10 producer tasks append `--events` events in all, each awaiting its own append
(an app under load); every handler notes the time from the append call to the moment it
runs. Reported as p50 / p99 for one subscriber and for ten. Catch-up: a subscriber starts
`--behind` events behind the head and we time until its position reaches the head.
Guardian: a store holds --idle durable subscriptions (and, for comparison, 10) to a type
nobody appends, so they have nothing to deliver; we time one `store.guardian.check()`,
then run checks back to back while one producer appends and report p50 / p99 of
`append()` during them (at least one whole check, up to 200 appends or about twice a
check's time). The subscriptions keep their defaults; the figures are taken once each has
saved its first checkpoint (a second after it caught up; with 10,000 started at once
that burst of saves is start-up work of its own, not the guardian's).
Rows for memory, SQLite and PostgreSQL (throwaway schemas, dropped afterwards; skipped
with a note when no server answers at --url, default EVENTSTORE_PG_URL or the local test
database).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from pg_schema import DEFAULT_URL, drop_schema, throwaway_schema

from eventstore import Event, EventStore, RecordedEvent

PRODUCERS = 10


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


async def latency(url: str, events: int, subscribers: int) -> tuple[float, float]:
    samples: list[float] = []
    done = asyncio.Event()
    expected = events * subscribers

    def handler(event: RecordedEvent) -> None:
        samples.append(time.perf_counter() - event.data["t"])
        if len(samples) == expected:
            done.set()

    async with EventStore.open(url) as store:
        for i in range(subscribers):
            await store.subscribe(handler, name=f"latency-{i}")

        async def produce(n: int) -> None:
            for _ in range(n):
                await store.append(Event(type="bench", data={"t": time.perf_counter(),
                                                             "pad": "x" * 120}))

        await asyncio.gather(*(produce(events // PRODUCERS) for _ in range(PRODUCERS)))
        await asyncio.wait_for(done.wait(), 120)
    millis = [s * 1000 for s in samples]
    return percentile(millis, 0.50), percentile(millis, 0.99)


async def catch_up(url: str, behind: int, durable: bool) -> float:
    async with EventStore.open(url) as store:
        head = await store.head()
        for start in range(head, behind, 1000):
            await store.append_many([Event(type="bench", conversation_id=f"c{i % 50}",
                                           data={"i": i, "pad": "x" * 120})
                                     for i in range(start, min(start + 1000, behind))])
        head = await store.head()
        reached = asyncio.Event()
        count = 0

        def handler(event: RecordedEvent) -> None:
            nonlocal count
            count += 1
            if event.seq == head:
                reached.set()

        started = time.perf_counter()
        await store.subscribe(handler, name="catch-up" if durable else None)
        await asyncio.wait_for(reached.wait(), 300)
        elapsed = time.perf_counter() - started
        assert count == head
    return head / elapsed


async def guardian(url: str, idle: int, samples: int = 200) -> tuple[float, list[float]]:
    """(ms of one guardian check, append() latencies in ms while checks run)."""
    def handler(event: RecordedEvent) -> None:
        pass

    # The background tick is pushed out of the way: the checks timed are ours.
    async with EventStore.open(url, guardian_interval=3600) as store:
        await store.append(Event(type="bench", data={"pad": "x" * 120}))
        subs = [await store.subscribe(handler, name=f"idle-{i}", types={"never-appended"})
                for i in range(idle)]
        for _ in range(6_000):  # every one started and waiting for work, within 5 min
            if all(sub.status == "running" for sub in subs):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the idle subscriptions did not all start within 5 minutes")
        head = await store.head()
        for _ in range(6_000):
            saved = await store.backend.list_checkpoints()
            if sum(c.position == head for c in saved) >= idle:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the idle subscriptions did not save their checkpoints")
        started = time.perf_counter()
        await store.guardian.check()
        check = time.perf_counter() - started

        checks = 0
        stop = asyncio.Event()

        async def checking() -> None:
            nonlocal checks
            while not stop.is_set():
                await store.guardian.check()
                checks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(checking())
        millis: list[float] = []
        deadline = time.perf_counter() + max(2 * check, 1.0)
        while checks < 1 or (len(millis) < samples and time.perf_counter() < deadline):
            started = time.perf_counter()
            await store.append(Event(type="bench", data={"pad": "x" * 120}))
            millis.append((time.perf_counter() - started) * 1000)
        stop.set()
        await task
    return check * 1000, millis


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--behind", type=int, default=100_000)
    parser.add_argument("--idle", type=int, default=10_000,
                        help="idle durable subscriptions for the guardian rows (0: skip)")
    parser.add_argument("--url", default=DEFAULT_URL,
        help="PostgreSQL server for the postgres rows (skipped if it does not answer)")
    args = parser.parse_args()
    schemas: list[str] = []

    async def url_for(label: str, name: str) -> str | None:
        if label == "memory":
            return f"memory://{name}"
        if label == "sqlite":
            return f"sqlite:///{Path(tmp) / f'{name}.db'}"
        found = await throwaway_schema(args.url)
        if isinstance(found, str):
            print(f"  postgres skipped: {found}")
            return None
        schemas.append(found[1])
        return found[0]

    labels = ("memory", "sqlite", "postgres")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"append-to-handler latency, {args.events} events from {PRODUCERS} producers")
            for label in labels:
                for subs in (1, 10):
                    url = await url_for(label, f"latency-{subs}")
                    if url is None:
                        break
                    p50, p99 = await latency(url, args.events, subs)
                    print(f"  {label:8} {subs:2} subscriber(s): p50 {p50:6.2f} ms"
                          f"   p99 {p99:6.2f} ms")
            print(f"catch-up of a subscriber {args.behind} events behind")
            for label in labels:
                url = await url_for(label, "catchup")
                if url is None:
                    continue
                for durable in (False, True):  # the durable run starts from the same log
                    rate = await catch_up(url, args.behind, durable)
                    kind = "durable  " if durable else "anonymous"
                    print(f"  {label:8} {kind}: {rate:10,.0f} events/s")
            if args.idle:
                print("guardian check with idle durable subscriptions, and append() latency "
                      "while checks run back to back")
            for label in labels if args.idle else ():
                for idle in sorted({10, args.idle}):
                    url = await url_for(label, f"guardian-{idle}")
                    if url is None:
                        break
                    check, millis = await guardian(url, idle)
                    p50 = statistics.median(millis)
                    p99 = percentile(millis, 0.99) if len(millis) > 1 else millis[0]
                    print(f"  {label:8} {idle:6,} idle: one check {check:10,.2f} ms   "
                          f"append() p50 {p50:9,.2f} ms   p99 {p99:9,.2f} ms"
                          f"   ({len(millis)} appends)")
    finally:
        for schema in schemas:
            await drop_schema(args.url, schema)

if __name__ == "__main__":
    asyncio.run(main())
