"""Reading the log: pages by cursor, counts, and the whole log in order.

Every read goes through the same two steps: the backend answers a `Query` by seq, then
the pipeline reveals what was stored (decrypts, or erases a forgotten user's fields).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec

from .backends.base import Backend
from .cursor import CursorCodec
from .events import RecordedEvent
from .pipeline import WritePipeline
from .query import Query, check_limit, check_seq

__all__ = ["READ_BATCH", "LogReader", "Page"]

READ_BATCH = 1_000


class Page(msgspec.Struct, frozen=True):
    """One page of events; `next_cursor` is None on the last page."""

    events: list[RecordedEvent]
    next_cursor: str | None


class LogReader:
    def __init__(self, backend: Backend, pipeline: WritePipeline) -> None:
        self._backend = backend
        self._pipeline = pipeline
        self._cursor_codec: CursorCodec | None = None

    def use_cursors(self, codec: CursorCodec) -> None:
        """Cursors are keyed by a secret the backend keeps: known once it is open."""
        self._cursor_codec = codec

    @property
    def _cursors(self) -> CursorCodec:
        if self._cursor_codec is None:
            raise RuntimeError("LogReader.use_cursors() was not called")
        return self._cursor_codec

    async def page(self, query: Query, limit: int, cursor: str | None) -> Page:
        """One page of matching events in seq order, after the cursor's position."""
        limit = check_limit(limit)
        after_seq = self._cursors.decode(cursor, query) if cursor is not None else 0
        events = await self._backend.query(query, after_seq=after_seq, limit=limit + 1)
        next_cursor: str | None = None
        if len(events) > limit:
            events = events[:limit]
            next_cursor = self._cursors.encode(events[-1].seq, query)
        return Page(events=await self._pipeline.reveal(events), next_cursor=next_cursor)

    async def count(self, query: Query) -> int:
        return await self._backend.count(query)

    async def head(self) -> int:
        return await self._backend.head()

    async def read(self, query: Query, from_seq: int = 0,
                   batch_size: int = READ_BATCH) -> AsyncIterator[RecordedEvent]:
        """Every matching event with seq >= from_seq, in order. The next page is fetched
        while the current one is consumed."""
        check_seq("from_seq", from_seq)
        batch_size = check_limit(batch_size)
        backend, reveal = self._backend, self._pipeline.reveal
        pending: asyncio.Future[list[RecordedEvent]] | None = asyncio.ensure_future(
            backend.query(query, after_seq=max(from_seq - 1, 0), limit=batch_size)
        )
        try:
            while pending is not None:
                page = await pending
                pending = None
                if len(page) == batch_size:
                    pending = asyncio.ensure_future(
                        backend.query(query, after_seq=page[-1].seq, limit=batch_size)
                    )
                for event in await reveal(page):
                    yield event
        finally:
            if pending is not None:
                pending.cancel()
