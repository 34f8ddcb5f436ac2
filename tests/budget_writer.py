"""A child process that records costs under one budget (used by tests/test_budgets.py).

    python tests/budget_writer.py URL [--schema S] [--calls 10] [--cost 0.30]

Opens the store with one Budget(limit=1, per="user", window="total"), prints "READY",
waits for a line on stdin (so all the processes record at the same moment), records
`--calls` costs for user "u1" concurrently, waits until a budget_exceeded event is in the
log and its own watcher has handled every cost, and prints "SIGNAL <type>" for every
budget signal this process sent, then "DONE".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from typing import Any

from eventstore import Budget, EventStore, signals

BUDGET = Budget(limit=Decimal("1"), per="user", window="total", warn_at=(0.5,), name="race")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--schema")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--cost", default="0.30")
    args = parser.parse_args()
    options: dict[str, Any] = {"schema": args.schema} if args.schema else {}
    sent: list[str] = []
    async with EventStore.open(args.url, budgets=[BUDGET], **options) as store:
        def on_exceeded(sender: EventStore, **kw: Any) -> None:
            sent.append("budget_exceeded")

        def on_warning(sender: EventStore, **kw: Any) -> None:
            sent.append("budget_warning")

        signals.budget_exceeded.connect(on_exceeded, sender=store)
        signals.budget_warning.connect(on_warning, sender=store)
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.gather(*(store.record_cost(
            provider="test", model="m", input_tokens=1, output_tokens=1,
            cost=Decimal(args.cost), user_id="u1") for _ in range(args.calls)))
        (sub,) = [s for s in store.subscriptions if (s.name or "").startswith("budgets:")]
        async with asyncio.timeout(60):
            while not await store.count_events(type="budget_exceeded"):
                await sub.caught_up()
            await sub.caught_up()
    for kind in sent:
        print("SIGNAL", kind, flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
