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
from .errors import CorruptEventError
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
        while the current one is consumed. A corrupt stored event ends the read with
        CorruptEventError, after every event before it was given."""
        check_seq("from_seq", from_seq)
        batch_size = check_limit(batch_size)
        backend, reveal = self._backend, self._pipeline.reveal
        after = max(from_seq - 1, 0)
        pending: asyncio.Future[list[RecordedEvent]] | None = asyncio.ensure_future(
            backend.query(query, after_seq=after, limit=batch_size)
        )
        try:
            while pending is not None:
                try:
                    page = await pending
                except CorruptEventError as exc:
                    # The page holding the bad row is lost whole: give what precedes it
                    # one event at a time (a repair path, bounded by one page), then stop.
                    pending = None
                    async for event in self._before(query, after, exc.seq):
                        yield event
                    raise
                pending = None
                if len(page) == batch_size:
                    pending = asyncio.ensure_future(
                        backend.query(query, after_seq=page[-1].seq, limit=batch_size)
                    )
                for event in await reveal(page):
                    yield event
                if page:
                    after = page[-1].seq
        finally:
            if pending is not None:
                pending.cancel()

    async def _before(self, query: Query, after: int, bad: int) -> AsyncIterator[RecordedEvent]:
        while after < bad - 1:
            try:
                page = await self._backend.query(query, after_seq=after, limit=1)
            except CorruptEventError:
                return
            if not page or page[0].seq >= bad:
                return
            (event,) = await self._pipeline.reveal(page)
            yield event
            after = event.seq
