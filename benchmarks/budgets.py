"""Budget overhead: `record_cost` throughput with 100 active budgets against none.

    python benchmarks/budgets.py [--calls 2000] [--repeat 3] [--url postgresql://...]

20 producer tasks record `--calls` costs in all (provider-reported costs, 50 users, 20
conversations, 5 tags), first on a store with no budgets, then on a fresh store with 100
budgets (per user / conversation / tag / total, day / month / total windows, each with a
warning, limits spread so that some scopes cross them). Reported: record_cost calls/s
(the appends alone), and calls/s until the budget watcher has handled every cost (the
end-to-end figure, alerts appended), with their ratio to the store without budgets, in
the same process (medians of `--repeat` interleaved pairs), and the process CPU time per
call until settled, as a ratio none / 100 budgets (the figure a loaded machine moves
least). Rows for memory and SQLite, and PostgreSQL (a throwaway schema) when a
server answers at --url (default EVENTSTORE_PG_URL or the local test database).
Target (issue 18): record_cost throughput with 100 budgets >= 0.8x without.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from pg_schema import DEFAULT_URL, drop_schema, throwaway_schema

from eventstore import Budget, EventStore

PRODUCERS = 20
PERS = ("user", "conversation", "tag", "total")
WINDOWS = ("day", "month", "total")


def hundred_budgets() -> list[Budget]:
    budgets = []
    for i in range(100):
        per, window = PERS[i % 4], WINDOWS[(i // 4) % 3]
        budgets.append(Budget(limit=Decimal(1 + i), per=per, window=window, warn_at=(0.5,),
                              name=f"b{i}"))
    return budgets


async def run(url: str, options: dict[str, Any], calls: int,
              budgets: list[Budget]) -> tuple[float, float, float]:
    async with EventStore.open(url, budgets=budgets, **options) as store:
        async def producer(k: int) -> None:
            for n in range(k, calls, PRODUCERS):
                await store.record_cost(
                    provider="bench", model="m", input_tokens=100, output_tokens=10,
                    cost=Decimal("0.05"), user_id=f"u{n % 50}",
                    conversation_id=f"c{n % 20}", metadata={"tags": [f"t{n % 5}"]})

        t0 = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(producer(k) for k in range(PRODUCERS)))
        appended = time.perf_counter() - t0
        for sub in store.subscriptions:
            await sub.caught_up(timeout=None)
        settled = time.perf_counter() - t0
        cpu = time.process_time() - cpu
    return calls / appended, calls / settled, cpu / calls * 1e6


async def row(name: str, url: str, options: dict[str, Any], calls: int, repeat: int) -> None:
    """`repeat` interleaved pairs (none, then 100 budgets), each run on a log of its own;
    the medians of the figures and of the per-pair ratios."""
    plain, budgeted, settled, ratios, settled_ratios, cpu_ratios = [], [], [], [], [], []
    for i in range(repeat):
        runs = []
        for tag, budgets in (("a", []), ("b", hundred_budgets())):
            run_url, run_options = url, dict(options)
            if "schema" in options:
                run_options["schema"] = f"{options['schema']}_{tag}{i}"
            elif url.startswith("sqlite"):
                run_url = url.replace(".db", f"-{tag}{i}.db")
            else:
                run_url = f"{url}-{tag}{i}"
            runs.append(await run(run_url, run_options, calls, budgets))
        (none, _, none_cpu), (with_budgets, to_settled, budgets_cpu) = runs
        cpu_ratios.append(none_cpu / budgets_cpu)
        plain.append(none)
        budgeted.append(with_budgets)
        settled.append(to_settled)
        ratios.append(with_budgets / none)
        settled_ratios.append(to_settled / none)
    med = statistics.median
    print(f"| {name} | {med(plain):,.0f} | {med(budgeted):,.0f} | {med(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f}) | {med(settled):,.0f} | "
          f"{med(settled_ratios):.2f} | {med(cpu_ratios):.2f} |")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved pairs of runs per backend (medians are shown)")
    args = parser.parse_args()
    print(f"record_cost, {args.calls} calls from {PRODUCERS} tasks; 100 budgets vs none")
    print("| backend | calls/s, no budgets | calls/s, 100 budgets | ratio (range) | "
          "calls/s to alerts settled | ratio | CPU per call to settled, none / 100 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    await row("memory", "memory://bench", {}, args.calls, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        await row("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", {}, args.calls,
                      args.repeat)
    found = await throwaway_schema(args.url)
    if isinstance(found, str):
        print(f"(PostgreSQL skipped: {found})")
        return
    schema = found[1]
    try:
        await row("PostgreSQL", args.url, {"schema": schema}, args.calls, args.repeat)
    finally:
        await drop_schema(args.url, schema)
        for i in range(args.repeat):
            for tag in "ab":
                await drop_schema(args.url, f"{schema}_{tag}{i}")


if __name__ == "__main__":
    asyncio.run(main())
