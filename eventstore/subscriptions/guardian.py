"""The guardian: keeps every subscription of a store attached, alive and caught up."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from .. import signals
from ..backends.protocols import CommitListener
from .subscription import Status, Subscription

if TYPE_CHECKING:
    from ..store import EventStore

log = logging.getLogger("eventstore.subscriptions")


class Guardian:
    """Keeps every subscription attached, alive and caught up.

    Each tick (every `interval` seconds, or `await check()` now) it reattaches a receiver
    that was disconnected from `event_appended` (blinker drops weak receivers silently),
    restarts a task that crashed, and makes a subscription that sits idle behind the log
    catch up; it sends `guardian_repair` for each repair.
    """

    def __init__(self, store: EventStore, interval: float = 30.0) -> None:
        self.store = store
        self.interval = interval
        self.ticks = 0
        self.repairs = 0

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a failed tick must not end the guardian
                log.exception("guardian tick failed; trying again next tick")

    def _repaired(self, subscription: Subscription | None, repair: str, detail: str) -> None:
        self.repairs += 1
        log.warning("guardian: %s (%s)", repair, detail)
        self.store.dispatcher.send(signals.guardian_repair, self.store,
                                   subscription=subscription, repair=repair, detail=detail)

    async def check(self) -> list[str]:
        """Run one tick now; returns the repairs made."""
        self.ticks += 1
        made: list[str] = []
        backend = self.store.backend
        if isinstance(backend, CommitListener) and await backend.check_listener():
            made.append("relistened")
            self._repaired(None, "relistened", "the notification listener was reconnected")
        head: int | None = None
        for sub in self.store.subscriptions:
            if sub.status in (Status.FAILED, Status.STOPPED) or sub._stopping:
                continue
            label = sub.name or "anonymous subscription"
            if not sub.connected:
                sub.connect()
                sub.nudge()
                made.append("reconnected")
                self._repaired(sub, "reconnected",
                               f"{label} was detached from event_appended; replaying from "
                               f"seq {sub.position + 1}")
            if not sub.alive:
                await sub.restart()
                made.append("restarted")
                self._repaired(sub, "restarted",
                               f"{label} had stopped ({sub.last_error!r}); resumed at seq "
                               f"{sub.position + 1}")
                continue
            if sub.idle:
                head = await self.store.head() if head is None else head
                if sub.position < head:
                    sub.nudge()
                    made.append("caught_up")
                    self._repaired(sub, "caught_up",
                                   f"{label} sat at seq {sub.position} behind the log head "
                                   f"{head}")
        return made
