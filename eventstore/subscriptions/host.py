"""What a subscription needs from the store that runs it, and nothing more.

The store hands its subscriptions a Host (eventstore.subscription_host adapts the store);
this package never imports the store, so subscriptions can be read, tested and changed
without it, and the dependency points one way: store -> subscriptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from ..backends.base import Checkpoint
from ..events import RecordedEvent
from ..query import Query
from ..signals import Dispatcher


class Host(Protocol):
    """What a Subscription, the Registry and the Guardian may ask of their store."""

    @property
    def sender(self) -> Any:
        """The sender of the signals a subscription sends (the store)."""

    @property
    def dispatcher(self) -> Dispatcher:
        """Delivers those signals, isolating their receivers."""

    def read_after(self, position: int, query: Query) -> AsyncIterator[RecordedEvent]:
        """The events with seq > position that `query` matches, in order, as callers see
        them (personal fields opened, or erased)."""

    async def head(self) -> int:
        """The seq of the last committed event."""

    async def settled(self) -> None:
        """Wait until the group being committed now, if any, has sent its signals."""

    async def load_checkpoint(self, name: str) -> Checkpoint | None: ...

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def spawn(self, func: Callable[[], Awaitable[None]], *, name: str) -> None:
        """Run `func` as a task that ends when the store closes."""

    async def reveal_live(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """The events as they may be shown now: applied at the moment of every delivery,
        so an event of a user forgotten since it was committed is delivered erased."""
