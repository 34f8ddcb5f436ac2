"""SyncEventStore: the whole API without await, on every backend, from several threads."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventstore import Event, EventStore, ModelPrice, RecordedEvent
from eventstore.projections import ConversationCosts
from eventstore.scope import current_attribution
from eventstore.sync import SyncEventStore, SyncSubscription

from .conftest import StoreFactory, drop_pg_schema


class FixedPricing:
    def price_for(self, provider: str, model: str) -> ModelPrice:
        return ModelPrice(input=Decimal("0.001"), output=Decimal("0.002"))


@pytest.fixture
def sync_url(backend_kind: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    factory = StoreFactory(backend_kind, tmp_path)
    yield factory.url, factory.options()
    if backend_kind == "postgres":
        asyncio.run(drop_pg_schema(factory.pg_schema))


def msg(content: str, conv: str = "c1") -> Event:
    return Event(type="message_sent", conversation_id=conv, user_id="u1",
                 data={"role": "user", "content": content})


def test_the_store_api_without_await(sync_url: tuple[str, dict[str, Any]]) -> None:
    url, options = sync_url
    with SyncEventStore.open(url, pricing=FixedPricing(), **options) as store:
        first = store.append(msg("hello"))
        assert isinstance(first, RecordedEvent) and first.seq == 1
        more = store.append_many([msg(f"m{i}", conv="c2") for i in range(1200)])
        assert [r.seq for r in more] == list(range(2, 1202))
        assert store.append(first).id == first.id  # idempotent, as the async store
        page = store.list_events(conversation_id="c2", limit=10)
        assert [e.data["content"] for e in page.events] == [f"m{i}" for i in range(10)]
        second = store.list_events(conversation_id="c2", limit=10, cursor=page.next_cursor)
        assert second.events[0].data["content"] == "m10"
        assert store.count_events(conversation_id="c2") == 1200
        assert [e.seq for e in store.read(from_seq=1190)] == list(range(1190, 1202))
        assert sum(1 for _ in store.read()) == 1201  # iterates across chunks
        cost = store.record_cost(provider="openai", model="m", input_tokens=1000,
                                 output_tokens=500, conversation_id="c1", user_id="u1")
        assert cost.data["total_cost"] == "2.000"
        assert store.sum_cost(user_id="u1") == Decimal("2.000")
        assert store.rebuild(ConversationCosts()).total(conversation_id="c1") == Decimal("2")
        assert store.head() == 1202

        seen: list[int] = []
        arrived = threading.Event()

        def handler(event: RecordedEvent) -> None:  # runs on the store's thread
            seen.append(event.seq)
            if event.seq == 1203:
                arrived.set()

        sub = store.subscribe(handler, name="tail", from_seq=1202)
        assert isinstance(sub, SyncSubscription)
        store.track("custom", data={"x": 1})
        assert arrived.wait(10)
        sub.stop()  # a coroutine method of the Subscription, blocking here
        assert not sub.alive and sub.name == "tail"
        assert seen[-1] == 1203
    with pytest.raises(Exception, match="closed"):
        store.start()


def test_every_public_async_method_of_eventstore_has_a_sync_twin() -> None:
    names = [name for name, fn in inspect.getmembers(EventStore)
             if not name.startswith("_") and name not in ("start", "close")
             and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))]
    assert {"append", "append_many", "list_events", "read", "record_cost"} <= set(names)
    for name in names:
        twin = inspect.getattr_static(SyncEventStore, name)
        assert callable(twin), name
        assert not inspect.iscoroutinefunction(twin), name
        assert not inspect.isasyncgenfunction(twin), name
        # the same parameters, so the sync store documents itself
        assert inspect.signature(twin) == inspect.signature(getattr(EventStore, name)), name


def test_several_threads_share_one_store(tmp_path: Path) -> None:
    with SyncEventStore.open(f"sqlite:///{tmp_path / 'x.db'}") as store:
        results: list[list[int]] = []
        failures: list[BaseException] = []

        def work(t: int) -> None:
            try:
                results.append([store.append(msg(f"{t}-{i}", conv=f"t{t}")).seq
                                for i in range(40)])
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures and len(results) == 8
        seqs = sorted(s for r in results for s in r)
        assert seqs == list(range(1, 321))
        for t in range(8):
            assert store.count_events(conversation_id=f"t{t}") == 40


def test_each_call_runs_in_its_callers_context(tmp_path: Path) -> None:
    def stamp(event: Event) -> Event:  # a redact hook: runs inside the append
        attribution = current_attribution()
        return msgspec.structs.replace(
            event, metadata={**event.metadata, "scope": attribution.conversation_id})

    with SyncEventStore.open("memory://", redact=[stamp]) as store:
        seen: dict[str, Any] = {}

        def in_thread(conv: str) -> None:
            with store.conversation(conv, user_id="u1"):
                seen[conv] = store.append(msg("x")).metadata["scope"]

        threads = [threading.Thread(target=in_thread, args=(f"c{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert seen == {f"c{i}": f"c{i}" for i in range(4)}
        assert store.append(msg("outside")).metadata["scope"] is None


def test_a_store_left_open_is_closed_at_interpreter_exit(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    script = textwrap.dedent(f"""
        from eventstore import Event
        from eventstore.sync import SyncEventStore
        store = SyncEventStore.open("sqlite:///{db}").start()
        store.append(Event(type="left_open"))
        print("appended", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "appended\n"
    assert "Task was destroyed" not in done.stderr and "Traceback" not in done.stderr
    # a closed SQLite store checkpoints and removes its write-ahead log
    assert not Path(f"{db}-wal").exists()
    with SyncEventStore.open(f"sqlite:///{db}") as store:
        assert [e.type for e in store.read()] == ["left_open"]
