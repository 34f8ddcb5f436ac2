"""Rebuild throughput of all built-in projections together, against a bare read().

    python benchmarks/projections.py [--events 200000] [--repeat 5]

Seeds a SQLite log with a realistic mix (cost records with latency and prompt versions,
messages, violations, trims, feedback), then times, in the same process on the same
file: a bare `read()` of the whole log, and `rebuild()` of ConversationCosts,
GuardrailViolations, MemoryTrims, LatencyStats and PromptVersions in one pass. Prints
events per wall second and per CPU second of this process (all its threads: the figure
that moves least when other programs share the machine), best of --repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from eventstore import Event, EventStore
from eventstore.pricing import CostBreakdown, ModelPrice, compute_cost
from eventstore.projections import (
    ConversationCosts,
    GuardrailViolations,
    LatencyStats,
    MemoryTrims,
    PromptVersions,
)

PRICE = ModelPrice(input=Decimal("0.0000025"), output=Decimal("0.00001"), source="bench")


def cost_data(rng: random.Random) -> dict[str, object]:
    breakdown: CostBreakdown = compute_cost(
        PRICE, input_tokens=rng.randint(100, 4000), output_tokens=rng.randint(10, 800)
    )
    return {"provider": "openai", "model": rng.choice(["gpt-4o", "gpt-4o-mini", "o3"]),
            **breakdown.to_data(), "price_source": "bench",
            "latency_ms": round(rng.uniform(80, 3000), 1)}


def mixed_event(rng: random.Random, i: int) -> Event:
    conv, user = f"c{rng.randrange(5000)}", f"u{rng.randrange(500)}"
    roll = rng.random()
    if roll < 0.35:
        return Event(type="cost_recorded", conversation_id=conv, user_id=user,
                     data=cost_data(rng), metadata={"prompt_name": "answer",
                                                    "prompt_version": rng.choice("123")})
    if roll < 0.85:
        return Event(type="message_sent", conversation_id=conv, user_id=user,
                     data={"role": rng.choice(["user", "assistant"]), "content": "x" * 120})
    if roll < 0.92:
        return Event(type="policy_violation", conversation_id=conv, user_id=user,
                     data={"policy": rng.choice(["pii", "toxicity", "jailbreak"]),
                           "reason": "matched", "severity": "high"})
    if roll < 0.97:
        return Event(type="memory_trimmed", conversation_id=conv, user_id=user,
                     data={"strategy": "window", "messages_before": 40,
                           "messages_after": 20, "tokens_removed": rng.randint(100, 3000)})
    return Event(type="user_feedback", conversation_id=conv, user_id=user,
                 data={"rating": rng.randint(1, 5)})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'projections.db'}"
        async with EventStore.open(url) as store:
            for start in range(0, args.events, 1000):
                await store.append_many([mixed_event(rng, i) for i in
                                         range(start, min(start + 1000, args.events))])
            n = await store.head()
            bare: list[tuple[float, float]] = []
            rebuild: list[tuple[float, float]] = []
            for _ in range(args.repeat):  # interleaved, best kept: the machine is shared
                wall, cpu = time.perf_counter(), time.process_time()
                count = sum([1 async for _ in store.read()])
                bare.append((count / (time.perf_counter() - wall),
                             count / (time.process_time() - cpu)))
                wall, cpu = time.perf_counter(), time.process_time()
                projections = (ConversationCosts(), GuardrailViolations(), MemoryTrims(),
                               LatencyStats(), PromptVersions())
                await store.rebuild(*projections)
                rebuild.append((n / (time.perf_counter() - wall),
                                n / (time.process_time() - cpu)))
            costs = projections[0]
            assert costs.total() == await store.sum_cost()
    print(f"{n:,} mixed events on SQLite (best of {args.repeat})")
    print(f"{'':34s}{'events/s':>12s}{'per CPU-s':>12s}")
    for label, figures in (("bare read()", bare), ("rebuild of all 5 projections", rebuild)):
        print(f"  {label:32s}{max(f[0] for f in figures):>12,.0f}"
              f"{max(f[1] for f in figures):>12,.0f}")
    # Each rebuild runs right after its bare read, so a pair shares the machine's mood;
    # the median of the pairs' ratios is steadier than a ratio of two bests.
    for label, column in (("events/s", 0), ("per CPU-s", 1)):
        ratios = [r[column] / b[column] for r, b in zip(rebuild, bare, strict=True)]
        print(f"  ratio rebuild / bare read, {label:10s} median {statistics.median(ratios):.2f}"
              f"  (runs: {', '.join(f'{x:.2f}' for x in ratios)})")

if __name__ == "__main__":
    asyncio.run(main())
