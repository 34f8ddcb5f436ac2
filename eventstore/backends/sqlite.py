"""The embedded default: one SQLite file in WAL mode, through aiosqlite.

Two connections per store: a writer that commits whole groups (`BEGIN IMMEDIATE`, one
`executemany`, `COMMIT`) and a reader that never waits for it (WAL readers see the last
committed snapshot). `BEGIN IMMEDIATE` takes SQLite's single write lock before the next
seq is read, so several stores or processes on one file assign seqs one transaction
after another: commit order is seq order, with no duplicate and no hole a reader could
page past. recorded_at is kept non-decreasing in seq order inside the same lock.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from ..clock import from_micros, to_micros, utcnow
from ..codec import PreparedEvent, decode_recorded
from ..errors import BackendError, SchemaVersionError
from ..events import RecordedEvent
from ..query import Query
from .base import Checkpoint, Outcome, StoredId, plan_group, request_ids

SCHEMA_VERSION = 1

# Each entry upgrades the schema from version N-1 to N; run in order, in one transaction.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            conversation_id TEXT,
            user_id TEXT,
            recorded_at INTEGER NOT NULL,
            digest BLOB NOT NULL,
            body BLOB NOT NULL
        )""",
        # One index per filter, each ending in seq, so a filtered page is an index range
        # read in seq order with no sort and no table scan.
        "CREATE INDEX events_by_conversation ON events (conversation_id, seq)",
        "CREATE INDEX events_by_user ON events (user_id, seq)",
        "CREATE INDEX events_by_type ON events (type, seq)",
        "CREATE INDEX events_by_recorded_at ON events (recorded_at, seq)",
        """CREATE TABLE checkpoints (
            name TEXT PRIMARY KEY,
            position INTEGER NOT NULL,
            state BLOB,
            updated_at INTEGER NOT NULL
        )""",
    ),
}

_ID_CHUNK = 500  # well under SQLite's bound-parameter limit
_INSERT = (
    "INSERT INTO events (seq, id, type, conversation_id, user_id, recorded_at, digest, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def where_clause(query: Query, after_seq: int) -> tuple[str, list[Any]]:
    clauses = ["seq > ?"]
    params: list[Any] = [after_seq]
    if query.conversation_id is not None:
        clauses.append("conversation_id = ?")
        params.append(query.conversation_id)
    if query.user_id is not None:
        clauses.append("user_id = ?")
        params.append(query.user_id)
    if query.types is not None:
        names = sorted(query.types)
        clauses.append(f"type IN ({', '.join('?' * len(names))})")
        params.extend(names)
    if query.after is not None:
        clauses.append("recorded_at >= ?")
        params.append(query.after_micros)
    if query.before is not None:
        clauses.append("recorded_at <= ?")
        params.append(query.before_micros)
    return " AND ".join(clauses), params


class SQLiteBackend:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        busy_timeout: str | int = 30_000,
        create: bool | str = True,
    ) -> None:
        self.path = Path(path)
        if str(synchronous).lower() not in ("normal", "full", "extra"):
            raise ValueError("synchronous must be normal, full or extra")
        self._synchronous = str(synchronous).upper()
        self._busy_timeout = int(busy_timeout)
        self._create = create not in (False, "0", "false", "no")
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # Group commits span several awaits on the writer connection; checkpoint writes
        # must not land inside one.
        self._write_lock = asyncio.Lock()
        self._secret: bytes | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(
            self.path, isolation_level=None, timeout=self._busy_timeout / 1000
        )
        await conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout}")
        await conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    async def open(self) -> None:
        if not self._create and not self.path.exists():
            raise BackendError(f"no eventstore database at {self.path}; check the path")
        if not self.path.parent.exists():
            raise BackendError(
                f"cannot create {self.path}: directory {self.path.parent} does not exist"
            )
        try:
            self._writer = await self._connect()
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await self._migrate(self._writer)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            await self.close()
            raise BackendError(f"cannot open SQLite database {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS eventstore_meta (key TEXT PRIMARY KEY, value BLOB)"
            )
            rows = list(await conn.execute_fetchall(
                "SELECT key, value FROM eventstore_meta WHERE key IN ('schema_version', 'secret')"
            ))
            meta = {key: value for key, value in rows}
            current = int(meta.get("schema_version", 0))
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {current}, newer than this eventstore "
                    f"({SCHEMA_VERSION}); upgrade eventstore to open it"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
            secret = meta.get("secret") or os.urandom(32)
            await conn.executemany(
                "INSERT OR REPLACE INTO eventstore_meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("secret", secret)],
            )
            await conn.execute("COMMIT")
            self._secret = bytes(secret)
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        for attr in ("_reader", "_writer"):
            conn: aiosqlite.Connection | None = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                await conn.close()

    def _conns(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        if self._writer is None or self._reader is None:
            raise BackendError("the SQLite backend is not open")
        return self._writer, self._reader

    # --- writes ------------------------------------------------------------------------

    async def _stored(self, conn: aiosqlite.Connection, ids: list[str]) -> dict[str, StoredId]:
        stored: dict[str, StoredId] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            rows = await conn.execute_fetchall(
                f"SELECT id, digest, body FROM events WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for event_id, digest, body in rows:
                stored[event_id] = StoredId(bytes(digest), decode_recorded(body))
        return stored

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        writer, _ = self._conns()
        async with self._write_lock:
            try:
                await writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise BackendError(
                    f"could not lock {self.path} for writing ({exc}); another process may "
                    "hold the write lock: retry, or raise busy_timeout in the URL"
                ) from exc
            try:
                ((last_seq, last_micros),) = await writer.execute_fetchall(
                    "SELECT coalesce(max(seq), 0), max(recorded_at) FROM events"
                )
                stored = await self._stored(writer, request_ids(requests))
                now = utcnow()
                if last_micros is not None and to_micros(now) < last_micros:
                    now = from_micros(last_micros)
                plan = plan_group(requests, stored, last_seq + 1, now)
                if plan.rows:
                    micros = to_micros(now)
                    await writer.executemany(
                        _INSERT,
                        [
                            (r.event.seq, r.event.id, r.event.type, r.event.conversation_id,
                             r.event.user_id, micros, r.digest, r.document)
                            for r in plan.rows
                        ],
                    )
                await writer.execute("COMMIT")
            except BaseException as exc:
                await self._rollback(writer)
                if isinstance(exc, sqlite3.Error):
                    raise BackendError(f"append to {self.path} failed: {exc}") from exc
                raise
        return plan.outcomes, [row.event for row in plan.rows]

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        if conn.in_transaction:
            try:
                await conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the transaction is already gone; nothing was committed

    # --- reads -------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        _, reader = self._conns()
        try:
            return list(await reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise BackendError(f"read from {self.path} failed: {exc}") from exc

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        where, params = where_clause(query, after_seq)
        rows = await self._fetch(
            f"SELECT body FROM events WHERE {where} ORDER BY seq LIMIT ?", [*params, limit]
        )
        return [decode_recorded(body) for (body,) in rows]

    def explain(self, query: Query, after_seq: int = 0) -> tuple[str, list[Any]]:
        """The page SQL for `query` (tests check its plan with EXPLAIN QUERY PLAN)."""
        where, params = where_clause(query, after_seq)
        return f"SELECT body FROM events WHERE {where} ORDER BY seq LIMIT ?", [*params, 25]

    async def count(self, query: Query) -> int:
        where, params = where_clause(query, 0)
        ((n,),) = await self._fetch(f"SELECT count(*) FROM events WHERE {where}", params)
        return int(n)

    async def head(self) -> int:
        ((n,),) = await self._fetch("SELECT coalesce(max(seq), 0) FROM events", ())
        return int(n)

    async def secret(self) -> bytes:
        if self._secret is None:
            raise BackendError("the SQLite backend is not open")
        return self._secret

    # --- checkpoints -------------------------------------------------------------------

    @staticmethod
    def _checkpoint(row: Sequence[Any]) -> Checkpoint:
        name, position, state, updated = row
        return Checkpoint(
            name=name,
            position=int(position),
            state=bytes(state) if state is not None else None,
            updated_at=from_micros(int(updated)),
        )

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        rows = await self._fetch(
            "SELECT name, position, state, updated_at FROM checkpoints WHERE name = ?", (name,)
        )
        return self._checkpoint(rows[0]) if rows else None

    async def list_checkpoints(self) -> list[Checkpoint]:
        rows = await self._fetch(
            "SELECT name, position, state, updated_at FROM checkpoints ORDER BY name", ()
        )
        return [self._checkpoint(row) for row in rows]

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        writer, _ = self._conns()
        async with self._write_lock:
            try:
                await writer.execute(sql, params)
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
