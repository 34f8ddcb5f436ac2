"""The store as its subscriptions see it: the Host of eventstore.subscriptions.

The store builds one StoreHost from its parts and hands it to its Registry and Guardian;
they reach the store only through it, so the subscriptions package never imports the
store (and this module does not either).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .backends.base import Backend, Checkpoint
from .events import RecordedEvent
from .pipeline import WritePipeline
from .query import Query
from .reads import LogReader
from .signals import Dispatcher
from .writer import GroupCommitWriter


class StoreHost:
    """The Host of a store's subscriptions, built by the store from its own parts."""

    def __init__(
        self,
        sender: Any,
        *,
        dispatcher: Dispatcher,
        backend: Backend,
        writer: GroupCommitWriter,
        reader: LogReader,
        pipeline: WritePipeline,
        spawn: Callable[..., None],
    ) -> None:
        self._sender = sender
        self._dispatcher = dispatcher
        self._backend = backend
        self._writer = writer
        self._reader = reader
        self._pipeline = pipeline
        self._spawn = spawn

    @property
    def sender(self) -> Any:
        return self._sender

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    def read_after(self, position: int, query: Query) -> AsyncIterator[RecordedEvent]:
        return self._reader.read(query, position + 1)

    async def head(self) -> int:
        return await self._backend.head()

    async def settled(self) -> None:
        await self._writer.settled()

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        return await self._backend.load_checkpoint(name)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self._backend.save_checkpoint(checkpoint)

    def spawn(self, func: Callable[[], Awaitable[None]], *, name: str) -> None:
        self._spawn(func, name=name)

    async def reveal_live(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        return await self._pipeline.reveal_live(events)
