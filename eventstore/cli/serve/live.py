"""The viewer's live state: its index, the seq its subscription has reached, and the
wake-up the event streams wait on (one subscription for every client, no polling)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp

from ...events import RecordedEvent
from ...signals import rebuild_progress
from ...store import EventStore
from ...subscriptions import Subscription
from .index import ViewerIndex
from .integrity import Verification


class Live:
    """The seq the viewer's subscription has reached, and a wake-up for whoever waits for
    it to move (the SSE streams): one subscription for all clients, no polling."""

    def __init__(self, index: ViewerIndex) -> None:
        self.index = index
        self.seq = 0
        self._moved = asyncio.Event()

    def on_event(self, event: RecordedEvent) -> None:
        self.index.apply_event(event)
        self.seq = max(self.seq, event.seq)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait_past(self, seq: int) -> None:
        """Return once the log has moved past `seq` (callers bound the wait)."""
        while self.seq <= seq:
            await self._moved.wait()


@dataclass
class Viewer:
    store: EventStore
    index: ViewerIndex
    live: Live
    mounts: dict[str, ASGIApp] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    indexed: tuple[int, int] = (0, 0)  # (position, head) of the index rebuild so far
    checkpoints: Path | None = None  # a directory of checkpoint files, read only
    verification: Verification = field(default_factory=Verification)

    async def build_index(self) -> Subscription:
        """Rebuild the index from the log, then keep it live with one subscription."""

        def progress(sender: Any, *, position: int, head: int, **_: Any) -> None:
            self.indexed = (position, head)

        rebuild_progress.connect(progress, sender=self.store, weak=False)
        try:
            await self.store.rebuild(self.index)
        finally:
            rebuild_progress.disconnect(progress, sender=self.store)
        self.live.seq = self.index.position
        # Not durable: the viewer writes nothing, not even a checkpoint.
        subscription = await self.store.subscribe(self.live.on_event,
                                                  from_seq=self.index.position + 1)
        self.ready.set()
        return subscription
