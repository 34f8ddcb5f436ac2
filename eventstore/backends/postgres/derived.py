"""PostgreSQL's derived writes (cost rollup, event counts) and the queries that read them.

The writers run on the commit's connection inside its transaction, under the append lock
(see eventstore.backends.derived). Costs are `numeric`, exact, so buckets are added to in
SQL with one upsert per group, and questions are answered with SQL sums.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from ...query import Query
from ...rollup import INT_COLUMNS, KEY_COLUMNS, CostFilters, CostTotals, encode_key
from ..base import NewRow
from ..derived import CALL_COLUMNS, Deltas, call_row, count_key_bytes, facts_from_call_row

DerivedWrite = Callable[[Any, Sequence[NewRow], Deltas], Awaitable[None]]

_BUCKET_COLUMNS = ("bucket", *KEY_COLUMNS, *INT_COLUMNS, "cost")
_TYPES = ("bytea", "bigint", "text", "text", "text", "text", "text",
          *("bigint" for _ in INT_COLUMNS), "numeric")


class PostgresRollup:
    """Adds a group's model calls to cost_buckets and cost_calls."""

    def __init__(self, schema: str) -> None:
        updates = ", ".join(f"{c} = b.{c} + excluded.{c}" for c in (*INT_COLUMNS, "cost"))
        unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
        # One statement per group whatever its number of buckets: arrays, unnested.
        self._upsert = (
            f"INSERT INTO {schema}.cost_buckets AS b ({', '.join(_BUCKET_COLUMNS)}) "
            f"SELECT * FROM unnest({unnest}) ON CONFLICT (bucket) DO UPDATE SET {updates}"
        )
        self._schema = schema.strip('"')

    async def __call__(self, conn: Any, rows: Sequence[NewRow], deltas: Deltas) -> None:
        if not deltas.calls:
            return
        bucket_rows = [(encode_key(key), *key, *totals.as_row()[:-1], totals.cost)
                       for key, totals in deltas.buckets.items()]
        await conn.execute(self._upsert, *map(list, zip(*bucket_rows, strict=True)))
        await conn.copy_records_to_table(
            "cost_calls", schema_name=self._schema, columns=list(CALL_COLUMNS),
            records=[_pg_call(call_row(facts)) for facts in deltas.calls])


_COST = CALL_COLUMNS.index("cost")


def _pg_call(row: tuple[Any, ...]) -> tuple[Any, ...]:
    cost = row[_COST]
    return (*row[:_COST], None if cost is None else Decimal(cost), *row[_COST + 1:])


class PostgresCounts:
    """Adds a group's events to event_counts."""

    def __init__(self, schema: str) -> None:
        self._upsert = (
            f"INSERT INTO {schema}.event_counts AS c (bucket, type, user_id, conversation_id, "
            "n) SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], "
            "$5::bigint[]) ON CONFLICT (bucket) DO UPDATE SET n = c.n + excluded.n"
        )

    async def __call__(self, conn: Any, rows: Sequence[NewRow], deltas: Deltas) -> None:
        counted = [(count_key_bytes(key), *key, n) for key, n in deltas.counts.items()]
        await conn.execute(self._upsert, *map(list, zip(*counted, strict=True)))


def counts_sql(schema: str, query: Query) -> tuple[Any, ...]:
    """count_events without a time bound: a sum over the matching event_counts rows."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.types is not None:
        params.append(sorted(query.types))
        clauses.append(f"type = ANY(${len(params)}::text[])")
    for column in ("user_id", "conversation_id"):
        value = getattr(query, column)
        if value is not None:
            params.append(value)
            clauses.append(f"{column} = ${len(params)}")
    where = " AND ".join(clauses) or "true"
    return f"SELECT coalesce(sum(n), 0) FROM {schema}.event_counts WHERE {where}", *params


def _where(filters: CostFilters, clauses: list[str], params: list[Any]) -> str:
    for column, value in filters.key_clauses():
        params.append(value)
        clauses.append(f"{column} = ${len(params)}")
    return " AND ".join(clauses)


def buckets_sql(schema: str, filters: CostFilters, first: int, last: int) -> tuple[str, list[Any]]:
    params: list[Any] = [filters.bucket_tag, first, last]
    where = _where(filters, ["tag = $1", "day BETWEEN $2 AND $3"], params)
    sums = ", ".join(f"coalesce(sum({c}), 0)" for c in (*INT_COLUMNS, "cost"))
    return f"SELECT {sums} FROM {schema}.cost_buckets WHERE {where}", params


def calls_sql(schema: str, filters: CostFilters, low: int, high: int) -> tuple[str, list[Any]]:
    params: list[Any] = [low, high]
    where = _where(filters, ["occurred_at BETWEEN $1 AND $2"], params)
    return f"SELECT {', '.join(CALL_COLUMNS)} FROM {schema}.cost_calls WHERE {where}", params


async def cost_totals(conn: Any, schema: str, filters: CostFilters) -> CostTotals:
    totals = CostTotals()
    days, edges = filters.split()
    if days is not None:
        sql, params = buckets_sql(schema, filters, *days)
        totals.add(CostTotals.from_row(await conn.fetchrow(sql, *params)))
    for low, high in edges:
        sql, params = calls_sql(schema, filters, low, high)
        for row in await conn.fetch(sql, *params):
            facts = facts_from_call_row(row)
            if filters.tag is None or filters.tag in facts.tags:
                totals.add_call(facts)
    return totals
