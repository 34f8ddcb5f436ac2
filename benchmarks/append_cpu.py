"""Write throughput of two or more checkouts side by side, per CPU second as well as per
wall second, for a machine too loaded for wall-clock figures to compare.

    python benchmarks/append_cpu.py [--url sqlite|memory] [--events 5000] [--repeat 7]
        this=. main=/path/to/main [pre=/path/to/older]

Each run is a subprocess importing eventstore from one checkout (PYTHONPATH); the sides
alternate run by run. A run appends --events events with append_many(1000), then as many
with 1000 concurrent append(), and reports events per wall second and per second of CPU
time of the whole process (every thread: the writer, the WAL checkpointer). Other
processes on the machine inflate wall time far more than CPU time, so on a shared
machine the CPU ratios are the ones to compare (PostgreSQL's server CPU is not counted,
so this is for SQLite and memory). The table gives medians of --repeat runs and the
ratios of the first side to each other one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import asyncio, json, sys, tempfile, time
from eventstore import Event, EventStore

def event(i):
    return Event(type="message_sent", conversation_id=f"c{i % 100}", user_id=f"u{i % 10}",
                 data={"role": "user", "content": f"message {i} " + "x" * 80})

async def main(url, n):
    out = {}
    async with EventStore.open(url) as store:
        events = [event(i) for i in range(2 * n)]
        wall, cpu = time.perf_counter(), time.process_time()
        for offset in range(0, n, 1000):
            await store.append_many(events[offset:offset + 1000])
        out["batch"] = (n / (time.perf_counter() - wall), n / (time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        for offset in range(n, 2 * n, 1000):
            await asyncio.gather(*(store.append(e) for e in events[offset:offset + 1000]))
        out["concurrent"] = (n / (time.perf_counter() - wall), n / (time.process_time() - cpu))
    print(json.dumps(out))

kind, n = sys.argv[1], int(sys.argv[2])
with tempfile.TemporaryDirectory() as d:
    url = "memory://" if kind == "memory" else f"sqlite:///{d}/store.db"
    asyncio.run(main(url, n))
'''
PHASES = ("batch", "concurrent")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("sides", nargs="+", metavar="NAME=CHECKOUT")
    args = parser.parse_args()
    sides = dict(side.split("=", 1) for side in args.sides)
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        name: {phase: [] for phase in PHASES} for name in sides}
    for _ in range(args.repeat):
        for name, path in sides.items():
            done = subprocess.run(
                [sys.executable, "-c", CHILD, args.url, str(args.events)],
                env={**os.environ, "PYTHONPATH": os.path.abspath(path)},
                capture_output=True, text=True, check=True)
            for phase, figures in json.loads(done.stdout).items():
                runs[name][phase].append(tuple(figures))
    names = list(sides)
    print(f"{args.url}, {args.events} events per phase, median of {args.repeat} "
          "interleaved runs; events/s of wall time and of process CPU time")
    for phase in PHASES:
        medians = {name: (statistics.median(w for w, _ in runs[name][phase]),
                          statistics.median(c for _, c in runs[name][phase]))
                   for name in names}
        cells = "  ".join(f"{name}: wall {w:,.0f} cpu {c:,.0f}"
                          for name, (w, c) in medians.items())
        first = names[0]
        ratios = "  ".join(
            f"{first}/{name}: wall {medians[first][0] / medians[name][0]:.2f} "
            f"cpu {medians[first][1] / medians[name][1]:.2f}" for name in names[1:])
        print(f"{phase:11s} {cells}  |  {ratios}")


if __name__ == "__main__":
    main()
