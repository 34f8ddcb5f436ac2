"""eventstore's own backends pass the public conformance suite (eventstore.testing)."""

from __future__ import annotations

import uuid

from eventstore.backends.memory import MemoryBackend, named_memory_backend
from eventstore.backends.protocols import Backend
from eventstore.backends.sqlite import SQLiteBackend
from eventstore.testing import BackendConformance

from ..conftest import HAVE_PG_BACKEND, PG_URL, drop_pg_schema, require_pg


class TestMemory(BackendConformance):
    def new_backend(self) -> Backend:
        return MemoryBackend()


class TestNamedMemory(BackendConformance):
    def new_backend(self) -> Backend:
        self.name = f"conformance-{uuid.uuid4().hex}"
        return named_memory_backend(self.name)

    def reopen(self, backend: Backend) -> Backend | None:
        return named_memory_backend(self.name)


class TestSQLite(BackendConformance):
    def new_backend(self) -> Backend:
        return SQLiteBackend(self.tmp_path / "events.db")

    def reopen(self, backend: Backend) -> Backend | None:
        return SQLiteBackend(self.tmp_path / "events.db")


if HAVE_PG_BACKEND:
    from eventstore.backends.postgres import PostgresBackend

    class TestPostgres(BackendConformance):
        def new_backend(self) -> Backend:
            require_pg()
            self.schema = f"es_conf_{uuid.uuid4().hex[:12]}"
            return PostgresBackend(PG_URL, schema=self.schema)

        def reopen(self, backend: Backend) -> Backend | None:
            return PostgresBackend(PG_URL, schema=self.schema)

        async def cleanup(self, backend: Backend) -> None:
            await drop_pg_schema(self.schema)


class TestJsonl(BackendConformance):
    def new_backend(self) -> Backend:
        from eventstore.backends.jsonl import JsonlBackend

        return JsonlBackend(self.tmp_path / "log")

    def reopen(self, backend: Backend) -> Backend | None:
        from eventstore.backends.jsonl import JsonlBackend

        return JsonlBackend(self.tmp_path / "log")
