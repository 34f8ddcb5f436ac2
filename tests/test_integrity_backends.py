"""The integrity tree kept by the real backends: heads and proofs agree with the RFC's
definitions over what is stored, tampering done through the database itself is caught
with the right first bad seq, the triggers refuse UPDATE and DELETE, several processes
keep one consistent tree, forgetting a user changes no leaf, and checkpoints are written
where they were asked to go."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventstore import Event, EventStore, signals
from eventstore.backends.sqlite import backend as sqlite_backend
from eventstore.backends.sqlite.tree import SQLiteTree
from eventstore.encryption import ERASED, Encryption, generate_master_key
from eventstore.errors import BackendError, IntegrityError
from eventstore.integrity import (
    InclusionProof,
    encode_leaf,
    from_json,
    leaf_hash,
    open_checkpoint,
    parse_checkpoint,
    verify_consistency,
)
from eventstore.integrity.conformance import check_tree
from eventstore.integrity.merkle import mth

from .conftest import PG_URL, StoreFactory, drop_pg_schema, require_pg, wait_for

KILL_WRITER = Path(__file__).parent / "kill_writer.py"
GROUPS = (1, 3, 16, 1, 17, 40, 2, 31)  # crosses the stored levels' boundaries


@pytest.fixture(params=["memory", "sqlite", "postgres", "jsonl"])
async def tree_store(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> AsyncIterator[StoreFactory]:
    if request.param == "postgres":
        require_pg()
    factory = StoreFactory(request.param, tmp_path)
    try:
        yield factory
    finally:
        await factory.cleanup()


def ev(i: int, user: str | None = "u1") -> Event:
    return Event(type="message_sent", conversation_id=f"c{i % 3}", user_id=user,
                 data={"role": "user", "content": f"message {i}"})


async def fill(store: EventStore, groups: tuple[int, ...] = GROUPS) -> int:
    n = 0
    for size in groups:
        await store.append_many([ev(n + i) for i in range(size)])
        n += size
    # single appends at once: group commit puts several in one transaction
    await asyncio.gather(*(store.append(ev(n + i)) for i in range(9)))
    return n + 9


async def reference_hashes(store: EventStore) -> list[bytes]:
    """The leaf hashes recomputed from what the backend stores (not from its tree)."""
    leaves = await store.backend.stored_leaves(1, 1_000_000)  # type: ignore[attr-defined]
    return [leaf_hash(encode_leaf(leaf)) for leaf in leaves]


async def test_heads_and_proofs_agree_with_the_rfc_over_what_is_stored(
    tree_store: StoreFactory,
) -> None:
    with anyio.fail_after(60):
        async with tree_store() as store:
            n = await fill(store)
            hashes = await reference_hashes(store)
            assert len(hashes) == n
            head = await store.tree_head()
            assert (head.size, head.root) == (n, mth(hashes))
            for seq in range(1, n + 1):
                assert (await store.prove(seq)).verify(head.root)
            sizes = [0, 1, 2, 3, 15, 16, 17, 20, 32, 33, 64, 100, n]
            for old in sizes:
                old_root = mth(hashes[:old])
                for new in (s for s in sizes if s >= old):
                    proof = await store.prove_consistency(old, new)
                    assert verify_consistency(old, new, old_root, mth(hashes[:new]),
                                              proof.hashes)
                    assert (await store.prove(max(old, 1), max(new, 1))).verify(
                        mth(hashes[:max(new, 1)]))
            cp = parse_checkpoint(await store.checkpoint())
            assert (cp.origin, cp.size, cp.root) == (store.origin, n, head.root)
            report = await store.verify()
            assert report.ok and report.size == n and report.first_bad_seq is None


async def test_every_backend_passes_the_tree_conformance_case(
    tree_store: StoreFactory,
) -> None:
    with anyio.fail_after(60):
        async with tree_store() as store:
            await check_tree(store)


async def test_a_reopened_store_extends_the_same_tree(tree_store: StoreFactory) -> None:
    with anyio.fail_after(60):
        async with tree_store() as store:
            first = await fill(store, (5, 11))
            before = await store.tree_head()
            text = await store.checkpoint()
            origin = store.origin
        async with tree_store() as store:
            assert store.origin == origin  # kept in the log, not re-derived
            n = first + await fill(store, (3, 30))
            head = await store.tree_head()
            assert head.size == n and head.root == mth(await reference_hashes(store))
            proof = await store.prove_consistency(before.size)
            assert proof.verify(before.root, head.root)
            report = await store.verify(checkpoint=text)
            assert report.ok, report.problems


async def test_forgetting_a_user_changes_no_leaf_and_keeps_every_proof(
    tree_store: StoreFactory,
) -> None:
    encryption = Encryption(generate_master_key(), fields=("data.content",))
    with anyio.fail_after(60):
        async with tree_store(encryption=encryption) as store:
            for i in range(20):
                await store.append(ev(i, user="u1" if i % 2 else "u2"))
            before = await store.tree_head()
            proofs = [await store.prove(seq) for seq in range(1, 21)]
            text = await store.checkpoint()
            await store.forget_user("u1")
            assert (await store.list_events(user_id="u1")).events[0].data["content"] == ERASED
            report = await store.verify(checkpoint=text)
            assert report.ok, report.problems
            assert report.size == 21  # the user_forgotten event is one more leaf
            again = await store.backend.tree_nodes(  # type: ignore[attr-defined]
                [(0, i) for i in range(20)])
            assert [again[(0, i)] for i in range(20)] == [p.leaf_hash for p in proofs]
            head = await store.tree_head()
            for proof in proofs:  # earlier proofs verify against the earlier root ...
                assert proof.verify(before.root)
            consistency = await store.prove_consistency(before.size)
            assert consistency.verify(before.root, head.root)  # ... which the log extends


async def test_the_origin_can_be_named_and_a_signing_key_signs_checkpoints(
    tree_store: StoreFactory,
) -> None:
    key = Ed25519PrivateKey.generate()
    with anyio.fail_after(30):
        async with tree_store(origin="audit.example/log-1", signing_key=key) as store:
            await fill(store, (4,))
            assert store.origin == "audit.example/log-1"
            text = await store.checkpoint()
            assert store.verifier_key is not None
            cp = open_checkpoint(text, [store.verifier_key])
            assert cp.size == 13 and cp.root == (await store.tree_head()).root
            # A checkpoint whose text was altered is reported, not trusted.
            forged = text.replace("\n13\n", "\n12\n", 1)
            report = await store.verify(checkpoint=forged)
            assert not report.ok and "cannot be trusted" in report.problems[0]



async def test_the_log_keeps_the_name_it_was_given(tree_store: StoreFactory) -> None:
    # The CLI, the viewer and an auditor's verify open the log without origin=: they must
    # check its checkpoints under the name the application gave it, not one of the URL.
    key = Ed25519PrivateKey.generate()
    with anyio.fail_after(30):
        async with tree_store(origin="audit.example/named", signing_key=key) as store:
            await fill(store, (3,))
            text = await store.checkpoint()
            vkey = store.verifier_key
        async with tree_store(signing_key=key) as again:
            assert again.origin == "audit.example/named"
            assert again.verifier_key == vkey
            assert (await again.verify(checkpoint=text)).ok
        with pytest.raises(IntegrityError, match=r"named 'audit\.example/named'"):
            async with tree_store(origin="audit.example/other"):
                pass
        async with tree_store(origin="audit.example/named") as same:
            assert (await same.verify(checkpoint=text)).ok


# --- checkpoints written by the store ---------------------------------------------------


async def test_checkpoints_go_to_a_directory_every_n_events_and_at_close(
    tmp_path: Path,
) -> None:
    seen: list[tuple[int, Path | None]] = []

    def written(sender: Any, checkpoint: str, size: int, path: Path | None) -> None:
        seen.append((size, path))

    folder = tmp_path / "auditor"
    key = Ed25519PrivateKey.generate()
    store = EventStore.open(f"sqlite:///{tmp_path / 'a.db'}", checkpoint_dir=folder,
                            checkpoint_every=10, checkpoint_interval=3600, signing_key=key,
                            origin="audit.example/cp")
    signals.checkpoint_written.connect(written, sender=store, weak=False)
    try:
        with anyio.fail_after(30):
            async with store:
                await store.append_many([ev(i) for i in range(10)])
                await wait_for(lambda: [s for s, _ in seen] == [10], within=20)
                await store.append_many([ev(i) for i in range(10, 25)])
                await wait_for(lambda: [s for s, _ in seen] == [10, 25], within=20)
                await store.append_many([ev(i) for i in range(25, 28)])
                vkey = store.verifier_key
            assert vkey is not None
            files = sorted(folder.iterdir())
            assert [p.name for p in files][-1] == "checkpoint-000000000028.txt"  # at close
            assert [s for s, _ in seen] == [10, 25, 28]
            assert [p.name for p in files] == [path.name for _, path in seen if path]
            async with EventStore.open(f"sqlite:///{tmp_path / 'a.db'}", signing_key=key,
                                       origin="audit.example/cp") as reader:
                for path in files:
                    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP)
                    text = path.read_text()
                    open_checkpoint(text, [vkey])
                    assert (await reader.verify(checkpoint=text)).ok
    finally:
        signals.checkpoint_written.disconnect(written, sender=store)


async def test_checkpoints_go_to_a_callable_every_interval(tmp_path: Path) -> None:
    texts: list[str] = []
    arrived = asyncio.Event()

    async def sink(text: str) -> None:
        texts.append(text)
        arrived.set()

    with anyio.fail_after(30):
        async with EventStore.open("memory://", checkpoint_dir=sink,
                                   checkpoint_interval=0.05) as store:
            await store.append(ev(1))
            await arrived.wait()
            assert parse_checkpoint(texts[0]).size == 1
        assert len(texts) == len({parse_checkpoint(t).size for t in texts})  # no repeats


def test_checkpoint_options_need_a_destination() -> None:
    with pytest.raises(IntegrityError, match="checkpoint_dir"):
        EventStore.open("memory://", checkpoint_every=5)


async def test_a_backend_without_a_tree_says_so(tmp_path: Path) -> None:
    class Bare:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            if name in ("tree_size", "tree_nodes", "stored_leaves"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    from eventstore.backends.memory import MemoryBackend

    async with EventStore(Bare(MemoryBackend())) as store:  # type: ignore[arg-type]
        with pytest.raises(IntegrityError, match="keeps no Merkle tree"):
            await store.tree_head()
    with pytest.raises(IntegrityError, match="checkpoint_dir= needs a backend"):
        await EventStore(Bare(MemoryBackend()),  # type: ignore[arg-type]
                         checkpoint_dir=tmp_path).start()


# --- tampering through the database itself ---------------------------------------------


class SQLiteDB:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    async def run(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        for statement in statements:
            if statement == EDIT_BODY_8:
                (body,) = self.conn.execute("SELECT body FROM events WHERE seq = 8").fetchone()
                statement = ("UPDATE events SET body = ? WHERE seq = 8", (edited(body),))
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            self.conn.execute(sql, params)

    async def drop_triggers(self) -> None:
        for (name,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            self.conn.execute(f"DROP TRIGGER {name}")

    async def rewrite_tree(self) -> None:
        """What an attacker with the database does after editing events: recompute
        every leaf hash, node and head, with eventstore's own code."""
        await self.run("DELETE FROM tree_nodes", "DELETE FROM tree_heads",
                       "UPDATE events SET leaf_hash = NULL")
        self.conn.execute("BEGIN")
        SQLiteTree().build(self.conn)
        self.conn.execute("COMMIT")

    async def close(self) -> None:
        self.conn.close()


class PostgresDB:
    def __init__(self, conn: Any, schema: str) -> None:
        self.conn = conn
        self.s = f'"{schema}"'

    async def run(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        for statement in statements:
            if statement == EDIT_BODY_8:
                body = await self.conn.fetchval(f"SELECT body FROM {self.s}.events "
                                                "WHERE seq = 8")
                statement = ("UPDATE events SET body = $1 WHERE seq = 8", (edited(body),))
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            await self.conn.execute(sql.replace("?", "$1")
                                    .replace("events", f"{self.s}.events")
                                    .replace("tree_", f"{self.s}.tree_"), *params)

    async def drop_triggers(self) -> None:
        for table in ("events", "tree_nodes", "tree_heads"):
            await self.conn.execute(f"DROP TRIGGER {table}_append_only ON {self.s}.{table}")

    async def rewrite_tree(self) -> None:
        from eventstore.backends.postgres.tree import PostgresTree

        await self.run("DELETE FROM tree_nodes", "DELETE FROM tree_heads",
                       "UPDATE events SET leaf_hash = NULL")
        async with self.conn.transaction():
            await PostgresTree(self.s).build(self.conn)

    async def close(self) -> None:
        await self.conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_store(request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[tuple[StoreFactory, Callable[[], Awaitable[Any]]]]:
    """A store factory and a way to open its database around eventstore."""
    if request.param == "postgres":
        require_pg()
    factory = StoreFactory(request.param, tmp_path)

    async def database() -> SQLiteDB | PostgresDB:
        if factory.kind == "sqlite":
            return SQLiteDB(tmp_path / "events.db")
        import asyncpg

        return PostgresDB(await asyncpg.connect(PG_URL), factory.pg_schema)

    try:
        yield factory, database
    finally:
        await factory.cleanup()


EDIT_BODY_8 = "-- edit the document of seq 8"


def edited(body: bytes) -> bytes:
    assert b"message 7" in body
    return body.replace(b"message 7", b"message X")


def swap_rows(a: int, b: int) -> tuple[str, ...]:
    # Through a free seq: the primary key forbids two rows with one seq even for a moment.
    return (f"UPDATE events SET seq = -1 WHERE seq = {a}",
            f"UPDATE events SET seq = {a} WHERE seq = {b}",
            f"UPDATE events SET seq = {b} WHERE seq = -1")


TAMPERING: dict[str, tuple[tuple[str | tuple[str, tuple[Any, ...]], ...], int, str]] = {
    "edit a document": ((EDIT_BODY_8,), 8, "altered"),
    "edit a column": (("UPDATE events SET user_id = 'someone' WHERE seq = 12",), 12, "altered"),
    "delete an event": (("DELETE FROM events WHERE seq = 5",), 5, "missing"),
    "swap two events": (swap_rows(3, 6), 3, "altered"),
    "delete the last events": (("DELETE FROM events WHERE seq > 37",), 38, "missing"),
    # 40 = 32 + 8: the node over 17..32 is under the frontier, so only a check of every
    # stored node sees it.
    "edit an inner tree node": ((("UPDATE tree_nodes SET hash = ? WHERE level = 4 AND idx = 1",
                                  (bytes(32),)),), 17, "tree nodes"),
    "delete an inner tree node": (("DELETE FROM tree_nodes WHERE level = 4 AND idx = 0",),
                                  1, "tree nodes"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_tampering_through_the_database_is_caught_at_the_first_bad_seq(
    db_store: tuple[StoreFactory, Callable[[], Awaitable[Any]]], case: str,
) -> None:
    factory, database = db_store
    statements, first_bad, word = TAMPERING[case]
    with anyio.fail_after(60):
        async with factory() as store:
            await fill(store, (10, 20, 10))
            assert (await store.verify()).ok
        db = await database()
        try:
            await db.drop_triggers()
            await db.run(*statements)
        finally:
            await db.close()
        async with factory() as store:
            report = await store.verify()
        assert not report.ok
        assert report.first_bad_seq == first_bad, report.problems
        assert word in report.problems[0]


async def test_an_inserted_row_is_caught_and_appends_refuse_to_extend_it(
    db_store: tuple[StoreFactory, Callable[[], Awaitable[Any]]],
) -> None:
    factory, database = db_store
    with anyio.fail_after(60):
        async with factory() as store:
            await fill(store, (10,))
        db = await database()
        try:
            body = b'{"type":"message_sent","data":{},"seq":20}'
            if factory.kind == "sqlite":
                await db.run(("INSERT INTO events (seq, id, type, recorded_at, digest, body) "
                              "VALUES (20, 'forged', 'message_sent', 0, x'00', ?)", (body,)))
            else:
                await db.run(("INSERT INTO events (seq, id, type, recorded_at, digest, body) "
                              "VALUES (20, 'forged', 'message_sent', 0, '\\x00', $1)",
                              (body,)))
        finally:
            await db.close()
        async with factory() as store:
            report = await store.verify()
            assert report.first_bad_seq == 20 and "not in the tree" in report.problems[0]
            with pytest.raises(BackendError, match="cannot extend the stored tree"):
                await store.append(ev(99))
            assert await store.head() == 20  # nothing of the refused append was written


async def test_a_rewritten_database_is_caught_against_an_earlier_checkpoint(
    db_store: tuple[StoreFactory, Callable[[], Awaitable[Any]]],
) -> None:
    factory, database = db_store
    with anyio.fail_after(60):
        async with factory() as store:
            await fill(store, (10, 20))
            text = await store.checkpoint()
            await fill(store, (5,))
        db = await database()
        try:
            await db.drop_triggers()
            edit = TAMPERING["edit a column"][0]
            await db.run(*edit)
            await db.rewrite_tree()
        finally:
            await db.close()
        async with factory() as store:
            alone = await store.verify()
            assert alone.ok  # consistent with itself: only a checkpoint held elsewhere ...
            report = await store.verify(checkpoint=text)
        assert not report.ok  # ... shows that history changed
        assert "does not extend the checkpoint" in report.problems[-1]


async def test_the_database_refuses_update_and_delete_of_events(
    db_store: tuple[StoreFactory, Callable[[], Awaitable[Any]]],
) -> None:
    factory, database = db_store
    with anyio.fail_after(60):
        async with factory() as store:
            await fill(store, (5,))
        db = await database()
        try:
            for sql in ("UPDATE events SET type = 'x' WHERE seq = 2",
                        "DELETE FROM events WHERE seq = 2",
                        "DELETE FROM tree_heads", "UPDATE tree_heads SET size = 1"):
                with pytest.raises(Exception, match="append-only") as raised:
                    await db.run(sql)
                assert "refused" in str(raised.value)
            if factory.kind == "postgres":
                with pytest.raises(Exception, match="append-only"):
                    await db.conn.execute(f"TRUNCATE {db.s}.events")
        finally:
            await db.close()
        async with factory() as store:
            assert (await store.verify()).ok and await store.head() == 14


async def test_a_pre_tree_sqlite_file_gets_its_tree_and_triggers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with anyio.fail_after(60):
        with monkeypatch.context() as m:
            m.setattr(sqlite_backend, "SCHEMA_VERSION", sqlite_backend.TREE_SINCE - 1)
            async with EventStore.open(url) as store:
                old = [await store.append(ev(i)) for i in range(3)]
                old += await store.append_many([ev(i) for i in range(3, 40)])
        conn = sqlite3.connect(tmp_path / "old.db")
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                            ).fetchone() == (0,)
        conn.close()
        async with EventStore.open(url) as store:
            head = await store.tree_head()
            assert head.size == 40 and head.root == mth(await reference_hashes(store))
            for e in old:
                assert (await store.prove(e.seq)).verify(head.root)
            await store.append(ev(40))
            assert (await store.verify()).ok
        conn = sqlite3.connect(tmp_path / "old.db")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events WHERE seq = 1")
        conn.close()


async def test_a_pre_tree_postgresql_schema_gets_its_tree_and_trigger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_pg()
    from eventstore.backends.postgres import backend as pg_backend

    schema = f"es_test_migrate_{os.getpid()}"
    try:
        with anyio.fail_after(60):
            with monkeypatch.context() as m:
                m.setattr(pg_backend, "SCHEMA_VERSION", pg_backend.TREE_SINCE - 1)
                async with EventStore.open(PG_URL, schema=schema) as store:
                    old = await store.append_many([ev(i) for i in range(37)])
            async with EventStore.open(PG_URL, schema=schema) as store:
                head = await store.tree_head()
                assert head.size == 37 and head.root == mth(await reference_hashes(store))
                for e in old:
                    assert (await store.prove(e.seq)).verify(head.root)
                await store.append(ev(37))
                assert (await store.verify()).ok
            import asyncpg

            conn = await asyncpg.connect(PG_URL)
            try:
                with pytest.raises(asyncpg.PostgresError, match="append-only"):
                    await conn.execute(f'DELETE FROM "{schema}".events WHERE seq = 1')
            finally:
                await conn.close()
    finally:
        await drop_pg_schema(schema)


# --- several processes ------------------------------------------------------------------


async def spawn(db: str, tag: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(KILL_WRITER), db, "fixed", "--tag", tag, "--rounds", "15",
        "--singles", "10", "--batches", "1", "--batch-size", "7",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


OWN_APPENDS = 5


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "jsonl"])
async def test_several_processes_keep_one_consistent_tree(tmp_path: Path, kind: str) -> None:
    if kind == "postgres":
        require_pg()
    schema = f"es_test_tree_{os.getpid()}_{id(tmp_path) % 10_000}"
    url = {"sqlite": f"sqlite:///{tmp_path / 'x.db'}", "jsonl": f"jsonl:///{tmp_path / 'x'}",
           "postgres": f"{PG_URL}?schema={schema}"}[kind]
    heads = []
    procs: list[asyncio.subprocess.Process] = []
    try:
        with anyio.fail_after(120):
            async with EventStore.open(url) as store:
                procs = [await spawn(url, f"p{i}") for i in range(3)]
                for proc in procs:
                    assert proc.stdout is not None
                    line = await proc.stdout.readline()
                    assert line == b"READY\n", (await proc.stderr.read()).decode()  # type: ignore[union-attr]
                for proc in procs:
                    assert proc.stdin is not None
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
                readers = [asyncio.ensure_future(proc.communicate()) for proc in procs]
                # This process writes too, and reads the head after each of its own
                # appends: every one of those heads is distinct however the scheduler
                # interleaves the children, so the consistency proofs below always have
                # several intermediate heads to link (sampling alone could see just one).
                own = 0
                while not all(r.done() for r in readers) or own < OWN_APPENDS:
                    if own < OWN_APPENDS:
                        await store.append(Event(type="parent", data={"n": own}))
                        own += 1
                    heads.append(await store.tree_head())
                    await asyncio.wait(readers, timeout=0.05)
                for proc, reader in zip(procs, readers, strict=True):
                    output, errors = reader.result()
                    assert proc.returncode == 0, errors.decode()
                    assert output.decode().rstrip().endswith("DONE")
                final = await store.tree_head()
                assert final.size == 3 * 15 * 17 + OWN_APPENDS == await store.head()
                assert final.root == mth(await reference_hashes(store))
                for seq in range(1, final.size + 1):
                    assert (await store.prove(seq)).verify(final.root)
                seen = sorted({(h.size, h.root) for h in heads})
                assert len(seen) >= OWN_APPENDS
                for (old, old_root), (new, new_root) in zip(
                        seen, [*seen[1:], (final.size, final.root)], strict=True):
                    proof = await store.prove_consistency(old, new)
                    assert proof.verify(old_root, new_root)
                assert (await store.verify()).ok
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if kind == "postgres":
            await drop_pg_schema(schema)


# --- the CLI ----------------------------------------------------------------------------


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventstore", "--db", url, *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EVENTSTORE_SIGNING_KEY": ""})


async def test_cli_checkpoint_verify_and_prove(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    url = f"sqlite:///{db}"
    with anyio.fail_after(60):
        async with EventStore.open(url) as store:
            await fill(store, (12,))
    cp = tmp_path / "cp.txt"
    done = cli(url, "checkpoint", "-o", str(cp))
    assert done.returncode == 0, done.stderr
    assert parse_checkpoint(cp.read_text()).size == 21
    assert cli(url, "checkpoint", "-o", str(cp)).returncode == 2  # never overwritten
    done = cli(url, "verify", "--checkpoint", str(cp))
    assert done.returncode == 0 and done.stdout.startswith("ok: 21 events"), done.stdout
    done = cli(url, "prove", "4")
    assert done.returncode == 0, done.stderr
    proof = from_json(done.stdout, InclusionProof)
    assert proof.seq == 4 and proof.verify(parse_checkpoint(cp.read_text()).root)
    assert json.loads(done.stdout)["leaf_hash"] == base64.b64encode(proof.leaf_hash).decode()

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET type = 'other' WHERE seq = 9")
    conn.close()
    done = cli(url, "verify", "--checkpoint", str(cp))
    assert done.returncode == 1
    assert "first bad seq 9" in done.stdout and "seq 9 was altered" in done.stdout
    assert cli(url, "prove", "22").returncode == 1  # no such seq: a one-line error


async def test_cli_verify_checks_the_checkpoint_signature_with_a_verifier_key(
        tmp_path: Path) -> None:
    """An auditor holding only the public verifier key: the checkpoint must be signed by
    the store's key, and the log must extend it."""
    from eventstore.integrity import verifier_key

    url = f"sqlite:///{tmp_path / 'a.db'}"
    key = Ed25519PrivateKey.generate()
    with anyio.fail_after(60):
        async with EventStore.open(url, signing_key=key) as store:
            await fill(store, (12,))
            signed = await store.checkpoint()
            origin = store.origin
    vkey = verifier_key(key, origin)
    other = verifier_key(Ed25519PrivateKey.generate(), origin)
    cp = tmp_path / "cp.txt"
    cp.write_text(signed)
    key_file = tmp_path / "store.vkey"
    key_file.write_text(f"# the store's verifier key\n{vkey}\n")

    for given in (vkey, str(key_file)):
        done = cli(url, "verify", "--checkpoint", str(cp), "--key", given)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "extends the checkpoint" in done.stdout
        assert f"signed by {'+'.join(vkey.split('+')[:2])}" in done.stdout

    done = cli(url, "verify", "--checkpoint", str(cp), "--key", other)
    assert done.returncode == 1
    assert "not signed by the key given" in done.stdout and "no verifiable signatures" \
        in done.stdout

    forged = tmp_path / "forged.txt"  # the text changed after signing: the signature fails
    forged.write_text(signed.replace("\n21\n", "\n20\n", 1))
    done = cli(url, "verify", "--checkpoint", str(forged), "--key", vkey)
    assert done.returncode == 1 and "invalid signature" in done.stdout, done.stdout

    unsigned = tmp_path / "unsigned.txt"
    unsigned.write_text(signed.split("\n\n")[0] + "\n")
    done = cli(url, "verify", "--checkpoint", str(unsigned), "--key", vkey)
    assert done.returncode == 1 and "is not signed" in done.stdout, done.stdout

    done = cli(url, "verify", "--checkpoint", str(cp), "--key", "not-a-key")
    assert done.returncode == 2 and "malformed verifier key" in done.stderr, done.stderr
    assert cli(url, "verify", "--key", vkey).returncode == 2  # --key needs --checkpoint

    conn = sqlite3.connect(tmp_path / "a.db", isolation_level=None)  # a valid signature,
    conn.execute("DROP TRIGGER events_no_delete")                  # but the log no longer
    conn.execute("DELETE FROM events WHERE seq > 15")              # extends it
    conn.close()
    done = cli(url, "verify", "--checkpoint", str(cp), "--key", vkey)
    assert done.returncode == 1 and "first bad seq 16" in done.stdout, done.stdout
