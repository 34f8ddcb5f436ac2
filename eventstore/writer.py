"""Group commit: one writer task per store turns many concurrent appends into few
transactions.

Callers queue their request and await a future; the writer takes everything queued (up to
`max_group` events), commits it as one group through the backend, and resolves each
caller with its own result or its own error. While a group is being committed, new
requests pile up and form the next group, so the busier the store, the larger the groups.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from .backends.base import Backend
from .codec import PreparedEvent
from .errors import BackendError, StoreClosedError
from .events import RecordedEvent

log = logging.getLogger("eventstore.writer")

_Request = tuple[Sequence[PreparedEvent], "asyncio.Future[list[RecordedEvent]]"]


class GroupCommitWriter:
    def __init__(
        self,
        backend: Backend,
        on_commit: Callable[[list[RecordedEvent]], Awaitable[None]],
        *,
        max_group: int = 5_000,
    ) -> None:
        self._backend = backend
        self._on_commit = on_commit
        self._max_group = max_group
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._in_flight: asyncio.Event | None = None  # set once the group has signalled

    async def submit(self, prepared: Sequence[PreparedEvent]) -> list[RecordedEvent]:
        if self._closing:
            raise StoreClosedError("the store is closed; open it again to append")
        future: asyncio.Future[list[RecordedEvent]] = asyncio.get_running_loop().create_future()
        self._queue.append((prepared, future))
        self._wakeup.set()
        return await future

    def _take_group(self) -> list[_Request]:
        group: list[_Request] = []
        size = 0
        while self._queue and (not group or size + len(self._queue[0][0]) <= self._max_group):
            request = self._queue.popleft()
            if request[1].done():  # the caller was cancelled before we got to it
                continue
            group.append(request)
            size += len(request[0])
        return group

    async def run(self) -> None:
        """The writer task body: commit groups until closed and drained."""
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            # One turn of the loop first: the callers the last commit answered (and any
            # task it woke) queue their next appends in it, so they join this group
            # instead of waiting for the next commit behind a lone early request.
            await asyncio.sleep(0)
            group = self._take_group()
            if group:
                await self._commit(group)

    async def settled(self) -> None:
        """Wait until the group being committed now, if any, has answered its callers and
        sent its commit signals."""
        in_flight = self._in_flight
        if in_flight is not None:
            await in_flight.wait()

    async def _commit(self, group: list[_Request]) -> None:
        self._in_flight = in_flight = asyncio.Event()
        try:
            await self._commit_group(group)
        finally:
            in_flight.set()
            if self._in_flight is in_flight:
                self._in_flight = None

    async def _commit_group(self, group: list[_Request]) -> None:
        try:
            outcomes, committed = await self._backend.commit_group([req for req, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                if not future.done():
                    future.set_exception(StoreClosedError(
                        "the store closed while this append was in flight; it may or may not "
                        "have been written: append the same event (same id) again to be sure"
                    ))
            raise
        except Exception as exc:
            waiting = [request for request in group if not request[1].done()]
            if len(waiting) > 1:
                # One bad request (a value the database refuses) must not fail the others:
                # commit each alone, so only the bad one fails. Ids are idempotency keys,
                # so a request the failed group did commit after all is matched, not
                # written twice.
                log.warning("a group of %d appends failed (%r); committing them one by one",
                            len(waiting), exc)
                for request in waiting:
                    await self._commit_group([request])
                return
            error = exc if isinstance(exc, BackendError) else BackendError(
                f"append failed in the backend: {exc!r}; nothing in this group was written"
            )
            if error is not exc:
                error.__cause__ = exc
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue  # cancelled while committing: the write stands, nobody is waiting
            if isinstance(outcome, list):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)
        if committed:
            # The callers' futures are resolved but they run only once this task yields:
            # on_commit signals first (it does not yield unless it must re-read events
            # of a user forgotten meanwhile), so a caller sees its event signalled.
            try:
                await self._on_commit(committed)
            except Exception:  # the commit stands whatever a listener does
                log.exception("post-commit dispatch failed")

    def close(self) -> None:
        """Refuse new appends; `run` returns once everything queued is committed."""
        self._closing = True
        self._wakeup.set()
