"""A child process that appends to one eventstore (used by tests/test_sqlite.py and
tests/test_jsonl.py). DB is a SQLite file path or a store URL.

    python tests/kill_writer.py DB stream [--tag T] [--batch-size 50] [--writers 4]
        Appends forever, until killed: one task appends batches with append_many (batch k
        holds events of type "batch" with data {"run": T, "batch": k, "i": i}), while
        `--writers` tasks append single events (type "single", data {"run": T, "writer": w,
        "n": n}). Prints one line per acknowledged append, flushed at once:
            B <k> <first seq> <last seq>
            E <id> <seq>

    python tests/kill_writer.py DB fixed --tag T [--rounds 20] [--singles 20]
                                          [--batches 1] [--batch-size 10]
        Opens the store, prints "READY", waits for a line on stdin (so several processes
        start appending at the same moment), then `--rounds` times appends `--singles`
        single events and `--batches` batches concurrently (about one group commit per
        round), prints "E <id> <seq>" for every acknowledged event, then "DONE".

A line is printed only after the append returned, i.e. after its transaction committed,
so every printed event must survive a SIGKILL of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from eventstore import Event, EventStore


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def stream(store: EventStore, tag: str, batch_size: int, writers: int) -> None:
    async def batches() -> None:
        k = 0
        while True:
            recs = await store.append_many(
                [Event(type="batch", data={"run": tag, "batch": k, "i": i})
                 for i in range(batch_size)]
            )
            emit(f"B {k} {recs[0].seq} {recs[-1].seq}")
            k += 1

    async def singles(writer: int) -> None:
        n = 0
        while True:
            rec = await store.append(
                Event(type="single", data={"run": tag, "writer": writer, "n": n})
            )
            emit(f"E {rec.id} {rec.seq}")
            n += 1

    await asyncio.gather(batches(), *(singles(w) for w in range(writers)))


async def fixed(store: EventStore, tag: str, rounds: int, singles: int, batches: int,
                batch_size: int) -> None:
    emit("READY")
    await asyncio.to_thread(sys.stdin.readline)

    async def one(r: int, n: int) -> None:
        rec = await store.append(Event(type="single", data={"tag": tag, "r": r, "n": n}))
        emit(f"E {rec.id} {rec.seq}")

    async def many(r: int, k: int) -> None:
        recs = await store.append_many(
            [Event(type="batch", data={"tag": tag, "r": r, "batch": k, "i": i})
             for i in range(batch_size)]
        )
        for rec in recs:
            emit(f"E {rec.id} {rec.seq}")

    for r in range(rounds):
        await asyncio.gather(*(one(r, n) for n in range(singles)),
                             *(many(r, k) for k in range(batches)))
    emit("DONE")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("mode", choices=["stream", "fixed"])
    parser.add_argument("--tag", default="w")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--batches", type=int, default=1)
    args = parser.parse_args()
    url = args.db if "://" in args.db else f"sqlite:///{args.db}"
    async with EventStore.open(url) as store:
        if args.mode == "stream":
            await stream(store, args.tag, args.batch_size, args.writers)
        else:
            await fixed(store, args.tag, args.rounds, args.singles, args.batches,
                        args.batch_size)


if __name__ == "__main__":
    asyncio.run(main())
