"""A backend written outside eventstore, against its public interface only: registered by
URL scheme, passing the public conformance suite, and not a key store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest

from eventstore import Event, EventStore
from eventstore.backends import (
    Backend,
    KeyStore,
    backend_for_url,
    register_scheme,
    registered_schemes,
)
from eventstore.backends.base import Checkpoint, Outcome, StoredId, plan_group, request_ids
from eventstore.clock import utcnow
from eventstore.codec import PreparedEvent
from eventstore.errors import EncryptionError, UnsupportedURLError
from eventstore.events import RecordedEvent
from eventstore.query import Query
from eventstore.testing import BackendConformance

_LOGS: dict[str, DictBackend] = {}


class DictBackend:
    """The least a backend can be: a log, checkpoints and metadata in dicts."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.by_id: dict[str, StoredId] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self.meta: dict[str, bytes] = {"secret": os.urandom(32)}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        stored = {i: self.by_id[i] for i in request_ids(requests) if i in self.by_id}
        now = max(utcnow(), self.events[-1].recorded_at) if self.events else utcnow()
        plan = plan_group(requests, stored, len(self.events) + 1, now)
        for row in plan.rows:
            self.events.append(row.event)
            self.by_id[row.event.id] = StoredId(row.digest, row.event)
        return plan.outcomes, [row.event for row in plan.rows]

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        return [e for e in self.events[after_seq:] if query.matches(e, e.recorded_at)][:limit]

    async def count(self, query: Query) -> int:
        return sum(1 for e in self.events if query.matches(e, e.recorded_at))

    async def head(self) -> int:
        return len(self.events)

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        return self.checkpoints.get(name)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints[checkpoint.name] = checkpoint

    async def list_checkpoints(self) -> list[Checkpoint]:
        return [self.checkpoints[name] for name in sorted(self.checkpoints)]

    async def delete_checkpoint(self, name: str) -> None:
        self.checkpoints.pop(name, None)

    async def secret(self) -> bytes:
        return self.meta["secret"]

    async def get_meta(self, key: str) -> bytes | None:
        return None if key == "secret" else self.meta.get(key)

    async def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        return self.meta.setdefault(key, value)


def open_dictlog(url: str, **options: Any) -> Backend:
    name = url.split("://", 1)[1]
    if name not in _LOGS:
        _LOGS[name] = DictBackend()
    return _LOGS[name]


register_scheme("dictlog", open_dictlog)


class TestDictLogByScheme(BackendConformance):
    def new_backend(self) -> Backend:
        self.url = f"dictlog://{os.urandom(6).hex()}"
        return backend_for_url(self.url)

    def reopen(self, backend: Backend) -> Backend | None:
        return backend_for_url(self.url)


async def test_a_registered_scheme_opens_a_store() -> None:
    assert "dictlog" in registered_schemes()
    async with EventStore.open("dictlog://shared") as store:
        rec = await store.append(Event(type="hello", data={"n": 1}))
        assert isinstance(store.backend, DictBackend) and not isinstance(store.backend, KeyStore)
    async with EventStore.open("dictlog://shared") as store:
        assert [e async for e in store.read()] == [rec]


async def test_encryption_needs_a_key_store() -> None:
    from eventstore.encryption import Encryption

    store = EventStore.open("dictlog://keyless", encryption=Encryption(master_key=os.urandom(32)))
    with pytest.raises(EncryptionError, match="cannot store encryption keys"):
        await store.start()


def test_scheme_names_and_clashes_are_checked() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_scheme("sqlite", open_dictlog)
    with pytest.raises(ValueError, match="not a URL scheme"):
        register_scheme("No Scheme", open_dictlog)
    register_scheme("dictlog", open_dictlog)  # the same factory again is fine
    with pytest.raises(UnsupportedURLError, match="dictlog://"):
        backend_for_url("nope://x")


def test_a_factory_must_return_a_backend() -> None:
    register_scheme("notabackend", lambda url, **options: object(), replace=True)
    with pytest.raises(UnsupportedURLError, match="not an eventstore Backend"):
        backend_for_url("notabackend://x")


def test_sqlite_memory_url_is_refused_with_the_way_out() -> None:
    with pytest.raises(UnsupportedURLError, match="memory://"):
        EventStore.open("sqlite:///:memory:")
