"""Fault injection (issue 12): whatever a subscription handler (async, sync on the loop,
or sync in a worker thread with `threaded=True`) or an `event_appended` receiver does —
raise an Exception, CancelledError, SystemExit or KeyboardInterrupt, block forever on an
event never set, or block the thread — appends still complete within a bound, the other
subscriptions keep receiving, the guardian still runs, and the store closes within a
bound. Every backend. A sync handler on the loop blocks appends for as long as it sleeps
(so it sleeps briefly here); a threaded one blocks only itself, for as long as it likes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anyio
import pytest

from eventstore import Event, RecordedEvent, signals
from eventstore.subscriptions import Status

from .conftest import StoreFactory, wait_for

FAULTS = ["exception", "cancelled", "system_exit", "keyboard_interrupt", "block_forever",
          "block_thread"]
PLACES = ["handler", "threaded_handler", "async_receiver", "sync_receiver"]
BLOCKED_THREAD = 0.2  # seconds a sync callee sleeps on the loop's thread
BLOCKED_WORKER = 60.0  # at most, a threaded handler blocks its worker (released at the end)
APPEND_BOUND = 10.0
CLOSE_BOUND = 10.0


def message(i: int) -> Event:
    return Event(type="message_sent", conversation_id="c1", user_id="u1",
                 data={"role": "user", "content": f"m{i}"})


class Faulty:
    """The fault, as a sync or an async callee; `calls` counts how often it was reached."""

    def __init__(self, fault: str, threaded: bool = False) -> None:
        self.fault = fault
        self.threaded = threaded
        self.calls = 0
        self.returned = 0
        self.never = asyncio.Event()
        self.release = threading.Event()

    def _raise(self) -> None:
        if self.fault == "exception":
            raise RuntimeError("injected")
        if self.fault == "cancelled":
            raise asyncio.CancelledError()
        if self.fault == "system_exit":
            raise SystemExit(1)
        if self.fault == "keyboard_interrupt":
            raise KeyboardInterrupt

    async def async_call(self) -> None:
        self.calls += 1
        if self.fault == "block_forever":
            await self.never.wait()
        elif self.fault == "cancelled":  # the way it happens in real code
            inner = asyncio.ensure_future(asyncio.sleep(10))
            await asyncio.sleep(0)
            inner.cancel()
            await inner
        else:
            await asyncio.sleep(0)
            self._raise()

    def sync_call(self) -> None:
        self.calls += 1
        if self.fault == "block_thread":
            if self.threaded:  # its worker thread, far longer than the bounds below
                self.release.wait(BLOCKED_WORKER)
            else:
                time.sleep(BLOCKED_THREAD)
            self.returned += 1
        else:
            self._raise()


def applies(fault: str, place: str) -> bool:
    # a sync callee cannot await an event; blocking the thread is a sync callee's fault
    if place == "sync_receiver":
        return fault != "block_forever"
    if place == "async_receiver":
        return fault != "block_thread"
    if place == "threaded_handler":
        return fault != "block_forever"
    return True


CASES = [pytest.param(f, p, id=f"{f}-{p}") for f in FAULTS for p in PLACES if applies(f, p)]


@pytest.mark.parametrize(("fault", "place"), CASES)
async def test_a_faulty_callee_never_stops_the_store(
    open_store: StoreFactory, fault: str, place: str,
) -> None:
    faulty = Faulty(fault, threaded=place == "threaded_handler")
    store = open_store(receiver_timeout=0.2)
    healthy: list[int] = []

    async def async_handler(event: RecordedEvent) -> None:
        await faulty.async_call()

    def sync_handler(event: RecordedEvent) -> None:
        faulty.sync_call()

    async def async_receiver(sender: Any, event: RecordedEvent) -> None:
        await faulty.async_call()

    def sync_receiver(sender: Any, event: RecordedEvent) -> None:
        faulty.sync_call()

    receiver: Any = None
    with anyio.fail_after(APPEND_BOUND):
        await store.start()
        if place in ("handler", "threaded_handler"):
            threaded = place == "threaded_handler"
            handler = sync_handler if fault == "block_thread" or threaded else async_handler
            sub = await store.subscribe(handler, name="faulty", handler_timeout=0.1,
                                        max_attempts=2, backoff=0.001, max_backoff=0.01,
                                        threaded=threaded, stop_timeout=0.5)
        else:
            receiver = async_receiver if place == "async_receiver" else sync_receiver
            signals.event_appended.connect(receiver, sender=store)
        good = await store.subscribe(lambda e: healthy.append(e.seq), name="healthy")
    try:
        with anyio.fail_after(APPEND_BOUND):
            recs = [await store.append(message(i)) for i in range(3)]
            recs += await asyncio.gather(*(store.append(message(i)) for i in range(3, 10)))
            assert sorted(r.seq for r in recs) == list(range(1, 11))
            await wait_for(lambda: faulty.calls >= 1)
            await good.caught_up(timeout=APPEND_BOUND)
            assert healthy == list(range(1, 11))
            assert good.status == Status.RUNNING
            assert await store.guardian.check() == []
            handled = place in ("handler", "threaded_handler")
            if handled and fault != "block_thread":
                await wait_for(lambda: sub.status == Status.FAILED)
                assert sub.failed_event is not None and sub.failed_event.seq == 1
            elif handled and place == "threaded_handler":
                # all of the above happened while its worker thread stayed blocked
                assert faulty.returned == 0 and sub.position == 0
                await wait_for(lambda: sub.overdue(time.monotonic()) is not None)
                assert await store.guardian.check() == []
                assert sub.status == Status.STALLED
            later = await store.append(message(99))
            await wait_for(lambda: healthy[-1] == later.seq)
    finally:
        if receiver is not None:
            signals.event_appended.disconnect(receiver, sender=store)
        try:
            with anyio.fail_after(CLOSE_BOUND):  # a blocked worker is abandoned
                await store.close()
        finally:
            faulty.release.set()
    assert store.subscriptions == []
    if place == "threaded_handler" and fault == "block_thread":
        assert faulty.returned == 0 and sub.status == Status.FAILED
        assert sub.failed_event is not None and sub.failed_event.seq == 1
        await wait_for(lambda: not sub.alive)  # released, its task ends, counting nothing
        assert faulty.returned == 1 and sub.position == 0
