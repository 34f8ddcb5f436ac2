"""The embedded default: one SQLite file in WAL mode.

Two connections per store: a writer that commits whole groups, and an aiosqlite reader that
never waits for it (WAL readers see the last committed snapshot). The writer runs each
group's whole transaction (`BEGIN IMMEDIATE`, the id check, one `executemany`, `COMMIT`)
as one function on its own thread: one hop from the event loop per group instead of one
per statement, which is most of an append's latency when groups are small.

`BEGIN IMMEDIATE` takes SQLite's single write lock before the next seq is read, so several
stores or processes on one file assign seqs one transaction after another: commit order
is seq order, with no duplicate and no hole a reader could page past. recorded_at is kept
non-decreasing in seq order inside the same lock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ...clock import from_micros, to_micros, utcnow
from ...codec import PreparedEvent, decode_stored
from ...errors import BackendError, SchemaVersionError
from ...events import RecordedEvent
from ...integrity.layout import leaf_ranges
from ...integrity.leaf import StoredLeaf
from ...integrity.merkle import NodeKey
from ...integrity.rehash import LeafRow
from ...query import Query
from ...rollup import CostFilters, CostTotals
from ..base import (
    Checkpoint,
    KeyRecord,
    NewRow,
    Outcome,
    StoredId,
    announce_head,
    checkpoint_from_row,
    key_record_from_row,
    newest_keys,
    plan_group,
    request_ids,
)
from ..derived import Deltas, facts_from_call_row
from ..schema import MIGRATIONS as SHARED_MIGRATIONS
from ..schema import SCHEMA_VERSION, SQLITE_TYPES, TREE_SINCE, statements
from ..tree import event_records
from .commit_watcher import INTERVAL as WATCH_INTERVAL
from .commit_watcher import CommitWatcher
from .connection import connect
from .derived import (
    DerivedWrite,
    SQLiteCounts,
    SQLiteRollup,
    buckets_sql,
    calls_sql,
    counts_sql,
    rebuild_derived,
)
from .tree import (
    LEAF_ROWS,
    STORED_LEAVES,
    TREE_SIZE,
    TRIGGERS,
    SQLiteTree,
    answer,
    node_queries,
    stored_leaf,
)
from .tree import MIGRATION as TREE_MIGRATION
from .wal_checkpointer import WalCheckpointer

MIGRATIONS: dict[int, list[str]] = {
    version: statements(version, SQLITE_TYPES) for version in sorted(SHARED_MIGRATIONS)
}

T = TypeVar("T")

log = logging.getLogger("eventstore.sqlite")

_ID_CHUNK = 500  # well under SQLite's bound-parameter limit
_MAX_ARMS = 64
_INSERT = (
    "INSERT INTO events (seq, id, type, conversation_id, user_id, recorded_at, digest, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_WITH_LEAF = (
    "INSERT INTO events (seq, id, type, conversation_id, user_id, recorded_at, digest, body, "
    "occurred_at, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# Which index serves a page, when several filters could: a conversation's events, then a
# user's, then a type's. SQLite keeps no statistics unless ANALYZE ran, and without them
# it took the (type, seq) index for conversation + type: a walk over every event of the
# type (most of the log for message_sent) to find one conversation's few, 40-70 ms at
# 30k events where the conversation index answers in 1 ms. A unary `+` keeps a column's
# index out of the choice while the column still filters.


def _filters(query: Query, low: int, high: int | None) -> tuple[list[str], list[Any]]:
    clauses = ["seq > ?"]
    params: list[Any] = [low]
    if high is not None:
        clauses.append("seq <= ?")
        params.append(high)
    if query.conversation_id is not None:
        clauses.append("conversation_id = ?")
        params.append(query.conversation_id)
    if query.user_id is not None:
        clauses.append("+user_id = ?" if query.conversation_id is not None else "user_id = ?")
        params.append(query.user_id)
    return clauses, params


def _type_column(query: Query) -> str:
    narrower = query.conversation_id is not None or query.user_id is not None
    return "+type" if narrower else "type"


def page_sql(query: Query, low: int, high: int | None, limit: int) -> tuple[str, list[Any]]:
    """The SQL of one page: seq in (low, high], the filters, in seq order.

    Time bounds arrive already turned into the seq range (see `_seq_range`). A set of
    types becomes one arm per type joined by UNION ALL under the ORDER BY: each arm reads
    the (type, seq) index in seq order and SQLite merges them, where `type IN (...)` would
    collect every match after the cursor and sort it, for every page.
    """
    clauses, params = _filters(query, low, high)
    if query.types is not None and len(query.types) > _MAX_ARMS:
        # SQLite caps a compound SELECT at 500 terms: past a few dozen names, one IN list.
        names = sorted(query.types)
        where = " AND ".join(
            [*clauses, f"{_type_column(query)} IN ({', '.join('?' * len(names))})"])
        return (f"SELECT seq, body FROM events WHERE {where} ORDER BY seq LIMIT ?",
                [*params, *names, limit])
    types = sorted(query.types) if query.types is not None else [None]
    arms: list[str] = []
    arm_params: list[Any] = []
    type_clause = f"{_type_column(query)} = ?"
    for name in types:
        where = " AND ".join(clauses if name is None else [type_clause, *clauses])
        arms.append(f"SELECT seq, body FROM events WHERE {where}")
        arm_params.extend(params if name is None else [name, *params])
    return f"{' UNION ALL '.join(arms)} ORDER BY seq LIMIT ?", [*arm_params, limit]


def count_sql(query: Query, low: int, high: int | None) -> tuple[str, list[Any]]:
    clauses, params = _filters(query, low, high)
    if query.types is not None:
        names = sorted(query.types)
        clauses.append(f"{_type_column(query)} IN ({', '.join('?' * len(names))})")
        params.extend(names)
    return f"SELECT count(*) FROM events WHERE {' AND '.join(clauses)}", params


_LAST = "SELECT seq, recorded_at FROM events WHERE seq = (SELECT max(seq) FROM events)"
_EVERYTHING = Query()
_DERIVED_SINCE = 3  # the schema version that added the derived tables
_REBUILD_BATCH = 5_000


def _stored_batches(conn: sqlite3.Connection) -> Iterator[list[RecordedEvent]]:
    """Every stored event in seq order, in batches (to rebuild derived tables)."""
    after = 0
    while True:
        rows = conn.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                            (after, _REBUILD_BATCH)).fetchall()
        if not rows:
            return
        yield [decode_stored(seq, body) for seq, body in rows]
        after = rows[-1][0]


_SEQ_RANGE = (
    "SELECT (SELECT seq FROM events WHERE recorded_at >= ? ORDER BY recorded_at, seq LIMIT 1),"
    " (SELECT seq FROM events WHERE recorded_at <= ? ORDER BY recorded_at DESC, seq DESC"
    " LIMIT 1)"
)


class SQLiteBackend:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        busy_timeout: str | int = 30_000,
        create: bool | str = True,
        watch_interval: float | str = WATCH_INTERVAL,
    ) -> None:
        self.path = Path(path)
        if str(synchronous).lower() not in ("normal", "full", "extra"):
            raise ValueError("synchronous must be normal, full or extra")
        self._watch_interval = float(watch_interval)
        if not 0 <= self._watch_interval < float("inf"):
            raise ValueError("watch_interval must be a number of seconds >= 0 (0: off)")
        self._synchronous = str(synchronous).upper()
        self._busy_timeout = int(busy_timeout)
        self._create = create not in (False, "0", "false", "no")
        self._writer: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._secret: bytes | None = None
        self.checkpointer: WalCheckpointer | None = None
        self.watcher: CommitWatcher | None = None
        self._head_callbacks: list[Callable[[int], None]] = []
        self.tree = SQLiteTree()
        self._has_tree = True  # False only on a file kept at a version before TREE_SINCE
        self._version = 0
        # Derived writes in each commit's transaction (see eventstore.backends.derived):
        # the integrity tree appends its writer here too.
        self.derived_writers: list[DerivedWrite] = [SQLiteRollup(), SQLiteCounts()]

    # --- lifecycle ---------------------------------------------------------------------

    def _pragmas(self) -> list[str]:
        return [f"PRAGMA busy_timeout = {self._busy_timeout}",
                f"PRAGMA synchronous = {self._synchronous}"]

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(writer_connection, *args)` on the writer thread."""
        if self._writer_thread is None:
            raise BackendError("the SQLite backend is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, functools.partial(fn, *args))

    def _open_writer(self) -> bytes:
        # secure_delete: what a forget or a snapshot update overwrites is zeroed in the
        # page, not left in its free space
        conn = connect(self.path, [*self._pragmas(), "PRAGMA journal_mode = WAL",
                                   "PRAGMA wal_autocheckpoint = 0",  # see wal_checkpointer.py
                                   "PRAGMA secure_delete = ON"])
        try:
            secret = self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        return secret

    async def open(self) -> None:
        if not self._create and not self.path.exists():
            raise BackendError(f"no eventstore database at {self.path}; check the path")
        if not self.path.parent.exists():
            raise BackendError(
                f"cannot create {self.path}: directory {self.path.parent} does not exist"
            )
        self._create_private()
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="eventstore-sqlite")
        try:
            self._secret = await self._on_writer(self._open_writer)
            self.checkpointer = WalCheckpointer(self.path, self._pragmas())
            await self._on_writer(self.checkpointer.start)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None,
                                                   timeout=self._busy_timeout / 1000)
            for pragma in [*self._pragmas(), "PRAGMA query_only = ON"]:
                await self._reader.execute(pragma)
        except sqlite3.Error as exc:
            await self.close()
            raise BackendError(f"cannot open SQLite database {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    def _create_private(self) -> None:
        """Create a new database file readable by its owner only (0600), whatever the umask:
        it holds the cursor secret, the wrapped keys and every unencrypted event. SQLite
        gives the -wal and -shm files the mode of the database file."""
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass  # an existing store keeps the mode its owner gave it
        except OSError as exc:
            raise BackendError(f"cannot create SQLite database {self.path}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> bytes:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS eventstore_meta (key TEXT PRIMARY KEY, value BLOB)"
            )
            meta = dict(conn.execute(
                "SELECT key, value FROM eventstore_meta WHERE key IN ('schema_version', 'secret')"
            ).fetchall())
            current = int(meta.get("schema_version", 0))
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {current}, newer than this eventstore "
                    f"({SCHEMA_VERSION}); upgrade eventstore to open it"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                if version == _DERIVED_SINCE and current > 0:
                    rebuild_derived(conn, self.derived_writers, lambda: _stored_batches(conn))
                if version == TREE_SINCE:
                    for statement in TREE_MIGRATION:
                        conn.execute(statement)
                    self.tree.build(conn)
                    for statement in TRIGGERS:
                        conn.execute(statement)
            self._version = max(current, SCHEMA_VERSION)
            self._has_tree = self._version >= TREE_SINCE
            secret = meta.get("secret") or os.urandom(32)
            conn.executemany(
                "INSERT OR REPLACE INTO eventstore_meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("secret", secret)],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return bytes(secret)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        thread, self._writer_thread = self._writer_thread, None
        if thread is not None:
            watcher, self.watcher = self.watcher, None
            self._head_callbacks.clear()
            if watcher is not None:
                await asyncio.get_running_loop().run_in_executor(thread, watcher.close)
            checkpointer, self.checkpointer = self.checkpointer, None
            if checkpointer is not None:  # before the writer, whose close checkpoints the rest
                await asyncio.get_running_loop().run_in_executor(thread, checkpointer.close)
            writer, self._writer = self._writer, None
            if writer is not None:
                await asyncio.get_running_loop().run_in_executor(thread, writer.close)
            thread.shutdown(wait=True)

    # --- writes ------------------------------------------------------------------------

    @staticmethod
    def _stored(conn: sqlite3.Connection, ids: list[str]) -> dict[str, StoredId]:
        stored: dict[str, StoredId] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            rows = conn.execute(
                f"SELECT seq, id, digest, body FROM events "
                f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk,
            )
            for seq, event_id, digest, body in rows:
                stored[event_id] = StoredId(bytes(digest), decode_stored(seq, body))
        return stored

    def _commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        conn = self._writer
        if conn is None:
            raise BackendError("the SQLite backend is not open")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BackendError(
                f"could not lock {self.path} for writing ({exc}); another process may "
                "hold the write lock: retry, or raise busy_timeout in the URL"
            ) from exc
        try:
            # recorded_at never decreases along seq, so the last row has the latest: one
            # probe of the primary key (max() of two columns in one SELECT would scan).
            last = conn.execute(_LAST).fetchone()
            last_seq, last_micros = last if last is not None else (0, None)
            stored = self._stored(conn, request_ids(requests))
            now = utcnow()
            if last_micros is not None and to_micros(now) < last_micros:
                now = from_micros(last_micros)
            plan = plan_group(requests, stored, last_seq + 1, now)
            growth = None
            if plan.rows and not self._has_tree:
                micros = to_micros(now)
                conn.executemany(_INSERT, [
                    (r.event.seq, r.event.id, r.event.type, r.event.conversation_id,
                     r.event.user_id, micros, r.digest, r.document) for r in plan.rows])
                self._write_derived(conn, plan.rows)
            elif plan.rows:
                micros = to_micros(now)
                records, leaves = event_records(plan.rows, micros)
                conn.executemany(_INSERT_WITH_LEAF, records)
                self._write_derived(conn, plan.rows)
                growth = self.tree.write(conn, last_seq, leaves, micros)
            conn.execute("COMMIT")
            if growth is not None:
                self.tree.committed(growth)
            if plan.rows and self.checkpointer is not None:
                self.checkpointer.committed(conn, sum(len(r.document) for r in plan.rows))
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the transaction is already gone; nothing was committed
            if isinstance(exc, sqlite3.Error):
                raise BackendError(f"append to {self.path} failed: {exc}") from exc
            raise
        return plan.outcomes, [row.event for row in plan.rows]

    def _write_derived(self, conn: sqlite3.Connection, rows: Sequence[NewRow]) -> None:
        if self.derived_writers and self._version >= _DERIVED_SINCE:
            deltas = Deltas.of_rows(rows)
            for write in self.derived_writers:
                write(conn, rows, deltas)

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        return await self._on_writer(self._commit_group, requests)

    # --- the integrity tree (eventstore.integrity.TreeStore; see tree.py) --------------

    async def tree_size(self) -> int:
        """The number of leaves of the stored tree (its last committed head)."""
        ((n,),) = await self._fetch(TREE_SIZE, ())
        return int(n)

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The stored hashes of `keys` (missing ones left out), in at most two queries."""
        results = [await self._fetch(sql, params) for sql, params in node_queries(keys)]
        return answer(keys, results, bool(leaf_ranges(keys)))

    async def stored_leaves(self, from_seq: int, limit: int) -> Sequence[StoredLeaf]:
        """Up to `limit` stored events from `from_seq` on, as the leaves verify hashes."""
        rows = await self._fetch(STORED_LEAVES, (from_seq, limit))
        return [stored_leaf(row) for row in rows]

    async def leaf_rows(self, from_seq: int, limit: int) -> Sequence[LeafRow]:
        """The same page as `stored_leaves`, as the cursor's rows of stored bytes
        (eventstore.integrity.rehash): what verify hashes, without a Python object per
        event."""
        return await self._fetch(LEAF_ROWS, (from_seq, limit))

    # --- reads -------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        reader = self._reader
        if reader is None:
            raise BackendError("the SQLite backend is not open")
        try:
            return list(await reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise BackendError(f"read from {self.path} failed: {exc}") from exc

    async def _seq_range(self, query: Query, after_seq: int) -> tuple[int, int | None] | None:
        """The seqs a query may return as (exclusive low, inclusive high); None if none.

        The writer keeps recorded_at non-decreasing in seq order, so the events recorded
        between `after` and `before` are exactly one seq range, found with two lookups in
        the recorded_at index; every page then reads seq ranges only.
        """
        if query.after is None and query.before is None:
            return after_seq, None
        ((first, last),) = await self._fetch(
            _SEQ_RANGE, (query.after_micros or 0, query.before_micros or 0)
        )
        low, high = after_seq, None
        if query.after is not None:
            if first is None:
                return None
            low = max(low, int(first) - 1)
        if query.before is not None:
            if last is None:
                return None
            high = int(last)
        return (low, high) if high is None or high > low else None

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        seqs = await self._seq_range(query, after_seq)
        if seqs is None:
            return []
        rows = await self._fetch(*page_sql(query, *seqs, limit))
        return [decode_stored(seq, body) for (seq, body) in rows]

    def explain(
        self, query: Query, after_seq: int = 0, limit: int = 25, before_seq: int | None = None
    ) -> tuple[str, list[Any]]:
        """The page SQL for `query` after `after_seq` (tests check its plan with EXPLAIN
        QUERY PLAN); `before_seq` stands for the seq a `before=` bound resolves to."""
        high = before_seq if query.before is not None else None
        if query.before is not None and high is None:
            high = 2**62
        return page_sql(query, after_seq, high, limit)

    async def trace(self, callback: Callable[[str], None] | None) -> None:
        """Call `callback(sql)` with every statement the writer and the reader run, bound
        values expanded (None: stop). For query-plan tests and debugging."""
        if self._writer is None or self._reader is None:
            raise BackendError("the SQLite backend is not open")
        await self._on_writer(self._writer.set_trace_callback, callback)
        await self._reader.set_trace_callback(callback)  # type: ignore[arg-type]

    # --- commits from other connections ------------------------------------------------

    async def listen(self, on_head: Callable[[int], None]) -> None:
        """Call `on_head(seq)` soon after any connection commits to the file (see
        commit_watcher.py); off with the URL option watch_interval=0."""
        if self._watch_interval == 0:
            return
        self._head_callbacks.append(on_head)
        if self.watcher is not None:
            return
        watcher = CommitWatcher(self.path, self._pragmas(), self._heard,
                                asyncio.get_running_loop(), self._watch_interval)
        try:
            await self._on_writer(watcher.start)
        except sqlite3.Error as exc:
            self._head_callbacks.remove(on_head)
            raise BackendError(f"cannot watch {self.path} for commits: {exc}") from exc
        self.watcher = watcher

    def _heard(self, head: int) -> None:
        announce_head(self._head_callbacks, head)

    async def check_listener(self) -> bool:
        """True if the commit watcher had stopped and runs again (commits may have gone
        unnoticed meanwhile: catch up); the guardian calls this on every tick."""
        watcher = self.watcher
        if watcher is None or watcher.alive or self._writer_thread is None:
            return False
        try:
            await self._on_writer(watcher.start)
        except sqlite3.Error as exc:
            log.warning("cannot restart watching %s for commits: %s", self.path, exc)
            return False
        return True

    def unlisten(self, on_head: Callable[[int], None]) -> None:
        if on_head in self._head_callbacks:
            self._head_callbacks.remove(on_head)

    async def count(self, query: Query) -> int:
        if query.after is None and query.before is None and self._version >= _DERIVED_SINCE:
            if query == _EVERYTHING:
                # Seqs are 1..head with no hole and nothing is ever deleted: the head is
                # the count.
                return await self.head()
            ((n,),) = await self._fetch(*counts_sql(query))
            return int(n)
        seqs = await self._seq_range(query, 0)
        if seqs is None:
            return 0
        ((n,),) = await self._fetch(*count_sql(query, *seqs))
        return int(n)

    async def head(self) -> int:
        ((n,),) = await self._fetch("SELECT coalesce(max(seq), 0) FROM events", ())
        return int(n)

    async def cost_totals(self, filters: CostFilters) -> CostTotals:
        """Totals of the matching model calls from the rollup (see eventstore.rollup):
        the buckets of the whole days in the window, the calls of its partial days."""
        totals = CostTotals()
        days, edges = filters.split()
        if days is not None:
            for row in await self._fetch(*buckets_sql(filters, *days)):
                totals.add(CostTotals.from_row(row))
        for low, high in edges:
            for row in await self._fetch(*calls_sql(filters, low, high)):
                facts = facts_from_call_row(row)
                if filters.tag is None or filters.tag in facts.tags:
                    totals.add_call(facts)
        return totals

    async def secret(self) -> bytes:
        if self._secret is None:
            raise BackendError("the SQLite backend is not open")
        return self._secret

    # --- checkpoints -------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        rows = await self._fetch(
            "SELECT name, position, state, updated_at FROM checkpoints WHERE name = ?", (name,)
        )
        return checkpoint_from_row(rows[0]) if rows else None

    async def list_checkpoints(self) -> list[Checkpoint]:
        rows = await self._fetch(
            "SELECT name, position, state, updated_at FROM checkpoints ORDER BY name", ()
        )
        return [checkpoint_from_row(row) for row in rows]

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        if self._writer is None:
            raise BackendError("the SQLite backend is not open")
        self._writer.execute(sql, params)
        if self.checkpointer is not None:
            self.checkpointer.committed(self._writer)

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        try:
            await self._on_writer(self._execute, sql, params)
        except sqlite3.Error as exc:
            raise BackendError(f"write to {self.path} failed: {exc}") from exc

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        updated: datetime = checkpoint.updated_at or utcnow()
        await self._write(
            "INSERT INTO checkpoints (name, position, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
            "state = excluded.state, updated_at = excluded.updated_at",
            (checkpoint.name, checkpoint.position, checkpoint.state, to_micros(updated)),
        )

    async def delete_checkpoint(self, name: str) -> None:
        await self._write("DELETE FROM checkpoints WHERE name = ?", (name,))

    # --- metadata and encryption keys --------------------------------------------------

    async def get_meta(self, key: str) -> bytes | None:
        rows = await self._fetch("SELECT value FROM eventstore_meta WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def _set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        conn = self._writer
        if conn is None:
            raise BackendError("the SQLite backend is not open")
        conn.execute("INSERT OR IGNORE INTO eventstore_meta (key, value) VALUES (?, ?)",
                     (key, value))
        (stored,) = conn.execute("SELECT value FROM eventstore_meta WHERE key = ?",
                                 (key,)).fetchone()
        return bytes(stored)

    async def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        try:
            return await self._on_writer(self._set_meta_if_absent, key, value)
        except sqlite3.Error as exc:
            raise BackendError(f"write to {self.path} failed: {exc}") from exc

    async def load_keys(self, user_ids: Sequence[str]) -> dict[str, KeyRecord]:
        records: list[KeyRecord] = []
        for start in range(0, len(user_ids), _ID_CHUNK):
            chunk = list(user_ids[start : start + _ID_CHUNK])
            rows = await self._fetch(
                "SELECT user_id, generation, wrapped, created_at, forgotten_at FROM data_keys "
                f"WHERE user_id IN ({', '.join('?' * len(chunk))})", chunk,
            )
            records.extend(key_record_from_row(row) for row in rows)
        return newest_keys(records)

    def _create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        conn = self._writer
        if conn is None:
            raise BackendError("the SQLite backend is not open")
        # Autocommit: the insert is its own transaction; whoever inserts first wins.
        conn.execute(
            "INSERT OR IGNORE INTO data_keys (user_id, generation, wrapped, created_at) "
            "VALUES (?, ?, ?, ?)", (user_id, generation, wrapped, to_micros(utcnow())),
        )
        row = conn.execute(
            "SELECT user_id, generation, wrapped, created_at, forgotten_at FROM data_keys "
            "WHERE user_id = ? AND generation = ?", (user_id, generation),
        ).fetchone()
        return key_record_from_row(row)

    async def create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        try:
            return await self._on_writer(self._create_key, user_id, generation, wrapped)
        except sqlite3.Error as exc:
            raise BackendError(f"storing a key in {self.path} failed: {exc}") from exc

    def _destroy_keys(self, user_id: str) -> KeyRecord:
        conn = self._writer
        if conn is None:
            raise BackendError("the SQLite backend is not open")
        now = to_micros(utcnow())
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "UPDATE data_keys SET wrapped = NULL, forgotten_at = ? "
                "WHERE user_id = ? AND wrapped IS NOT NULL", (now, user_id),
            )
            conn.execute(
                "INSERT INTO data_keys (user_id, generation, wrapped, created_at, forgotten_at) "
                "SELECT ?, 1, NULL, ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM data_keys WHERE user_id = ?)", (user_id, now, now, user_id),
            )
            row = conn.execute(
                "SELECT user_id, generation, wrapped, created_at, forgotten_at FROM data_keys "
                "WHERE user_id = ? ORDER BY generation DESC LIMIT 1", (user_id,),
            ).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._scrub(conn, f"forgot key {user_id!r}")
        return key_record_from_row(row)

    def _scrub(self, conn: sqlite3.Connection, what: str) -> None:
        """Leave no copy of what was just overwritten in the file or its WAL (see
        wal_checkpointer.py): done now when no other process's reader holds an old
        snapshot, else pending and finished by the checkpointer as soon as it lets go."""
        checkpointer = self.checkpointer
        if checkpointer is None:
            return
        if not checkpointer.truncate(conn):
            log.warning(
                "%s, but a reader of another connection keeps %s-wal from being truncated: "
                "the old bytes stay in the WAL (and the file) until it finishes; the store "
                "truncates it as soon as it can (erasure_pending says so until then)",
                what, self.path,
            )

    @property
    def erasure_pending(self) -> bool:
        """True while overwritten keys or snapshots may still be in -wal or the file."""
        return self.checkpointer is not None and self.checkpointer.pending

    async def scrub(self) -> None:
        """Make what was overwritten or deleted since the last scrub unrecoverable."""
        if self._writer is None:
            raise BackendError("the SQLite backend is not open")
        await self._on_writer(self._scrub, self._writer, "erased")

    async def key_owners(self, prefix: str | None = None) -> list[str]:
        """The owners (user ids, or user and period) that have a live key, optionally
        only those starting with `prefix`."""
        if prefix:
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            rows = await self._fetch(
                "SELECT DISTINCT user_id FROM data_keys WHERE user_id >= ? AND user_id < ? "
                "AND wrapped IS NOT NULL", (prefix, upper))
        else:
            rows = await self._fetch(
                "SELECT DISTINCT user_id FROM data_keys WHERE wrapped IS NOT NULL", ())
        return [row[0] for row in rows]

    async def destroy_keys(self, user_id: str) -> KeyRecord:
        try:
            return await self._on_writer(self._destroy_keys, user_id)
        except sqlite3.Error as exc:
            raise BackendError(f"destroying a key in {self.path} failed: {exc}") from exc
