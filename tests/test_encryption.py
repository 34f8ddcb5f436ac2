"""Crypto-shredding (eventstore.encryption) on every backend: personal fields are encrypted
per user in storage, and forget_user erases them from every read path while costs and
counts stay."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventstore import DuplicateEventError, Event, EventStore, EventStoreError, RecordedEvent
from eventstore.backends.base import KeyRecord
from eventstore.backends.sqlite import backend as sqlite_backend
from eventstore.encryption import ERASED, Encryption, generate_master_key
from eventstore.errors import EncryptionError
from eventstore.events import USER_FORGOTTEN
from eventstore.pricing import ModelPrice, PriceTable
from eventstore.projections import ConversationCosts
from eventstore.projections.base import Projection

from .conftest import PG_URL, StoreFactory, wait_for

KEY = generate_master_key()
FIELDS = ("data.content", "data.prompt", "metadata.email")
PRICING = PriceTable({"openai/gpt-4o": ModelPrice.per_million(input="2.5", output="10")})
SECRET_1 = "my card is 4111 and I live at 12 Elm Street"
SECRET_2 = "bob's private diary entry"


def enc(**options: Any) -> Encryption:
    return Encryption(KEY, fields=FIELDS, **options)


def opened(open_store: StoreFactory, **options: Any) -> EventStore:
    options.setdefault("encryption", enc())
    return open_store(pricing=PRICING, **options)


def msg(user: str | None, content: Any, conv: str = "c1", **kw: Any) -> Event:
    return Event(type="message_sent", conversation_id=conv, user_id=user,
                 data={"role": "user", "content": content}, **kw)


async def everything(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read()]


def file_bytes(*paths: Path) -> bytes:
    """The raw bytes of these files (those that exist), e.g. a database and its WAL."""
    return b"".join(p.read_bytes() for p in paths if p.exists())


def dir_bytes(directory: Path) -> bytes:
    return file_bytes(*(p for p in sorted(directory.rglob("*")) if p.is_file()))


async def stored_bytes(store: EventStore, factory: StoreFactory) -> bytes:
    """Everything the backend holds, as raw as each backend allows: the SQLite files byte
    for byte, the PostgreSQL rows, the memory backend's stored structs."""
    if factory.kind == "sqlite":
        path = Path(store.backend.path)  # type: ignore[attr-defined]
        return file_bytes(path, Path(f"{path}-wal"))
    if factory.kind == "jsonl":
        return dir_bytes(Path(store.backend.directory))  # type: ignore[attr-defined]
    if factory.kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(PG_URL)
        try:
            s = f'"{factory.pg_schema}"'
            rows = await conn.fetch(f"SELECT body FROM {s}.events")
            keys = await conn.fetch(f"SELECT wrapped FROM {s}.data_keys")
        finally:
            await conn.close()
        return b"".join(r[0] for r in rows) + b"".join(k[0] or b"" for k in keys)
    backend: Any = store.backend
    return msgspec.json.encode(backend._events) + msgspec.json.encode(
        [k.wrapped or b"" for gens in backend._keys.values() for k in gens.values()])


async def rewrite_body(store: EventStore, factory: StoreFactory, seq: int,
                       change: Callable[[dict[str, Any]], None]) -> None:
    """Alter one stored event behind the store's back (a tampering attacker)."""
    if factory.kind == "memory":
        backend: Any = store.backend
        doc = msgspec.to_builtins(backend._events[seq - 1])
        change(doc)
        backend._events[seq - 1] = msgspec.convert(doc, RecordedEvent)
        return
    if factory.kind == "sqlite":
        conn = sqlite3.connect(store.backend.path)  # type: ignore[attr-defined]
        try:
            (body,) = conn.execute("SELECT body FROM events WHERE seq = ?", (seq,)).fetchone()
            doc = msgspec.json.decode(body)
            change(doc)
            with conn:
                conn.execute("UPDATE events SET body = ? WHERE seq = ?",
                             (msgspec.json.encode(doc), seq))
        finally:
            conn.close()
        return
    if factory.kind == "jsonl":
        jsonl: Any = store.backend
        for path in Path(jsonl.directory).glob("events-*.jsonl"):  # noqa: ASYNC240
            lines = path.read_bytes().splitlines(keepends=True)
            for i, line in enumerate(lines):
                doc = msgspec.json.decode(line)
                if doc["seq"] == seq:
                    change(doc)
                    lines[i] = msgspec.json.encode(doc) + b"\n"
                    path.write_bytes(b"".join(lines))
                    jsonl.reindex()
                    return
        raise AssertionError(f"no line with seq {seq}")
    import asyncpg

    pg = await asyncpg.connect(PG_URL)
    try:
        s = f'"{factory.pg_schema}"'
        body = await pg.fetchval(f"SELECT body FROM {s}.events WHERE seq = $1", seq)
        doc = msgspec.json.decode(body)
        change(doc)
        await pg.execute(f"UPDATE {s}.events SET body = $1 WHERE seq = $2",
                         msgspec.json.encode(doc), seq)
    finally:
        await pg.close()


class Contents(Projection):
    """Every message content, as a rebuild sees it."""

    name = "contents"
    types = frozenset({"message_sent"})

    def apply(self, event: RecordedEvent) -> None:
        self.seen.append((event.user_id, event.data.get("content")))

    def reset(self) -> None:
        self.seen: list[tuple[str | None, Any]] = []
        self.position = 0

    def state(self) -> Any:
        return list(self.seen)

    def snapshot(self) -> bytes:
        return msgspec.json.encode(self.seen)

    def restore(self, blob: bytes) -> None:
        self.seen = msgspec.json.decode(blob)


# --- round trip ------------------------------------------------------------------------


async def test_readers_see_plaintext_and_storage_holds_none(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        first = await store.append(msg("u1", SECRET_1, metadata={"email": "alice@example.org",
                                                                   "client": "web"}))
        structured = {"parts": [SECRET_2, 42], "lang": "en"}
        second = await store.append(Event(type="llm_call", user_id="u2", conversation_id="c2",
                                          data={"prompt": structured, "tokens": 7}))
        anonymous = await store.append(msg(None, "nobody's words"))
        assert first.data["content"] == SECRET_1  # what append returns is plaintext
        assert first.metadata == {"email": "alice@example.org", "client": "web"}

        page = await store.list_events(limit=10)
        assert [e.data for e in page.events] == [first.data, second.data, anonymous.data]
        assert page.events[1].data["prompt"] == structured  # any JSON value round-trips
        assert page.events[0].metadata["email"] == "alice@example.org"
        assert await everything(store) == [first, second, anonymous]

        raw = await stored_bytes(store, open_store)
        for secret in (SECRET_1, SECRET_2, "alice@example.org"):
            assert secret.encode() not in raw
        assert b"enc:v1:1:" in raw
        # Events without a user are stored as they are (documented): nobody could forget them.
        assert b"nobody's words" in raw
        # What is not personal stays readable in storage.
        assert b'"client":"web"' in raw and b'"tokens":7' in raw


async def test_sqlite_file_never_holds_the_plaintext(tmp_path: Path) -> None:
    db = tmp_path / "raw.db"
    async with EventStore.open(f"sqlite:///{db}", encryption=enc()) as store:
        for i in range(50):
            await store.append(msg(f"u{i % 3}", f"{SECRET_1} #{i}"))
        assert len([e async for e in store.read()]) == 50
        during = file_bytes(db, Path(f"{db}-wal"))
    after = dir_bytes(tmp_path)
    for raw in (during, after):
        assert SECRET_1.encode() not in raw and b"Elm Street" not in raw
    conn = sqlite3.connect(db)
    bodies = [msgspec.json.decode(b) for (b,) in conn.execute("SELECT body FROM events")]
    conn.close()
    assert all(b["data"]["content"].startswith("enc:v1:1:") for b in bodies)


async def test_plaintext_that_looks_like_an_envelope_is_just_text(store: EventStore) -> None:
    # Needs no encryption to be on: a store without it passes such text through too.
    rec = await store.append(msg("u1", "enc:v1:1:AAAA"))
    assert rec.data["content"] == "enc:v1:1:AAAA"


async def test_envelope_lookalike_in_an_encrypted_store(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        text = "enc:v1:1:" + base64.urlsafe_b64encode(b"x" * 40).decode()
        rec = await store.append(msg("u1", text))
        assert rec.data["content"] == text
        assert [e.data["content"] async for e in store.read()] == [text]


# --- forgetting --------------------------------------------------------------------------


async def test_forget_user_erases_every_read_path(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        m1 = await store.append(msg("u1", SECRET_1, metadata={"email": "alice@example.org"}))
        m2 = await store.append(msg("u2", SECRET_2, conv="c2"))
        c1 = await store.record_cost(conversation_id="c1", user_id="u1", provider="openai",
                                     model="gpt-4o", input_tokens=1200, output_tokens=300)
        await store.record_cost(conversation_id="c2", user_id="u2", provider="openai",
                                model="gpt-4o", input_tokens=100, output_tokens=50)
        m3 = await store.append(msg("u1", "second message"))
        totals = (await store.sum_cost(), await store.sum_cost(user_id="u1"))
        costs = await store.rebuild(ConversationCosts())
        projected = (costs.total(), costs.total(user_id="u1"), costs.total(conversation_id="c1"))
        assert totals[1] > 0

        # Before: an idempotent retry of a stored event comes back decrypted.
        retry = msg("u1", SECRET_1, id=m1.id, occurred_at=m1.occurred_at,
                    metadata={"email": "alice@example.org"})
        assert await store.append(retry) == m1

        forgotten = await store.forget_user("u1")
        assert forgotten.type == USER_FORGOTTEN and forgotten.user_id == "u1"
        assert forgotten.data == {"user_id": "u1"}

        def check(events: list[RecordedEvent]) -> None:
            by_id = {e.id: e for e in events}
            for gone in (m1, m3):
                event = by_id[gone.id]
                assert event.data == {"role": "user", "content": ERASED}
                assert (event.seq, event.type, event.recorded_at, event.occurred_at) == (
                    gone.seq, gone.type, gone.recorded_at, gone.occurred_at)
            assert by_id[m1.id].metadata == {"email": ERASED}
            assert by_id[m2.id] == m2  # other users untouched
            assert by_id[c1.id] == c1  # token counts and costs intact
            assert SECRET_1 not in repr(events) and "alice@example.org" not in repr(events)

        check(await everything(store))
        check((await store.list_events(limit=100)).events)
        check((await store.list_events(user_id="u1", limit=1)).events
              + (await store.list_events(user_id="u1", limit=100,
                                         cursor=(await store.list_events(
                                             user_id="u1", limit=1)).next_cursor)).events
              + [m2])

        seen: list[RecordedEvent] = []
        sub = await store.subscribe(seen.append, from_seq=1)  # catch-up from the log
        await wait_for(lambda: len(seen) >= 6)
        await sub.stop()
        check(seen)

        contents = await store.rebuild(Contents())
        assert contents.seen == [("u1", ERASED), ("u2", SECRET_2), ("u1", ERASED)]
        assert (await store.sum_cost(), await store.sum_cost(user_id="u1")) == totals
        costs = await store.rebuild(ConversationCosts())
        assert (costs.total(), costs.total(user_id="u1"),
                costs.total(conversation_id="c1")) == projected

        # The key table holds a tombstone, not a key.
        record = (await store.backend.load_keys(["u1", "u2"]))
        assert record["u1"].wrapped is None and record["u1"].forgotten_at is not None
        assert record["u2"].wrapped is not None
        assert SECRET_1.encode() not in await stored_bytes(store, open_store)

        # A retry of the erased message: nobody can tell any more whether it had the same
        # content (its digest was keyed with the destroyed key), so it is refused, and
        # nothing of it is returned. A retry of what was not encrypted still works.
        with pytest.raises(DuplicateEventError, match="forget_user"):
            await store.append(retry)
        with pytest.raises(DuplicateEventError, match="forget_user"):
            await store.append_many([msg("u2", "fresh"), retry])
        assert await store.append(Event(
            type=c1.type, data=c1.data, conversation_id="c1", user_id="u1", id=c1.id,
            occurred_at=c1.occurred_at)) == c1


    # Another store opened later on the same log (its own cache) sees the same.
    async with opened(open_store) as again:
        check(await everything(again))
        assert [e.type for e in await everything(again)][-1] == USER_FORGOTTEN


async def test_a_user_seen_again_gets_a_new_key_generation(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        old = await store.append(msg("u1", "before"))
        await store.forget_user("u1")
        new = await store.append(msg("u1", "after"))
        assert new.data["content"] == "after"
        assert [e.data.get("content") async for e in store.read()] == [ERASED, None, "after"]
        keys = await store.backend.load_keys(["u1"])
        assert keys["u1"].generation == 2 and keys["u1"].wrapped is not None
        # the erased event cannot be matched by a retry: the error says why
        with pytest.raises(DuplicateEventError, match="forget_user"):
            await store.append(msg("u1", "before", id=old.id, occurred_at=old.occurred_at))
        # while a plain conflict of a user never forgotten keeps the plain message
        other = await store.append(msg("u2", "mine"))
        with pytest.raises(DuplicateEventError, match="different content"):
            await store.append(msg("u2", "changed", id=other.id))
        assert b"enc:v1:2:" in await stored_bytes(store, open_store)
        await store.forget_user("u1")
        assert [e.data.get("content") async for e in store.read(user_id="u1",
                                                                  type="message_sent")] == [
            ERASED, ERASED]
        assert old.seq == 1


async def test_forgetting_a_user_without_events_is_recorded(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        rec = await store.forget_user("never-seen")
        assert rec.type == USER_FORGOTTEN
        keys = await store.backend.load_keys(["never-seen"])
        assert keys["never-seen"].wrapped is None
        assert (await store.append(msg("never-seen", "hi"))).data["content"] == "hi"
        assert [e.data.get("content") async for e in store.read(type="message_sent")] == ["hi"]


async def test_a_forget_in_another_store_shows_on_the_next_read(open_store: StoreFactory) -> None:
    async with opened(open_store) as reader, opened(open_store,
                                                    encryption=enc(key_ttl=0)) as other:
        await reader.append(msg("u1", SECRET_1))
        assert [e.data["content"] async for e in reader.read()] == [SECRET_1]  # key cached
        await other.forget_user("u1")
        assert [e.data.get("content") async for e in reader.read(type="message_sent")] == [
            ERASED]
        # With key_ttl=0 the appending store asks the key table each time: the new event
        # gets the new generation at once.
        after = await other.append(msg("u1", "new"))
        assert [e.data.get("content") async for e in reader.read(type="message_sent")] == [
            ERASED, "new"]
        assert after.data["content"] == "new"


async def test_live_events_queued_before_a_forget_are_delivered_erased(
    open_store: StoreFactory,
) -> None:
    async with opened(open_store) as store:
        gate = asyncio.Event()
        seen: list[RecordedEvent] = []

        async def slow(event: RecordedEvent) -> None:
            seen.append(event)
            await gate.wait()

        sub = await store.subscribe(slow, types={"message_sent"})
        await store.append(msg("u1", "in flight"))
        await wait_for(lambda: len(seen) == 1)
        await store.append(msg("u1", SECRET_1))
        await store.append(msg("u2", SECRET_2))
        assert sub.position == 0  # both committed while the handler holds the first
        await store.forget_user("u1")
        gate.set()
        await wait_for(lambda: len(seen) == 3)
        await sub.stop()
        assert [e.data["content"] for e in seen[1:]] == [ERASED, SECRET_2]


async def test_an_event_committed_after_a_forget_is_delivered_live_erased(
    open_store: StoreFactory,
) -> None:
    # Issue 11: an event sealed (prepared) just before forget_user("u1") and committed just
    # after it reached live deliveries in plaintext once forget_user had returned. Every
    # live delivery now shows what the log shows at that moment.
    from eventstore import signals

    async with opened(open_store) as store:
        handled: list[RecordedEvent] = []
        signalled: list[RecordedEvent] = []
        received: list[RecordedEvent] = []

        def on_sync(sender: Any, event: RecordedEvent) -> None:
            signalled.append(event)

        async def on_async(sender: Any, event: RecordedEvent) -> None:
            received.append(event)

        sub = await store.subscribe(handled.append, types={"message_sent"})
        commit_group = store.backend.commit_group
        destroy_keys = store.backend.destroy_keys
        keys_gone = asyncio.Event()
        held: list[int] = []

        async def commit_after_the_forget(requests: Any) -> Any:
            if not held:  # the first group: the event prepared before the forget
                held.append(len(requests))
                await keys_gone.wait()
            return await commit_group(requests)

        async def destroy_then_release(user_id: str) -> KeyRecord:
            record = await destroy_keys(user_id)
            keys_gone.set()
            return record

        store.backend.commit_group = commit_after_the_forget  # type: ignore[method-assign]
        store.backend.destroy_keys = destroy_then_release  # type: ignore[method-assign]
        signals.event_appended.connect(on_sync, sender=store)
        signals.event_appended.connect(on_async, sender=store)
        try:
            in_flight = asyncio.ensure_future(store.append(msg("u1", SECRET_1)))
            await wait_for(lambda: bool(held))  # prepared, sealed, waiting to commit
            await store.forget_user("u1")
            first = await asyncio.wait_for(in_flight, 10)
            later = await store.append(msg("u1", "after the forget"))
            await sub.caught_up(timeout=10)
            await store.dispatcher.drain()
        finally:
            signals.event_appended.disconnect(on_sync, sender=store)
            signals.event_appended.disconnect(on_async, sender=store)
        shown = {e.seq: e.data["content"] for e in handled}
        assert shown == {first.seq: ERASED, later.seq: "after the forget"}
        for seen in (signalled, received):
            contents = {e.seq: e.data.get("content") for e in seen if e.seq != first.seq + 1}
            assert contents == {first.seq: ERASED, later.seq: "after the forget"}
        stored = [e.data.get("content") async for e in store.read(type="message_sent")]
        assert stored == [ERASED, "after the forget"]


async def test_forget_user_needs_encryption(store: EventStore) -> None:
    with pytest.raises(EventStoreError, match="encryption="):
        await store.forget_user("u1")


async def test_forget_user_takes_a_user_id(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        with pytest.raises(EventStoreError, match="user id"):
            await store.forget_user("")


# --- the raw SQLite file after a forget ----------------------------------------------------


async def test_sqlite_file_holds_no_key_after_forget(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    async with EventStore.open(f"sqlite:///{db}", encryption=enc()) as store:
        for i in range(20):
            await store.append(msg("u1" if i % 2 else "u2", f"{SECRET_1} {i}"))
        keys = await store.backend.load_keys(["u1", "u2"])
        wrapped_u1, wrapped_u2 = keys["u1"].wrapped, keys["u2"].wrapped
        assert wrapped_u1 and wrapped_u2
        raw = file_bytes(db, Path(f"{db}-wal"))
        assert wrapped_u1 in raw  # the probe works: the key is there before
        await store.forget_user("u1")
        raw = file_bytes(db, Path(f"{db}-wal"))
        assert wrapped_u1 not in raw
        assert wrapped_u1[:16] not in raw and wrapped_u1[-16:] not in raw
        assert wrapped_u2 in raw
        contents = [e.data["content"] async for e in store.read(type="message_sent")]
        assert contents.count(ERASED) == 10 and contents[0] == f"{SECRET_1} 0"
    after = dir_bytes(tmp_path)
    assert wrapped_u1 not in after and wrapped_u1[:16] not in after
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT generation, wrapped, forgotten_at FROM data_keys "
                        "WHERE user_id = 'u1'").fetchall()
    conn.close()
    assert len(rows) == 1 and rows[0][0] == 1 and rows[0][1] is None and rows[0][2]


# --- master key --------------------------------------------------------------------------


async def test_wrong_master_key_is_refused_at_start(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        await store.append(msg("u1", SECRET_1))
    wrong = open_store(encryption=Encryption(generate_master_key()))
    with pytest.raises(EncryptionError, match="original master key"):
        await wrong.start()
    async with opened(open_store) as right:
        assert [e.data["content"] async for e in right.read()] == [SECRET_1]


async def test_missing_master_key_is_refused_at_start(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTSTORE_MASTER_KEY", raising=False)
    store = open_store(encryption=Encryption())
    with pytest.raises(EncryptionError, match="EVENTSTORE_MASTER_KEY") as caught:
        await store.start()
    assert "base64" in str(caught.value)


async def test_master_key_from_environment_or_file(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    raw = base64.b64decode(KEY)
    monkeypatch.setenv("EVENTSTORE_MASTER_KEY", raw.hex())
    async with open_store(encryption=Encryption()) as store:
        await store.append(msg("u1", SECRET_1))
    monkeypatch.delenv("EVENTSTORE_MASTER_KEY")
    key_file = tmp_path / "master.key"
    key_file.write_text(KEY + "\n")
    async with open_store(encryption=Encryption(key_file=key_file)) as store:
        assert [e.data["content"] async for e in store.read()] == [SECRET_1]
    key_file.write_bytes(raw)  # 32 raw bytes work too
    async with open_store(encryption=Encryption(key_file=key_file)) as store:
        assert [e.data["content"] async for e in store.read()] == [SECRET_1]


def test_malformed_master_key_and_fields_are_refused() -> None:
    with pytest.raises(EncryptionError, match="32 bytes"):
        Encryption("too short")
    with pytest.raises(EncryptionError, match="data or metadata"):
        Encryption(KEY, fields=("content",))
    with pytest.raises(EncryptionError, match="overlap"):
        Encryption(KEY, fields=("data.a", "data.a.b"))
    assert KEY not in repr(Encryption(KEY))


# --- tampering ---------------------------------------------------------------------------


async def test_tampered_ciphertext_raises_rather_than_returning_garbage(
    open_store: StoreFactory,
) -> None:
    async with opened(open_store) as store:
        await store.append(msg("u1", SECRET_1))
        await store.append(msg("u1", SECRET_2))
        await store.append(msg("u2", "fine"))

        def flip(doc: dict[str, Any]) -> None:
            value = doc["data"]["content"]
            middle = len(value) // 2
            doc["data"]["content"] = (value[:middle] + ("A" if value[middle] != "A" else "B")
                                      + value[middle + 1 :])

        await rewrite_body(store, open_store, 1, flip)
        with pytest.raises(EncryptionError, match=r"seq 1\).*does not authenticate"):
            await everything(store)

        moved: dict[str, Any] = {}
        await rewrite_body(store, open_store, 2, lambda d: moved.update(d["data"]))
        await rewrite_body(store, open_store, 1, lambda d: d["data"].update(moved))
        with pytest.raises(EncryptionError, match="copied from another event"):
            await store.list_events(limit=1)

        await rewrite_body(store, open_store, 1,
                           lambda d: d["data"].update(content="enc:v1:1:%%%"))
        with pytest.raises(EncryptionError, match="malformed"):
            await store.list_events(limit=1)
        # Other events still read.
        assert [e.data["content"] for e in (await store.list_events(user_id="u2")).events] == [
            "fine"]


async def test_an_envelope_whose_key_is_unknown_is_an_error(open_store: StoreFactory) -> None:
    async with opened(open_store) as store:
        await store.append(msg("u1", SECRET_1))
        await rewrite_body(store, open_store, 1, lambda d: d.update(user_id="someone-else"))
        with pytest.raises(EncryptionError, match="key table does not hold"):
            await everything(store)


# --- concurrency -------------------------------------------------------------------------


async def test_two_stores_creating_one_users_key_at_once_agree(open_store: StoreFactory) -> None:
    async with opened(open_store) as a, opened(open_store) as b:
        results = await asyncio.gather(*[
            (a if i % 2 else b).append(msg(f"user-{i % 5}", f"hello {i}")) for i in range(100)
        ])
        assert sorted(r.data["content"] for r in results) == sorted(
            f"hello {i}" for i in range(100))
        for store in (a, b):
            assert sorted([e.data["content"] async for e in store.read()]) == sorted(
                f"hello {i}" for i in range(100))
        keys: dict[str, KeyRecord] = await a.backend.load_keys(
            [f"user-{i}" for i in range(5)])
        assert {k.generation for k in keys.values()} == {1}
        if open_store.kind == "sqlite":
            conn = sqlite3.connect(a.backend.path)  # type: ignore[attr-defined]
            (n,) = conn.execute("SELECT count(*) FROM data_keys").fetchone()
            conn.close()
            assert n == 5


async def test_many_concurrent_appends_share_key_lookups(open_store: StoreFactory) -> None:
    calls: list[int] = []
    async with opened(open_store) as store:
        backend: Any = store.backend
        load = backend.load_keys

        async def counting(user_ids: list[str]) -> dict[str, KeyRecord]:
            calls.append(len(user_ids))
            result: dict[str, KeyRecord] = await load(user_ids)
            return result

        backend.load_keys = counting
        await asyncio.gather(*[store.append(msg(f"u{i % 20}", f"m{i}")) for i in range(500)])
        assert calls == [20]  # one key-table query for the whole round
        calls.clear()
        assert len([e async for e in store.read(batch_size=100)]) == 500
        assert len(calls) == 5  # one per page of 100


# --- migration ---------------------------------------------------------------------------


async def test_a_version_1_sqlite_database_is_upgraded_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    with monkeypatch.context() as m:
        m.setattr(sqlite_backend, "SCHEMA_VERSION", 1)
        async with EventStore.open(url) as store:
            before = [await store.append(msg("u1", f"old {i}")) for i in range(3)]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM eventstore_meta WHERE key = 'schema_version'"
                        ).fetchone() == ("1",)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'data_keys'"
                        ).fetchone() is None
    conn.close()

    async with EventStore.open(url, encryption=enc()) as store:
        assert [e async for e in store.read()] == before  # plaintext stays plaintext
        new = await store.append(msg("u1", "new"))
        assert [e.data["content"] async for e in store.read()] == [
            "old 0", "old 1", "old 2", "new"]
        await store.forget_user("u1")
        # Only what was encrypted can be erased (documented).
        assert [e.data["content"] async for e in store.read(type="message_sent")] == [
            "old 0", "old 1", "old 2", ERASED]
        assert new.seq == 4
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM eventstore_meta WHERE key = 'schema_version'"
                        ).fetchone() == (str(sqlite_backend.SCHEMA_VERSION),)
    conn.close()
