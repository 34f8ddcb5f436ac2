"""Rebuild throughput of all built-in projections together, against a bare read().

    python benchmarks/projections.py [--events 200000]

Seeds a SQLite log with a realistic mix (cost records with latency and prompt versions,
messages, violations, trims, feedback), then times, in the same process on the same
file: a bare `read()` of the whole log, and `rebuild()` of ConversationCosts,
GuardrailViolations, MemoryTrims, LatencyStats and PromptVersions in one pass.
"""

from __future__ import annotations

import argparse
import asyncio
import random
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
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'projections.db'}"
        async with EventStore.open(url) as store:
            for start in range(0, args.events, 1000):
                await store.append_many([mixed_event(rng, i) for i in
                                         range(start, min(start + 1000, args.events))])
            n = await store.head()
            bare, rebuild = [], []
            for _ in range(3):  # best of three: the machine is shared
                started = time.perf_counter()
                count = sum([1 async for _ in store.read()])
                bare.append(count / (time.perf_counter() - started))
                started = time.perf_counter()
                projections = (ConversationCosts(), GuardrailViolations(), MemoryTrims(),
                               LatencyStats(), PromptVersions())
                await store.rebuild(*projections)
                rebuild.append(n / (time.perf_counter() - started))
            costs = projections[0]
            assert costs.total() == await store.sum_cost()
    print(f"{n:,} mixed events on SQLite (best of 3)")
    print(f"  bare read()                     {max(bare):>10,.0f} events/s")
    print(f"  rebuild of all 5 projections    {max(rebuild):>10,.0f} events/s"
          f"   ratio {max(rebuild) / max(bare):.2f} x bare read")


if __name__ == "__main__":
    asyncio.run(main())
