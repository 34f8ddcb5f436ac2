"""The blinker signals eventstore sends, all in one Namespace.

Every signal is sent with the store as sender, so `signal.connect(fn, sender=store)`
scopes a receiver to one store.

- `event_appended(store, event=RecordedEvent)`: once per committed event, after commit.
- `operation_start(store, operation=str)`, `operation_stop(store, operation=str,
  duration=float seconds)`, `operation_exception(store, operation=str, duration=float,
  exception=BaseException)`: around every store operation, like telemetry spans.
- `guardian_repair(store, subscription=Subscription, repair=str, detail=str)`: the
  guardian fixed something (reconnected a receiver, restarted a task, caught up a lag).
- `subscription_failed(store, subscription=Subscription, event=RecordedEvent,
  exception=BaseException)`: a handler exhausted its attempts.
- `rebuild_progress(store, projection=Projection, position=int, head=int)`: replay progress.
- `checkpoint_written(store, checkpoint=str, size=int, path=Path | None)`: a checkpoint
  of the log's tree was handed to `checkpoint_dir` (`path`: the file, None for a callable).

Receivers may be sync or async. eventstore does not call `Signal.send`: it dispatches to
each receiver itself so that one receiver raising never stops the others or the append,
and so that async receivers never make an append wait (see `Dispatcher`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from blinker import Namespace, Signal

log = logging.getLogger("eventstore.signals")

namespace = Namespace()

event_appended = namespace.signal("event_appended")
operation_start = namespace.signal("operation_start")
operation_stop = namespace.signal("operation_stop")
operation_exception = namespace.signal("operation_exception")
guardian_repair = namespace.signal("guardian_repair")
subscription_failed = namespace.signal("subscription_failed")
rebuild_progress = namespace.signal("rebuild_progress")
checkpoint_written = namespace.signal("checkpoint_written")

_MAX_PENDING_ASYNC = 100_000


def _name(signal: Signal) -> str:
    return str(getattr(signal, "name", signal))


class Dispatcher:
    """Delivers signals receiver by receiver, isolating each one's errors.

    Sync receivers run inline. An async receiver's coroutine is queued for one pump task,
    which awaits them in order, so async receivers see events in commit order without an
    append ever waiting on them.
    """

    def __init__(self) -> None:
        self._pending: deque[Awaitable[Any]] = deque()
        self._wakeup = asyncio.Event()
        self.errors = 0
        self.dropped = 0

    def send(self, signal: Signal, sender: Any, **kwargs: Any) -> None:
        if not signal.receivers:
            return
        for receiver in signal.receivers_for(sender):
            try:
                result = receiver(sender, **kwargs)
            except Exception:
                self.errors += 1
                log.exception("receiver %r of signal %s raised; ignored", receiver, _name(signal))
                continue
            if inspect.isawaitable(result):
                self._enqueue(result, receiver, signal)

    def _enqueue(self, awaitable: Awaitable[Any], receiver: Any, signal: Signal) -> None:
        if len(self._pending) >= _MAX_PENDING_ASYNC:
            self.dropped += 1
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            log.error("async receiver %r of %s is too slow; dropped a delivery", receiver,
                      _name(signal))
            return
        self._pending.append(awaitable)
        self._wakeup.set()

    async def pump(self) -> None:
        """Await queued async deliveries forever (cancel to stop)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.drain()

    async def drain(self) -> None:
        while self._pending:
            awaitable = self._pending.popleft()
            try:
                await awaitable
            except Exception:
                self.errors += 1
                log.exception("async signal receiver raised; ignored")

    def discard(self) -> None:
        while self._pending:
            awaitable = self._pending.popleft()
            if inspect.iscoroutine(awaitable):
                awaitable.close()
