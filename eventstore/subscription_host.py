"""The store as its subscriptions see it: the Host of eventstore.subscriptions.

The store builds one StoreHost from its parts and hands it to its Registry and Guardian;
they reach the store only through it, so the subscriptions package never imports the
store (and this module does not either).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .backends.base import Backend, Checkpoint
from .events import RecordedEvent
from .query import Query, build_query
from .signals import Dispatcher
from .writer import GroupCommitWriter

if TYPE_CHECKING:
    from .privacy.encryption import Encryption

_EVERYTHING = build_query()


class _Reads(Protocol):
    def __call__(self, from_seq: int = 0, *, type: Any = None, conversation_id: str | None = None,
                 user_id: str | None = None) -> AsyncIterator[RecordedEvent]: ...


class StoreHost:
    def __init__(
        self,
        sender: Any,
        *,
        dispatcher: Dispatcher,
        backend: Backend,
        writer: GroupCommitWriter,
        read: _Reads,
        spawn: Callable[..., None],
        encryption: Encryption | None,
    ) -> None:
        self._sender = sender
        self._dispatcher = dispatcher
        self._backend = backend
        self._writer = writer
        self._read = read
        self._spawn = spawn
        self._encryption = encryption
        self._forgotten: set[str] = set()

    @property
    def sender(self) -> Any:
        return self._sender

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    def read_after(self, position: int, query: Query) -> AsyncIterator[RecordedEvent]:
        return self._read(position + 1, type=query.types,
                          conversation_id=query.conversation_id, user_id=query.user_id)

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

    # --- reveal at delivery ------------------------------------------------------------
    # Until the write pipeline's own reveal_live lands, this is the same rule from here:
    # plaintext copies in memory are only trusted for users not forgotten in this process.

    def forgetting(self, user_id: str) -> None:
        """forget_user(user_id) is under way: from now on, deliveries of that user's
        events show what the log shows (erased, or a later key's plaintext)."""
        self._forgotten.add(user_id)

    async def reveal_live(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        forgotten = self._forgotten
        if not forgotten:
            return events
        hits = [i for i, event in enumerate(events) if event.user_id in forgotten]
        encryption = self._encryption
        if not hits or encryption is None:
            return events
        stored: list[RecordedEvent] = []
        for i in hits:
            seq = events[i].seq
            page = await self._backend.query(_EVERYTHING, after_seq=seq - 1, limit=1)
            stored.append(page[0] if page and page[0].seq == seq else encryption.erase(events[i]))
        out = list(events)
        for i, event in zip(hits, await encryption.open_events(stored), strict=True):
            out[i] = event
        return out
