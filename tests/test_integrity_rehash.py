"""verify's page hasher (eventstore.integrity.rehash) encodes exactly the leaf bytes of
eventstore.integrity.leaf, whatever the fields hold and whichever way it caches, and the
SQLite backend's rows of stored bytes are the very leaves it stores."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import anyio

from eventstore import Event, EventStore
from eventstore.integrity.leaf import StoredLeaf, encode_leaf
from eventstore.integrity.merkle import leaf_hash
from eventstore.integrity.rehash import Rehasher, leaf_row

TEXTS = ["", "a", "message_sent", "é", "日本語", "\x00", "x" * 300, "a+b c"]


def random_leaves(rng: random.Random, n: int, *, distinct: bool) -> list[StoredLeaf]:
    leaves = []
    for seq in range(1, n + 1):
        def text(seq: int = seq) -> str:
            return f"{rng.choice(TEXTS)}{seq if distinct else ''}"

        leaves.append(StoredLeaf(
            seq=seq,
            id=text(),
            type=text(),
            conversation_id=rng.choice([None, text()]),
            user_id=rng.choice([None, text()]),
            occurred_at=rng.choice([0, -1, -(2 ** 63), 2 ** 63 - 1, rng.getrandbits(52)]),
            recorded_at=rng.choice([0, -5, 2 ** 63 - 1, rng.getrandbits(52)]),
            document=rng.randbytes(rng.choice([0, 1, 40, 3000])),
        ))
    return leaves


def test_page_hashes_equal_the_leaf_hashes_of_the_leaf_bytes() -> None:
    rng = random.Random(15)
    for distinct in (False, True):  # repeating fields (cached) and all-new ones (inline)
        leaves = random_leaves(rng, 600, distinct=distinct)
        expected = [leaf_hash(encode_leaf(leaf)) for leaf in leaves]
        rehash = Rehasher()
        got = [h for start in range(0, 600, 100)
               for h in rehash.hashes([leaf_row(leaf) for leaf in leaves[start:start + 100]])]
        assert got == expected


async def test_sqlite_rows_are_the_stored_leaves_as_bytes(tmp_path: Path) -> None:
    events = [Event(type=t, conversation_id=c, user_id=u, data={"i": i, "t": t})
              for i, (t, c, u) in enumerate([("a", None, None), ("é", "", "日本"),
                                            ("x" * 200, "c1", None), ("b", None, "u2")])]
    with anyio.fail_after(30):
        async with EventStore.open(f"sqlite:///{tmp_path / 'e.db'}") as store:
            await store.append_many(events)
            backend = store.backend
            rows = await backend.leaf_rows(1, 10)  # type: ignore[attr-defined]
            leaves = await backend.stored_leaves(1, 10)  # type: ignore[attr-defined]
            assert [tuple(row) for row in rows] == [leaf_row(leaf) for leaf in leaves]
            assert Rehasher().hashes(rows) == [row[8] for row in rows]
            assert (await store.verify()).ok


async def test_a_column_stored_as_another_storage_class_is_caught(tmp_path: Path) -> None:
    """The same bytes as a BLOB instead of TEXT hash alike, but reads no longer match
    the event (`WHERE conversation_id = 'c1'` misses it): verify reports the row."""
    path = tmp_path / "e.db"
    with anyio.fail_after(30):
        async with EventStore.open(f"sqlite:///{path}") as store:
            await store.append_many([Event(type="t", conversation_id="c1", data={"i": i})
                                     for i in range(6)])
        for column, value, seq in (("conversation_id", "CAST(conversation_id AS BLOB)", 4),
                                   ("occurred_at", "occurred_at + 0.5", 2)):
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("DROP TRIGGER IF EXISTS events_no_update")
            conn.execute(f"UPDATE events SET {column} = {value} WHERE seq = ?", (seq,))
            conn.close()
            async with EventStore.open(f"sqlite:///{path}") as store:
                report = await store.verify()
            assert not report.ok and report.first_bad_seq == seq, report.problems
            assert f"seq {seq} was altered" in report.problems[0]
