"""The store's subscriptions: who they are, how live events reach them, how they stop.

One receiver of `event_appended` per store (strongly connected, disconnected entirely
when the store closes, so neither the store nor a stopped subscription stays reachable
through blinker). Each send only appends the event to a batch; the batch is routed after
the commit step (`call_soon`), to the subscriptions that take the event's type, so the
commit path costs the same with 10 subscriptions or 10,000, and an event of a type a
subscription does not take never wakes it.

The registry also keeps the live chain: `live_head`, the last seq routed, and
`chain_start`, from where every seq up to `live_head` was routed without a hole. A
subscription that is idle since a seq inside the chain has seen everything routed to it,
so it is past `live_head` without being woken (see Subscription.position). A hole
(another process's commits, a lost receiver) wakes every subscription to read the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio

from .. import signals
from ..errors import SubscriptionError
from ..events import RecordedEvent
from .host import Host
from .subscription import Subscription

log = logging.getLogger("eventstore.subscriptions")

# Worker threads that the threaded sync handlers of one store may hold at once: a handler
# blocked forever holds one, and the others share the rest.
HANDLER_THREADS = 8


class Registry:
    """A store's subscriptions and the one receiver that feeds them (module docstring)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._subscriptions: dict[int, Subscription] = {}
        self._names: dict[str, Subscription] = {}
        self._by_type: dict[str, dict[int, Subscription]] = {}
        self._any_type: dict[int, Subscription] = {}
        self._watching: dict[int, Subscription] = {}
        # Every subscription but those parked idle, attached and in the live chain: the
        # ones the guardian has to look at (a parked one needs nothing until woken).
        self._awake: dict[int, Subscription] = {}
        self._thread_limiter: anyio.CapacityLimiter | None = None
        self._batch: list[RecordedEvent] = []
        self._routing = False
        self.live_head = 0
        self.chain_start = 1
        self._routed_any = False
        self._remote_head = 0
        self._remote_news = asyncio.Event()
        self._receiver_connected = False

    # --- membership ---------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    def __len__(self) -> int:
        return len(self._subscriptions)

    def awake(self) -> list[Subscription]:
        """The subscriptions not parked idle in the live chain (see park())."""
        return list(self._awake.values())

    def park(self, subscription: Subscription) -> None:
        """`subscription` waits for work, attached, with every event since its position
        routed to it: until something wakes it there is nothing to check."""
        self._awake.pop(id(subscription), None)

    def unpark(self, subscription: Subscription) -> None:
        key = id(subscription)
        if key in self._subscriptions:
            self._awake[key] = subscription

    def thread_limiter(self) -> anyio.CapacityLimiter:
        """Bounds the worker threads that threaded sync handlers of this store hold."""
        if self._thread_limiter is None:
            self._thread_limiter = anyio.CapacityLimiter(HANDLER_THREADS)
        return self._thread_limiter

    def check_name_free(self, name: str | None) -> None:
        if name is not None and name in self._names:
            raise SubscriptionError(
                f"a subscription named {name!r} is already running in this store; stop it "
                "first or pick another name"
            )

    def launch(self, subscription: Subscription) -> Subscription:
        self.check_name_free(subscription.name)
        self._subscriptions[id(subscription)] = subscription
        self._awake[id(subscription)] = subscription
        if subscription.name is not None:
            self._names[subscription.name] = subscription
        self.attach(subscription)
        subscription.start()
        return subscription

    def remove(self, subscription: Subscription) -> None:
        self.detach(subscription)
        self._subscriptions.pop(id(subscription), None)
        self._awake.pop(id(subscription), None)
        self._watching.pop(id(subscription), None)
        if subscription.name is not None and self._names.get(subscription.name) is subscription:
            del self._names[subscription.name]

    async def stop_all(self) -> None:
        """Stop every subscription; each waits at most its stop_timeout, counted from
        the same moment, so a close takes the longest grace, not their sum."""
        subscriptions = self.subscriptions
        for subscription in subscriptions:  # all cancelled first, then awaited
            subscription.request_stop()
        for subscription in subscriptions:
            await subscription.stop()

    # --- routing ------------------------------------------------------------------------

    def attach(self, subscription: Subscription) -> None:
        key = id(subscription)
        types = subscription.query.types
        if types is None:
            self._any_type[key] = subscription
        else:
            for name in types:
                self._by_type.setdefault(name, {})[key] = subscription
        subscription.on_attach(self.live_head + 1)

    def detach(self, subscription: Subscription) -> None:
        key = id(subscription)
        self._any_type.pop(key, None)
        for name in subscription.query.types or ():
            routes = self._by_type.get(name)
            if routes is not None:
                routes.pop(key, None)
                if not routes:
                    del self._by_type[name]
        subscription.on_detach()
        self.unpark(subscription)  # the guardian reattaches it

    def receive(self, sender: Any, event: RecordedEvent, **_: Any) -> None:
        """The store's one receiver of event_appended: runs in the commit step, so it only
        queues the event; routing happens right after that step."""
        self._batch.append(event)
        if not self._routing:
            self._routing = True
            asyncio.get_running_loop().call_soon(self._route)

    def _route(self) -> None:
        batch, self._batch, self._routing = self._batch, [], False
        any_type = self._any_type
        by_type = self._by_type
        for event in batch:
            if not self._routed_any:
                # The chain starts here. A subscription handed an event finds a hole
                # before it by itself (its floor); a parked one that read the log to an
                # older head is woken now (once per store), as it is past nothing.
                self._routed_any = True
                for subscription in self._subscriptions.values():
                    if subscription.idle and subscription.position + 1 < event.seq:
                        subscription.nudge()
                self.chain_start, self.live_head = event.seq, event.seq - 1
            if event.seq <= self.live_head:
                continue  # announced twice (a reconnected receiver)
            if event.seq != self.live_head + 1:
                # seqs we were not told about lie between: every subscription reads them
                for subscription in self._subscriptions.values():
                    subscription.freeze()
                self.chain_start = event.seq
                for subscription in self._subscriptions.values():
                    subscription.nudge()
            targets = by_type.get(event.type)
            for subscription in any_type.values():
                subscription.offer(event, self.chain_start)
            if targets:
                for subscription in targets.values():
                    subscription.offer(event, self.chain_start)
            self.live_head = event.seq
        for subscription in list(self._watching.values()):
            subscription.progressed()

    def watch(self, subscription: Subscription) -> None:
        """`subscription` waits for its position to move (caught_up)."""
        self._watching[id(subscription)] = subscription

    def unwatch(self, subscription: Subscription) -> None:
        self._watching.pop(id(subscription), None)

    # --- the receiver ---------------------------------------------------------------------

    def start(self) -> None:
        """At store start: connect the receiver."""
        self.connect()

    def connect(self) -> None:
        # Strongly referenced (a weak reference to a bound method vanishes silently), and
        # scoped to this store so other stores' events never reach it.
        signals.event_appended.connect(self.receive, sender=self._host.sender, weak=False)
        self._receiver_connected = True

    def disconnect(self) -> None:
        # Without sender=: blinker forgets a strong receiver only when it is disconnected
        # from every sender; disconnecting from one sender leaves it referenced.
        signals.event_appended.disconnect(self.receive)
        self._receiver_connected = False

    @property
    def connected(self) -> bool:
        """Whether the receiver is still connected (someone may have cleared receivers)."""
        if not self._receiver_connected:
            return False
        receive = self.receive
        return any(r == receive for r in signals.event_appended.receivers_for(self._host.sender))

    def reconnect_all(self) -> None:
        """After the receiver was lost: connect it again, and every subscription reads the
        log for what it missed meanwhile."""
        self.connect()
        for subscription in self._subscriptions.values():
            subscription.nudge()

    async def settled_head(self) -> int:
        """The log's head, once this store's commits up to it have been routed."""
        head = await self._host.head()
        await self._host.settled()
        await asyncio.sleep(0)  # the routing step scheduled when that group signalled
        return head

    # --- other processes ------------------------------------------------------------------

    def note_head(self, head: int) -> None:
        """The backend says the log reached `head` (our commit, or another process's)."""
        if head > self._remote_head:
            self._remote_head = head
            self._remote_news.set()

    async def run(self) -> None:
        """The registry's task: tells the subscriptions of other processes' commits."""
        while True:
            await self._remote_news.wait()
            self._remote_news.clear()
            if self._remote_head <= self.live_head:
                continue
            # Our own commits are announced too, maybe before their signal: let the group
            # in flight be routed before deciding the news is of another process.
            await self._host.settled()
            await asyncio.sleep(0)  # its routing step, scheduled right after it signalled
            head = self._remote_head
            if head <= self.live_head:
                continue
            for subscription in self._subscriptions.values():
                subscription.note_head(head)
