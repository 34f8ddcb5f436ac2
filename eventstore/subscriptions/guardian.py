"""The guardian: keeps every subscription of a store attached, alive and caught up."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

from .. import signals
from ..errors import InvalidOptionError
from .host import Host
from .registry import Registry
from .subscription import Subscription

log = logging.getLogger("eventstore.subscriptions")

DEFAULT_INTERVAL = 30.0
_YIELD_EVERY = 256


class Guardian:
    """Keeps every subscription attached, alive and caught up (`interval=math.inf`: only
    when `check()` is called).

    Each tick (every `interval` seconds, or `await check()` now) it reconnects the store's
    receiver of `event_appended` if it was lost (blinker drops receivers when someone
    clears them), reattaches a subscription that was detached, restarts a task that
    crashed, makes a subscription that sits idle behind the log catch up, and reports a
    handler stuck past its `handler_timeout` (status STALLED, `subscription_stalled`); it
    sends `guardian_repair` for each repair.

    A tick looks only at the subscriptions that are not parked (the Registry's awake
    list: starting, catching up, delivering, retrying, crashed, detached), plus one read
    of the head. A parked subscription waits idle, attached, with every event since its
    position routed to it, so it needs nothing until it is woken; the one case the
    registry cannot see, commits it never routed (another process's, when the
    notification of them was lost), makes the tick walk every subscription, in slices
    that let appends through, once per new head. 10,000 idle subscriptions cost nothing.
    `examined` is how many subscriptions the last tick looked at.
    """

    def __init__(
        self,
        host: Host,
        registry: Registry,
        *,
        interval: float = DEFAULT_INTERVAL,
        check_listener: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        if (isinstance(interval, bool) or not isinstance(interval, int | float)
                or math.isnan(interval) or interval <= 0):
            raise InvalidOptionError(
                f"guardian_interval must be a positive number of seconds, not {interval!r}"
            )
        self._host = host
        self._registry = registry
        self._check_listener = check_listener
        self.interval = float(interval)
        self.ticks = 0
        self.repairs = 0
        self.stalls = 0
        self.examined = 0
        self._walked_head = -1  # the unrouted head the last full walk was made at

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
        self._host.dispatcher.send(signals.guardian_repair, self._host.sender,
                                   subscription=subscription, repair=repair, detail=detail)

    async def check(self) -> list[str]:
        """Run one tick now; returns the repairs made."""
        self.ticks += 1
        made: list[str] = []
        if self._check_listener is not None and await self._check_listener():
            made.append("relistened")
            self._repaired(None, "relistened", "the notification listener was reconnected")
        if not self._registry.connected:
            self._registry.reconnect_all()
            made.append("reconnected")
            self._repaired(None, "reconnected",
                           "the store's receiver was detached from event_appended; every "
                           "subscription replays what it missed from the log")
        # One read of the head per tick, once our own commits up to it have been routed
        # (a subscription is not behind an event still on its way to it).
        head = await self._registry.settled_head()
        now = time.monotonic()
        if head > self._registry.live_head and head != self._walked_head:
            # Commits this store never routed: a parked subscription may sit behind them.
            self._walked_head = head
            subscriptions = self._registry.subscriptions
        else:
            subscriptions = self._registry.awake()
        self.examined = len(subscriptions)
        for index, sub in enumerate(subscriptions):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                # let appends through: a walk over 10,000 subscriptions would otherwise
                # hold the loop for tens of milliseconds
                await anyio.lowlevel.checkpoint()
            todo = sub.checkup(now, head)
            if todo is None:
                continue
            label = sub.name or "anonymous subscription"
            if todo == "reconnect":
                sub.connect()
                sub.nudge()
                made.append("reconnected")
                self._repaired(sub, "reconnected",
                               f"{label} was detached from live events; replaying from "
                               f"seq {sub.position + 1}")
                todo = "restart" if not sub.alive else None
            if todo == "restart":
                await sub.restart()
                made.append("restarted")
                self._repaired(sub, "restarted",
                               f"{label} had stopped ({sub.last_error!r}); resumed at seq "
                               f"{sub.position + 1}")
            elif todo == "stalled":
                if sub.mark_stalled():
                    self.stalls += 1
            elif todo == "behind":
                sub.nudge()
                made.append("caught_up")
                self._repaired(sub, "caught_up",
                               f"{label} sat at seq {sub.position} behind the log head "
                               f"{head}")
        return made
