"""verify() throughput and proof sizes and times on a real store, at 10k / 100k events
(and 1M with --sizes 10000,100000,1000000).

    python benchmarks/verify.py [--sizes 10000,100000] [--url sqlite|postgresql://...]
                                [--proofs 500]

For each size: a fresh log of ~300-byte chat messages written with append_many(5000),
then
- verify: `store.verify()` over the whole log (recompute every leaf from the stored row,
  compare with the stored leaf hashes, rebuild the root): events/s, best of 3;
- tree_head, prove(seq) of random seqs, prove_consistency(old) of random old sizes: mean
  time per call and proof size (hashes, bytes);
- the target: verify >= 200k events/s on SQLite. A loaded machine slows everything
  alike, so the same run also times a bare `read()` of the whole log (decoded events)
  and prints verify/read: the share of the store's own read speed verify keeps.

SQLite by default (a file in a temporary directory); --url postgresql://... runs it on a
throwaway schema of that server instead, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from pg_schema import drop_schema, throwaway_schema

from eventstore import Event, EventStore

BATCH = 5_000


def event(i: int) -> Event:
    return Event(type="message_sent", conversation_id=f"c{i % 100}", user_id=f"u{i % 10}",
                 data={"role": "user", "content": f"message {i} " + "x" * 80})


async def measure(url: str, size: int, proofs: int) -> None:
    async with EventStore.open(url) as store:
        start = time.perf_counter()
        for offset in range(0, size, BATCH):
            await store.append_many([event(i) for i in range(offset, min(offset + BATCH, size))])
        build = time.perf_counter() - start
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            report = await store.verify()
            runs.append(time.perf_counter() - start)
            assert report.ok and report.size == size, report.problems
        reads = []
        for _ in range(3):
            start = time.perf_counter()
            count = 0
            async for _event in store.read():
                count += 1
            reads.append(time.perf_counter() - start)
        head_times = []
        for _ in range(100):
            start = time.perf_counter()
            head = await store.tree_head()
            head_times.append(time.perf_counter() - start)
        rng = random.Random(size)
        prove_times, prove_sizes = [], []
        for seq in (rng.randint(1, size) for _ in range(proofs)):
            start = time.perf_counter()
            proof = await store.prove(seq)
            prove_times.append(time.perf_counter() - start)
            prove_sizes.append(len(proof.hashes))
            assert proof.verify(head.root)
        cons_times, cons_sizes = [], []
        for old in (rng.randint(1, size) for _ in range(proofs)):
            start = time.perf_counter()
            consistency = await store.prove_consistency(old)
            cons_times.append(time.perf_counter() - start)
            cons_sizes.append(len(consistency.hashes))
    ms = 1_000
    print(f"{size:>9,} events (appended in {build:.1f} s)")
    print(f"  verify               {size / min(runs):>12,.0f} events/s   "
          f"(best of 3: {min(runs):.2f} s)")
    print(f"  read() of the log    {size / min(reads):>12,.0f} events/s   "
          f"verify/read = {min(reads) / min(runs):.2f}")
    print(f"  tree_head            {statistics.mean(head_times) * ms:>12.3f} ms")
    print(f"  prove(seq)           {statistics.mean(prove_times) * ms:>12.3f} ms   "
          f"{statistics.mean(prove_sizes):.1f} hashes ({max(prove_sizes) * 32} bytes at most)")
    print(f"  prove_consistency    {statistics.mean(cons_times) * ms:>12.3f} ms   "
          f"{statistics.mean(cons_sizes):.1f} hashes ({max(cons_sizes) * 32} bytes at most)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000",
                        help="log sizes, comma-separated (1000000 is opt-in)")
    parser.add_argument("--url", default="sqlite", help="'sqlite' or a postgresql:// URL")
    parser.add_argument("--proofs", type=int, default=500, help="proofs timed per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("verify target: >= 200k events/s on SQLite")
    for size in sizes:
        if args.url == "sqlite":
            with tempfile.TemporaryDirectory() as name:
                await measure(f"sqlite:///{Path(name) / 'verify.db'}", size, args.proofs)
            continue
        found = await throwaway_schema(args.url)
        if isinstance(found, str):
            print(f"skipped: {found}")
            return
        url, schema = found
        try:
            await measure(url, size, args.proofs)
        finally:
            await drop_schema(args.url, schema)


if __name__ == "__main__":
    asyncio.run(main())
