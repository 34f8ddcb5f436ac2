"""PostgreSQL backend specifics: gap-free order across processes, a reader against a held
group transaction, connection loss (pg_terminate_backend) mid-stream, query plans on
realistic data, schema creation and versioning, and the cross-process listener.

Each test works in a schema of its own, dropped afterwards. Without a server the tests
skip; with EVENTSTORE_REQUIRE_PG=1 they fail."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from eventstore import BackendError, Event, EventStore, RecordedEvent, SchemaVersionError
from eventstore.backends.postgres import SCHEMA_VERSION, PostgresBackend
from eventstore.codec import digest_of, encode_event, place, stamp
from eventstore.query import build_query

from .conftest import PG_URL, drop_pg_schema, require_pg, wait_for


@pytest.fixture
def pg() -> None:
    # Sync on purpose: require_pg() probes with asyncio.run, which cannot run in a loop.
    require_pg()


@pytest.fixture
async def schema(pg: None) -> AsyncIterator[str]:
    name = f"es_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await drop_pg_schema(name)


async def admin() -> Any:
    import asyncpg

    return await asyncpg.connect(PG_URL)


def msg(conv: str = "c1", user: str = "u1", content: str = "hi") -> Event:
    return Event(type="message_sent", conversation_id=conv, user_id=user,
                 data={"role": "user", "content": content})


def backend_of(store: EventStore) -> PostgresBackend:
    assert isinstance(store.backend, PostgresBackend)
    return store.backend


async def read_all(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read()]


def assert_contiguous(events: list[RecordedEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.id for e in events}) == len(events)
    stamps = [e.recorded_at for e in events]
    assert stamps == sorted(stamps)  # time filters and seq order agree


# --- several processes ----------------------------------------------------------------

_PRELUDE = """
import asyncio, json, sys
from eventstore import Event, EventStore

URL, SCHEMA, ARG = sys.argv[1], sys.argv[2], sys.argv[3]

async def ready_then_go():
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
"""

# Each writer: 8 tasks; every fourth operation is an append_many of 3, so groups mix
# callers and sizes. Prints [id, seq] of every acknowledged event.
WRITER = _PRELUDE + """
TASKS, OPS = 8, 30

async def main():
    async with EventStore.open(URL, schema=SCHEMA, pool_size=2) as store:
        async def task(t):
            acked = []
            for i in range(OPS):
                def ev(k):
                    return Event(type="message_sent", conversation_id=f"{ARG}-{t}",
                                 user_id=ARG, data={"role": "user", "content": f"{i}.{k}"})
                if i % 4 == 3:
                    recs = await store.append_many([ev(k) for k in range(3)])
                else:
                    recs = [await store.append(ev(0))]
                acked += [[r.id, r.seq] for r in recs]
            return acked
        await ready_then_go()
        done = await asyncio.gather(*(task(t) for t in range(TASKS)))
    print(json.dumps([a for acked in done for a in acked]))

asyncio.run(main())
"""
WRITER_EVENTS = 8 * sum(3 if i % 4 == 3 else 1 for i in range(30))

# Pages with a cursor while the writers run. It re-reads a short last page from the cursor
# that led to it; what it saw there must come back unchanged at the front, or an event
# committed later with a lower seq (the gap a cursor pager would skip).
PAGER = _PRELUDE + """
import time

async def main():
    total = int(ARG)
    seen, rewrites, polls = [], [], 0
    async with EventStore.open(URL, schema=SCHEMA, pool_size=1) as store:
        await ready_then_go()
        cursor, shown = None, []
        deadline = time.monotonic() + 30
        while len(seen) < total and time.monotonic() < deadline:
            page = await store.list_events(limit=7, cursor=cursor)
            polls += 1
            got = [[e.seq, e.id] for e in page.events]
            if got[:len(shown)] != shown:
                rewrites.append([shown, got])
            seen += got[len(shown):]
            if page.next_cursor is not None:
                cursor, shown = page.next_cursor, []
            else:
                shown = got
                await asyncio.sleep(0.001)
    print(json.dumps({"seen": seen, "rewrites": rewrites, "polls": polls}))

asyncio.run(main())
"""

SUBSCRIBER = _PRELUDE + """
async def main():
    total = int(ARG)
    got, firsts = [], set()
    done = asyncio.Event()

    def handler(event):
        got.append([event.seq, event.id])
        firsts.add(event.seq)
        if len(firsts) >= total:
            done.set()

    async with EventStore.open(URL, schema=SCHEMA, pool_size=2) as store:
        sub = await store.subscribe(handler, name="multi-process")
        await ready_then_go()
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            pass
        await sub.stop()
    print(json.dumps(got))

asyncio.run(main())
"""


async def spawn(script: str, schema: str, arg: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, PG_URL, schema, arg,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def result_of(proc: asyncio.subprocess.Process) -> Any:
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_processes_append_concurrently_and_a_pager_and_a_subscriber_miss_nothing(
    schema: str,
) -> None:
    async with EventStore.open(PG_URL, schema=schema):
        pass  # create the schema once, so the children race on appends, not on DDL
    total = 4 * WRITER_EVENTS
    writers = [await spawn(WRITER, schema, f"w{n}") for n in range(4)]
    pager = await spawn(PAGER, schema, str(total))
    subscriber = await spawn(SUBSCRIBER, schema, str(total))
    procs = [*writers, pager, subscriber]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line == b"ready\n", (line, (await proc.communicate())[1].decode())
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        acked = [a for w in writers for a in await result_of(w)]
        paged = await result_of(pager)
        delivered = await result_of(subscriber)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    # every acknowledged event once, seqs 1..N with no hole
    assert len(acked) == total
    assert sorted(seq for _, seq in acked) == list(range(1, total + 1))
    by_seq = {seq: event_id for event_id, seq in acked}

    # the pager saw each event exactly once, in seq order, and no page ever changed
    # behind it
    assert paged["rewrites"] == []
    assert [seq for seq, _ in paged["seen"]] == list(range(1, total + 1))
    assert all(by_seq[seq] == event_id for seq, event_id in paged["seen"])
    assert paged["polls"] > total / 7  # it really was paging while the writers ran

    # at least once, in seq order: first deliveries are 1..N in order, repeats only replay
    firsts: list[int] = []
    for seq, event_id in delivered:
        assert by_seq[seq] == event_id
        if seq not in firsts:
            assert seq == len(firsts) + 1, f"subscriber skipped to {seq}"
            firsts.append(seq)
    assert firsts == list(range(1, total + 1))

    async with EventStore.open(PG_URL, schema=schema) as store:
        events = await read_all(store)
    assert_contiguous(events)
    assert {e.seq: e.id for e in events} == by_seq


# --- ordering against a held group transaction ----------------------------------------


async def test_a_reader_never_sees_a_later_seq_while_an_earlier_one_is_uncommitted(
    schema: str,
) -> None:
    async with EventStore.open(PG_URL, schema=schema) as store:
        first = await store.append(msg(content="committed"))
        backend = backend_of(store)
        other = await admin()  # another process, in the middle of its group transaction
        try:
            await other.execute(f"BEGIN; SELECT pg_advisory_xact_lock({backend.lock_key})")
            head = await other.fetchval(f'SELECT max(seq) FROM "{schema}".events')
            held = msg(content="held open")
            now = datetime.now(UTC)
            await other.execute(
                f'INSERT INTO "{schema}".events (seq, id, type, conversation_id, user_id, '
                "recorded_at, digest, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                head + 1, held.id, held.type, held.conversation_id, held.user_id,
                int(now.timestamp() * 1_000_000), digest_of(held),
                place(encode_event(held), head + 1, stamp(now)),
            )
            later = asyncio.ensure_future(store.append(msg(content="later")))
            await asyncio.sleep(0.3)
            # The later append waits for the lock instead of taking seq 3 and committing
            # first; readers see neither until the held transaction commits.
            assert not later.done()
            page = await store.list_events(limit=10)
            assert page.events == [first] and await store.head() == 1
            await other.execute("COMMIT")
        finally:
            await other.close()
        rec = await asyncio.wait_for(later, 5)
        assert rec.seq == 3
        events = await read_all(store)
        assert [e.data["content"] for e in events] == ["committed", "held open", "later"]
        assert_contiguous(events)


async def test_without_the_lock_a_bigserial_lets_a_reader_skip_an_event(schema: str) -> None:
    """The hazard the lock prevents, reproduced with raw SQL."""
    async with EventStore.open(PG_URL, schema=schema):
        pass
    one, two, reader = await admin(), await admin(), await admin()
    try:
        await one.execute(f'CREATE TABLE "{schema}".naive (seq bigserial PRIMARY KEY, v text)')
        await one.execute(f"BEGIN; INSERT INTO \"{schema}\".naive (v) VALUES ('first')")
        await two.execute(f"INSERT INTO \"{schema}\".naive (v) VALUES ('second')")
        cursor = await reader.fetchval(f'SELECT max(seq) FROM "{schema}".naive')
        assert cursor == 2  # seq 2 is visible while seq 1 is still in flight
        await one.execute("COMMIT")
        after = await reader.fetch(f'SELECT seq FROM "{schema}".naive WHERE seq > $1', cursor)
        assert after == []  # a reader resuming at its cursor never sees seq 1
    finally:
        for conn in (one, two, reader):
            await conn.close()


# --- connection loss ------------------------------------------------------------------


async def terminate(application_name: str) -> int:
    conn = await admin()
    try:
        killed: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()", application_name)
        return killed
    finally:
        await conn.close()


async def test_terminated_connections_fail_cleanly_then_recover_and_lose_nothing(
    schema: str,
) -> None:
    app = f"es_restart_{uuid.uuid4().hex[:8]}"
    settings = {"application_name": app}
    async with EventStore.open(PG_URL, schema=schema, server_settings=settings,
                               guardian_interval=3600) as store:
        watcher = PostgresBackend(PG_URL, schema=schema, server_settings=settings)
        await watcher.open()
        heads: list[int] = []
        await watcher.listen(heads.append)
        try:
            acked: list[RecordedEvent] = []
            failed: list[tuple[Event, BackendError]] = []

            async def stream(task: int) -> None:
                # no pause: the writer is nearly always inside a group transaction
                for i in range(40):
                    batch = [msg(conv=f"c{task}", content=f"{task}.{i}.{k}")
                             for k in range(10 if i % 2 else 1)]
                    try:
                        acked.extend(await store.append_many(batch))
                    except BackendError as exc:
                        failed.extend((event, exc) for event in batch)

            streams = [asyncio.ensure_future(stream(t)) for t in range(4)]
            await wait_for(lambda: len(acked) >= 200)
            # the store's pool and listener, and the watcher's
            assert await terminate(app) >= 3
            await asyncio.wait_for(asyncio.gather(*streams), 20)

            # Later appends succeed on fresh connections, and retrying what failed (same
            # ids) is safe whether or not the failed commit went through.
            acked += [await store.append(msg(content=f"after {i}")) for i in range(5)]
            retried = [await store.append(event) for event, _ in failed]
            for _, exc in failed:
                assert "PostgreSQL at" in str(exc)

            events = await read_all(store)
            assert_contiguous(events)
            assert len(events) == len(acked) + len(failed) == 4 * 20 * 11 + 5
            stored = {e.id: e for e in events}
            assert all(stored[r.id] == r for r in acked + retried)

            # Both listeners reconnect by themselves; check_listener says so exactly once.
            for backend in (watcher, backend_of(store)):
                await wait_for(lambda b=backend: b._listener is not None)
                assert await backend.check_listener() is True
                assert await backend.check_listener() is False
            latest = await store.append(msg(content="notified"))
            await wait_for(lambda: latest.seq in heads)
        finally:
            await watcher.close()


async def waiting_on_the_lock(application_name: str) -> None:
    conn = await admin()
    try:
        async def waiting() -> bool:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND wait_event_type = 'Lock' AND state = 'active'", application_name)
            return n > 0

        for _ in range(500):
            if await waiting():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the append never queued on the advisory lock")
    finally:
        await conn.close()


async def test_a_group_transaction_killed_mid_flight_is_retried_once_then_fails_cleanly(
    schema: str,
) -> None:
    app = f"es_midtx_{uuid.uuid4().hex[:8]}"
    async with EventStore.open(PG_URL, schema=schema, guardian_interval=3600,
                               server_settings={"application_name": app}) as store:
        blocker = await admin()  # another writer that holds the append lock
        try:
            await blocker.execute(
                f"BEGIN; SELECT pg_advisory_xact_lock({backend_of(store).lock_key})")
            event = msg(content="in flight")
            append = asyncio.ensure_future(store.append(event))
            await waiting_on_the_lock(app)
            assert await terminate(app) >= 1
            # the first loss is retried on a new connection, which queues again
            await waiting_on_the_lock(app)
            assert not append.done()
            assert await terminate(app) >= 1
            with pytest.raises(BackendError, match="nothing was written"):
                await asyncio.wait_for(append, 5)
        finally:
            await blocker.execute("ROLLBACK")
            await blocker.close()
        assert await store.count_events() == 0
        first = await store.append(msg(content="next"))
        again = await store.append(event)
        assert (first.seq, again.seq) == (1, 2)
        assert_contiguous(await read_all(store))


async def test_reads_retry_once_on_a_dead_connection(schema: str) -> None:
    app = f"es_read_{uuid.uuid4().hex[:8]}"
    async with EventStore.open(PG_URL, schema=schema, pool_size=1,
                               server_settings={"application_name": app}) as store:
        await store.append(msg())
        backend = backend_of(store)
        # Kill the pooled connection without letting the loop notice, so the next read
        # meets a dead connection rather than one the pool already replaced.
        async with backend._connection() as conn:
            pid = conn.get_server_pid()
        killer = await admin()
        try:
            await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        assert await store.count_events() == 1
        assert len((await store.list_events()).events) == 1


class Outage:
    """A TCP proxy in front of the server: `down()` resets every connection through it and
    refuses new ones (a server that stopped); `up()` accepts again (it came back)."""

    def __init__(self) -> None:
        from urllib.parse import urlsplit

        target = urlsplit(PG_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 5432)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pipes: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        parts = PG_URL.split("@", 1)
        rest = parts[1].split("/", 1)
        return f"{parts[0]}@127.0.0.1:{self.port}/{rest[1]}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.pipes |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.pipes:
            writer.transport.abort()
        self.pipes.clear()
        await self.server.wait_closed()


async def test_a_server_outage_fails_calls_cleanly_and_the_store_recovers(schema: str) -> None:
    outage = Outage()
    await outage.up()
    try:
        async with EventStore.open(outage.url, schema=schema, guardian_interval=3600) as store:
            backend = backend_of(store)
            heads: list[int] = []
            await backend.listen(heads.append)
            before = await store.append_many([msg(content=str(i)) for i in range(5)])
            await outage.down()
            await asyncio.sleep(0.05)
            for call in (store.append(msg(content="during")), store.count_events(),
                         store.list_events(conversation_id="c1"), store.head()):
                with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{outage.port}"):
                    await call
            with pytest.raises(BackendError, match="is the server running"):
                await store.append(msg(content="still down"))
            assert await backend.check_listener() is False  # still down: keeps trying
            await outage.up()
            after = await store.append(msg(content="after"))
            assert after.seq == 6  # the failed appends wrote nothing
            await wait_for(lambda: backend._listener is not None, 10)
            assert await backend.check_listener() is True
            latest = await store.append(msg(content="notified"))
            await wait_for(lambda: latest.seq in heads)
            assert await read_all(store) == [*before, after, latest]
    finally:
        if outage.server is not None:
            outage.server.close()


async def test_an_unreachable_server_is_a_backend_error_that_says_so() -> None:
    store = EventStore.open("postgresql://postgres@127.0.0.1:1/test", schema="nowhere")
    with pytest.raises(BackendError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1.*"
                                           r"is the server running"):
        await store.start()


# --- schema ---------------------------------------------------------------------------


async def test_concurrent_first_opens_create_the_schema_once(schema: str) -> None:
    backends = [PostgresBackend(PG_URL, schema=schema, pool_size=1) for _ in range(4)]
    try:
        await asyncio.gather(*(b.open() for b in backends))
        secrets = {await b.secret() for b in backends}
        assert len(secrets) == 1
    finally:
        for b in backends:
            await b.close()
    conn = await admin()
    try:
        version = await conn.fetchval(
            f"SELECT value FROM \"{schema}\".eventstore_meta WHERE key = 'schema_version'")
        assert int(version) == SCHEMA_VERSION
    finally:
        await conn.close()


async def test_a_newer_schema_version_is_refused(schema: str) -> None:
    async with EventStore.open(PG_URL, schema=schema) as store:
        await store.append(msg())
    conn = await admin()
    try:
        await conn.execute(f"UPDATE \"{schema}\".eventstore_meta SET value = '99' "
                           "WHERE key = 'schema_version'")
    finally:
        await conn.close()
    with pytest.raises(SchemaVersionError, match="upgrade eventstore"):
        await EventStore.open(PG_URL, schema=schema).start()


@pytest.mark.parametrize("name", ["", "bad-name", "1abc", "pg_catalog", "x" * 64, 'a"b'])
def test_a_bad_schema_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresBackend(PG_URL, schema=name)


# --- group commit paths and notifications ---------------------------------------------


async def test_groups_notify_the_head_once_committed_and_retries_notify_nothing(
    schema: str,
) -> None:
    async with EventStore.open(PG_URL, schema=schema) as store, \
            EventStore.open(PG_URL, schema=schema) as other:
        heads: list[int] = []
        await backend_of(other).listen(heads.append)
        big = await store.append_many([msg(content=str(i)) for i in range(1000)])
        small = await store.append_many([msg(content="s1"), msg(content="s2")])
        await wait_for(lambda: heads[-2:] == [1000, 1002])
        assert [r.seq for r in small] == [1001, 1002]
        # retrying a whole group writes nothing and notifies nothing
        again = await store.append_many(
            [Event(**{f: getattr(e, f) for f in Event.__struct_fields__}) for e in big]
        )
        assert again == big
        assert await other.count_events() == 1002
        assert_contiguous(await read_all(other))
        await asyncio.sleep(0.1)
        assert heads[-1] == 1002


# --- query plans ----------------------------------------------------------------------

PAGE_FILTERS: list[dict[str, Any]] = [
    {"conversation_id": "c7"},
    {"user_id": "u3"},
    {"type": "policy_violation"},
    {"type": {"policy_violation", "user_feedback"}},
    {"conversation_id": "c7", "type": "message_sent"},
    {"user_id": "u3", "type": "policy_violation"},
    {"after": "mid"},
    {"after": "mid", "before": "late"},
    {"conversation_id": "c7", "after": "mid"},
]


def plan_nodes(plan: Any) -> list[str]:
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(f"{node['Node Type']} {node.get('Index Name', node.get('Relation Name'))}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return nodes


async def test_filtered_pages_use_an_index(schema: str) -> None:
    async with EventStore.open(PG_URL, schema=schema) as store:
        stamps = []
        for batch in range(20):
            events = []
            for i in range(1000):
                n = batch * 1000 + i
                conv, user = f"c{n % 300}", f"u{n % 40}"
                if n % 50 == 0:
                    events.append(Event(type="policy_violation", conversation_id=conv,
                                        user_id=user, data={"policy": "pii", "reason": "x"}))
                elif n % 97 == 0:
                    events.append(Event(type="user_feedback", conversation_id=conv,
                                        user_id=user, data={"rating": 5}))
                else:
                    events.append(msg(conv, user, content=str(n)))
            stamps.append((await store.append_many(events))[0].recorded_at)
        backend = backend_of(store)
        conn = await admin()
        try:
            await conn.execute(f'ANALYZE "{schema}".events')
            for filters in PAGE_FILTERS:
                times = {"mid": stamps[10], "late": stamps[15]}
                query = build_query(**{k: times.get(v, v) if isinstance(v, str) else v
                                       for k, v in filters.items()})
                for after_seq in (0, 12_345):
                    sql, params = backend.explain(query, after_seq, 101)
                    plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}",
                                                          *params))
                    nodes = plan_nodes(plan)
                    assert not any(n.startswith("Seq Scan") for n in nodes), (filters, nodes)
                    assert any("Index" in n for n in nodes), (filters, nodes)
        finally:
            await conn.close()
        page = await store.list_events(type="user_feedback", limit=5)
        assert [e.type for e in page.events] == ["user_feedback"] * 5
