"""The backend conformance suite, for eventstore's own backends and third-party ones.

A backend's test module subclasses `BackendConformance` and says how to make a backend:

    from eventstore.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        def new_backend(self) -> Backend:          # a fresh, empty log, not yet opened
            return MyBackend(self.tmp_path / "log")

        def reopen(self, backend: Backend) -> Backend | None:   # optional
            return MyBackend(backend.path)          # the same log again (None: skip)

Every test goes through the public protocols only (eventstore.backends.protocols): group
commits of `eventstore.codec.prepare`d events, filtered reads, counts, the head,
checkpoints and metadata, and, for backends that have them, keys (`KeyStore`), commit
listening (`CommitListener`) and the cost rollup (`CostTotalsReader`); then the same
backend under an `EventStore`. Needs pytest and pytest-asyncio (the `dev` extra).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from .backends.base import Checkpoint
from .backends.protocols import Backend, CommitListener, CostTotalsReader, KeyStore
from .codec import PreparedEvent, prepare
from .errors import DuplicateEventError
from .events import Event, RecordedEvent
from .query import Query, build_query
from .rollup import CostFilters, replay
from .store import EventStore

__all__ = ["BackendConformance", "sample_events"]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sample_events(n: int = 30) -> list[Event]:
    """A small mixed log: messages, cost records (some tagged, some unpriced), custom
    events, over three users and conversations and a few days of occurred_at."""
    events: list[Event] = []
    for i in range(n):
        user, conversation = f"u{i % 3}", f"c{i % 3}"
        occurred = T0 + timedelta(hours=7 * i)
        if i % 3 == 0:
            priced = i % 9 != 0
            data: dict[str, Any] = {
                "provider": "openai" if i % 2 else "anthropic", "model": f"m{i % 2}",
                "input_tokens": 100 + i, "output_tokens": 10 + i, "cache_read_tokens": i,
                "cache_write_tokens": 0, "latency_ms": 12.5 + i,
            }
            if priced:
                data.update(input_cost="0.0001", output_cost=f"0.00{i}",
                            total_cost=f"0.00{i}1", price_source="test")
            events.append(Event(type="cost_recorded" if priced else "llm_call", data=data,
                                user_id=user, conversation_id=conversation,
                                metadata={"tags": ["a", "b"] if i % 2 else ["a"]},
                                occurred_at=occurred))
        elif i % 3 == 1:
            events.append(Event(type="message_sent", user_id=user, conversation_id=conversation,
                                data={"role": "user", "content": f"hello {i}"},
                                occurred_at=occurred))
        else:
            events.append(Event(type="user_feedback", user_id=None, conversation_id=conversation,
                                data={"rating": i}, occurred_at=occurred))
    return events


def _prepared(events: Sequence[Event]) -> list[PreparedEvent]:
    return [prepare(event) for event in events]


class BackendConformance:
    """Tests every backend passes. Subclass it in a `Test...` class and define
    `new_backend()`; define `reopen()` if the log outlives a backend object."""

    tmp_path: Path

    def new_backend(self) -> Backend:
        """A backend of a fresh, empty log (not opened yet)."""
        raise NotImplementedError("define new_backend() in the subclass")

    def reopen(self, backend: Backend) -> Backend | None:
        """A new backend object of the same log as `backend`, or None if there is none."""
        return None

    async def cleanup(self, backend: Backend) -> None:
        """Called after each test, the backend closed (drop schemas, files...)."""

    # --- fixtures ----------------------------------------------------------------------

    @pytest_asyncio.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[Backend]:
        self.tmp_path = tmp_path
        made = self.new_backend()
        await made.open()
        try:
            yield made
        finally:
            await made.close()
            await self.cleanup(made)

    async def commit(self, backend: Backend, *requests: Sequence[Event]) -> list[Any]:
        outcomes, _ = await backend.commit_group([_prepared(r) for r in requests])
        return outcomes

    async def everything(self, backend: Backend, query: Query | None = None,
                         page: int = 7) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        while True:
            got = await backend.query(query or Query(), after_seq=out[-1].seq if out else 0,
                                      limit=page)
            out.extend(got)
            if len(got) < page:
                return out

    # --- the log -----------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_it_declares_the_backend_protocol(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)

    @pytest.mark.asyncio
    async def test_an_empty_log(self, backend: Backend) -> None:
        assert await backend.head() == 0
        assert await backend.count(Query()) == 0
        assert await backend.query(Query(), after_seq=0, limit=10) == []

    @pytest.mark.asyncio
    async def test_a_group_commits_in_seq_order_and_reads_back_equal(
        self, backend: Backend
    ) -> None:
        events = sample_events(12)
        (first, second) = await self.commit(backend, events[:5], events[5:])
        assert [e.seq for e in first + second] == list(range(1, 13))
        assert [e.id for e in first + second] == [e.id for e in events]
        stored = await self.everything(backend)
        assert stored == first + second
        times = [e.recorded_at for e in stored]
        assert times == sorted(times) and all(t.tzinfo is not None for t in times)
        assert await backend.head() == 12
        more = await self.commit(backend, sample_events(3))
        assert [e.seq for e in more[0]] == [13, 14, 15]
        assert (await backend.query(Query(), after_seq=12, limit=2)) == more[0][:2]

    @pytest.mark.asyncio
    async def test_an_id_is_an_idempotency_key_per_request(self, backend: Backend) -> None:
        event = Event(type="message_sent", data={"role": "user", "content": "hi"})
        (stored,) = (await self.commit(backend, [event]))[0]
        other = Event(type="message_sent", data={"role": "user", "content": "other"})
        changed = Event(type="message_sent", id=event.id,
                        data={"role": "user", "content": "changed"})
        retry, conflict, fine = await self.commit(backend, [event], [other, changed], [other])
        assert retry == [stored]
        assert isinstance(conflict, DuplicateEventError) and conflict.event_id == event.id
        assert [e.id for e in fine] == [other.id] and fine[0].seq == 2
        assert await backend.head() == 2  # the failed request wrote nothing

    @pytest.mark.asyncio
    async def test_filters_combine_and_counts_agree(self, backend: Backend) -> None:
        await self.commit(backend, sample_events(30))
        stored = await self.everything(backend)
        middle = stored[10].recorded_at
        queries = [
            build_query(), build_query(user_id="u1"), build_query(conversation_id="c2"),
            build_query(type="message_sent"), build_query(type={"cost_recorded", "llm_call"}),
            build_query(user_id="u0", type="cost_recorded"), build_query(user_id="nobody"),
            build_query(after=middle), build_query(before=middle),
            build_query(conversation_id="c1", after=middle, before=middle),
        ]
        for query in queries:
            expected = [e for e in stored if query.matches(e, e.recorded_at)]
            assert await self.everything(backend, query, page=4) == expected, query
            assert await backend.count(query) == len(expected), query

    @pytest.mark.asyncio
    async def test_type_takes_any_number_of_names(self, backend: Backend) -> None:
        await self.commit(backend, sample_events(9))
        names = {f"t{i}" for i in range(600)} | {"message_sent"}
        query = build_query(type=names)
        got = await self.everything(backend, query, page=100)
        assert [e.type for e in got] == ["message_sent"] * 3
        assert await backend.count(query) == 3

    # --- checkpoints and metadata ------------------------------------------------------

    @pytest.mark.asyncio
    async def test_checkpoints(self, backend: Backend) -> None:
        assert await backend.load_checkpoint("a") is None
        at = datetime(2026, 1, 2, tzinfo=UTC)
        await backend.save_checkpoint(Checkpoint(name="b", position=3, state=b"s",
                                                 updated_at=at))
        await backend.save_checkpoint(Checkpoint(name="a", position=1, updated_at=at))
        await backend.save_checkpoint(Checkpoint(name="a", position=2, updated_at=at))
        assert await backend.load_checkpoint("a") == Checkpoint(name="a", position=2,
                                                                 updated_at=at)
        assert [c.name for c in await backend.list_checkpoints()] == ["a", "b"]
        await backend.delete_checkpoint("a")
        await backend.delete_checkpoint("missing")
        assert [c.name for c in await backend.list_checkpoints()] == ["b"]

    @pytest.mark.asyncio
    async def test_metadata_and_secret(self, backend: Backend) -> None:
        secret = await backend.secret()
        assert isinstance(secret, bytes) and len(secret) >= 16
        assert await backend.secret() == secret
        assert await backend.get_meta("k") is None
        assert await backend.set_meta_if_absent("k", b"first") == b"first"
        assert await backend.set_meta_if_absent("k", b"second") == b"first"
        assert await backend.get_meta("k") == b"first"

    @pytest.mark.asyncio
    async def test_a_reopened_log_keeps_everything(self, backend: Backend) -> None:
        events = (await self.commit(backend, sample_events(6)))[0]
        await backend.set_meta_if_absent("k", b"v")
        secret = await backend.secret()
        again = self.reopen(backend)
        if again is None:
            pytest.skip("this backend's log does not outlive the backend object")
        await again.open()
        try:
            assert await self.everything(again) == events
            assert (await again.get_meta("k"), await again.secret()) == (b"v", secret)
            assert [e.seq for e in (await self.commit(again, sample_events(1)))[0]] == [7]
        finally:
            await again.close()

    # --- optional capabilities ---------------------------------------------------------

    @pytest.mark.asyncio
    async def test_keys_when_it_is_a_key_store(self, backend: Backend) -> None:
        if not isinstance(backend, KeyStore):
            pytest.skip("not a KeyStore")
        assert await backend.load_keys(["u1"]) == {}
        first = await backend.create_key("u1", 1, b"w1")
        assert (first.generation, first.wrapped) == (1, b"w1")
        assert (await backend.create_key("u1", 1, b"late")).wrapped == b"w1"  # first wins
        await backend.create_key("u1", 2, b"w2")
        assert (await backend.load_keys(["u1", "u2"]))["u1"].generation == 2
        tomb = await backend.destroy_keys("u1")
        assert (tomb.generation, tomb.wrapped) == (2, None) and tomb.forgotten_at is not None
        assert (await backend.destroy_keys("u3")).wrapped is None

    @pytest.mark.asyncio
    async def test_listeners_hear_commits_when_it_listens(self, backend: Backend) -> None:
        if not isinstance(backend, CommitListener):
            pytest.skip("not a CommitListener")
        heads: list[int] = []
        heard = asyncio.Event()

        def on_head(head: int) -> None:
            heads.append(head)
            heard.set()

        await backend.listen(on_head)
        writer = self.reopen(backend)
        if writer is None:  # the same object stands for "another store" of an in-process log
            await self.commit(backend, sample_events(2))
        else:
            await writer.open()
            try:
                await self.commit(writer, sample_events(2))
            finally:
                await writer.close()
        async with asyncio.timeout(10):
            while not heads or max(heads) < 2:
                heard.clear()
                await heard.wait()
        backend.unlisten(on_head)
        assert await backend.check_listener() is False

    @pytest.mark.asyncio
    async def test_cost_totals_equal_a_replay_of_the_log(self, backend: Backend) -> None:
        if not isinstance(backend, CostTotalsReader):
            pytest.skip("not a CostTotalsReader")
        events = sample_events(40)
        for start in range(0, len(events), 7):  # several groups
            await self.commit(backend, events[start:start + 7])
        stored = await self.everything(backend)
        mid = T0 + timedelta(days=3, hours=5)
        questions = [
            CostFilters(), CostFilters(user_id="u0"), CostFilters(conversation_id="c0"),
            CostFilters(provider="openai"), CostFilters(model="m0"), CostFilters(tag="a"),
            CostFilters(tag="b"), CostFilters(tag="zzz"), CostFilters(user_id="nobody"),
            CostFilters(after=mid), CostFilters(before=mid),
            CostFilters(after=T0 + timedelta(days=1), before=T0 + timedelta(days=5)),
            CostFilters(after=mid, before=mid + timedelta(hours=30), tag="b"),
            CostFilters(after=mid + timedelta(days=90)),
        ]
        for question in questions:
            assert await backend.cost_totals(question) == replay(stored, question), question
        everything = await backend.cost_totals(CostFilters())
        assert everything.calls == 14 and everything.unpriced_calls == 5
        assert everything.cost > Decimal(0)

    # --- under a store -----------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_a_store_on_this_backend(self, backend: Backend) -> None:
        got: list[RecordedEvent] = []
        done = asyncio.Event()

        async def handler(event: RecordedEvent) -> None:
            got.append(event)
            if len(got) == 5:
                done.set()

        store = EventStore(backend)
        await store.backend.close()  # the store opens it itself
        async with store:
            sub = await store.subscribe(handler, types="message_sent")
            appended = await store.append_many(sample_events(15))
            page = await store.list_events(user_id="u1", limit=2)
            rest = await store.list_events(user_id="u1", limit=10, cursor=page.next_cursor)
            assert page.events + rest.events == [e for e in appended if e.user_id == "u1"]
            assert await store.count_events(type="message_sent") == 5
            assert [e async for e in store.read(from_seq=14)] == appended[13:]
            async with asyncio.timeout(10):
                await done.wait()
            assert got == [e for e in appended if e.type == "message_sent"]
            await sub.stop()
        await backend.open()  # for the fixture's close
