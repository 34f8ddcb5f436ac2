"""PostgreSQL's integrity tree: its tables, the trigger that makes events append-only, the
migration that builds the tree of an existing log, and the SQL of the tree's reads.

The layout is SQLite's (see eventstore.integrity.layout and backends/sqlite/tree.py):
`leaf_hash` and `occurred_at` in each event row, interior nodes of levels STORED_FROM and
up in `tree_nodes`, one `tree_heads` row per commit. The writes happen inside the commit's
transaction, under the same advisory lock that orders seqs, and ride on the statement
that already notifies and commits: the tree costs the commit no extra round trip (one
more only when another process appended since this one's last commit, to read the
frontier it left).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...clock import to_micros, utcnow
from ...codec import decode_recorded
from ...integrity.appender import Growth, TreeAppender
from ...integrity.layout import assemble, leaf_ranges, table_keys
from ...integrity.leaf import StoredLeaf, leaf_bytes
from ...integrity.merkle import NodeKey, leaf_hash

_BUILD_BATCH = 5_000
_TABLES = ("events", "tree_nodes", "tree_heads")


def migration(s: str) -> tuple[str, ...]:
    """The statements that add the tree to schema `s` (quoted); `build` then fills it for
    the events already stored, and `triggers(s)` lock the tables."""
    return (
        f"ALTER TABLE {s}.events ADD COLUMN occurred_at bigint",
        f"ALTER TABLE {s}.events ADD COLUMN leaf_hash bytea",
        f"""CREATE TABLE {s}.tree_nodes (
            level smallint NOT NULL,
            idx bigint NOT NULL,
            hash bytea NOT NULL,
            PRIMARY KEY (level, idx)
        )""",
        f"""CREATE TABLE {s}.tree_heads (
            size bigint PRIMARY KEY,
            committed_at bigint NOT NULL
        )""",
    )


def triggers(s: str) -> tuple[str, ...]:
    """A trigger function refusing UPDATE, DELETE and TRUNCATE, on each table of the log.
    (A superuser or the tables' owner can still drop them: what is done around them is
    what verify finds; see the README for revoking the rights from the app's role.)"""
    out = [
        f"""CREATE OR REPLACE FUNCTION {s}.eventstore_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'eventstore: %.% is append-only; % is refused',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$""",
    ]
    for table in _TABLES:
        out.append(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON "
                   f"{s}.{table} FOR EACH ROW EXECUTE FUNCTION {s}.eventstore_append_only()")
        out.append(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {s}.{table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.eventstore_append_only()")
    return tuple(out)


def stored_leaves_sql(s: str) -> str:
    # A row written around eventstore may hold NULLs: coerce what a leaf needs rather
    # than fail verify on it (the leaf then simply does not match).
    return (f"SELECT seq, id, type, conversation_id, user_id, coalesce(occurred_at, -1), "
            f"recorded_at, body, leaf_hash FROM {s}.events WHERE seq >= $1 ORDER BY seq "
            "LIMIT $2")


def tree_size_sql(s: str) -> str:
    return f"SELECT coalesce(max(size), 0) FROM {s}.tree_heads"


def node_queries(s: str, keys: Sequence[NodeKey]) -> list[tuple[str, list[Any]]]:
    """The (at most two) queries that fetch what `assemble` needs for `keys`."""
    queries: list[tuple[str, list[Any]]] = []
    ranges = leaf_ranges(keys)
    if ranges:
        queries.append((
            f"SELECT e.seq - 1, e.leaf_hash FROM unnest($1::bigint[], $2::bigint[]) "
            f"AS r(lo, hi) JOIN {s}.events e ON e.seq BETWEEN r.lo AND r.hi "
            "WHERE e.leaf_hash IS NOT NULL",
            [[lo + 1 for lo, _ in ranges], [hi for _, hi in ranges]],
        ))
    stored = table_keys(keys)
    if stored:
        queries.append((
            f"SELECT n.level, n.idx, n.hash FROM unnest($1::smallint[], $2::bigint[]) "
            f"AS k(level, idx) JOIN {s}.tree_nodes n USING (level, idx)",
            [[level for level, _ in stored], [idx for _, idx in stored]],
        ))
    return queries


def answer(keys: Sequence[NodeKey], results: Sequence[Sequence[Any]]) -> dict[NodeKey, bytes]:
    """The hashes of `keys` from the rows of `node_queries(keys)`, in that order."""
    rest = list(results)
    leaves = ({int(i): bytes(h) for i, h in rest.pop(0)} if leaf_ranges(keys) else {})
    table = ({(int(lv), int(i)): bytes(h) for lv, i, h in rest[0]} if rest else {})
    return assemble(keys, leaves, table)


async def read_nodes(conn: Any, s: str, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
    return answer(keys, [await conn.fetch(sql, *params) for sql, params in node_queries(s, keys)])


def stored_leaf(row: Sequence[Any]) -> StoredLeaf:
    seq, id_, type_, conversation_id, user_id, occurred, recorded, body, kept = row
    return StoredLeaf(seq, id_, type_, conversation_id, user_id, occurred, recorded, body,
                      leaf_hash=kept or b"")


class PostgresTree:
    """The tree's writes inside a PostgreSQL commit."""

    def __init__(self, s: str) -> None:
        self._s = s
        self.appender = TreeAppender()

    async def grow(self, conn: Any, size: int, leaf_hashes: Sequence[bytes]) -> Growth:
        """What appending `leaf_hashes` to the tree of `size` leaves adds (reading the
        frontier only if another process committed since this one's last commit)."""
        keys = self.appender.needs(size)
        fetched = await read_nodes(conn, self._s, keys) if keys else {}
        return self.appender.grow(size, fetched, leaf_hashes)

    def sql(self, growth: Growth, committed_at: int) -> str:
        """The statements inserting `growth` and its head, as literals: they go in the
        same simple query as the notify and the COMMIT. Every value is an integer or
        hex we produced, never caller text."""
        s = self._s
        parts = []
        if growth.nodes:
            values = ", ".join(f"({level}, {index}, '\\x{h.hex()}'::bytea)"
                               for level, index, h in growth.nodes)
            parts.append(f"INSERT INTO {s}.tree_nodes (level, idx, hash) VALUES {values}; ")
        parts.append(f"INSERT INTO {s}.tree_heads (size, committed_at) "
                     f"VALUES ({growth.after.size}, {committed_at}); ")
        return "".join(parts)

    def committed(self, growth: Growth) -> None:
        self.appender.committed(growth)

    async def build(self, conn: Any) -> None:
        """Fill the tree of a log written before it existed (the migration, in its
        transaction). Leaf i is seq i + 1, so the tree stops at a hole in the seqs."""
        s = self._s
        size = 0
        while True:
            rows = await conn.fetch(
                f"SELECT seq, id, type, conversation_id, user_id, recorded_at, body "
                f"FROM {s}.events WHERE seq > $1 ORDER BY seq LIMIT $2", size, _BUILD_BATCH)
            updates: list[tuple[int, bytes, int]] = []
            hashes: list[bytes] = []
            for seq, id_, type_, conversation_id, user_id, recorded, body in rows:
                if seq != size + len(hashes) + 1:
                    break
                occurred = to_micros(decode_recorded(body).occurred_at)
                h = leaf_hash(leaf_bytes(seq, id_, type_, conversation_id, user_id,
                                         occurred, recorded, bytes(body)))
                updates.append((occurred, h, seq))
                hashes.append(h)
            if not hashes:
                break
            await conn.executemany(f"UPDATE {s}.events SET occurred_at = $1, leaf_hash = $2 "
                                   "WHERE seq = $3", updates)
            growth = await self.grow(conn, size, hashes)
            await conn.execute(self.sql(growth, to_micros(utcnow())))
            self.committed(growth)
            size = growth.after.size
            if len(hashes) < len(rows):
                break
        self.appender.forget()
