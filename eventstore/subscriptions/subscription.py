"""Durable subscriptions: one handler, its own task, in seq order, at least once.

- live events reach it from the store's Registry (one receiver of `event_appended` per
  store), which routes each committed event to the subscriptions that take its type,
  into a bounded inbox, after the commit step, never inside it;
- when it starts behind, when its inbox overflows, when an event routed to it follows a
  stretch the registry could not vouch for (another process's commits, a detached
  receiver) or when the guardian nudges it, it catches up by reading the log from its
  position, then drains the inbox, skipping what it already handled, so the switch back
  to live has no gap and no duplicate;
- every event goes through the host's `reveal_live` at the moment it is handed to the
  handler, so a user forgotten since the event was committed is delivered erased;
- the handler runs under `handler_timeout`; whatever it raises, BaseExceptions such as
  CancelledError, SystemExit and KeyboardInterrupt included, or a timeout, is a failed
  attempt: the same event again after a backoff, and after `max_attempts` the
  subscription is marked failed (with the event and the error) and stops. Nothing else is
  affected: the handler can never end the store's tasks;
- a sync handler runs on the loop, or with `threaded=True` in a worker thread (the
  Registry's limiter), so that one that blocks holds up only its own subscription;
- an async call is cancelled once at its timeout or at stop() (see _await_handler); one
  that ignores it shows as stalled, and stop() abandons it after `stop_timeout`.

`position` is the seq of the last event the subscription finished, including events its
filters skipped: an idle subscription is past every event the registry routed elsewhere.
A named subscription is durable: its position is saved as a checkpoint every
`checkpoint_every` events, when it has been idle for `checkpoint_interval` seconds, and
when it stops. After a crash, what was finished since the last save is delivered again:
at most `checkpoint_every` events, or `checkpoint_interval` seconds' worth.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from .. import signals
from ..backends.base import Checkpoint
from ..errors import (
    CatchUpTimeoutError,
    CorruptEventError,
    EventStoreError,
    HandlerTimeoutError,
    SubscriptionError,
)
from ..events import RecordedEvent
from ..query import Query
from .host import Host

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger("eventstore.subscriptions")

Handler: TypeAlias = Callable[[RecordedEvent], Awaitable[None] | None]

DEFAULT_HANDLER_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 5.0


class Status(enum.StrEnum):
    STARTING = "starting"
    CATCHING_UP = "catching up"
    RUNNING = "running"
    RETRYING = "retrying"
    STALLED = "stalled"
    CRASHED = "crashed"
    FAILED = "failed"
    STOPPED = "stopped"


class _HandlerGaveUp(Exception):
    pass


class _Stopped(Exception):
    """The handler call in progress was interrupted by stop() (or rewind())."""


class Pulse:
    """Wakes whoever waits now; cheap to pulse when nobody does."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def pulse(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class Subscription:
    """A handler called for every matching event, in seq order, at least once, in a task
    of its own (see the module docstring). Made by `EventStore.subscribe`; `position` is
    the seq of the last event it finished, `status` and `describe()` say how it is doing.
    """

    def __init__(
        self,
        host: Host,
        registry: Registry,
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
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        threaded: bool = False,
        snapshot: Callable[[], bytes] | None = None,
        reset: Callable[[], None] | None = None,
    ) -> None:
        self._host = host
        self._registry = registry
        self.snapshot = snapshot
        self.reset = reset  # clears what the handler built, for rewind()
        self._rewinding = False
        self.handler = handler
        self.name = name
        self.query = query
        self._position = position
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.queue_size = queue_size
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.handler_timeout = handler_timeout
        self.stop_timeout = stop_timeout
        self.threaded = threaded
        self.status = Status.STARTING
        self.last_error: BaseException | None = None
        self.failed_event: RecordedEvent | None = None
        # The seq of a stored event that could not be read (CorruptEventError), if any.
        self.failed_seq: int | None = None
        self.retries = 0
        self.timeouts = 0
        self.delivered = 0
        self.restarts = 0
        self.catch_ups = 0  # reads of the log (start, overflow, gap, another process)
        # (event, floor): the event may follow `position` straight away only if
        # position + 1 >= floor, i.e. the registry saw every event in between.
        self._inbox: deque[tuple[RecordedEvent, int]] = deque()
        self._attached = False
        self._live_from = 0  # the first seq the registry routes to us since attaching
        self._wake = asyncio.Event()
        self._catch_up = True
        self._known_head = 0  # the highest head another process is known to have written
        self._saved_position = position
        self._scope = anyio.CancelScope()
        self._done = asyncio.Event()
        self._done.set()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._finishing = False
        self._busy = False  # handing an event from the inbox to the handler
        self._progress = Pulse()
        self._calling: RecordedEvent | None = None
        self._call_started = 0.0
        self._stall_reported = False
        # The task awaiting an async handler's call (interruptible), the reason it was
        # interrupted ("timeout", "stop") and how often (each cancel is undone after).
        self._awaiting: asyncio.Task[Any] | None = None
        self._interrupted: str | None = None
        self._interrupts = 0
        self._stop_deadline = 0.0
        self._abandoned = False  # stop() gave up waiting for the task (see _abandon)

    # --- what a person reads ---------------------------------------------------------

    @property
    def durable(self) -> bool:
        return self.name is not None

    @property
    def position(self) -> int:
        """The seq of the last event this subscription finished (or skipped)."""
        if self._idle_live():
            return max(self._position, self._registry.live_head)
        return self._position

    @property
    def stopping(self) -> bool:
        """stop() was called (it may still be finishing)."""
        return self._stopping

    def describe(self) -> str:
        text = f"{self.name or 'anonymous'}: {self.status} at seq {self.position}"
        text += f", {self.delivered} delivered, {self.retries} retries"
        if self.timeouts:
            text += f", {self.timeouts} timeouts"
        if self.status == Status.STALLED and self._calling is not None:
            text += (f", handler stuck on event seq {self._calling.seq} for "
                     f"{time.monotonic() - self._call_started:.1f}s (handler_timeout "
                     f"{self.handler_timeout}s)")
        if self.last_error is not None and self.status in (
            Status.RETRYING, Status.FAILED, Status.CRASHED
        ):
            text += f", last error {self.last_error!r}"
        if self.failed_event is not None:
            text += f" on event seq {self.failed_event.seq}"
        elif self.failed_seq is not None:
            text += f" on the corrupt stored event at seq {self.failed_seq}"
        return text

    def __repr__(self) -> str:
        return f"<Subscription {self.describe()}>"

    # --- what the registry calls -----------------------------------------------------

    def offer(self, event: RecordedEvent, floor: int) -> None:
        """A committed event of a type we take; runs in the registry's routing step."""
        self.freeze()
        if len(self._inbox) >= self.queue_size:
            self._inbox.clear()  # the log has it all; catching up beats holding memory
            self._live_from = event.seq + 1
            self._catch_up = True
        else:
            self._inbox.append((event, max(floor, self._live_from)))
        self._wake.set()

    def on_attach(self, live_from: int) -> None:
        self._attached = True
        self._live_from = live_from

    def on_detach(self) -> None:
        self.freeze()
        self._attached = False
        self._inbox.clear()

    def progressed(self) -> None:
        self._progress.pulse()

    def note_head(self, head: int) -> None:
        """Another process's commits reached `head`."""
        if head > self._known_head:
            self._known_head = head
            self._wake.set()

    def freeze(self) -> None:
        """Take the position an idle subscription has implicitly, before anything (an
        event for it, a nudge, the registry's news of a gap) ends its idleness."""
        if self._idle_live():
            self._position = max(self._position, self._registry.live_head)

    def _idle_live(self) -> bool:
        # Nothing of ours is waiting, and the registry routed us every event since our
        # position: the ones it did not route were not ours, so we are past them too.
        return (self._attached and not self._inbox and not self._catch_up
                and not self._busy and self.status == Status.RUNNING
                and self._position + 1 >= max(self._registry.chain_start, self._live_from))

    # --- health, for the guardian ----------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether the store routes live events to this subscription."""
        return self._attached

    @property
    def connected(self) -> bool:
        """Whether live events reach this subscription (attached, and the store's
        receiver of event_appended is connected)."""
        return self._attached and self._registry.connected

    def connect(self) -> None:
        self._registry.attach(self)

    def disconnect(self) -> None:
        self._registry.detach(self)

    @property
    def alive(self) -> bool:
        return not self._done.is_set()

    @property
    def idle(self) -> bool:
        return (self.status == Status.RUNNING and not self._inbox and not self._catch_up
                and not self._busy)

    def checkup(self, now: float, head: int) -> str | None:
        """What the guardian should do for this subscription now, if anything: "reconnect",
        "restart", "stalled" or "behind" (of `head`). O(1), plain attribute reads: the
        guardian asks it of every subscription every tick."""
        status = self.status
        if status is Status.FAILED or status is Status.STOPPED or self._stopping:
            return None
        if not self._attached:
            return "reconnect"
        if self._done.is_set():
            return "restart"
        if (self._calling is not None and self.handler_timeout is not None
                and now - self._call_started > self.handler_timeout):
            return "stalled"
        if (status is Status.RUNNING and self._position < head and not self._inbox
                and not self._catch_up and not self._busy):
            registry = self._registry
            if (self._position + 1 >= max(registry.chain_start, self._live_from)
                    and registry.live_head >= head):
                return None  # past everything: the rest was routed elsewhere
            return "behind"
        return None

    def overdue(self, now: float) -> float | None:
        """Seconds the handler call in progress has run past its timeout, if it has."""
        if self._calling is None or self.handler_timeout is None:
            return None
        late = now - self._call_started - self.handler_timeout
        return late if late > 0 else None

    def mark_stalled(self) -> bool:
        """The guardian found the current call overdue: say so once per call."""
        event = self._calling
        if event is None or self._stall_reported:
            return False
        self._stall_reported = True
        self.status = Status.STALLED
        elapsed = time.monotonic() - self._call_started
        log.error("subscription %s: handler stuck on event seq %d for %.1fs, past its "
                  "handler_timeout of %ss: it ignores cancellation", self.name, event.seq,
                  elapsed, self.handler_timeout)
        self._host.dispatcher.send(signals.subscription_stalled, self._host.sender,
                                   subscription=self, event=event, elapsed=elapsed)
        self._progress.pulse()
        return True

    def nudge(self) -> None:
        """Catch up from the log at the next opportunity."""
        self.freeze()
        self._catch_up = True
        self._wake.set()

    # --- the task ---------------------------------------------------------------------

    def start(self) -> None:
        self._done = asyncio.Event()
        self._scope = anyio.CancelScope()  # cancellable before the task enters it
        self._catch_up = True
        self.status = Status.STARTING
        self._host.spawn(self._main, name=f"eventstore-subscription-{self.name or id(self)}")

    async def _main(self) -> None:
        try:
            with self._scope:
                await self._run()
        except (_HandlerGaveUp, _Stopped):
            pass
        except CorruptEventError as exc:
            # Restarting would meet the same row again: a crash loop that delivers nothing.
            await self._fail_on_corrupt(exc)
        except Exception as exc:  # never let one subscription take the store down
            self.status = Status.CRASHED
            self.last_error = exc
            log.exception("subscription %s crashed; the guardian will restart it", self.name)
        finally:
            self._done.set()
            self._progress.pulse()
        if self._stopping:
            await self._finish_stop()

    async def _run(self) -> None:
        while True:
            if self._catch_up:
                await self._catch_up_from_log()
                continue
            if not self._inbox:
                if self._known_head > self.position:
                    self._catch_up = True  # another process's events
                    continue
                if self._position + 1 < max(self._registry.chain_start, self._live_from):
                    # events we were never handed lie past our position (the chain began
                    # after it): read them now rather than park behind them
                    self._catch_up = True
                    continue
                self.status = Status.RUNNING
                self._progress.pulse()
                await self._wait_for_work()
                continue
            event, floor = self._inbox.popleft()
            if event.seq <= self._position:
                continue  # already handled during a catch-up
            if self._position + 1 < floor:
                self._catch_up = True  # something committed that we were not told about
                continue
            self._busy = True
            try:
                await self._deliver(event)
            finally:
                self._busy = False

    async def _wait_for_work(self) -> None:
        self._wake.clear()
        # Parked, the guardian skips it: whatever could need it (an event, a hole, a
        # nudge, a detach) wakes it or puts it back on the guardian's list first.
        self._registry.park(self)
        try:
            if self.durable and self.position != self._saved_position:
                with anyio.move_on_after(self.checkpoint_interval):
                    await self._wake.wait()
                    return
                await self.save_checkpoint()
            else:
                await self._wake.wait()
        finally:
            self._registry.unpark(self)

    async def _catch_up_from_log(self) -> None:
        self.status = Status.CATCHING_UP
        self._catch_up = False
        self.catch_ups += 1
        head = await self._host.head()
        async for event in self._host.read_after(self._position, self.query):
            await self._deliver(event)
        # Everything up to `head` was committed before the read began, so nothing the
        # filters would take is left below it.
        if head > self._position:
            self._position = head
            self._progress.pulse()
            await self._maybe_checkpoint()

    async def _deliver(self, event: RecordedEvent) -> None:
        if self.query.matches(event):
            (shown,) = await self._host.reveal_live([event])
            error = await self._call(shown)
            if self._abandoned:
                raise _Stopped  # stop() gave up on this call: nothing after it counts
            if error is not None:
                await self._retry(event, error)
            self.delivered += 1
        self._position = event.seq
        self._progress.pulse()
        if self.name is not None and self._position - self._saved_position >= self.checkpoint_every:
            await self.save_checkpoint()

    async def _retry(self, event: RecordedEvent, first: BaseException) -> None:
        """The same event again after a backoff, until it succeeds or attempts run out."""
        attempt = 0
        error: BaseException | None = first
        while error is not None:
            attempt += 1
            self.retries += 1
            self.last_error = error
            if attempt >= self.max_attempts:
                await self._give_up(event, error)
            previous, self.status = self.status, Status.RETRYING
            await anyio.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            self.status = previous
            (shown,) = await self._host.reveal_live([event])
            error = await self._call(shown)
            if self._abandoned:
                raise _Stopped

    async def _call(self, event: RecordedEvent) -> BaseException | None:
        """Run the handler once; what it raised (or its timeout), None if it succeeded."""
        status = self.status
        self._calling, self._call_started, self._stall_reported = event, time.monotonic(), False
        try:
            if self.threaded:
                result = await self._in_thread(event)
            else:
                result = self.handler(event)
            if result is None or not inspect.isawaitable(result):
                # A sync handler cannot be interrupted: on the loop it blocked every
                # append meanwhile, in a thread only itself (it was shown as stalled). (No
                # cancel scope for an inline one: one per event would halve catch-up.)
                if self.handler_timeout is not None and (
                        time.monotonic() - self._call_started > self.handler_timeout):
                    log.warning("subscription %s: sync handler took %.1fs on event seq %d "
                                "(handler_timeout %ss)%s", self.name,
                                time.monotonic() - self._call_started, event.seq,
                                self.handler_timeout, "" if self.threaded else
                                " and blocked the event loop; make it async or pass "
                                "threaded=True")
                return None
            return await self._await_handler(result, event)
        except _Stopped:
            raise
        except BaseException as exc:  # the handler's, whatever it is (see below)
            if signals.cancelled_from_outside():
                raise  # the loop shutting down: not the handler's failure
            return exc
        finally:
            self._calling = None
            if self.status is Status.STALLED:
                self.status = status

    async def _in_thread(self, event: RecordedEvent) -> object:
        # Shielded: a thread cannot be interrupted, so stop() and the timeout wait for
        # the call to end (the guardian shows it stalled; stop() abandons it after its
        # stop_timeout) instead of leaving it running beside the next call.
        with anyio.CancelScope(shield=True):
            result = await anyio.to_thread.run_sync(self.handler, event,
                                                    limiter=self._registry.thread_limiter())
        return result

    async def _await_handler(self, result: Awaitable[object], event: RecordedEvent,
                             ) -> BaseException | None:
        """Await an async handler's call, cancelled once at its timeout or at stop().

        Shielded from the subscription's own scope on purpose: anyio re-delivers a
        cancellation on every loop iteration until the task leaves the scope, so a handler
        that swallows CancelledError would spin the loop at 100% CPU. Here it is told
        once (asyncio's own cancel, undone after), and one that ignores it is left
        running: stalled, then abandoned by stop().
        """
        task = asyncio.current_task()
        assert task is not None
        timer = None
        if self.handler_timeout is not None:
            timer = asyncio.get_running_loop().call_later(
                self.handler_timeout, self._interrupt, "timeout")
        self._awaiting, self._interrupted, self._interrupts = task, None, 0
        if self._stopping or self._rewinding:  # asked before the call began
            self._interrupt("stop")
        error: BaseException | None = None
        try:
            with anyio.CancelScope(shield=True):
                await result
        except BaseException as exc:  # judged below, once our own cancels are undone
            error = exc
        finally:
            self._awaiting = None
            if timer is not None:
                timer.cancel()
            for _ in range(self._interrupts):
                task.uncancel()
        reason, self._interrupted = self._interrupted, None
        if reason == "stop":
            raise _Stopped
        if reason == "timeout":
            self.timeouts += 1
            return HandlerTimeoutError(
                f"the handler of subscription {self.name or 'anonymous'} did not finish "
                f"event seq {event.seq} within handler_timeout={self.handler_timeout}s"
            )
        if error is not None:
            raise error
        return None

    def _interrupt(self, reason: str) -> None:
        """Cancel the async handler call in progress, once (see _await_handler)."""
        task = self._awaiting
        if task is None:
            return
        if reason == "stop" or self._interrupted is None:
            self._interrupted = reason
        self._interrupts += 1
        task.cancel()

    async def _give_up(self, event: RecordedEvent, exc: BaseException) -> None:
        log.error("subscription %s failed on event %s after %d attempts: %r",
                  self.name, event.seq, self.max_attempts, exc)
        self.disconnect()
        if self.durable:
            await self.save_checkpoint()
        # Marked failed only once the checkpoint is saved, so whoever sees FAILED also
        # sees the position it failed at persisted.
        self.failed_event = event
        self.status = Status.FAILED
        self._host.dispatcher.send(signals.subscription_failed, self._host.sender,
                                   subscription=self, event=event, exception=exc)
        raise _HandlerGaveUp from exc

    async def _fail_on_corrupt(self, exc: CorruptEventError) -> None:
        log.error("subscription %s failed: %s", self.name, exc)
        self.disconnect()
        self.last_error = exc
        self.failed_seq = exc.seq
        try:
            if self.durable:  # the events before the bad row were handled: keep that
                await self.save_checkpoint()
        except EventStoreError:
            log.exception("could not save the checkpoint of subscription %s", self.name)
        self.status = Status.FAILED
        self._host.dispatcher.send(signals.subscription_failed, self._host.sender,
                                   subscription=self, event=None, exception=exc)

    async def _maybe_checkpoint(self) -> None:
        if self.durable and self._position - self._saved_position >= self.checkpoint_every:
            await self.save_checkpoint()

    async def save_checkpoint(self) -> None:
        position = self.position
        if self.name is None or position == self._saved_position:
            return
        state = self.snapshot() if self.snapshot is not None else None
        await self._host.save_checkpoint(
            Checkpoint(name=self.name, position=position, state=state)
        )
        self._saved_position = position

    # --- control ----------------------------------------------------------------------

    # A timeout parameter rather than anyio.fail_after around the call: the error names
    # the position reached and the target, which an outer deadline cannot.
    async def caught_up(self, timeout: float | None = 30.0) -> int:  # noqa: ASYNC109
        """Wait until this subscription has handled every event committed before the call
        (the log's head then); returns its position. Raises SubscriptionError if it fails
        or is stopped first, CatchUpTimeoutError (a TimeoutError) after `timeout` seconds.
        """
        target = await self._host.head()
        self._registry.watch(self)
        try:
            with anyio.move_on_after(timeout):
                while True:
                    if self.status in (Status.FAILED, Status.STOPPED):
                        raise SubscriptionError(
                            f"subscription {self.describe()} cannot reach seq {target}; "
                            "see restart()"
                        )
                    position = self.position
                    if position >= target:
                        return position
                    await self._progress.wait()
        finally:
            self._registry.unwatch(self)
        raise CatchUpTimeoutError(
            f"subscription {self.describe()} did not reach seq {target} within {timeout}s"
        )

    async def restart(self) -> None:
        """Start again from `position` (after a crash, or to retry a failed event)."""
        if self.alive or self._stopping or self._rewinding:
            return
        self.restarts += 1
        self.failed_event = None
        self.failed_seq = None
        if not self.attached:
            self.connect()
        self.start()

    async def rewind(self, position: int = 0) -> None:
        """Throw away what the handler built and start over after `position`.

        Used when the events already handled changed the way they read (forget_user,
        retention): the task stops without saving its checkpoint (whose snapshot may hold
        what was erased), the inbox is dropped, `reset` clears the handler's state, and a
        running subscription starts again, catching up from the log.
        """
        if self._stopping or self._rewinding:
            return
        running = self.alive
        self._rewinding = True  # the guardian does not restart it meanwhile
        try:
            self._scope.cancel()
            self._interrupt("stop")
            await self._done.wait()
            self._inbox.clear()
            if self.reset is not None:
                self.reset()
            self._position = self._saved_position = position
        finally:
            self._rewinding = False
        if running:
            self.start()

    def request_stop(self) -> None:
        """Begin stopping (stop() waits for the end)."""
        if not self._stopping:
            self._stopping = True
            self._stop_deadline = time.monotonic() + self.stop_timeout
            self._scope.cancel()
            self._interrupt("stop")

    async def stop(self) -> None:
        """Stop the handler task, save the checkpoint, and detach from the store. Safe to
        call from inside the handler itself.

        Waits at most `stop_timeout` seconds for the handler call in progress to end. One
        that ignores its cancellation (or a threaded sync handler still blocking) is then
        abandoned: the subscription is marked FAILED on that event, its checkpoint stays
        before it (so it is delivered again on the next subscribe), `subscription_failed`
        is sent, and stop() returns; the abandoned call is left to end on its own.
        """
        self.request_stop()
        if not self.alive:  # crashed or failed: no task will finish the stop
            await self._finish_stop()
        with anyio.move_on_after(max(self._stop_deadline - time.monotonic(), 0)):
            await self._stopped.wait()
        if not self._stopped.is_set():
            await self._abandon()

    async def _abandon(self) -> None:
        if self._stopped.is_set() or self._abandoned:
            await self._stopped.wait()
            return
        self._abandoned = True
        event = self._calling
        label = self.name or "anonymous"
        stuck = (f"its handler call on event seq {event.seq}" if event is not None
                 else "its task")
        error = HandlerTimeoutError(
            f"subscription {label}: {stuck} did not end within stop_timeout="
            f"{self.stop_timeout}s of stop() (it ignores cancellation, or a sync handler "
            "is still blocking); abandoned it, the event is delivered again on the next "
            "subscribe")
        log.error("%s", error)
        self.last_error = error
        self.failed_event = event
        await self._finish_stop(failed=True)
        self._host.dispatcher.send(signals.subscription_failed, self._host.sender,
                                   subscription=self, event=event, exception=error)

    async def _finish_stop(self, *, failed: bool = False) -> None:
        if self._finishing:
            return
        self._finishing = True
        try:
            self.disconnect()
            if self.durable:
                await self.save_checkpoint()
        except EventStoreError:
            log.exception("could not save the checkpoint of subscription %s", self.name)
        finally:
            # FAILED only once the checkpoint is saved (see _give_up)
            if failed:
                self.status = Status.FAILED
            elif self.status != Status.FAILED:
                self.status = Status.STOPPED
            self._registry.remove(self)
            self._stopped.set()
            self._progress.pulse()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
