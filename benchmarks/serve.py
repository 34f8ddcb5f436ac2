"""The web viewer on large logs: start-up, first-page latency and API requests per second.

    python benchmarks/serve.py [--sizes 100000,1000000] [--requests 300]

For each size, seeds a SQLite log with a realistic mix (messages, cost records, violations,
trims, feedback; one conversation per ~20 events), then, in this process:

- start-up: the app's lifespan (open the store, rebuild the viewer's index from the log,
  subscribe) against a bare `read()` of the same log — paid once per `eventstore serve`
  (in the background for a large log);
- first page: the median and worst of GET /conversations, /api/conversations, a
  conversation's transcript, /costs, /violations, /integrity and /subscriptions, each
  timed end to end through the ASGI app (Starlette's TestClient: routing, the token gate,
  templates, JSON encoding);
- "verify now" (POST /api/integrity/verify) once: what a click on the integrity page
  costs (never paid on page load);
- requests/s of GET /api/conversations (first pages and cursor pages), sequentially.

Target (issue 20): the first page under 200 ms at 1M events. The ratio printed is the
first-page median against a bare `list_events(limit=50)` of the same store, measured in
the same process: what the viewer adds on top of the store's own cheapest read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from eventstore import Event, EventStore
from eventstore.cli.serve.web import build_app

TOKEN = "bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def mixed_event(rng: random.Random, conversations: int) -> Event:
    conv = f"c{rng.randrange(conversations)}"
    user = f"u{hash(conv) % 1000}"
    meta: dict[str, Any] = {"tags": [rng.choice(["prod", "beta"])]}
    roll = rng.random()
    if roll < 0.3:
        return Event(type="cost_recorded", conversation_id=conv, user_id=user, metadata=meta,
                     data={"provider": "openai", "model": rng.choice(["gpt-4o", "o3"]),
                           "input_tokens": 1000, "output_tokens": 200,
                           "cache_read_tokens": 0, "cache_write_tokens": 0,
                           "input_cost": "0.0025", "output_cost": "0.002",
                           "total_cost": "0.0045", "price_source": "bench",
                           "latency_ms": round(rng.uniform(80, 3000), 1)})
    if roll < 0.9:
        return Event(type="message_sent", conversation_id=conv, user_id=user, metadata=meta,
                     data={"role": rng.choice(["user", "assistant"]), "content": "x" * 200})
    if roll < 0.95:
        return Event(type="policy_violation", conversation_id=conv, user_id=user,
                     data={"policy": "pii", "reason": "matched", "severity": "high"})
    return Event(type="user_feedback", conversation_id=conv, user_id=user, data={"rating": 4})


async def seed(url: str, n: int) -> None:
    rng = random.Random(20)
    async with EventStore.open(url) as store:
        for start in range(0, n, 5_000):
            await store.append_many(mixed_event(rng, max(n // 20, 1))
                                    for _ in range(min(5_000, n - start)))


async def bare_read(url: str) -> float:
    async with EventStore.open(url) as store:
        t0 = time.perf_counter()
        async for _ in store.read():
            pass
        return time.perf_counter() - t0


async def bare_list(url: str, repeat: int) -> float:
    async with EventStore.open(url) as store:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await store.list_events(limit=50)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed(client: TestClient, path: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get(path, headers=AUTH)
        times.append(time.perf_counter() - t0)
        assert response.status_code == 200, (path, response.status_code)
    return times


def run(n: int, requests: int, folder: Path) -> None:
    url = f"sqlite:///{folder / f'serve-{n}.db'}"
    t0 = time.perf_counter()
    asyncio.run(seed(url, n))
    print(f"\n{n:,} events (seeded in {time.perf_counter() - t0:.1f}s)")
    read = asyncio.run(bare_read(url))
    # The index is built before serving here (as for a small log), to time it.
    app = build_app(lambda: EventStore.open(url), TOKEN, index_before_serving=n)
    client = TestClient(app)
    t0 = time.perf_counter()
    client.__enter__()  # the lifespan: open, rebuild the index, subscribe
    startup = time.perf_counter() - t0
    print(f"  index rebuild: {startup:.2f}s ({n / startup:,.0f} events/s); bare read() of "
          f"the log {read:.2f}s; rebuild / read = {startup / read:.2f}x")
    try:
        first = client.get("/api/conversations", headers=AUTH).json()["conversations"][0]["id"]
        pages = {"/conversations": None, "/api/conversations": None,
                 f"/conversations/{first}": None, "/costs": None, "/violations": None,
                 "/integrity": None, "/subscriptions": None}
        medians = {}
        for path in pages:
            times = timed(client, path, 25)
            medians[path] = statistics.median(times)
            print(f"  first page {path:<28} median {medians[path] * 1000:7.1f} ms   "
                  f"worst {max(times) * 1000:7.1f} ms")
        base = asyncio.run(bare_list(url, 25))
        print(f"  bare list_events(limit=50): median {base * 1000:.1f} ms; "
              f"/conversations / bare = {medians['/conversations'] / base:.1f}x")
        t0 = time.perf_counter()
        report = client.post("/api/integrity/verify", headers=AUTH).json()
        print(f"  verify now (POST /api/integrity/verify, on request only): "
              f"{time.perf_counter() - t0:.2f}s, ok={report['ok']}")
        cursor = client.get("/api/conversations", headers=AUTH).json()["next_cursor"]
        t0 = time.perf_counter()
        for i in range(requests):
            path = "/api/conversations" + (f"?cursor={cursor}" if i % 2 else "")
            assert client.get(path, headers=AUTH).status_code == 200
        elapsed = time.perf_counter() - t0
        print(f"  /api/conversations: {requests / elapsed:,.0f} requests/s "
              f"(sequential, first and second pages)")
    finally:
        client.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            run(n, args.requests, Path(tmp))


if __name__ == "__main__":
    main()
