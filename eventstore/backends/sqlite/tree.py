"""SQLite's integrity tree: its tables, the triggers that make events append-only, the
migration that builds the tree of an existing log, and the SQL of the tree's reads.

Layout (see eventstore.integrity.layout): each event row carries its `leaf_hash` and
`occurred_at`; `tree_nodes` holds the interior nodes of levels STORED_FROM and up;
`tree_heads` gets one row per commit, the tree's size after it, so a log cut short from
its end is still told from one that never grew (its node rows alone could not say).
Every write happens in the commit's `BEGIN IMMEDIATE` transaction, under SQLite's one
write lock that also orders seqs, so the tree is exactly as consistent as the log
whatever the number of processes writing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ...clock import to_micros, utcnow
from ...codec import decode_recorded
from ...integrity.appender import Growth, TreeAppender
from ...integrity.layout import assemble, leaf_ranges, table_keys
from ...integrity.leaf import StoredLeaf, leaf_bytes
from ...integrity.merkle import NodeKey, leaf_hash

# Upgrades a version-2 file: new columns, new tables. `build` then fills them for the
# events already stored, and TRIGGERS lock the tables.
MIGRATION: tuple[str, ...] = (
    "ALTER TABLE events ADD COLUMN occurred_at INTEGER",
    "ALTER TABLE events ADD COLUMN leaf_hash BLOB",
    """CREATE TABLE tree_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE tree_heads (
        size INTEGER PRIMARY KEY,
        committed_at INTEGER NOT NULL
    )""",
)

_REFUSE = "SELECT RAISE(ABORT, 'eventstore: {table} is append-only; {verb} is refused')"
TRIGGERS: tuple[str, ...] = tuple(
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
    f"BEGIN {_REFUSE.format(table=table, verb=verb)}; END"
    for table in ("events", "tree_nodes", "tree_heads")
    for verb in ("UPDATE", "DELETE")
)

INSERT_NODE = "INSERT INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)"
INSERT_HEAD = "INSERT INTO tree_heads (size, committed_at) VALUES (?, ?)"
TREE_SIZE = "SELECT coalesce(max(size), 0) FROM tree_heads"
# Columns as stored; a row written around eventstore may hold anything, so coerce what a
# leaf needs rather than fail verify on it (the leaf then simply does not match).
STORED_LEAVES = (
    "SELECT seq, id, type, conversation_id, user_id, coalesce(occurred_at, -1), "
    "coalesce(recorded_at, -1), CAST(body AS BLOB), leaf_hash FROM events "
    "WHERE seq >= ? ORDER BY seq LIMIT ?"
)
# The same, as verify's `LeafRow`s (eventstore.integrity.rehash): the strings as their
# stored UTF-8 bytes, so no str is built and encoded again per event. A value of
# another storage class than eventstore writes (a BLOB id with the same bytes as the
# text, a REAL time) would hash alike once cast, yet reads tell it apart: such a row
# gets an empty kept leaf hash (as a NULL one does), so verify reports it as altered.
LEAF_ROWS = (
    "SELECT seq, CAST(id AS BLOB), CAST(type AS BLOB), CAST(conversation_id AS BLOB), "
    "CAST(user_id AS BLOB), coalesce(CAST(occurred_at AS INTEGER), -1), "
    "coalesce(CAST(recorded_at AS INTEGER), -1), CAST(body AS BLOB), "
    "CASE WHEN typeof(id) = 'text' AND typeof(type) = 'text' "
    "AND typeof(conversation_id) IN ('text', 'null') AND typeof(user_id) IN ('text', 'null') "
    "AND typeof(occurred_at) = 'integer' AND typeof(recorded_at) = 'integer' "
    "THEN coalesce(leaf_hash, x'') ELSE x'' END FROM events WHERE seq >= ? ORDER BY seq "
    "LIMIT ?"
)
_BUILD_BATCH = 5_000

log = logging.getLogger("eventstore.sqlite")


def node_queries(keys: Sequence[NodeKey]) -> list[tuple[str, list[Any]]]:
    """The (at most two) queries that fetch what `assemble` needs for `keys`: the leaf
    hashes (one range read of the events' primary key per range) and the node rows."""
    queries: list[tuple[str, list[Any]]] = []
    ranges = leaf_ranges(keys)
    if ranges:
        where = " OR ".join("seq BETWEEN ? AND ?" for _ in ranges)
        queries.append((
            f"SELECT seq - 1, leaf_hash FROM events WHERE ({where}) AND leaf_hash IS NOT NULL",
            [bound for lo, hi in ranges for bound in (lo + 1, hi)],
        ))
    stored = table_keys(keys)
    if stored:
        # The keys as a table joined to the node table's primary key: one probe per
        # key. `(level, idx) IN (VALUES ...)` reads the same, but SQLite plans it as a
        # scan of the whole node table (10 ms per proof at a million events); CROSS
        # JOIN pins the keys as the outer loop.
        pairs = ", ".join("(?, ?)" for _ in stored)
        queries.append((
            f"WITH wanted(level, idx) AS (VALUES {pairs}) SELECT tree_nodes.level, "
            "tree_nodes.idx, tree_nodes.hash FROM wanted CROSS JOIN tree_nodes "
            "ON tree_nodes.level = wanted.level AND tree_nodes.idx = wanted.idx",
            [part for key in stored for part in key],
        ))
    return queries


def answer(
    keys: Sequence[NodeKey], results: Sequence[Sequence[Sequence[Any]]], n_ranges: bool
) -> dict[NodeKey, bytes]:
    """The hashes of `keys` from the rows of `node_queries(keys)`, in that order
    (`n_ranges`: whether the first query was the leaf one)."""
    leaves: dict[int, bytes] = {}
    table: dict[NodeKey, bytes] = {}
    rest = list(results)
    if n_ranges:
        leaves = {int(index): bytes(h) for index, h in rest.pop(0)}
    if rest:
        table = {(int(level), int(idx)): bytes(h) for level, idx, h in rest[0]}
    return assemble(keys, leaves, table)


def read_nodes(conn: sqlite3.Connection, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
    """`node_queries` run on a synchronous connection (the writer's, inside its lock)."""
    queries = node_queries(keys)
    results = [conn.execute(sql, params).fetchall() for sql, params in queries]
    return answer(keys, results, bool(leaf_ranges(keys)))


def stored_leaf(row: Sequence[Any]) -> StoredLeaf:
    # The SELECT already coerces the columns a leaf is computed from; a leaf_hash that
    # is not 32 bytes (NULL, or anything written around eventstore) matches no leaf.
    seq, id_, type_, conversation_id, user_id, occurred, recorded, body, kept = row
    return StoredLeaf(seq, id_, type_, conversation_id, user_id, occurred, recorded, body,
                      leaf_hash=kept or b"")


class SQLiteTree:
    """The tree's writes inside a SQLite commit (on the writer thread)."""

    def __init__(self) -> None:
        self.appender = TreeAppender()

    def write(self, conn: sqlite3.Connection, size: int, leaf_hashes: Sequence[bytes],
              committed_at: int) -> Growth:
        """Insert the nodes that `leaf_hashes` complete on a tree of `size` leaves, and
        the new head; call `committed` once the transaction commits."""
        keys = self.appender.needs(size)
        growth = self.appender.grow(size, read_nodes(conn, keys) if keys else {},
                                    leaf_hashes)
        if growth.nodes:
            conn.executemany(INSERT_NODE, growth.nodes)
        conn.execute(INSERT_HEAD, (growth.after.size, committed_at))
        return growth

    def committed(self, growth: Growth) -> None:
        self.appender.committed(growth)

    def forget(self) -> None:
        self.appender.forget()

    def build(self, conn: sqlite3.Connection) -> None:
        """Fill the tree of a log written before it existed (the migration, in its
        transaction): each row's occurred_at and leaf hash, the nodes, a head per batch.

        Leaf i is seq i + 1, so the tree stops at a hole in the seqs (an event deleted
        before the triggers existed): verify then reports the hole, and appends refuse
        to extend a tree that does not cover the log."""
        size = 0
        for rows in _batches(conn):
            updates: list[tuple[int, bytes, int]] = []
            hashes: list[bytes] = []
            for seq, id_, type_, conversation_id, user_id, recorded, body in rows:
                if seq != size + len(hashes) + 1:
                    log.warning("the log has no seq %d: its tree stops at seq %d",
                                size + len(hashes) + 1, size + len(hashes))
                    break
                occurred = to_micros(decode_recorded(body).occurred_at)
                h = leaf_hash(leaf_bytes(seq, id_, type_, conversation_id, user_id,
                                         occurred, recorded, bytes(body)))
                updates.append((occurred, h, seq))
                hashes.append(h)
            conn.executemany("UPDATE events SET occurred_at = ?, leaf_hash = ? WHERE seq = ?",
                             updates)
            if hashes:
                growth = self.write(conn, size, hashes, to_micros(utcnow()))
                self.committed(growth)  # in the migration's transaction: forgotten below
                size = growth.after.size
            if len(hashes) < len(rows):
                break
        self.forget()


def _batches(conn: sqlite3.Connection) -> Iterator[list[Any]]:
    after = 0
    while True:
        rows = conn.execute(
            "SELECT seq, id, type, conversation_id, user_id, recorded_at, body FROM events "
            "WHERE seq > ? ORDER BY seq LIMIT ?", (after, _BUILD_BATCH)).fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1][0]
