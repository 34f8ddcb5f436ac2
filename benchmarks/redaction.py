"""What redaction and encryption cost on the append path (SQLite).

    python benchmarks/redaction.py [--rounds 10] [--concurrency 1000] [--batch 100]
                                   [--repeat 3]

Every event is a ~1 KB chat message (`message_sent` with a user_id, 200 users) of ordinary
prose; about one in five carries a few PII items (email, phone, card, IP, API key). Four
configurations, each on a fresh database file:

    none         no hooks
    pii          eventstore.privacy.pii.PIIRedactor() as the redact hook
    encryption   Encryption() (per-user AES-256-GCM of data.content)
    both         PIIRedactor() and Encryption()

Two ways of appending, each timed after one untimed warm-up round (so per-user keys exist
and caches are warm, as in a running service):

    concurrent   rounds of `--concurrency` tasks, each awaiting one append(): how appends
                 arrive under load (group commit batches them)
    batched      append_many() of `--batch` events at a time, awaited one after another

Prints events/s of wall time and per CPU second of this process (all its threads: the
figure that stays put when other programs share the machine), the best of `--repeat` runs
(configurations interleaved, so drift in load hits them alike), and each one's ratio to
`none`. The target is a ratio of at least 0.5: redaction should cost less than half of
append throughput.

Then the large-paste row: `--large` appends of one 200 KB text with 5,000 findings
(e-mails, IPv4 addresses, phone numbers, cards) through PIIRedactor and Encryption, with
the redactor on a worker thread (the default for texts over `thread_above`) and, for
comparison, on the event loop. It prints the time per event and the longest event-loop
stall seen meanwhile by a task that wakes every millisecond; the target is a stall under
50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eventstore import Event, EventStore
from eventstore.encryption import Encryption, generate_master_key

USERS = 200
WORDS = (
    "the a of to and in that is was for it with as on be at by this had not are but from "
    "or have an they which one you were all we her she there would their will when who "
    "him been has more if no out so said what up its about than into them can only other "
    "time new some could these two may first then do any like my now over such our man me "
    "even most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came "
    "right used take three model prompt answer summary question context token budget "
    "invoice meeting project deadline report customer order shipment refund account"
).split()
PII = (
    "alice.smith@example.com", "+1 415 555 0132", "4111 1111 1111 1111",
    "10.20.30.40", "sk-proj-3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "bob@corp.example.org",
    "(212) 555-0199", "2001:db8::8a2e:370:7334",
)


def messages(n: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = []
        size = 0
        while size < 1000:
            word = rng.choice(WORDS)
            words.append(word)
            size += len(word) + 1
        if rng.random() < 0.2:
            for _ in range(rng.randint(1, 3)):
                words.insert(rng.randrange(len(words)), rng.choice(PII))
        user = i % USERS
        out.append(Event(type="message_sent", conversation_id=f"conv-{user}-{i % 7}",
                         user_id=f"user-{user}",
                         data={"role": "user" if i % 2 else "assistant",
                               "content": " ".join(words)[:1024]}))
    return out


def configs(master_key: str) -> dict[str, Callable[[], dict[str, Any]]]:
    from eventstore.privacy.pii import PIIRedactor

    return {
        "none": lambda: {},
        "pii": lambda: {"redact": [PIIRedactor()]},
        "encryption": lambda: {"encryption": Encryption(master_key)},
        "both": lambda: {"redact": [PIIRedactor()], "encryption": Encryption(master_key)},
    }


async def concurrent(store: EventStore, rounds: list[list[Event]]) -> None:
    for batch in rounds:
        await asyncio.gather(*(store.append(event) for event in batch))


async def batched(store: EventStore, rounds: list[list[Event]], size: int) -> None:
    for batch in rounds:
        for start in range(0, len(batch), size):
            await store.append_many(batch[start : start + size])


async def measure(
    url: str, options: dict[str, Any], rounds: list[list[Event]],
    run: Callable[[EventStore, list[list[Event]]], Awaitable[None]],
) -> tuple[float, float]:
    """(events per wall second, events per CPU second of this process)."""
    async with EventStore.open(url, **options) as store:
        await run(store, rounds[:1])  # warm-up: keys created, caches and pages warm
        timed = rounds[1:]
        started, cpu = time.perf_counter(), time.process_time()
        await run(store, timed)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    n = sum(len(r) for r in timed)
    return n / elapsed, n / cpu


def large_paste(findings: int = 5_000, size: int = 200_000, seed: int = 11) -> str:
    """About `size` characters of prose holding `findings` pieces of personal data."""
    rng = random.Random(seed)
    kinds = [lambda i: f"user{i}@example.com", lambda i: f"10.{i % 250}.{i // 250 % 250}.7",
             lambda i: f"+44 20 7946 {i % 10_000:04d}", lambda i: "4242 4242 4242 4242"]
    filler = size // findings
    parts = []
    for i in range(findings):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < filler - 20:
            words.append(rng.choice(WORDS))
        parts.append(" ".join(words) + " " + kinds[i % len(kinds)](i))
    return " ".join(parts)


async def stall_during(work: Awaitable[Any]) -> tuple[float, float]:
    """(seconds `work` took, the longest the event loop was blocked meanwhile)."""
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # the ticker is running
    started = time.perf_counter()
    await work
    elapsed = time.perf_counter() - started
    done = True
    await tick
    return elapsed, longest


async def large_rows(tmp: str, master_key: str, count: int) -> None:
    from eventstore.privacy.pii import PIIRedactor

    text = large_paste()
    found = len(PIIRedactor().find(text))
    print(f"\nlarge paste: {len(text) // 1000} KB, {found:,} findings, {count} appends each, "
          "PIIRedactor + Encryption (target: longest stall < 50 ms)")
    print(f"  {'':<22} {'s/event':>8}  {'longest stall':>13}")
    for label, thread_above in (("worker thread", 32_768), ("on the event loop", 10**9)):
        url = f"sqlite:///{Path(tmp) / f'large-{thread_above}.db'}"
        async with EventStore.open(url, redact=[PIIRedactor(thread_above=thread_above)],
                                   encryption=Encryption(master_key)) as store:
            await store.append(Event(type="warm-up", user_id="u1", data={"content": "x"}))
            worst, total = 0.0, 0.0
            for i in range(count):
                event = Event(type="message_sent", user_id=f"user-{i}",
                              data={"role": "user", "content": text})
                elapsed, stall = await stall_during(store.append(event))
                worst, total = max(worst, stall), total + elapsed
        print(f"  {label:<22} {total / count:8.2f}  {worst * 1000:10.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per run")
    parser.add_argument("--concurrency", type=int, default=1000, help="appends per round")
    parser.add_argument("--batch", type=int, default=100, help="append_many batch size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--large", type=int, default=3, help="appends of the large paste")
    args = parser.parse_args()

    n = args.concurrency
    events = messages(n * (args.rounds + 1))
    rounds = [events[i : i + n] for i in range(0, len(events), n)]
    size = sum(len(e.data["content"]) for e in events) / len(events)
    with_pii = sum(any(p in e.data["content"] for p in PII) for e in events) / len(events)
    print(f"{len(events) - n} timed events of ~{size:.0f} chars ({with_pii:.0%} with PII), "
          f"{USERS} users, SQLite (WAL, synchronous=normal), best of {args.repeat}")

    modes: dict[str, Callable[[EventStore, list[list[Event]]], Awaitable[None]]] = {
        f"concurrent ({n} tasks x append)": concurrent,
        f"batched (append_many of {args.batch})":
            lambda store, r: batched(store, r, args.batch),
    }
    setups = configs(generate_master_key())
    with tempfile.TemporaryDirectory() as tmp:
        counter = 0
        for mode, run in modes.items():
            best = {name: (0.0, 0.0) for name in setups}
            for _ in range(args.repeat):
                for name, make in setups.items():
                    counter += 1
                    url = f"sqlite:///{Path(tmp) / f'bench-{counter}.db'}"
                    wall, cpu = await measure(url, make(), rounds, run)
                    best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
            print(f"\n{mode}\n  {'':<11} {'events/s':>10}  ratio  {'per CPU-s':>10}  ratio")
            base_wall, base_cpu = best["none"]
            for name, (wall, cpu) in best.items():
                print(f"  {name:<11} {wall:>10,.0f}  {wall / base_wall:5.2f}  {cpu:>10,.0f}"
                      f"  {cpu / base_cpu:5.2f}")
        if args.large:
            await large_rows(tmp, generate_master_key(), args.large)


if __name__ == "__main__":
    asyncio.run(main())
