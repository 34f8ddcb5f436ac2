"""SQLite's derived writes (cost rollup, event counts) and the queries that read them.

The writers run on the writer thread inside the commit's `BEGIN IMMEDIATE` transaction
(see eventstore.backends.derived). Costs are decimal text, which SQLite cannot add
exactly, so a bucket is read, added to in Python and written back, all under the lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ...query import Query
from ...rollup import INT_COLUMNS, KEY_COLUMNS, CostFilters, CostTotals, encode_key
from ..base import NewRow
from ..derived import CALL_COLUMNS, Deltas, call_row, count_key_bytes

DerivedWrite = Callable[[sqlite3.Connection, Sequence[NewRow], Deltas], None]

_CHUNK = 500  # well under SQLite's bound-parameter limit
_TOTALS = ", ".join([*INT_COLUMNS, "cost"])
_BUCKET_COLUMNS = ("bucket", *KEY_COLUMNS, *INT_COLUMNS, "cost")
_PUT_BUCKET = (f"INSERT OR REPLACE INTO cost_buckets ({', '.join(_BUCKET_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_BUCKET_COLUMNS))})")
_PUT_CALL = (f"INSERT INTO cost_calls ({', '.join(CALL_COLUMNS)}) "
             f"VALUES ({', '.join('?' * len(CALL_COLUMNS))})")
_ADD_COUNT = ("INSERT INTO event_counts (bucket, type, user_id, conversation_id, n) "
              "VALUES (?, ?, ?, ?, ?) ON CONFLICT (bucket) DO UPDATE SET n = n + excluded.n")


class SQLiteRollup:
    """Adds a group's model calls to cost_buckets and cost_calls."""

    def __call__(self, conn: sqlite3.Connection, rows: Sequence[NewRow],
                 deltas: Deltas) -> None:
        if not deltas.calls:
            return
        keyed = {encode_key(key): (key, totals) for key, totals in deltas.buckets.items()}
        names = list(keyed)
        for start in range(0, len(names), _CHUNK):
            chunk = names[start:start + _CHUNK]
            for bucket, *stored in conn.execute(
                f"SELECT bucket, {_TOTALS} FROM cost_buckets "
                f"WHERE bucket IN ({', '.join('?' * len(chunk))})", chunk,
            ):
                keyed[bytes(bucket)][1].add(CostTotals.from_row(stored))
        conn.executemany(_PUT_BUCKET, [(bucket, *key, *totals.as_row())
                                       for bucket, (key, totals) in keyed.items()])
        conn.executemany(_PUT_CALL, [call_row(facts) for facts in deltas.calls])


class SQLiteCounts:
    """Adds a group's events to event_counts."""

    def __call__(self, conn: sqlite3.Connection, rows: Sequence[NewRow],
                 deltas: Deltas) -> None:
        conn.executemany(_ADD_COUNT, [(count_key_bytes(key), *key, n)
                                      for key, n in deltas.counts.items()])


def rebuild_derived(conn: sqlite3.Connection, writers: Sequence[DerivedWrite],
                    rows: Callable[[], Any]) -> None:
    """Feed every stored event to `writers` again (a migration that adds a derived table;
    `rows()` iterates the stored events in seq order, in batches)."""
    for batch in rows():
        deltas = Deltas(batch)
        for write in writers:
            write(conn, [], deltas)


def counts_sql(query: Query) -> tuple[str, list[Any]]:
    """count_events without a time bound: a sum over the matching event_counts rows."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.types is not None:
        names = sorted(query.types)
        clauses.append(f"type IN ({', '.join('?' * len(names))})")
        params.extend(names)
    for column in ("user_id", "conversation_id"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = " AND ".join(clauses) or "1"
    return f"SELECT coalesce(sum(n), 0) FROM event_counts WHERE {where}", params


def buckets_sql(filters: CostFilters, first_day: int, last_day: int) -> tuple[str, list[Any]]:
    clauses = ["tag = ?", "day BETWEEN ? AND ?"]
    params: list[Any] = [filters.bucket_tag, first_day, last_day]
    for column, value in filters.key_clauses():
        clauses.append(f"{column} = ?")
        params.append(value)
    return f"SELECT {_TOTALS} FROM cost_buckets WHERE {' AND '.join(clauses)}", params


def calls_sql(filters: CostFilters, low: int, high: int) -> tuple[str, list[Any]]:
    clauses = ["occurred_at BETWEEN ? AND ?"]
    params: list[Any] = [low, high]
    for column, value in filters.key_clauses():
        clauses.append(f"{column} = ?")
        params.append(value)
    return (f"SELECT {', '.join(CALL_COLUMNS)} FROM cost_calls "
            f"WHERE {' AND '.join(clauses)}", params)
