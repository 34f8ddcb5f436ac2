"""The conformance fixture: every test that takes `store` or `open_store` runs on every
backend. PostgreSQL tests use the server at EVENTSTORE_PG_URL (default: the local test
database), each test in a schema of its own that is dropped afterwards. Without a server
they skip, unless EVENTSTORE_REQUIRE_PG=1 (as in CI), where a missing server fails."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore
from eventstore.backends.jsonl import JsonlBackend
from eventstore.backends.memory import MemoryBackend
from eventstore.backends.sqlite import SQLiteBackend

from .fake_llm_api import api  # noqa: F401  (the fake provider API, for every test module)

PG_URL = os.environ.get("EVENTSTORE_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("EVENTSTORE_REQUIRE_PG") == "1"
HAVE_PG_BACKEND = importlib.util.find_spec("eventstore.backends.postgres") is not None
BACKENDS = ["memory", "sqlite", "jsonl", *(["postgres"] if HAVE_PG_BACKEND else [])]

_pg_state: dict[str, Any] = {}


def pg_available() -> str | None:
    """None if the PostgreSQL server answers, else the reason it does not."""
    if "reason" not in _pg_state:
        try:
            import asyncpg

            async def probe() -> None:
                conn = await asyncpg.connect(PG_URL, timeout=5)
                await conn.close()

            # A test or fixture may call this with a loop already running in its thread,
            # where asyncio.run refuses to start: probe on a thread of its own.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, probe()).result()
            _pg_state["reason"] = None
        except Exception as exc:  # any failure to connect means: no server here
            _pg_state["reason"] = f"no PostgreSQL server at {PG_URL}: {exc!r}"
    reason: str | None = _pg_state["reason"]
    return reason


def require_pg() -> None:
    reason = pg_available()
    if reason is None:
        return
    if REQUIRE_PG:
        pytest.fail(f"EVENTSTORE_REQUIRE_PG=1 but {reason}")
    pytest.skip(reason)


async def drop_pg_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class StoreFactory:
    """Opens stores on one backend location; every store opened here sees the same log."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        token = uuid.uuid4().hex[:12]
        self.pg_schema = f"es_test_{token}"
        if kind == "memory":
            self.url = f"memory://test-{token}"
        elif kind == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'events.db'}"
        elif kind == "jsonl":
            self.url = f"jsonl:///{tmp_path / 'events'}"
        else:
            self.url = PG_URL
        self.opened: list[EventStore] = []

    def options(self) -> dict[str, Any]:
        return {"schema": self.pg_schema} if self.kind == "postgres" else {}

    def __call__(self, **options: Any) -> EventStore:
        store = EventStore.open(self.url, **{**self.options(), **options})
        self.opened.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self.opened:
            await store.close()
        if self.kind == "postgres":
            await drop_pg_schema(self.pg_schema)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "postgres":
        require_pg()
    return kind


@pytest.fixture
async def open_store(backend_kind: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    factory = StoreFactory(backend_kind, tmp_path)
    try:
        yield factory
    finally:
        await factory.cleanup()


@pytest.fixture
async def store(open_store: StoreFactory) -> AsyncIterator[EventStore]:
    async with open_store() as opened:
        yield opened


def lose_commit_notices(store: EventStore) -> None:
    """Stop the store hearing of other stores' commits, as when a notification is lost
    (PostgreSQL's LISTEN is left alone: a lost listener is tested in test_postgres)."""
    backend = store.backend
    if isinstance(backend, MemoryBackend):
        backend.unlisten(store._registry.note_head)
    elif isinstance(backend, SQLiteBackend):
        assert backend.watcher is not None
        backend.watcher.close()
    elif isinstance(backend, JsonlBackend):
        backend.stop_watching()


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until `predicate()` holds; fail after `within` seconds.

    For state that other tasks change without an event to wait on (a handler's list, a
    subscription's position): it re-checks on each short yield, never sleeps a guess."""
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - the predicate has no event to await
            await asyncio.sleep(0.002)

    try:
        await asyncio.wait_for(poll(), within)
    except TimeoutError:
        raise AssertionError(f"condition not met within {within}s") from None
