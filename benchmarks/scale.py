"""How the store's costs grow with the size of the log: 10k, 100k and (opt-in) 1M events.

    python benchmarks/scale.py [--sizes 10000,100000] [--million] [--repeat 5]
                               [--url postgresql://...] [--dir DIR] [--keep]

One log is grown in steps (10k -> 100k -> 1M in the same file or schema, so nothing is
built twice); at each size, with the head exactly at that size, it times:

- reads: `sum_cost()` with no filter, `user_id=`, `conversation_id=`, `model=`;
  `count_events()` with no filter, `type=`, `user_id=`; the first page of
  `list_events(limit=10)` (no filter and `user_id=`) and the 1000th page (no filter,
  reached by walking `next_cursor`; only the last fetch is timed); a full `read()`;
  `rebuild(ConversationCosts())`; and the memory `sum_cost()` takes, measured in a fresh
  process on the same log (peak RSS growth, and Python's own peak through tracemalloc);
- then writes, which add about 6,200 events before the next step tops the log up:
  `append_many(1000)`, 1000 concurrent `append()`, and the latency of 200 single
  `append()` calls one after another (median and p99).

Every figure is printed with its ratio to the figure at the first size ("x first"): for a
rate below 1 is slower, for a time above 1 is slower. A store whose costs do not grow with
the log shows ratios near 1 everywhere.

The log is a realistic mix of events of ~330 bytes as stored (the JSON body; a message's
content is 6-14 words, a cost record carries its usage and prompt metadata): 80 %
`message_sent`, 15 % `cost_recorded` (made by `record_cost` on a scratch store, then
appended in batches), 3 % `policy_violation`, 1 % `memory_trimmed`, 1 % custom
`user_feedback`, over a fixed pool of 20 users, 200 conversations (each owned by one
user) and 4 models of 2 providers. The pools are fixed, so what a filter matches grows
with the log (a user's 5 % of 1M is 50k events, 7.5k cost records): a query whose cost
follows its matches grows too, and only one that reads pre-aggregated data (or an
unfiltered count from the head) stays flat. Timed figures are the best of --repeat runs
(at most ~3 s of runs per figure), which filters out a shared machine's noise rather than
averaging it in; it still moves figures by 10-20 %, so compare runs made on the same
machine, and note the load average printed at the top and bottom.

Default: a SQLite file in a temporary directory (--dir to choose where, --keep to leave
it there). --url postgresql://... runs the same steps in a throwaway schema of that
server, dropped afterwards. Building 1M events takes a few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pg_schema import drop_schema, throwaway_schema

from eventstore import Event, EventStore, ModelPrice, PriceTable
from eventstore.projections import ConversationCosts

USERS = 20
CONVERSATIONS = 200
MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"),
          ("anthropic", "claude-sonnet"), ("anthropic", "claude-haiku"))
PRICES = PriceTable({
    ("openai", "gpt-4o"): ModelPrice(input=Decimal("0.0000025"), output=Decimal("0.00001"),
                                     source="bench"),
    ("openai", "gpt-4o-mini"): ModelPrice(input=Decimal("0.00000015"),
                                          output=Decimal("0.0000006"), source="bench"),
    ("anthropic", "claude-sonnet"): ModelPrice(input=Decimal("0.000003"),
                                               output=Decimal("0.000015"), source="bench"),
    ("anthropic", "claude-haiku"): ModelPrice(input=Decimal("0.0000008"),
                                              output=Decimal("0.000004"), source="bench"),
})
BUILD_BATCH = 5_000  # the store's default max_group: one transaction per batch
WORDS = ("the", "model", "answer", "price", "ticket", "refund", "order", "please", "check",
         "account", "when", "will", "my", "invoice", "arrive", "thanks", "hello", "sure")

# The conversation, user and model every filtered query asks about (all in the pools).
USER, CONVERSATION, MODEL = "u7", "c47", "gpt-4o-mini"

# Measured in a fresh process, so the build's own peak does not hide it: RSS growth over
# one sum_cost() (all of the process's memory, SQLite's and asyncpg's included), then
# Python's own peak allocation during a second one (tracemalloc).
MEMORY_PROBE = r"""
import asyncio, resource, sys, tracemalloc
from eventstore import EventStore

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: VmHWM, the peak RSS, restarts from the current RSS
        return True
    except OSError:
        return False

async def main(url):
    async with EventStore.open(url) as store:
        await store.count_events(user_id="nobody")
        before = status("VmRSS:")
        if reset_peak():
            await store.sum_cost()
            peak = status("VmHWM:")
        else:  # no reset: the process's peak so far, a lower bound of the growth
            await store.sum_cost()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        await store.sum_cost()
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(max(peak - before, 0), traced)

asyncio.run(main(sys.argv[1]))
"""


async def cost_templates() -> list[dict[str, Any]]:
    """`data` of real record_cost events (4 models x 16 usages), from a scratch store."""
    rng = random.Random(11)
    templates = []
    async with EventStore.open("memory://", pricing=PRICES) as scratch:
        for provider, model in MODELS:
            for _ in range(16):
                recorded = await scratch.record_cost(
                    provider=provider, model=model, input_tokens=rng.randint(200, 6000),
                    output_tokens=rng.randint(20, 900), latency_ms=round(
                        rng.uniform(150, 4000), 1))
                templates.append(dict(recorded.data))
    return templates


class Mix:
    """The i-th event of the log, the same on every run."""

    def __init__(self, templates: list[dict[str, Any]]) -> None:
        self.templates = templates
        self.rng = random.Random(7)

    def text(self, words: int) -> str:
        return " ".join(self.rng.choices(WORDS, k=words))

    def event(self, i: int) -> Event:
        rng = self.rng
        k = rng.randrange(CONVERSATIONS)
        conversation, user = f"c{k}", f"u{k % USERS}"
        roll = rng.random()
        if roll < 0.80:
            return Event(type="message_sent", conversation_id=conversation, user_id=user,
                         data={"role": "user" if i % 2 else "assistant",
                               "content": self.text(rng.randint(6, 14)),
                               "tokens": rng.randint(10, 400)})
        if roll < 0.95:
            return Event(type="cost_recorded", conversation_id=conversation, user_id=user,
                         data=dict(rng.choice(self.templates)),
                         metadata={"prompt_name": "answer",
                                   "prompt_version": rng.choice(("v1", "v2"))})
        if roll < 0.98:
            return Event(type="policy_violation", conversation_id=conversation, user_id=user,
                         data={"policy": rng.choice(("pii", "toxicity", "jailbreak")),
                               "reason": self.text(8), "severity": "high"})
        if roll < 0.99:
            return Event(type="memory_trimmed", conversation_id=conversation, user_id=user,
                         data={"strategy": "window", "messages_before": 40,
                               "messages_after": 20, "tokens_removed": rng.randint(100, 3000)})
        return Event(type="user_feedback", conversation_id=conversation, user_id=user,
                     data={"rating": rng.randint(1, 5), "comment": self.text(6)})

    def batch(self, n: int) -> list[Event]:
        return [self.event(i) for i in range(n)]


async def best_time(call: Callable[[], Awaitable[Any]], repeat: int,
                    budget: float = 3.0) -> float:
    """The shortest of up to `repeat` runs (at least 2; no new run after `budget` s)."""
    times: list[float] = []
    spent = 0.0
    while len(times) < max(repeat, 2) and (len(times) < 2 or spent < budget):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return min(times)


async def grow(store: EventStore, mix: Mix, target: int) -> None:
    head = await store.head()
    if head >= target:
        return
    start, first = time.perf_counter(), head
    while head < target:
        await store.append_many(mix.batch(min(BUILD_BATCH, target - head)))
        head = await store.head()
    elapsed = time.perf_counter() - start
    progress(f"  built {first:,} -> {head:,} in {elapsed:.1f} s "
             f"({(head - first) / elapsed:,.0f} events/s by append_many({BUILD_BATCH}))")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def memory_probe(url: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, url], check=True,
                         capture_output=True, text=True, env=os.environ.copy())
    rss, traced = out.stdout.split()
    return int(rss) / 2**20, int(traced) / 2**20


async def reads(store: EventStore, url: str, repeat: int) -> dict[str, float]:
    """Read-side figures with the head at the step's size. Times in ms, rates in events/s."""
    f: dict[str, float] = {}

    async def timed(label: str, call: Callable[[], Awaitable[Any]]) -> None:
        f[label] = await best_time(call, repeat) * 1000
        progress(f"    {label:42s} {f[label]:10.2f} ms")

    await timed("sum_cost()", lambda: store.sum_cost())
    await timed("sum_cost(user_id=)", lambda: store.sum_cost(user_id=USER))
    await timed("sum_cost(conversation_id=)", lambda: store.sum_cost(conversation_id=CONVERSATION))
    await timed("sum_cost(model=)", lambda: store.sum_cost(model=MODEL))
    await timed("count_events()", lambda: store.count_events())
    await timed("count_events(type=)", lambda: store.count_events(type="policy_violation"))
    await timed("count_events(user_id=)", lambda: store.count_events(user_id=USER))
    await timed("list_events first page", lambda: store.list_events(limit=10))
    await timed("list_events(user_id=) first page",
                lambda: store.list_events(user_id=USER, limit=10))
    cursor: str | None = None
    for _ in range(999):  # to the cursor of the 1000th page
        page = await store.list_events(limit=10, cursor=cursor)
        cursor = page.next_cursor
        assert cursor is not None, "the log is shorter than 1000 pages of 10"
    deep = cursor
    await timed("list_events page 1000", lambda: store.list_events(limit=10, cursor=deep))

    head = await store.head()

    async def read_all() -> None:
        count = 0
        async for _ in store.read():
            count += 1
        assert count == head, (count, head)

    seconds = await best_time(read_all, repeat)
    f["full read(), events/s"] = head / seconds
    progress(f"    {'full read(), events/s':42s} {f['full read(), events/s']:10,.0f}")
    seconds = await best_time(lambda: store.rebuild(ConversationCosts()), repeat)
    f["rebuild(ConversationCosts()), events/s"] = head / seconds
    progress(f"    {'rebuild(ConversationCosts()), events/s':42s} "
             f"{f['rebuild(ConversationCosts()), events/s']:10,.0f}")
    rss, traced = await asyncio.to_thread(memory_probe, url)
    f["sum_cost() peak RSS growth, MB"] = rss
    f["sum_cost() tracemalloc peak, MB"] = traced
    progress(f"    sum_cost() memory: RSS +{rss:.1f} MB, tracemalloc peak {traced:.1f} MB")
    return f


async def writes(store: EventStore, mix: Mix, repeat: int) -> dict[str, float]:
    f: dict[str, float] = {}
    rates = []
    for _ in range(min(repeat, 3)):
        batch = mix.batch(1_000)
        start = time.perf_counter()
        await store.append_many(batch)
        rates.append(1_000 / (time.perf_counter() - start))
    f["append_many(1000), events/s"] = max(rates)
    rates = []
    for _ in range(min(repeat, 3)):
        batch = mix.batch(1_000)
        start = time.perf_counter()
        await asyncio.gather(*(store.append(e) for e in batch))
        rates.append(1_000 / (time.perf_counter() - start))
    f["1000 concurrent append(), events/s"] = max(rates)
    latencies = []
    for event in mix.batch(200):
        start = time.perf_counter()
        await store.append(event)
        latencies.append((time.perf_counter() - start) * 1000)
    f["single append() median, ms"] = statistics.median(latencies)
    f["single append() p99, ms"] = statistics.quantiles(latencies, n=100,
                                                        method="inclusive")[98]
    for label, value in f.items():
        progress(f"    {label:42s} {value:10,.2f}")
    return f


RATES = ("append_many(1000), events/s", "1000 concurrent append(), events/s",
         "full read(), events/s", "rebuild(ConversationCosts()), events/s")
ORDER = ("append_many(1000), events/s", "1000 concurrent append(), events/s",
         "single append() median, ms", "single append() p99, ms",
         "sum_cost()", "sum_cost(user_id=)", "sum_cost(conversation_id=)", "sum_cost(model=)",
         "count_events()", "count_events(type=)", "count_events(user_id=)",
         "list_events first page", "list_events(user_id=) first page",
         "list_events page 1000", "full read(), events/s",
         "rebuild(ConversationCosts()), events/s", "sum_cost() peak RSS growth, MB",
         "sum_cost() tracemalloc peak, MB")


def label_of(name: str) -> str:
    return name if "," in name else f"{name}, ms"


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(backend: str, results: dict[int, dict[str, float]]) -> str:
    sizes = sorted(results)
    first = sizes[0]
    head = [f"{backend}"] + [f"{n:,}" for n in sizes[:1]]
    for n in sizes[1:]:
        head += [f"{n:,}", "x first"]
    lines = ["| " + " | ".join(head) + " |",
             "| --- |" + " ---: |" * (len(head) - 1)]
    for name in ORDER:
        if not all(name in results[n] for n in sizes):
            continue
        row = [label_of(name), fmt(results[first][name])]
        for n in sizes[1:]:
            base = results[first][name]
            row += [fmt(results[n][name]),
                    f"{results[n][name] / base:.2f}" if base > 0 else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


async def run(url: str, sizes: list[int], repeat: int) -> dict[int, dict[str, float]]:
    mix = Mix(await cost_templates())
    results: dict[int, dict[str, float]] = {}
    async with EventStore.open(url, pricing=PRICES) as store:
        for size in sizes:
            await grow(store, mix, size)
            head = await store.head()
            progress(f"  at {head:,} events (load average {os.getloadavg()[0]:.2f}):")
            figures = await reads(store, url, repeat)
            figures.update(await writes(store, mix, repeat))
            results[size] = figures
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000",
                        help="comma-separated log sizes, ascending (default 10000,100000)")
    parser.add_argument("--million", action="store_true", help="add a 1,000,000-event step")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; best kept")
    parser.add_argument("--url", default=None,
                        help="postgresql://... to run in a throwaway schema of that server "
                             "(default: a SQLite file)")
    parser.add_argument("--dir", default=None, help="where the SQLite file goes")
    parser.add_argument("--keep", action="store_true", help="leave the SQLite file behind")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()}
                   | ({1_000_000} if args.million else set()))
    if not sizes or sizes[0] < 10_000:
        parser.error("every size must be at least 10000 (the 1000th page of 10 must exist)")

    load = os.getloadavg()
    print(f"log sizes {', '.join(f'{n:,}' for n in sizes)}; best of {args.repeat}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    started = time.perf_counter()
    if args.url is not None:
        found = await throwaway_schema(args.url)
        if isinstance(found, str):
            raise SystemExit(f"PostgreSQL: {found}")
        url, schema = found
        try:
            results = await run(url, sizes, args.repeat)
        finally:
            await drop_schema(args.url, schema)
        backend = "PostgreSQL"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="es-scale-", dir=args.dir))
        path = tmp / "scale.db"
        try:
            results = await run(f"sqlite:///{path}", sizes, args.repeat)
        finally:
            if args.keep:
                print(f"SQLite file kept at {path}")
            else:
                shutil.rmtree(tmp)
        backend = "SQLite"
    print(table(backend, results))
    load = os.getloadavg()
    print(f"total {time.perf_counter() - started:.0f} s; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    asyncio.run(main())
