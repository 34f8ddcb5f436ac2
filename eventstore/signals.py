"""The blinker signals eventstore sends, all in one Namespace.

Every signal is sent with the store as sender, so `signal.connect(fn, sender=store)`
scopes a receiver to one store.

- `event_appended(store, event=RecordedEvent)`: once per committed event, after commit.
- `operation_start(store, operation=str)`, `operation_stop(store, operation=str,
  duration=float seconds)`, `operation_exception(store, operation=str, duration=float,
  exception=BaseException)`: around every store operation, like telemetry spans.
- `guardian_repair(store, subscription=Subscription, repair=str, detail=str)`: the
  guardian fixed something (reconnected a receiver, restarted a task, caught up a lag).
- `subscription_failed(store, subscription=Subscription, event=RecordedEvent | None,
  exception=BaseException)`: a handler exhausted its attempts, a stored event could not
  be read (event None), or stop() abandoned a handler call that did not end within the
  subscription's `stop_timeout` (a HandlerTimeoutError).
- `subscription_stalled(store, subscription=Subscription, event=RecordedEvent,
  elapsed=float seconds)`: a handler call overran its `handler_timeout` and has still
  not returned (it ignores its cancellation); sent once per stalled call.
- `rebuild_progress(store, projection=Projection, position=int, head=int)`: replay progress.
- `checkpoint_written(store, checkpoint=str, size=int, path=Path | None)`: a checkpoint
  of the log's tree was handed to `checkpoint_dir` (`path`: the file, None for a callable).
- `budget_warning` / `budget_exceeded(store, budget=Budget, scope=str, window=Window,
  spent=Decimal, limit=Decimal, event=RecordedEvent)`: a budget crossed a warn_at fraction
  or its limit in a window; sent once, by the process that appended the alert event.

Receivers may be sync or async. eventstore does not call `Signal.send`: it dispatches to
each receiver itself so that one receiver raising never stops the others or the append,
and so that async receivers never make an append wait (see `Dispatcher`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import anyio
from blinker import Namespace, Signal

from .errors import InvalidOptionError
from .events import RecordedEvent

log = logging.getLogger("eventstore.signals")

namespace = Namespace()

event_appended = namespace.signal("event_appended")
operation_start = namespace.signal("operation_start")
operation_stop = namespace.signal("operation_stop")
operation_exception = namespace.signal("operation_exception")
guardian_repair = namespace.signal("guardian_repair")
subscription_failed = namespace.signal("subscription_failed")
subscription_stalled = namespace.signal("subscription_stalled")
rebuild_progress = namespace.signal("rebuild_progress")
checkpoint_written = namespace.signal("checkpoint_written")
budget_warning = namespace.signal("budget_warning")
budget_exceeded = namespace.signal("budget_exceeded")

_MAX_PENDING_ASYNC = 100_000
DEFAULT_RECEIVER_TIMEOUT = 30.0

Reveal: TypeAlias = Callable[[list[RecordedEvent]], Awaitable[list[RecordedEvent]]]
# An async receiver whose call is put off until the pump delivers it, so that the event
# it gets is revealed at that moment (see Dispatcher.reveal_live).
_Deferred: TypeAlias = tuple[Callable[..., Any], Any, dict[str, Any], Signal]


def _name(signal: Signal) -> str:
    return str(getattr(signal, "name", signal))


def cancelled_from_outside() -> bool:
    """Whether the running task has been asked to stop (its scope was cancelled), as
    opposed to user code raising CancelledError of its own (for example `t.cancel();
    await t`), which is a failure of that code and must not end the task."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _is_async(receiver: Any) -> bool:
    function = getattr(receiver, "__func__", receiver)  # a bound method: its function
    try:
        return _is_async_function(function)
    except TypeError:  # unhashable: ask every time
        return _coroutine_function(function)


@functools.lru_cache(maxsize=1024)
def _is_async_function(function: Any) -> bool:
    # inspect is slow, and this is asked once per receiver per committed event
    return _coroutine_function(function)


def _coroutine_function(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None))  # noqa: B004 - an async __call__, not callable()


class Dispatcher:
    """Delivers signals receiver by receiver, isolating each one's errors.

    Sync receivers run inline; whatever they raise (even SystemExit, KeyboardInterrupt or
    CancelledError) is logged and counted, never passed on. An async receiver's call is
    queued for one pump task, which awaits them in order, each at most `timeout` seconds,
    so async receivers see events in commit order without an append ever waiting on them,
    and one that never returns holds up the others only that long.
    """

    def __init__(self, *, timeout: float | None = DEFAULT_RECEIVER_TIMEOUT,
                 reveal_live: Reveal | None = None) -> None:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(
                timeout, int | float) or not timeout > 0):
            raise InvalidOptionError(
                f"receiver_timeout must be a positive number of seconds or None, not "
                f"{timeout!r}")
        self._pending: deque[Awaitable[Any] | _Deferred] = deque()
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self.timeout = timeout
        # Applied to the `event=` of a queued async delivery when it is made, so that a
        # user forgotten meanwhile is not shown in plaintext by a delivery made after.
        self.reveal_live = reveal_live
        self.errors = 0
        self.dropped = 0
        self.timeouts = 0

    def send(self, signal: Signal, sender: Any, **kwargs: Any) -> None:
        if not signal.receivers:
            return
        for receiver in signal.receivers_for(sender):
            self._call(signal, sender, receiver, _is_async(receiver), kwargs)

    def send_each(self, signal: Signal, sender: Any, name: str, values: Sequence[Any]) -> None:
        """`send(signal, sender, **{name: value})` for each value in order, with the
        receivers looked up once rather than once per value (a commit signals each of
        its events): looked up again whenever their number changes, and one that was
        disconnected meanwhile is no longer called."""
        if not signal.receivers or not values:
            return
        receivers: list[tuple[Any, bool]] = []
        known = -1
        for value in values:
            connected = signal.receivers
            if len(connected) != known:
                known = len(connected)
                receivers = [(r, _is_async(r)) for r in signal.receivers_for(sender)]
            for receiver, is_async in receivers:
                self._call(signal, sender, receiver, is_async, {name: value})

    def _call(self, signal: Signal, sender: Any, receiver: Any, is_async: bool,
              kwargs: dict[str, Any]) -> None:
        """One receiver, one signal: an async receiver is queued for the pump; a sync one
        runs here, and an awaitable it returns is queued."""
        if is_async:
            self._enqueue((receiver, sender, kwargs, signal), receiver, signal)
            return
        try:
            result = receiver(sender, **kwargs)
        except BaseException:  # user code: whatever it raises must not end the sender
            self.errors += 1
            log.exception("receiver %r of signal %s raised; ignored", receiver, _name(signal))
            return
        if result is not None and inspect.isawaitable(result):
            self._enqueue(result, receiver, signal)

    def _enqueue(self, item: Awaitable[Any] | _Deferred, receiver: Any, signal: Signal) -> None:
        if len(self._pending) >= _MAX_PENDING_ASYNC:
            self.dropped += 1
            if inspect.iscoroutine(item):
                item.close()
            log.error("async receiver %r of %s is too slow; dropped a delivery", receiver,
                      _name(signal))
            return
        self._pending.append(item)
        self._wakeup.set()

    async def pump(self) -> None:
        """Await queued async deliveries forever (cancel to stop)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.drain()

    async def drain(self) -> None:
        """Make every queued delivery now (in order, after any being made)."""
        async with self._lock:
            while self._pending:
                await self._deliver(self._pending.popleft())

    async def _deliver(self, item: Awaitable[Any] | _Deferred) -> None:
        label: Any = item
        try:
            with anyio.move_on_after(self.timeout) as scope:
                if isinstance(item, tuple):
                    receiver, sender, kwargs, _ = label = item
                    event = kwargs.get("event")
                    if self.reveal_live is not None and isinstance(event, RecordedEvent):
                        (event,) = await self.reveal_live([event])
                        kwargs = {**kwargs, "event": event}
                    result = receiver(sender, **kwargs)
                    if inspect.isawaitable(result):
                        await result
                else:
                    await item
            if scope.cancel_called:
                self.timeouts += 1
                log.error("async signal receiver %r did not finish within %ss; abandoned",
                          label, self.timeout)
        except BaseException:
            if cancelled_from_outside():
                raise
            self.errors += 1
            log.exception("async signal receiver %r raised; ignored", label)

    def discard(self) -> None:
        while self._pending:
            item = self._pending.popleft()
            if inspect.iscoroutine(item):
                item.close()
