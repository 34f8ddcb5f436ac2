"""PostgreSQL, through an asyncpg pool, for logs shared by several processes or machines.

Ordering. A `bigserial` (or any seq taken at insert time) is assigned when a transaction
inserts, not when it commits: A takes seq 10, B takes 11 and commits first, a reader pages
past 11 and never sees 10. So every group transaction here first takes
`pg_advisory_xact_lock(<key of this schema>)`, and only then reads the head seq and assigns
the next ones. The lock is held until commit, and PostgreSQL makes a commit visible before
it releases the transaction's locks, so the next writer (in any process) can only take
seqs after the previous group is visible: commit order is seq order, and the set of
committed seqs is always 1..head with no hole a cursor could skip. Readers take no lock.
This serialises writers, but group commit makes one lock carry a whole group (thousands
of events under load), so what it costs is the few round trips a group holds it for; we
keep those to five (lock; head, clock and known ids; COPY; notify with COMMIT). The
alternative (readers stop below the oldest in-flight xmin) keeps writers parallel but puts
snapshot arithmetic into every read and subscription; an advisory lock (rather than LOCK
TABLE) leaves autovacuum and DDL alone.

Time. recorded_at is the server's clock_timestamp() read inside the lock, raised to the
previous group's recorded_at if a clock stepped back, so time filters and seq order agree
however many app servers write (their own clocks never enter into it).

The lock and the head read are separate statements on purpose: under READ COMMITTED each
statement takes its snapshot when it starts, so a head read in the statement that waited
for the lock would not see the commit it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from ...clock import from_micros, to_micros, utcnow
from ...codec import PreparedEvent, decode_stored
from ...errors import BackendError, SchemaVersionError
from ...events import RecordedEvent
from ...integrity.appender import Growth
from ...integrity.leaf import StoredLeaf
from ...integrity.merkle import NodeKey
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
    plan_group,
    request_ids,
)
from ..derived import Deltas
from ..schema import MIGRATIONS, SCHEMA_VERSION, TREE_SINCE, postgres_types, statements
from ..tree import event_records
from . import tree
from .derived import DerivedWrite, PostgresCounts, PostgresRollup, cost_totals, counts_sql

log = logging.getLogger("eventstore.postgres")

_COLUMNS = ("seq", "id", "type", "conversation_id", "user_id", "recorded_at", "digest", "body",
            "occurred_at", "leaf_hash")
_DERIVED_SINCE = 3  # the schema version that added the derived tables
_REBUILD_BATCH = 5_000


def _migrations(s: str) -> dict[int, list[str]]:
    """Each entry upgrades the schema `s` (quoted) from version N-1 to N, in one transaction."""
    types = postgres_types(f"{s}.")
    return {version: statements(version, types) for version in sorted(MIGRATIONS)}


_EVERYTHING = Query()

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Errors that mean "the connection is gone", as opposed to "the server refused this".
_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,  # class 08, and asyncpg's "closed mid-operation"
    asyncpg.AdminShutdownError,  # pg_terminate_backend, server shutting down
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,  # server starting up or in recovery
    # asyncpg's protocol out of step with the server: what a query gets when the FATAL of
    # a pg_terminate_backend arrived while the connection sat idle in the pool.
    asyncpg.InternalClientError,
)


def _connection_lost(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):  # an OSError, but the connection may be fine
        return False
    if isinstance(exc, _LOST):
        return True
    # asyncpg reports use of a connection it already knows is closed this way.
    return (isinstance(exc, asyncpg.InterfaceError)
            and not isinstance(exc, asyncpg.ClientConfigurationError)
            and "closed" in str(exc))


def _lock_key(purpose: str, schema: str) -> int:
    digest = hashlib.blake2b(f"eventstore:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def where_clause(query: Query, after_seq: int, table: str) -> tuple[str, list[Any]]:
    params: list[Any] = [after_seq]
    clauses = ["seq > $1"]

    def add(template: str, value: Any) -> None:
        params.append(value)
        clauses.append(template.format(f"${len(params)}", table=table))

    if query.conversation_id is not None:
        add("conversation_id = {}", query.conversation_id)
    if query.user_id is not None:
        add("user_id = {}", query.user_id)
    if query.types is not None:
        names = sorted(query.types)
        # `=` for one name keeps the (type, seq) index usable for ORDER BY seq LIMIT.
        if len(names) == 1:
            add("type = {}", names[0])
        else:
            add("type = ANY({}::text[])", names)
    # recorded_at never decreases along seq (see the module docstring), so a time bound is
    # also a seq bound, found with one probe of the (recorded_at, seq) index. Without it,
    # the planner, which cannot know the two columns move together, walks the primary key
    # from seq 1 through every event before the window to fill the first page.
    if query.after is not None:
        add("recorded_at >= {0} AND seq >= (SELECT seq FROM {table} WHERE recorded_at >= {0} "
            "ORDER BY recorded_at, seq LIMIT 1)", query.after_micros)
    if query.before is not None:
        add("recorded_at <= {0} AND seq <= (SELECT seq FROM {table} WHERE recorded_at <= {0} "
            "ORDER BY recorded_at DESC, seq DESC LIMIT 1)", query.before_micros)
    return " AND ".join(clauses), params


async def _init_connection(conn: Any) -> None:
    # Custom plans: a generic plan cannot tell a rare type or conversation from a common
    # one, and may then walk the whole primary key for one filtered page. Set here rather
    # than as a startup parameter, which connection poolers such as PgBouncer refuse.
    await conn.execute("SET plan_cache_mode = force_custom_plan")


async def _keep_session(conn: Any) -> None:
    """Pool reset: we set no session state (advisory locks are transaction-scoped and LISTEN
    lives on its own connection), so skip asyncpg's default reset query, which would cost a
    round trip on every release."""


class PostgresBackend:
    def __init__(
        self,
        url: str,
        *,
        schema: str = "eventstore",
        pool_size: int = 10,
        min_pool_size: int = 1,
        command_timeout: float = 30,
        connect_timeout: float = 10,
        server_settings: Mapping[str, str] | None = None,
        create: bool | str = True,
    ) -> None:
        if (not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema)
                or len(schema) > 63 or schema.lower().startswith("pg_")):
            raise ValueError(
                f"schema={schema!r} is not a usable PostgreSQL schema name; use letters, "
                "digits and _ (at most 63, not starting with a digit or pg_)"
            )
        if not 1 <= min_pool_size <= pool_size:
            raise ValueError(f"need 1 <= min_pool_size <= pool_size, got {min_pool_size} and "
                             f"{pool_size}")
        self.url = url
        self.schema = schema
        # create=False: a schema that holds no store is an error, not a new empty store (a
        # typo in ?schema= would otherwise answer "no events" and write to the wrong place)
        self._create = create not in (False, "0", "false", "no")
        parts = urlsplit(url)
        try:
            port = parts.port or 5432
        except ValueError:
            port = 5432
        self.address = f"{parts.hostname or 'localhost'}:{port}"  # never the password
        self._pool_size = pool_size
        self._min_pool_size = min_pool_size
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._server_settings = {"application_name": "eventstore", **(server_settings or {})}
        self.lock_key = _lock_key("append", schema)
        self._migrate_key = _lock_key("migrate", schema)
        self.channel = schema + "_events" if len(schema) <= 56 else f"es_{self.lock_key:x}"

        s = f'"{schema}"'
        self._s = s
        self._sql_begin = f"BEGIN; SELECT pg_advisory_xact_lock({self.lock_key})"
        # The head, the server clock and the ids already stored, in one round trip while
        # the lock is held (a NULL id marks the head row: events.id is NOT NULL).
        self._sql_position = (
            "SELECT NULL::text, NULL::bytea, NULL::bytea, last.seq, last.recorded_at, "
            "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint "
            f"FROM (SELECT 1) AS one LEFT JOIN (SELECT seq, recorded_at FROM {s}.events "
            "ORDER BY seq DESC LIMIT 1) AS last ON true "
            "UNION ALL "
            f"SELECT id, digest, body, seq, NULL, NULL FROM {s}.events "
            "WHERE id = ANY($1::text[])"
        )

        self._pool: Any = None
        self._secret: bytes | None = None
        self._closing = False
        self._listener: Any = None
        self._head_callbacks: list[Callable[[int], None]] = []
        self._relisten_lock = asyncio.Lock()
        self._relisten_task: asyncio.Task[None] | None = None
        self._relistened = False
        self.tree = tree.PostgresTree(s)
        self._has_tree = True
        self._sql_tree_size = tree.tree_size_sql(s)
        self._sql_stored_leaves = tree.stored_leaves_sql(s)
        self._tracer: Callable[[Any], None] | None = None
        # Derived writes in each commit's transaction (see eventstore.backends.derived):
        # the integrity tree appends its writer here too.
        self.derived_writers: list[DerivedWrite] = [PostgresRollup(s), PostgresCounts(s)]

    # --- errors ------------------------------------------------------------------------

    def _error(self, doing: str, exc: BaseException, consequence: str = "") -> BackendError:
        tail = f"; {consequence}" if consequence else ""
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, TimeoutError):
            message = (f"PostgreSQL at {self.address} did not finish {doing} in time "
                       f"(command_timeout={self._command_timeout}s, connect_timeout="
                       f"{self._connect_timeout}s); the server may be overloaded, "
                       f"unreachable, or waiting on a lock held elsewhere{tail}")
        elif isinstance(exc, OSError | asyncpg.CannotConnectNowError):
            message = (f"cannot reach PostgreSQL at {self.address}: {exc}; is the server "
                       f"running and accepting connections?{tail}")
        elif _connection_lost(exc):
            message = (f"lost the connection to PostgreSQL at {self.address} while {doing} "
                       f"({exc}); the server may have restarted, or the connection was "
                       f"terminated: retry{tail}")
        elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError
                        | asyncpg.InvalidPasswordError):
            message = (f"PostgreSQL at {self.address} refused the login: {exc}; check the "
                       "user and password in the URL")
        elif isinstance(exc, asyncpg.InvalidCatalogNameError):
            message = (f"PostgreSQL at {self.address}: {exc}; create the database or fix "
                       "its name in the URL")
        elif isinstance(exc, asyncpg.PostgresError):
            message = (f"PostgreSQL at {self.address} failed while {doing}: "
                       f"{exc.sqlstate} {exc}{tail}")
        else:
            message = f"PostgreSQL at {self.address} failed while {doing}: {exc!r}{tail}"
        error = BackendError(message)
        error.__cause__ = exc
        return error

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self._closing = False
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min_pool_size,
                max_size=self._pool_size,
                command_timeout=self._command_timeout,
                timeout=self._connect_timeout,
                server_settings=self._server_settings,
                init=_init_connection,
                reset=_keep_session,
            )
        except Exception as exc:
            raise self._error("connecting", exc) from exc
        try:
            async with self._connection() as conn:
                meta = await self._read_meta(conn)
                if meta is None and not self._create:
                    raise BackendError(
                        f"no eventstore in schema {self.schema} at {self.address}; check "
                        "?schema= in the URL, or pass create=true to make a new store there"
                    )
                if meta is None or int(meta.get("schema_version", b"0")) < SCHEMA_VERSION:
                    meta = await self._migrate(conn)
            self._check_version(meta)
            self._secret = meta["secret"]
            # False only for a schema kept at a version before the tree (tests do).
            self._has_tree = int(meta.get("schema_version", b"0")) >= TREE_SINCE
        except BaseException as exc:
            await self.close()
            if isinstance(exc, Exception):
                raise self._error(f"opening schema {self.schema}", exc) from exc
            raise

    def _check_version(self, meta: Mapping[str, bytes]) -> None:
        current = int(meta.get("schema_version", b"0"))
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"schema {self.schema} at {self.address} has eventstore schema version "
                f"{current}, newer than this eventstore ({SCHEMA_VERSION}); upgrade eventstore "
                "to open it"
            )

    async def _read_meta(self, conn: Any) -> dict[str, bytes] | None:
        # The common case (schema already current) needs no lock and no CREATE privilege.
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{self._s}.eventstore_meta")
        if exists is None:
            return None
        rows = await conn.fetch(f"SELECT key, value FROM {self._s}.eventstore_meta "
                                "WHERE key IN ('schema_version', 'secret')")
        return {key: bytes(value) for key, value in rows}

    async def _migrate(self, conn: Any) -> dict[str, bytes]:
        s = self._s
        async with conn.transaction():
            # Two processes opening a new schema at once would both try CREATE SCHEMA / TABLE
            # and one would fail on the catalog's unique index; the lock makes the second
            # wait, then find the work done (its next statements see the first's commit).
            await conn.execute(f"SELECT pg_advisory_xact_lock({self._migrate_key})")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.eventstore_meta "
                               "(key text PRIMARY KEY, value bytea NOT NULL)")
            meta = await self._read_meta(conn) or {}
            self._check_version(meta)
            current = int(meta.get("schema_version", b"0"))
            migrations = _migrations(s)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in migrations[version]:
                    await conn.execute(statement)
                if version == _DERIVED_SINCE and current > 0:
                    await self._rebuild_derived(conn)
                if version == TREE_SINCE:
                    for statement in tree.migration(s):
                        await conn.execute(statement)
                    await self.tree.build(conn)
                    for statement in tree.triggers(s):
                        await conn.execute(statement)
            meta = {"schema_version": str(SCHEMA_VERSION).encode(),
                    "secret": meta.get("secret") or os.urandom(32)}
            await conn.executemany(
                f"INSERT INTO {s}.eventstore_meta (key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(meta.items()),
            )
        return meta

    async def _rebuild_derived(self, conn: Any) -> None:
        """Feed every stored event to the derived writers again (the migration that adds
        the derived tables, on a log that has events)."""
        after = 0
        while True:
            rows = await conn.fetch(f"SELECT seq, body FROM {self._s}.events WHERE seq > $1 "
                                    "ORDER BY seq LIMIT $2", after, _REBUILD_BATCH)
            if not rows:
                return
            deltas = Deltas(decode_stored(seq, body) for seq, body in rows)
            for write in self.derived_writers:
                await write(conn, [], deltas)
            after = rows[-1][0]

    async def close(self) -> None:
        self._closing = True
        task, self._relisten_task = self._relisten_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop_listener()
        self._head_callbacks.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except Exception:
                pool.terminate()  # a dead server or a stuck query must not hang close()
            except asyncio.CancelledError:
                pool.terminate()
                raise

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise BackendError("the PostgreSQL backend is not open")
        conn = await pool.acquire(timeout=self._connect_timeout)
        tracer = self._tracer
        if tracer is not None:
            conn.add_query_logger(tracer)
        try:
            yield conn
        except BaseException:
            # Whatever failed (a query, a lost socket, a cancellation mid-COPY), the
            # connection may still hold an open transaction or half a protocol exchange:
            # drop it. The server rolls back what it had, the pool opens a fresh one.
            # (If the socket already died, asyncpg has detached it from the pool and says
            # so with an InterfaceError that must not hide the real error.)
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
            raise
        finally:
            if tracer is not None:
                conn.remove_query_logger(tracer)
            await pool.release(conn)

    # --- writes ------------------------------------------------------------------------

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        ids = request_ids(requests)
        try:
            return await self._commit_once(requests, ids)
        except _LostBeforeCommit as lost:
            # The server rolled the transaction back when the connection went, so trying
            # once more on a fresh connection cannot write anything twice.
            log.warning("append: %s; retrying once on a new connection", lost.error)
        try:
            return await self._commit_once(requests, ids)
        except _LostBeforeCommit as lost:
            raise lost.error from lost.error.__cause__

    async def _commit_once(
        self, requests: Sequence[Sequence[PreparedEvent]], ids: list[str]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        committing = False
        try:
            async with self._connection() as conn:
                await conn.execute(self._sql_begin)
                stored: dict[str, StoredId] = {}
                last_seq, last_micros, now_micros = 0, None, 0
                for event_id, digest, body, seq, recorded, clock in await conn.fetch(
                    self._sql_position, ids
                ):
                    if event_id is None:
                        last_seq, last_micros, now_micros = seq or 0, recorded, clock
                    else:
                        stored[event_id] = StoredId(bytes(digest), decode_stored(seq, body))
                if last_micros is not None and now_micros < last_micros:
                    now_micros = last_micros
                plan = plan_group(requests, stored, last_seq + 1, from_micros(now_micros))
                if not plan.rows:
                    await conn.execute("ROLLBACK")  # only retries of stored events
                    return plan.outcomes, []
                commit, growth = await self._insert(conn, plan.rows, now_micros, last_seq)
                if self.derived_writers:
                    deltas = Deltas.of_rows(plan.rows)
                    for write in self.derived_writers:
                        await write(conn, plan.rows, deltas)
                committing = True
                await conn.execute(commit)
                if growth is not None:
                    self.tree.committed(growth)
        except Exception as exc:
            if committing:
                raise self._error(
                    "committing an append", exc,
                    "the append may or may not have been committed: append the same events "
                    "(same ids) again, which is safe, to be sure",
                ) from exc
            error = self._error("appending", exc, "nothing was written")
            if _connection_lost(exc):
                raise _LostBeforeCommit(error) from exc
            raise error from exc
        return plan.outcomes, [row.event for row in plan.rows]

    async def _insert(
        self, conn: Any, rows: list[NewRow], micros: int, size: int
    ) -> tuple[str, Growth | None]:
        """Write the rows; returns the statement that writes the tree's nodes, notifies
        and commits, and the tree's growth to cache once it did.

        Binary COPY, measured against the alternatives through commit_group on PostgreSQL
        15 on localhost (events/s; median of 3): 1000-event groups, COPY 39.5k, one INSERT
        ... unnest() 34.8k, executemany 23.4k; 100-event groups 37.4k / 25.2k / 22.4k;
        10-event groups 7.6k / 6.5k / 7.0k; single events about 950 for each (one WAL
        flush per commit is then the whole cost). So one path, whatever the group size.
        """
        notify = f"SELECT pg_notify('{self.channel}', '{rows[-1].event.seq}'); COMMIT"
        if not self._has_tree:
            await conn.copy_records_to_table(
                "events", schema_name=self.schema, columns=list(_COLUMNS[:-2]),
                records=[(r.event.seq, r.event.id, r.event.type, r.event.conversation_id,
                          r.event.user_id, micros, r.digest, r.document) for r in rows])
            return notify, None
        records, leaves = event_records(rows, micros)
        await conn.copy_records_to_table(
            "events", schema_name=self.schema, columns=list(_COLUMNS), records=records)
        growth = await self.tree.grow(conn, size, leaves)
        # pg_notify inside the transaction: delivered at commit, never for a rollback; sent
        # with COMMIT in one round trip, as the lock is held until the reply.
        return f"{self.tree.sql(growth, micros)}{notify}", growth

    # --- reads -------------------------------------------------------------------------

    async def _fetch(self, doing: str, sql: str, *args: Any) -> list[Any]:
        """Run a read; one retry if the connection turned out dead (e.g. after a restart:
        the pool's idle connections die with the server and are only replaced on use)."""
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *args))
        except Exception as exc:
            if not _connection_lost(exc):
                raise self._error(doing, exc) from exc
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *args))
        except Exception as exc:
            raise self._error(doing, exc) from exc

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        sql, params = self.explain(query, after_seq, limit)
        rows = await self._fetch("reading events", sql, *params)
        return [decode_stored(seq, body) for (seq, body) in rows]

    def explain(self, query: Query, after_seq: int = 0, limit: int = 25) -> tuple[str, list[Any]]:
        """The page SQL for `query` (tests check its plan with EXPLAIN)."""
        where, params = where_clause(query, after_seq, f"{self._s}.events")
        return (f"SELECT seq, body FROM {self._s}.events WHERE {where} ORDER BY seq "
                f"LIMIT ${len(params) + 1}", [*params, limit])

    async def count(self, query: Query) -> int:
        if query == _EVERYTHING:
            # Seqs are 1..head with no hole (see the module docstring) and nothing is ever
            # deleted, so the head is the count, without PostgreSQL's full scan for count(*).
            return await self.head()
        if query.after is None and query.before is None:
            ((n,),) = await self._fetch("counting events", *counts_sql(self._s, query))
            return int(n)
        where, params = where_clause(query, 0, f"{self._s}.events")
        ((n,),) = await self._fetch("counting events",
                                    f"SELECT count(*) FROM {self._s}.events WHERE {where}",
                                    *params)
        return int(n)

    async def head(self) -> int:
        ((n,),) = await self._fetch("reading the head",
                                    f"SELECT coalesce(max(seq), 0) FROM {self._s}.events")
        return int(n)

    # --- the integrity tree (eventstore.integrity.TreeStore; see tree.py) --------------

    async def tree_size(self) -> int:
        """The number of leaves of the stored tree (its last committed head)."""
        ((n,),) = await self._fetch("reading the tree size", self._sql_tree_size)
        return int(n)

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The stored hashes of `keys` (missing ones left out), in at most two queries."""
        results = [await self._fetch("reading tree nodes", sql, *params)
                   for sql, params in tree.node_queries(self._s, keys)]
        return tree.answer(keys, results)

    async def stored_leaves(self, from_seq: int, limit: int) -> Sequence[StoredLeaf]:
        """Up to `limit` stored events from `from_seq` on, as the leaves verify hashes."""
        rows = await self._fetch("reading events to verify", self._sql_stored_leaves,
                                 from_seq, limit)
        return [tree.stored_leaf(row) for row in rows]

    async def trace(self, callback: Callable[[Any], None] | None) -> None:
        """Call `callback(logged)` with asyncpg's LoggedQuery (`.query`, `.args`) of every
        statement run on the pool from now on (None: stop). For query-plan tests and
        debugging."""
        self._tracer = callback

    async def cost_totals(self, filters: CostFilters) -> CostTotals:
        """Totals of the matching model calls from the rollup (see eventstore.rollup)."""
        try:
            async with self._connection() as conn:
                return await cost_totals(conn, self._s, filters)
        except Exception as exc:
            raise self._error("summing costs", exc) from exc

    def unlisten(self, on_head: Callable[[int], None]) -> None:
        if on_head in self._head_callbacks:
            self._head_callbacks.remove(on_head)

    async def secret(self) -> bytes:
        if self._secret is None:
            raise BackendError("the PostgreSQL backend is not open")
        return self._secret

    # --- checkpoints -------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        rows = await self._fetch(
            "loading a checkpoint",
            f"SELECT name, position, state, updated_at FROM {self._s}.checkpoints "
            "WHERE name = $1", name,
        )
        return checkpoint_from_row(rows[0]) if rows else None

    async def list_checkpoints(self) -> list[Checkpoint]:
        rows = await self._fetch(
            "listing checkpoints",
            f"SELECT name, position, state, updated_at FROM {self._s}.checkpoints "
            "ORDER BY name",
        )
        return [checkpoint_from_row(row) for row in rows]

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        updated: datetime = checkpoint.updated_at or utcnow()
        # An upsert is idempotent, so the read retry applies to it as well.
        await self._fetch(
            "saving a checkpoint",
            f"INSERT INTO {self._s}.checkpoints (name, position, state, updated_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET "
            "position = excluded.position, state = excluded.state, "
            "updated_at = excluded.updated_at",
            checkpoint.name, checkpoint.position, checkpoint.state, to_micros(updated),
        )

    async def delete_checkpoint(self, name: str) -> None:
        await self._fetch("deleting a checkpoint",
                          f"DELETE FROM {self._s}.checkpoints WHERE name = $1", name)

    # --- metadata and encryption keys --------------------------------------------------

    async def get_meta(self, key: str) -> bytes | None:
        rows = await self._fetch("reading store metadata",
                                 f"SELECT value FROM {self._s}.eventstore_meta WHERE key = $1",
                                 key)
        return bytes(rows[0][0]) if rows else None

    async def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        # Two statements: under READ COMMITTED the second sees a row that a concurrent
        # insert committed while the first waited on it; one statement would not.
        await self._fetch("writing store metadata",
                          f"INSERT INTO {self._s}.eventstore_meta (key, value) VALUES ($1, $2) "
                          "ON CONFLICT (key) DO NOTHING", key, value)
        stored = await self.get_meta(key)
        assert stored is not None  # rows of eventstore_meta are never deleted
        return stored

    async def load_keys(self, user_ids: Sequence[str]) -> dict[str, KeyRecord]:
        rows = await self._fetch(
            "loading encryption keys",
            "SELECT DISTINCT ON (user_id) user_id, generation, wrapped, created_at, "
            f"forgotten_at FROM {self._s}.data_keys WHERE user_id = ANY($1::text[]) "
            "ORDER BY user_id, generation DESC", list(user_ids),
        )
        return {row[0]: key_record_from_row(row) for row in rows}

    async def create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        await self._fetch(
            "storing an encryption key",
            f"INSERT INTO {self._s}.data_keys (user_id, generation, wrapped, created_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            user_id, generation, wrapped, to_micros(utcnow()),
        )
        rows = await self._fetch(
            "loading an encryption key",
            f"SELECT user_id, generation, wrapped, created_at, forgotten_at FROM "
            f"{self._s}.data_keys WHERE user_id = $1 AND generation = $2", user_id, generation,
        )
        return key_record_from_row(rows[0])

    async def destroy_keys(self, user_id: str) -> KeyRecord:
        """The old row versions stay in the table's heap until VACUUM, and in WAL archives
        and backups: that is outside what a client can erase (see eventstore.encryption)."""
        s = self._s
        now = to_micros(utcnow())
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(
                    f"UPDATE {s}.data_keys SET wrapped = NULL, forgotten_at = $2 "
                    "WHERE user_id = $1 AND wrapped IS NOT NULL", user_id, now)
                await conn.execute(
                    f"INSERT INTO {s}.data_keys (user_id, generation, wrapped, created_at, "
                    "forgotten_at) SELECT $1, 1, NULL, $2, $2 WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {s}.data_keys WHERE user_id = $1) ON CONFLICT DO NOTHING",
                    user_id, now)
                row = await conn.fetchrow(
                    f"SELECT user_id, generation, wrapped, created_at, forgotten_at FROM "
                    f"{s}.data_keys WHERE user_id = $1 ORDER BY generation DESC LIMIT 1",
                    user_id)
        except Exception as exc:
            raise self._error("destroying an encryption key", exc,
                              "the key may not be destroyed: forget the user again") from exc
        return key_record_from_row(row)

    async def key_owners(self, prefix: str | None = None) -> list[str]:
        """The owners (user ids, or user and period) that have a live key."""
        rows = await self._fetch(
            "listing encryption keys",
            f"SELECT DISTINCT user_id FROM {self._s}.data_keys WHERE wrapped IS NOT NULL "
            "AND starts_with(user_id, $1)", prefix or "")
        return [row[0] for row in rows]

    async def scrub(self) -> None:
        """Rewrite the key and checkpoint tables so that the row versions a forget or a
        retention run overwrote (destroyed keys, personal snapshots) leave the table
        files, instead of waiting in their pages for VACUUM. The server's WAL, its archives
        and base backups still hold them: that is outside what a client can erase."""
        s = self._s
        try:
            async with self._connection() as conn:
                await conn.execute(f"VACUUM FULL {s}.data_keys, {s}.checkpoints")
        except Exception as exc:
            raise self._error("rewriting the key and checkpoint tables", exc,
                              "old key versions stay in the table until VACUUM") from exc

    # --- cross-process notifications ---------------------------------------------------

    async def listen(self, on_head: Callable[[int], None]) -> None:
        """Call `on_head(seq)` whenever any process commits to this schema.

        Notifications only wake readers (who then read by cursor from the table); one can be
        lost while the listener reconnects, which `check_listener` reports."""
        self._head_callbacks.append(on_head)
        if self._listener is None and self._relisten_task is None:
            try:
                await self._connect_listener()
            except Exception as exc:
                self._head_callbacks.remove(on_head)
                raise self._error("starting the notification listener", exc) from exc

    async def _connect_listener(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=self._connect_timeout,
                                     command_timeout=self._command_timeout,
                                     server_settings=self._server_settings)
        try:
            await conn.add_listener(self.channel, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            head = int(payload)
        except ValueError:
            log.warning("ignoring notification %r on %s: not a seq", payload, channel)
            return
        announce_head(self._head_callbacks, head)

    def _on_listener_lost(self, conn: Any) -> None:
        if self._closing or conn is not self._listener:
            return
        self._listener = None
        log.warning("notification listener to %s lost; reconnecting", self.address)
        if self._relisten_task is None or self._relisten_task.done():
            self._relisten_task = asyncio.get_running_loop().create_task(
                self._relisten_loop(), name="eventstore-pg-relisten")

    async def _relisten_loop(self) -> None:
        delay = 0.05
        while not self._closing and not await self._relisten():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _relisten(self) -> bool:
        """One reconnect attempt; True once the listener is back."""
        async with self._relisten_lock:
            if self._listener is not None:
                return True
            try:
                await self._connect_listener()
            except Exception as exc:
                log.debug("relisten failed: %r", exc)
                return False
            self._relistened = True
            return True

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        conn.remove_termination_listener(self._on_listener_lost)
        try:
            await asyncio.wait_for(conn.close(), timeout=2)
        except (Exception, asyncio.CancelledError):
            conn.terminate()

    async def check_listener(self) -> bool:
        """True if the listener was lost and is listening again since the last call (so
        notifications may have been missed: catch up); False while healthy, and while the
        server is still unreachable (reconnection keeps being tried)."""
        if not self._head_callbacks or self._closing:
            return False
        conn = self._listener
        if conn is not None:
            try:
                # A half-open TCP connection never reports itself; a round trip does.
                await asyncio.wait_for(conn.fetchval("SELECT 1"),
                                       timeout=min(self._command_timeout, 5))
            except Exception as exc:
                log.warning("notification listener to %s is not answering (%r); "
                            "reconnecting", self.address, exc)
                if self._listener is conn:
                    await self._drop_listener()
        if self._listener is None:
            await self._relisten()
        recovered, self._relistened = self._relistened, False
        return recovered


class _LostBeforeCommit(Exception):
    """The connection died before COMMIT was sent: the server rolled everything back."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error
