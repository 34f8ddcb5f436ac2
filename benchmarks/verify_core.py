"""Throughput of the integrity core, no database: leaf encoding and hashing, building the
tree in memory (`CompactRange`, what verify does), and computing the nodes a backend
stores (`extend`, what append does), at 100k and 1M leaves.

    python benchmarks/verify_core.py [--sizes 100000,1000000] [--batch 10000]

verify needs >= 200k events/s end to end on SQLite; this shows how much of that budget
the pure-Python core takes.
"""

from __future__ import annotations

import argparse
import time

from eventstore.integrity.leaf import StoredLeaf, encode_leaf
from eventstore.integrity.merkle import CompactRange, extend, frontier, leaf_hash, root_from


def _leaves(n: int) -> list[StoredLeaf]:
    doc = b'{"role":"user","content":"' + b"x" * 200 + b'"}'
    return [
        StoredLeaf(
            i + 1,
            f"0190f0a2-7c1e-7b3a-9d2f-{i:012x}",
            "message_sent",
            "c1",
            None,
            1_764_000_000_000_000 + i,
            1_764_000_000_000_000 + i,
            doc,
        )
        for i in range(n)
    ]


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds / 1000:8.0f}k/s ({seconds * 1000:7.0f} ms)"


def run(n: int, batch: int) -> None:
    stored = _leaves(n)
    t0 = time.perf_counter()
    raw = [encode_leaf(leaf) for leaf in stored]
    t1 = time.perf_counter()
    hashes = [leaf_hash(b) for b in raw]
    t2 = time.perf_counter()
    cr = CompactRange()
    for i in range(0, n, batch):
        cr.append(hashes[i : i + batch])
    root = cr.root()
    t3 = time.perf_counter()
    nodes: dict[tuple[int, int], bytes] = {}
    size = 0
    for i in range(0, n, batch):
        chunk = hashes[i : i + batch]
        for level, index, h in extend(size, [nodes[k] for k in frontier(size)], chunk):
            nodes[(level, index)] = h
        size += len(chunk)
    t4 = time.perf_counter()
    assert root_from(nodes, n) == root
    print(f"{n:>9,} leaves, batches of {batch:,}")
    print(f"  encode leaf bytes       {_rate(n, t1 - t0)}")
    print(f"  leaf hashes             {_rate(n, t2 - t1)}")
    print(f"  CompactRange root       {_rate(n, t3 - t2)}   (verify's tree)")
    print(f"  extend (stored nodes)   {_rate(n, t4 - t3)}   ({len(nodes):,} nodes)")
    print(f"  verify core end to end  {_rate(n, (t1 - t0) + (t2 - t1) + (t3 - t2))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args.batch)


if __name__ == "__main__":
    main()
