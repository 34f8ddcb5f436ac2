"""SQLite backend specifics: schema and URL options, query plans on realistic data, several
writers (stores and processes) on one file, readers against a held write lock, and
durability when a writer process is killed mid-stream."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import random
import shutil
import signal
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventstore import (
    BackendError,
    Event,
    EventStore,
    EventStoreError,
    RecordedEvent,
    SchemaVersionError,
)
from eventstore.backends.sqlite import SCHEMA_VERSION, SQLiteBackend
from eventstore.query import build_query

from .conftest import wait_for

KILL_WRITER = Path(__file__).with_name("kill_writer.py")


def url(path: Path, **options: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def raw(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A plain sqlite3 connection in autocommit mode (transactions are explicit)."""
    return sqlite3.connect(path, isolation_level=None, timeout=timeout)


def msg(conv: str = "c1", user: str = "u1", content: str = "hi") -> Event:
    return Event(type="message_sent", conversation_id=conv, user_id=user,
                 data={"role": "user", "content": content})


def backend_of(store: EventStore) -> SQLiteBackend:
    assert isinstance(store.backend, SQLiteBackend)
    return store.backend


async def within(awaitable: Any, seconds: float = 5.0) -> Any:
    """Await with a deadline: a read that hangs behind the writer fails the test."""
    return await asyncio.wait_for(awaitable, seconds)


async def read_all(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read()]


def assert_contiguous(events: list[RecordedEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    stamps = [e.recorded_at for e in events]
    assert stamps == sorted(stamps), "recorded_at must be non-decreasing in seq order"


# --- schema and options -------------------------------------------------------------


async def test_first_use_creates_the_file_with_its_schema_and_version(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    assert not db.exists()
    async with EventStore.open(url(db)) as store:
        assert db.exists()
        rec = await store.append(msg())
    conn = raw(db)
    try:
        names = {(kind, name) for kind, name in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
        assert {("table", "events"), ("table", "checkpoints"),
                ("table", "eventstore_meta")} <= names
        assert {("index", f"events_by_{f}") for f in
                ("conversation", "user", "type", "recorded_at")} <= names
        meta = dict(conn.execute("SELECT key, value FROM eventstore_meta"))
        assert int(meta["schema_version"]) == SCHEMA_VERSION
        assert len(meta["secret"]) >= 16
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute(
            "SELECT seq, id, type, conversation_id, user_id FROM events").fetchall()
        assert row == [(1, rec.id, "message_sent", "c1", "u1")]
    finally:
        conn.close()

    # opening again keeps the version, the secret (so cursors survive) and the data
    async with EventStore.open(url(db)) as again:
        assert await read_all(again) == [rec]
    conn = raw(db)
    try:
        assert dict(conn.execute("SELECT key, value FROM eventstore_meta")) == meta
    finally:
        conn.close()


async def test_a_newer_schema_version_is_refused_with_a_helpful_message(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    async with EventStore.open(url(db)) as store:
        await store.append(msg())
    newer = SCHEMA_VERSION + 1
    conn = raw(db)
    conn.execute("UPDATE eventstore_meta SET value = ? WHERE key = 'schema_version'",
                 (str(newer),))
    conn.close()

    store = EventStore.open(url(db))
    with pytest.raises(SchemaVersionError) as info:
        await store.start()
    text = str(info.value)
    assert isinstance(info.value, BackendError)
    assert str(db) in text and f"version {newer}" in text and f"({SCHEMA_VERSION})" in text
    assert "upgrade eventstore" in text
    # the refused open changed nothing and let go of the file
    conn = raw(db, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT value FROM eventstore_meta WHERE key = 'schema_version'"
                            ).fetchone() == (str(newer),)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_missing_directory_is_a_backend_error(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "x.db"
    with pytest.raises(BackendError, match="does not exist"):
        async with EventStore.open(url(db)):
            pass
    assert not db.parent.exists()


@pytest.mark.parametrize("kind", ["directory", "not-a-database"])
async def test_a_path_that_is_not_a_database_is_a_backend_error(
    tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "target"
    if kind == "directory":
        target.mkdir()
    else:
        target.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(BackendError, match=str(target)):
        async with EventStore.open(url(target)):
            pass


async def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    with pytest.raises(BackendError, match="no eventstore database"):
        async with EventStore.open(url(db, create="false")):
            pass
    assert not db.exists()


async def writer_pragma(backend: SQLiteBackend, name: str) -> Any:
    """A PRAGMA as the backend's own writer connection sees it (they are per connection)."""
    def read() -> Any:
        assert backend._writer is not None
        return backend._writer.execute(f"PRAGMA {name}").fetchone()[0]

    return await backend._on_writer(read)


async def reader_pragma(backend: SQLiteBackend, name: str) -> Any:
    ((value,),) = await backend._fetch(f"PRAGMA {name}", ())
    return value


@pytest.mark.parametrize(
    ("options", "synchronous"),
    [({}, 1), ({"synchronous": "normal"}, 1), ({"synchronous": "full"}, 2),
     ({"synchronous": "FULL"}, 2), ({"synchronous": "extra"}, 3)],
)
async def test_synchronous_url_option_is_honoured_on_the_writer(
    tmp_path: Path, options: dict[str, str], synchronous: int
) -> None:
    async with EventStore.open(url(tmp_path / "x.db", **options)) as store:
        backend = backend_of(store)
        assert await writer_pragma(backend, "synchronous") == synchronous
        assert await writer_pragma(backend, "journal_mode") == "wal"
        await store.append(msg())  # the option does not get in the way of writing


async def test_busy_timeout_url_option_is_honoured(tmp_path: Path) -> None:
    async with EventStore.open(url(tmp_path / "x.db", busy_timeout=1234)) as store:
        backend = backend_of(store)
        assert await writer_pragma(backend, "busy_timeout") == 1234
        assert await reader_pragma(backend, "busy_timeout") == 1234
        assert await reader_pragma(backend, "query_only") == 1


@pytest.mark.parametrize("query", ["synchronous=bogus", "busy_timeout=soon", "journal=off",
                                   "watch_interval=-1", "watch_interval=soon",
                                   "watch_interval=inf"])
def test_bad_url_options_raise_an_eventstore_error(tmp_path: Path, query: str) -> None:
    with pytest.raises(EventStoreError):
        EventStore.open(f"sqlite:///{tmp_path / 'x.db'}?{query}")


# --- query plans --------------------------------------------------------------------

PLAN_EVENTS = 20_000
PLAN_TYPES = [f"type_{i}" for i in range(12)]
PLAN_TYPE_WEIGHTS = [40, 15, 10, 8, 6, 5, 4, 4, 3, 2, 2, 1]  # a few types dominate


@dataclass(frozen=True)
class PlanData:
    plain: Path  # never analysed
    analyzed: Path  # the same file after ANALYZE
    events: list[RecordedEvent]

    def at(self, fraction: float) -> RecordedEvent:
        return self.events[int(len(self.events) * fraction)]


async def _fill(db: Path) -> list[RecordedEvent]:
    rnd = random.Random(20_000)
    async with EventStore.open(url(db)) as store:
        # 200 commits of 100: recorded_at takes 200 distinct, increasing values
        for _ in range(PLAN_EVENTS // 100):
            await store.append_many([
                Event(type=rnd.choices(PLAN_TYPES, PLAN_TYPE_WEIGHTS)[0],
                      conversation_id=f"conv-{rnd.randrange(2_000)}",
                      user_id=f"user-{rnd.randrange(500)}", data={"n": rnd.random()})
                for _ in range(100)
            ])
        return await read_all(store)


@pytest.fixture(scope="module")
def plan_data(tmp_path_factory: pytest.TempPathFactory) -> PlanData:
    base = tmp_path_factory.mktemp("plans")
    plain, analyzed = base / "plain.db", base / "analyzed.db"
    with ThreadPoolExecutor(1) as pool:  # a loop of its own, away from the test's loop
        events = pool.submit(asyncio.run, _fill(plain)).result()
    shutil.copy(plain, analyzed)  # closing the store checkpointed the WAL into the file
    conn = raw(analyzed)
    conn.execute("ANALYZE")
    assert conn.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0
    conn.close()
    return PlanData(plain, analyzed, events)


@dataclass(frozen=True)
class Combo:
    conversation: bool
    user: bool
    type: str | None  # None, "one" or "set"
    time: str | None  # None, "after", "before" or "both"

    @property
    def id(self) -> str:
        parts = [n for n, on in (("conv", self.conversation), ("user", self.user)) if on]
        parts += [f"type-{self.type}"] if self.type else []
        parts += [self.time] if self.time else []
        return "+".join(parts) or "none"

    def filters(self, data: PlanData) -> dict[str, Any]:
        sample = data.at(0.4)
        out: dict[str, Any] = {}
        if self.conversation:
            out["conversation_id"] = sample.conversation_id
        if self.user:
            out["user_id"] = sample.user_id
        if self.type == "one":
            out["type"] = PLAN_TYPES[3]
        elif self.type == "set":
            out["type"] = {PLAN_TYPES[0], PLAN_TYPES[3], PLAN_TYPES[9]}
        if self.time in ("after", "both"):
            out["after"] = data.at(0.25).recorded_at
        if self.time in ("before", "both"):
            out["before"] = data.at(0.75).recorded_at
        return out


COMBOS = [Combo(*c) for c in itertools.product(
    (False, True), (False, True), (None, "one", "set"), (None, "after", "before", "both"))]


def expected_matches(data: PlanData, filters: dict[str, Any]) -> list[RecordedEvent]:
    types = filters.get("type")
    types = {types} if isinstance(types, str) else types
    return [
        e for e in data.events
        if filters.get("conversation_id", e.conversation_id) == e.conversation_id
        and filters.get("user_id", e.user_id) == e.user_id
        and (types is None or e.type in types)
        and filters.get("after", e.recorded_at) <= e.recorded_at
        <= filters.get("before", e.recorded_at)
    ]


@dataclass
class Plans:
    filters: dict[str, Any]
    page: dict[int, list[str]]  # after_seq -> plan rows of the page SQL
    count: list[str]
    lookups: list[list[str]]  # plans of the queries that turn time bounds into seqs


async def plans_for(db: Path, data: PlanData, combo: Combo) -> Plans:
    """The plans of the SQL the store really runs for `combo`, checked on the real data."""
    filters = combo.filters(data)
    query = build_query(**filters)
    expected = expected_matches(data, filters)
    ran: list[tuple[str, list[Any]]] = []
    async with EventStore.open(url(db)) as store:
        backend = backend_of(store)
        fetch = backend._fetch

        async def spy(sql: str, params: Any) -> list[Any]:
            ran.append((sql, list(params)))
            return await fetch(sql, params)

        backend._fetch = spy  # type: ignore[method-assign]
        assert await store.count_events(**filters) == len(expected)
        count_sql, count_params = ran[-1]
        # explain() must describe the SQL list_events runs, at any cursor position
        page = await store.list_events(limit=3, **filters)
        assert page.events == expected[:3]
        lookups: list[tuple[str, list[Any]]] = []
        if page.next_cursor is not None:
            before = len(ran)
            nxt = await store.list_events(limit=3, cursor=page.next_cursor, **filters)
            assert nxt.events == expected[3:6]
            *lookups, (page_sql_ran, page_params) = ran[before:]
            sql, _ = backend.explain(query, page.events[-1].seq, 4)
            assert page_sql_ran == sql and page_params[-1] == 4
            # time bounds are resolved to a seq range by lookups of their own
            assert bool(lookups) == (combo.time is not None)

    conn = raw(db)
    try:
        def plan(sql: str, params: list[Any]) -> list[str]:
            return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

        middle = data.at(0.5).seq
        last = data.events[-1].seq
        positions = (0, middle, last)  # start, middle and end of the log
        return Plans(filters,
                     {seq: plan(*backend.explain(query, seq, 25, last)) for seq in positions},
                     plan(count_sql, count_params),
                     [plan(*lookup) for lookup in lookups])
    finally:
        conn.close()


def scans(plan: list[str]) -> list[str]:
    # "SCAN events" (the table) and "SCAN events USING [COVERING] INDEX" (a whole index)
    # both read every row; a SEARCH reads a range.
    return [row for row in plan if row.startswith("SCAN events")]


@pytest.mark.parametrize("analyzed", [False, True], ids=["plain", "analyzed"])
@pytest.mark.parametrize("combo", COMBOS, ids=[c.id for c in COMBOS])
async def test_page_and_count_sql_search_an_index_and_never_sort(
    plan_data: PlanData, combo: Combo, analyzed: bool
) -> None:
    # sqlite.py promises "a filtered page is an index range read in seq order with no
    # sort": a page of 25 then costs about 25 index steps wherever the cursor is.
    db = plan_data.analyzed if analyzed else plan_data.plain
    plans = await plans_for(db, plan_data, combo)
    for seq, plan in plans.page.items():
        assert not scans(plan), f"page SQL after seq {seq} scans: {plan} ({plans.filters})"
        assert any(row.startswith("SEARCH events") for row in plan), plan
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, (
            f"page SQL after seq {seq} sorts: {plan} ({plans.filters})")
    assert not scans(plans.count), f"count SQL scans: {plans.count} ({plans.filters})"
    for lookup in plans.lookups:
        assert not scans(lookup), f"time-bound lookup scans: {lookup} ({plans.filters})"


# --- several writers on one file ----------------------------------------------------


async def append_mix(store: EventStore, tag: str, rounds: int, singles: int, batches: int,
                     batch_size: int) -> list[RecordedEvent]:
    """Rounds of concurrent single appends and batches from one store (each round is about
    one group commit, so several stores' rounds contend for the file's write lock);
    returns every acknowledged event."""
    async def one(r: int, n: int) -> list[RecordedEvent]:
        return [await store.append(Event(type="single", data={"tag": tag, "r": r, "n": n}))]

    async def many(r: int, k: int) -> list[RecordedEvent]:
        recs = await store.append_many([
            Event(type="batch", data={"tag": tag, "r": r, "batch": k, "i": i})
            for i in range(batch_size)
        ])
        assert [r.seq for r in recs] == list(range(recs[0].seq, recs[0].seq + batch_size))
        return recs

    rnd = random.Random(tag)
    acknowledged: list[RecordedEvent] = []
    for r in range(rounds):
        tasks = [one(r, n) for n in range(singles)] + [many(r, k) for k in range(batches)]
        rnd.shuffle(tasks)
        acknowledged += [rec for recs in await asyncio.gather(*tasks) for rec in recs]
    return acknowledged


def switches(events: list[RecordedEvent]) -> int:
    """How often the log passes from one writer's events to another's."""
    return sum(a.data["tag"] != b.data["tag"] for a, b in itertools.pairwise(events))


def assert_log_is(events: list[RecordedEvent], acknowledged: list[RecordedEvent]) -> None:
    """The log holds exactly the acknowledged events, once each, at the seqs they were given."""
    assert_contiguous(events)
    by_seq = {e.seq: e for e in events}
    seqs = [a.seq for a in acknowledged]
    assert len(seqs) == len(set(seqs)), "two appends were given the same seq"
    assert len({a.id for a in acknowledged}) == len(acknowledged)
    for ack in acknowledged:
        assert by_seq.get(ack.seq) == ack
    assert len(events) == len(acknowledged)


async def test_three_stores_on_one_file_append_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    stores = [EventStore.open(url(db)) for _ in range(3)]
    for store in stores:
        await store.start()
    try:
        results = await within(asyncio.gather(*(
            append_mix(store, f"s{i}", rounds=20, singles=10, batches=1, batch_size=10)
            for i, store in enumerate(stores)
        )), seconds=60)
        acknowledged = [rec for recs in results for rec in recs]
        assert len(acknowledged) == 3 * 20 * 20
        for store in stores:  # every store sees the whole log
            assert await store.head() == len(acknowledged)
            assert_log_is(await read_all(store), acknowledged)
        # the stores' commits interleaved: they really contended for the file
        assert switches(await read_all(stores[0])) >= 2
    finally:
        for store in stores:
            await store.close()


async def spawn_writer(db: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(KILL_WRITER), str(db), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def read_line(proc: asyncio.subprocess.Process, seconds: float = 30.0) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), seconds)
    if not line:
        assert proc.stderr is not None
        error = (await asyncio.wait_for(proc.stderr.read(), seconds)).decode()
        raise AssertionError(f"writer process ended early (rc={await proc.wait()}):\n{error}")
    return line.decode().rstrip("\n")


async def test_two_processes_append_to_one_file_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with EventStore.open(url(db)):
        pass  # create the schema once, so neither child races the other to create it
    procs = [await spawn_writer(db, "fixed", "--tag", f"p{i}", "--rounds", "20",
                                "--singles", "20", "--batches", "1", "--batch-size", "10")
             for i in range(2)]
    try:
        for proc in procs:
            assert await read_line(proc) == "READY"
        for proc in procs:  # both start appending at once
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        acked: list[tuple[str, int]] = []
        for proc in procs:
            while (line := await read_line(proc, seconds=60)) != "DONE":
                kind, event_id, seq = line.split()
                assert kind == "E"
                acked.append((event_id, int(seq)))
            assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    assert len(acked) == 2 * 20 * 30
    async with EventStore.open(url(db)) as store:
        events = await read_all(store)
    assert_contiguous(events)
    assert len(events) == len(acked)
    assert sorted(acked, key=lambda a: a[1]) == [(e.id, e.seq) for e in events]
    assert switches(events) >= 2  # the two processes' commits interleaved


def threads(name: str) -> set[threading.Thread]:
    """The live threads of that name (other tests' stores may still hold some)."""
    return {t for t in threading.enumerate() if t.name == name}


WATCH, CHECKPOINT = "eventstore-sqlite-watch", "eventstore-sqlite-checkpoint"


async def test_a_subscriber_gets_another_process_appends_live(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with EventStore.open(url(db), guardian_interval=3600) as store:
        seen: list[RecordedEvent] = []
        sub = await store.subscribe(seen.append, name="watcher")
        await wait_for(lambda: sub.idle)
        proc = await spawn_writer(db, "fixed", "--tag", "child", "--rounds", "5",
                                  "--singles", "4", "--batches", "1", "--batch-size", "5")
        try:
            assert await read_line(proc) == "READY"
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            acked: list[tuple[str, int]] = []
            while (line := await read_line(proc, seconds=60)) != "DONE":
                _, event_id, seq = line.split()
                acked.append((event_id, int(seq)))
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert len(acked) == 5 * 9
        # delivered by the commit watcher: the guardian never ticks in this test
        await wait_for(lambda: len(seen) == len(acked))
        assert [(e.id, e.seq) for e in seen] == sorted(acked, key=lambda a: a[1])
        assert store.guardian.ticks == 0


async def test_the_guardian_restarts_a_stopped_commit_watcher(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with EventStore.open(url(db), guardian_interval=3600) as store, \
            EventStore.open(url(db)) as other:
        watcher = backend_of(store).watcher
        assert watcher is not None and watcher.alive
        seen: list[int] = []
        sub = await store.subscribe(lambda e: seen.append(e.seq), name="w")
        await wait_for(lambda: sub.idle)
        watcher.close()  # as if its thread had died
        assert not watcher.alive
        missed = await other.append(msg(content="while nobody watched"))
        assert "relistened" in await store.guardian.check()
        assert watcher.alive
        await wait_for(lambda: seen == [missed.seq])
        later = await other.append(msg(content="watched again"))
        await wait_for(lambda: seen == [missed.seq, later.seq])


async def test_every_listener_of_a_store_shares_one_commit_watcher(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    before = threads(WATCH)
    async with EventStore.open(url(db)) as store, EventStore.open(url(db)) as other:
        backend = backend_of(store)
        watcher = backend.watcher
        heads: list[int] = []
        await backend.listen(heads.append)  # as `eventstore tail` does
        assert backend.watcher is watcher
        assert len(threads(WATCH) - before) == 2  # one per store
        rec = await other.append(msg())
        await wait_for(lambda: rec.seq in heads)
    assert threads(WATCH) <= before


async def test_watch_interval_zero_turns_the_watcher_off(tmp_path: Path) -> None:
    before = threads(WATCH)
    async with EventStore.open(url(tmp_path / "x.db", watch_interval=0)) as store:
        assert backend_of(store).watcher is None
        assert not await store.backend.check_listener()
    async with EventStore.open(url(tmp_path / "x.db", watch_interval=0.2)) as store:
        watcher = backend_of(store).watcher
        assert watcher is not None and watcher.interval == 0.2 and watcher.alive
    assert threads(WATCH) <= before


# --- readers against the write lock -------------------------------------------------


async def test_reads_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with EventStore.open(url(db, busy_timeout=30_000)) as store:
        seeded = await store.append_many([msg(content=str(i)) for i in range(10)])
        blocker = raw(db)
        blocker.execute("BEGIN IMMEDIATE")  # SQLite's one write lock, held, not committed
        blocker.execute("INSERT INTO checkpoints VALUES ('uncommitted', 99, NULL, 0)")
        try:
            page = await within(store.list_events(limit=4))
            assert page.events == seeded[:4]
            assert await within(store.count_events(conversation_id="c1")) == 10
            assert await within(read_all(store)) == seeded
            assert await within(store.head()) == 10
            assert await within(store.backend.load_checkpoint("uncommitted")) is None

            pending = asyncio.ensure_future(store.append(msg(content="late")))
            done, _ = await asyncio.wait({pending}, timeout=0.5)
            assert not done, "an append went through while another connection held the lock"
            # reads still answer while that append waits for the lock
            assert await within(store.count_events()) == 10
            nxt = await within(store.list_events(limit=4, cursor=page.next_cursor))
            assert nxt.events == seeded[4:8]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        late = await within(pending, seconds=10)
        assert late.seq == 11 and late.data["content"] == "late"
        assert await read_all(store) == [*seeded, late]


async def test_a_lock_held_past_busy_timeout_fails_the_append_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with EventStore.open(url(db, busy_timeout=100)) as store:
        first = await store.append(msg(content="first"))
        blocker = raw(db)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(BackendError, match="busy_timeout"):
                await within(store.append(msg(content="refused")))
            assert await within(store.count_events()) == 1
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        second = await within(store.append(msg(content="second")))
        assert second.seq == 2
        assert await read_all(store) == [first, second]



# --- WAL checkpoints ----------------------------------------------------------------




@pytest.mark.parametrize("background", [0.02, 3600.0], ids=["running", "starved"])
async def test_the_wal_stays_bounded_under_a_steady_stream_of_appends(
    tmp_path: Path, background: float
) -> None:
    # Commits back to back never leave the background checkpoint a quiet moment to catch
    # up; the writer finishing a checkpoint itself is what lets the WAL start over
    # (without it the WAL grew to most of the content written, in a trial run). On a
    # loaded machine the background thread may hardly run at all ("starved": it sleeps an
    # hour between checkpoints), and the writer alone must still bound the WAL.
    db, wal = tmp_path / "x.db", tmp_path / "x.db-wal"
    before = threads(CHECKPOINT)
    async with EventStore.open(url(db)) as store:
        checkpointer = backend_of(store).checkpointer
        assert checkpointer is not None
        checkpointer.interval = background
        checkpointer.max_frames = 100
        written: list[RecordedEvent] = []
        # about 30 MB of content; each commit of 200 rows adds about 1 MB of WAL (whole
        # pages of the table and of each index leaf it touches), so the WAL's high-water
        # mark is a few MB with help and most of the content without
        for k in range(250):
            written += await store.append_many(
                [msg(conv=f"c{i % 50}", content=f"{k}-{i}-" + "x" * 600) for i in range(200)])
        payload = sum(len(e.data["content"]) for e in written)
        assert checkpointer.checkpoints > 0 or background > 60
        assert wal.stat().st_size < payload / 5, (wal.stat().st_size, payload)
        assert await read_all(store) == written
    assert threads(CHECKPOINT) <= before
    assert not wal.exists() or wal.stat().st_size == 0  # the last close checkpointed it all
    async with EventStore.open(url(db)) as store:
        assert await read_all(store) == written


async def test_appends_survive_a_checkpointer_that_cannot_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "x.db"
    caplog.set_level(logging.WARNING, logger="eventstore.sqlite")
    async with EventStore.open(url(db)) as store:
        checkpointer = backend_of(store).checkpointer
        assert checkpointer is not None and checkpointer._conn is not None
        checkpointer._conn.close()  # every checkpoint now fails with ProgrammingError
        before = checkpointer.checkpoints
        recs = [await store.append(msg(content=str(i))) for i in range(20)]
        await wait_for(lambda: any("WAL checkpoint" in r.getMessage() and "failed" in
                                   r.getMessage() for r in caplog.records))
        recs += [await store.append(msg(content="after the failure"))]
        assert await read_all(store) == recs
        assert checkpointer.checkpoints == before
    async with EventStore.open(url(db)) as store:
        assert await read_all(store) == recs

# --- SIGKILL mid-stream -------------------------------------------------------------

BATCH = 50


@dataclass
class Acks:
    batches: dict[int, tuple[int, int]]  # batch k -> (first seq, last seq)
    singles: dict[str, int]  # id -> seq

    def __len__(self) -> int:
        return len(self.batches) + len(self.singles)

    def take(self, line: str) -> None:
        kind, *fields = line.split()
        if kind == "B":
            k, first, last = map(int, fields)
            self.batches[k] = (first, last)
        else:
            assert kind == "E", line
            self.singles[fields[0]] = int(fields[1])


async def kill_mid_stream(db: Path, run: str, wanted: int) -> Acks:
    """Run a stream writer, SIGKILL it after `wanted` acknowledgements; all it acknowledged."""
    proc = await spawn_writer(db, "stream", "--tag", run, "--batch-size", str(BATCH))
    acks = Acks({}, {})
    try:
        while len(acks) < wanted:
            acks.take(await read_line(proc))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        returncode = await asyncio.wait_for(proc.wait(), 30)
    assert returncode == -signal.SIGKILL
    assert proc.stdout is not None
    rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
    for line in rest.split("\n")[:-1]:  # complete lines were acknowledged too
        acks.take(line)
    return acks


def check_after_kill(events: list[RecordedEvent], run: str, acks: Acks) -> None:
    assert_contiguous(events)
    mine = [e for e in events if e.data.get("run") == run]
    batches: dict[int, list[RecordedEvent]] = collections.defaultdict(list)
    for event in mine:
        if event.type == "batch":
            batches[event.data["batch"]].append(event)
    for k, members in batches.items():  # every batch is whole, in one contiguous run
        assert [e.data["i"] for e in members] == list(range(BATCH)), f"batch {k} is partial"
        assert members[-1].seq - members[0].seq == BATCH - 1
    for k, (first, last) in acks.batches.items():
        assert k in batches, f"acknowledged batch {k} was lost"
        assert (batches[k][0].seq, batches[k][-1].seq) == (first, last)
    stored = {e.id: e.seq for e in mine if e.type == "single"}
    for event_id, seq in acks.singles.items():
        assert stored.get(event_id) == seq, f"acknowledged event {event_id} was lost"
    # the kill really came mid-stream: more was committed than the first acks
    assert batches and stored


async def test_sigkill_mid_stream_loses_no_acknowledged_event_and_no_batch_is_partial(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    total = 0
    for run in ("first", "second", "third"):  # kill, recover, and again on top of that
        acks = await kill_mid_stream(db, run, wanted=400)
        assert len(acks.batches) > 0 and len(acks.singles) > 0
        conn = raw(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            conn.close()
        async with EventStore.open(url(db)) as store:
            events = await read_all(store)
            assert len(events) >= total + len(acks.singles) + BATCH * len(acks.batches)
            check_after_kill(events, run, acks)
            # and the store carries on normally
            rec = await store.append(msg(content=f"after {run}"))
            assert rec.seq == len(events) + 1
            recs = await store.append_many([msg(content=str(i)) for i in range(3)])
            assert [r.seq for r in recs] == [rec.seq + 1, rec.seq + 2, rec.seq + 3]
            total = recs[-1].seq
    async with EventStore.open(url(db)) as store:
        assert_contiguous(await read_all(store))
        assert await store.head() == total

