"""Following the log from another process (`eventstore tail`).

The follower reads the log by seq. The backend's commit notifications (PostgreSQL's
LISTEN, SQLite's data_version watcher) wake it as soon as any process commits; the poll
interval stays as the safety net for a notification lost while a listener reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..events import RecordedEvent
from ..query import Query as Filters
from ..store import EventStore
from .base import where

T = TypeVar("T")


@dataclass
class Followed:
    shown: int = 0
    signal: signal.Signals | None = None  # the signal that stopped the follower, if one did


@contextlib.asynccontextmanager
async def reading(events: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a log reader we leave early now, not whenever it is garbage-collected (its
    cleanup cancels a prefetch and must run while the loop is still open)."""
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def last_events(store: EventStore, f: Filters, n: int) -> tuple[list[RecordedEvent], int]:
    """The last n matching events, and the seq the scan got to.

    The log is only read forwards, so look back over a window of seqs that doubles until
    it holds n matches (or reaches the start): a rare filter costs a longer scan, never a
    wrong answer.
    """
    head = await store.head()
    if n == 0:
        return [], head
    window = max(4 * n, 1_000)
    while True:
        start = max(head - window, 0) + 1
        found: list[RecordedEvent] = []
        position = head
        async with reading(store.read(start, **where(f))) as events:
            async for event in events:
                found.append(event)
                position = event.seq
        if len(found) >= n or start == 1:
            return found[-n:], max(position, head)
        window *= 2


async def follow(
    store: EventStore,
    f: Filters,
    show: Callable[[RecordedEvent], None],
    *,
    from_seq: int | None,
    last: int,
    count: int | None,
    interval: float,
) -> Followed:
    """Show the last `last` events (or all from `from_seq`), then each new one, until
    `count` events were shown or SIGINT / SIGTERM arrives."""
    wake = asyncio.Event()
    result = Followed()

    def stop(sig: signal.Signals) -> None:
        result.signal = sig
        wake.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    listen: Callable[[Callable[[int], None]], Awaitable[None]] | None = getattr(
        store.backend, "listen", None)
    if listen is not None:
        await listen(lambda head: wake.set())

    def done() -> bool:
        return result.signal is not None or (count is not None and result.shown >= count)

    try:
        if from_seq is not None:
            position = max(from_seq - 1, 0)
        else:
            backlog, position = await last_events(store, f, last)
            for event in backlog:
                show(event)
                result.shown += 1
                if done():
                    return result
        while not done():
            wake.clear()
            head = await store.head()
            async with reading(store.read(position + 1, **where(f))) as events:
                async for event in events:
                    position = event.seq
                    show(event)
                    result.shown += 1
                    if done():
                        return result
            # Everything up to `head` had committed before the read began, and the log has
            # no holes below its head, so nothing matching is left behind it.
            position = max(position, head)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
        return result
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
