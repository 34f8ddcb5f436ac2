"""The whole EventStore API without `await`, for scripts and WSGI apps (Flask, Django).

    from eventstore.sync import SyncEventStore

    with SyncEventStore.open("sqlite:///audit.db") as store:
        store.append(Event(type="message_sent", ...))
        for event in store.read():
            ...

The store runs on an event loop of its own, on a daemon thread, and every call is handed
to it and waited for, so any number of threads may share one SyncEventStore (concurrent
appends still share transactions). Each call runs in a copy of the caller's context, so
`with store.conversation("c1"):` in a request thread attributes what that thread records.
A store left open is closed when the interpreter exits, committing what was queued.

The sync methods are made from EventStore's own: every public coroutine method becomes
a blocking one, every async iterator (`read`) a plain iterator, and a Subscription comes
back as a SyncSubscription. Anything else (`conversation()`, `url`, `guardian`) is the
EventStore's attribute as it is. Subscription handlers run on the store's thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import concurrent.futures.thread  # registers the pools' exit hook before ours (see below)
import contextvars
import functools
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from .errors import StoreClosedError
from .scope import MetadataScope
from .store import EventStore
from .subscriptions import Subscription

__all__ = ["SyncEventStore", "SyncProxy", "SyncSubscription"]

T = TypeVar("T")

READ_CHUNK = 500  # events fetched per hop to the store's thread while iterating

_open_stores: weakref.WeakSet[SyncEventStore] = weakref.WeakSet()


class _LoopThread:
    """An event loop running forever on a daemon thread, and a way to run coroutines on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run `make()` on the loop in a copy of the caller's context; wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a SyncEventStore method was called from its own store's "
                               "thread (a subscription handler?): use the async EventStore")
        context = contextvars.copy_context()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        running: list[asyncio.Task[T]] = []

        def start() -> None:
            async def body() -> T:
                return await make()

            task = self.loop.create_task(body(), context=context)

            def finish(t: asyncio.Task[T]) -> None:
                if t.cancelled():
                    done.cancel()
                elif (exc := t.exception()) is not None:
                    done.set_exception(exc)
                else:
                    done.set_result(t.result())

            task.add_done_callback(finish)
            running.append(task)

        self.loop.call_soon_threadsafe(start)
        try:
            return done.result()
        except BaseException:
            # interrupted (KeyboardInterrupt): do not leave the call running unseen
            if running and not done.done():
                self.loop.call_soon_threadsafe(running[0].cancel)
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _iterate(runner: _LoopThread, iterator: AsyncIterator[T]) -> Iterator[T]:
    async def take() -> list[T]:
        out: list[T] = []
        try:
            while len(out) < READ_CHUNK:
                out.append(await iterator.__anext__())
        except StopAsyncIteration:
            pass
        return out

    try:
        while True:
            chunk = runner.run(take)
            yield from chunk
            if len(chunk) < READ_CHUNK:
                return
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            runner.run(close)


class SyncProxy:
    """A Subscription or a scope whose coroutine methods block (`sub.stop()`,
    `scope.thumbs_up()`); everything else, `with` included, is the object's own."""

    def __init__(self, target: Any, runner: _LoopThread) -> None:
        self.target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        return _sync_attribute(getattr(self.target, name), self._runner)

    def __enter__(self) -> Self:
        self.target.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.target.__exit__(exc_type, exc, tb)


SyncSubscription = SyncProxy


def _sync_result(value: Any, runner: _LoopThread) -> Any:
    return SyncProxy(value, runner) if isinstance(value, Subscription | MetadataScope) else value


def _sync_attribute(value: Any, runner: _LoopThread) -> Any:
    if inspect.iscoroutinefunction(value):
        @functools.wraps(value)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return _sync_result(runner.run(lambda: value(*args, **kwargs)), runner)

        return blocking
    if inspect.isasyncgenfunction(value):
        @functools.wraps(value)
        def iterating(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return _iterate(runner, value(*args, **kwargs))

        return iterating
    if inspect.ismethod(value):  # conversation(), trace(): their scopes' coroutines block
        @functools.wraps(value)
        def plain(*args: Any, **kwargs: Any) -> Any:
            return _sync_result(value(*args, **kwargs), runner)

        return plain
    return value


class SyncEventStore:
    """An EventStore for code without an event loop (see the module docstring)."""

    def __init__(self, make: Callable[[], EventStore]) -> None:
        self._runner = _LoopThread("eventstore-sync")

        async def build() -> EventStore:
            return make()  # on the store's loop, where its asyncio objects belong

        try:
            self.store: EventStore = self._runner.run(build)
        except BaseException:
            self._runner.stop()
            raise
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str, **options: Any) -> SyncEventStore:
        """A store for `url`, with the options of `EventStore.open`; use it as
        `with SyncEventStore.open(url) as store:` (or call start() and close())."""
        return cls(lambda: EventStore.open(url, **options))

    def start(self) -> Self:
        """Open the store (the `with` statement does it)."""
        if self._closed:
            raise StoreClosedError("this SyncEventStore was closed; open a new one")
        self._runner.run(self.store.start)
        _open_stores.add(self)
        return self

    def close(self) -> None:
        """Close the store (committing what is queued) and stop its thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _open_stores.discard(self)
        try:
            self._runner.run(self.store.close)
        finally:
            self._runner.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # Methods EventStore gains after this module was imported, and plain attributes.
        return _sync_attribute(getattr(self.store, name), self._runner)


def _twin(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        def iterating(self: SyncEventStore, *args: Any, **kwargs: Any) -> Iterator[Any]:
            return _iterate(self._runner, getattr(self.store, name)(*args, **kwargs))

        return iterating

    @functools.wraps(method)
    def blocking(self: SyncEventStore, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.store, name)
        return _sync_result(self._runner.run(lambda: bound(*args, **kwargs)), self._runner)

    return blocking


def async_methods() -> dict[str, Callable[..., Any]]:
    """EventStore's public coroutine and async-iterator methods, by name."""
    return {name: fn for name, fn in inspect.getmembers(EventStore)
            if not name.startswith("_") and name not in ("start", "close")
            and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))}


for _name, _method in async_methods().items():
    setattr(SyncEventStore, _name, _twin(_name, _method))


def _close_at_exit() -> None:
    for store in list(_open_stores):
        store.close()


# Plain atexit handlers run after the interpreter has shut every thread pool down, when
# the backends can no longer hand work to their threads; hooks registered with threading
# run before that, newest first, so this one runs ahead of the pools' own (imported
# above, so registered first).
getattr(threading, "_register_atexit", atexit.register)(_close_at_exit)
