"""Throwaway PostgreSQL schemas for the benchmarks (imported by the scripts beside it)."""

from __future__ import annotations

import os
import uuid

DEFAULT_URL = os.environ.get("EVENTSTORE_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def throwaway_schema(base: str) -> tuple[str, str] | str:
    """(a store URL on a fresh schema of the server at `base`, the schema's name), or why
    there is none: the benchmark then skips its PostgreSQL figures with that note."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install 'eventstore[postgres]')"
    try:
        conn = await asyncpg.connect(base, timeout=5)
    except Exception as exc:  # no server: report and skip
        return f"no PostgreSQL server at {base} ({exc!r})"
    await conn.close()
    schema = f"es_bench_{uuid.uuid4().hex[:8]}"
    return f"{base}?schema={schema}", schema


async def drop_schema(base: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
