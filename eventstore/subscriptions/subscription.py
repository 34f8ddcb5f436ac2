"""Durable subscriptions and the guardian that keeps them attached.

A Subscription runs its handler in its own task, in seq order, at least once:

- live events reach it through the `event_appended` signal, into a bounded queue;
- when it starts behind, when the queue overflows, when it sees a gap in seqs (a detached
  receiver, another process writing the same log) or when the guardian nudges it, it
  catches up by reading the log from its position, then drains the queue, skipping what
  it already handled, so the switch back to live has no gap and no duplicate;
- a handler that raises gets the same event again after a backoff; after `max_attempts`
  the subscription is marked failed (with the event and the error) and stops, and nothing
  else is affected.

`position` is the seq of the last event the subscription finished, including events its
filters skipped. A named subscription is durable: its position is saved as a checkpoint
every `checkpoint_every` events, when it has been idle for `checkpoint_interval` seconds,
and when it stops. After a crash, what was finished since the last save is delivered
again: at most `checkpoint_every` events, or `checkpoint_interval` seconds' worth.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from .. import signals
from ..backends.base import Checkpoint
from ..errors import EventStoreError
from ..events import RecordedEvent
from ..query import Query

if TYPE_CHECKING:
    from ..store import EventStore

log = logging.getLogger("eventstore.subscriptions")

Handler: TypeAlias = Callable[[RecordedEvent], Awaitable[None] | None]


class Status(enum.StrEnum):
    STARTING = "starting"
    CATCHING_UP = "catching up"
    RUNNING = "running"
    RETRYING = "retrying"
    CRASHED = "crashed"
    FAILED = "failed"
    STOPPED = "stopped"


class _HandlerGaveUp(Exception):
    pass


class Subscription:
    """A handler called for every matching event, in seq order, at least once, in a task
    of its own (see the module docstring). Made by `EventStore.subscribe`; `position` is
    the seq of the last event it finished, `status` and `describe()` say how it is doing.
    """

    def __init__(
        self,
        store: EventStore,
        handler: Handler,
        *,
        name: str | None,
        query: Query,
        position: int,
        max_attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        queue_size: int = 10_000,
        checkpoint_every: int = 100,
        checkpoint_interval: float = 1.0,
        snapshot: Callable[[], bytes] | None = None,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.handler = handler
        self.name = name
        self.query = query
        self.position = position
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.queue_size = queue_size
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.status = Status.STARTING
        self.last_error: BaseException | None = None
        self.failed_event: RecordedEvent | None = None
        self.retries = 0
        self.delivered = 0
        self.restarts = 0
        self.catch_ups = 0  # reads of the log (start, overflow, gap, another process)
        self._queue: deque[RecordedEvent] = deque()
        self._wake = asyncio.Event()
        self._catch_up = True
        self._known_head = 0  # the highest head the backend announced (any process's commit)
        self._saved_position = position
        self._saved_at = time.monotonic()
        self._scope: anyio.CancelScope | None = None
        self._done = asyncio.Event()
        self._done.set()
        self._stopping = False

    # --- what a person reads ---------------------------------------------------------

    @property
    def durable(self) -> bool:
        return self.name is not None

    def describe(self) -> str:
        text = f"{self.name or 'anonymous'}: {self.status} at seq {self.position}"
        text += f", {self.delivered} delivered, {self.retries} retries"
        if self.last_error is not None and self.status in (
            Status.RETRYING, Status.FAILED, Status.CRASHED
        ):
            text += f", last error {self.last_error!r}"
        if self.failed_event is not None:
            text += f" on event seq {self.failed_event.seq}"
        return text

    def __repr__(self) -> str:
        return f"<Subscription {self.describe()}>"

    # --- the signal side --------------------------------------------------------------

    def _receive(self, sender: Any, event: RecordedEvent, **_: Any) -> None:
        """Runs inside the append's commit dispatch: never blocks, never raises."""
        if len(self._queue) >= self.queue_size:
            self._queue.clear()  # the log has it all; catching up beats holding memory
            self._catch_up = True
        else:
            self._queue.append(event)
        self._wake.set()

    def connect(self) -> None:
        # Strongly referenced: blinker's default weak reference to a bound method would
        # vanish silently, which is the failure the guardian exists to repair.
        signals.event_appended.connect(self._receive, sender=self.store, weak=False)

    def disconnect(self) -> None:
        signals.event_appended.disconnect(self._receive, sender=self.store)

    @property
    def connected(self) -> bool:
        return any(r == self._receive for r in signals.event_appended.receivers_for(self.store))

    @property
    def alive(self) -> bool:
        return not self._done.is_set()

    @property
    def idle(self) -> bool:
        return (self.status == Status.RUNNING and not self._queue and not self._catch_up)

    def note_head(self, head: int) -> None:
        """The backend says the log reached `head` (a commit here or in another process)."""
        if head > self._known_head:
            self._known_head = head
            self._wake.set()

    def nudge(self) -> None:
        """Catch up from the log at the next opportunity."""
        self._catch_up = True
        self._wake.set()

    # --- the task ---------------------------------------------------------------------

    def start(self) -> None:
        self._done = asyncio.Event()
        self._catch_up = True
        self.status = Status.STARTING
        self.store.spawn(self._main, name=f"eventstore-subscription-{self.name or id(self)}")

    async def _main(self) -> None:
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                await self._run()
        except _HandlerGaveUp:
            pass
        except Exception as exc:  # never let one subscription take the store down
            self.status = Status.CRASHED
            self.last_error = exc
            log.exception("subscription %s crashed; the guardian will restart it", self.name)
        finally:
            self._scope = None
            self._done.set()

    async def _run(self) -> None:
        while True:
            if self._catch_up:
                await self._catch_up_from_log()
                continue
            if not self._queue:
                if self.position < self._known_head:
                    # Our own commits come through the signal too, and the backend's news
                    # of them may arrive first: let the group in flight send its signals
                    # before reading the log for events that are about to be queued.
                    await self.store._writer.settled()
                    if not self._queue and self.position < self._known_head:
                        self._catch_up = True  # another process's events
                    continue
                self.status = Status.RUNNING
                await self._wait_for_work()
                continue
            event = self._queue.popleft()
            if event.seq <= self.position:
                continue  # already handled during a catch-up
            if event.seq != self.position + 1:
                self._catch_up = True  # something committed that we were not told about
                continue
            await self._deliver(event)

    async def _wait_for_work(self) -> None:
        self._wake.clear()
        if self.durable and self.position != self._saved_position:
            with anyio.move_on_after(self.checkpoint_interval):
                await self._wake.wait()
                return
            await self.save_checkpoint()
        else:
            await self._wake.wait()

    async def _catch_up_from_log(self) -> None:
        self.status = Status.CATCHING_UP
        self._catch_up = False
        self.catch_ups += 1
        head = await self.store.head()
        q = self.query
        async for event in self.store.read(
            self.position + 1, type=q.types, conversation_id=q.conversation_id,
            user_id=q.user_id,
        ):
            await self._deliver(event)
        # Everything up to `head` was committed before the read began, so nothing the
        # filters would take is left below it.
        if head > self.position:
            self.position = head
            await self._maybe_checkpoint()

    async def _deliver(self, event: RecordedEvent) -> None:
        if self.query.matches(event):
            attempt = 0
            while True:
                try:
                    result = self.handler(event)
                    if inspect.isawaitable(result):
                        await result
                    break
                except Exception as exc:
                    attempt += 1
                    self.retries += 1
                    self.last_error = exc
                    if attempt >= self.max_attempts:
                        await self._give_up(event, exc)
                    previous, self.status = self.status, Status.RETRYING
                    await anyio.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
                    self.status = previous
            self.delivered += 1
        self.position = event.seq
        await self._maybe_checkpoint()

    async def _give_up(self, event: RecordedEvent, exc: Exception) -> None:
        log.error("subscription %s failed on event %s after %d attempts: %r",
                  self.name, event.seq, self.max_attempts, exc)
        self.disconnect()
        if self.durable:
            await self.save_checkpoint()
        # Marked failed only once the checkpoint is saved, so whoever sees FAILED also
        # sees the position it failed at persisted.
        self.failed_event = event
        self.status = Status.FAILED
        self.store.dispatcher.send(signals.subscription_failed, self.store, subscription=self,
                                   event=event, exception=exc)
        raise _HandlerGaveUp from exc

    async def _maybe_checkpoint(self) -> None:
        if self.durable and self.position - self._saved_position >= self.checkpoint_every:
            await self.save_checkpoint()

    async def save_checkpoint(self) -> None:
        if self.name is None or self.position == self._saved_position:
            return
        position = self.position
        state = self.snapshot() if self.snapshot is not None else None
        await self.store.backend.save_checkpoint(
            Checkpoint(name=self.name, position=position, state=state)
        )
        self._saved_position = position
        self._saved_at = time.monotonic()

    # --- control ----------------------------------------------------------------------

    async def restart(self) -> None:
        """Start again from `position` (after a crash, or to retry a failed event)."""
        if self.alive:
            return
        self.restarts += 1
        self.failed_event = None
        if not self.connected:
            self.connect()
        self.start()

    async def stop(self) -> None:
        """Stop the handler task, save the checkpoint, and detach from the store."""
        if self._stopping:
            await self._done.wait()
            return
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()
        self.disconnect()
        try:
            if self.durable:
                await self.save_checkpoint()
        except EventStoreError:
            log.exception("could not save the checkpoint of subscription %s", self.name)
        if self.status != Status.FAILED:
            self.status = Status.STOPPED
        self.store._forget(self)
