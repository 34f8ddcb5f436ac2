"""Operation signals around store methods: start, then stop or exception, with duration."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from . import signals

P = ParamSpec("P")
R = TypeVar("R")


class _HasDispatcher(Protocol):
    @property
    def dispatcher(self) -> signals.Dispatcher: ...


S = TypeVar("S", bound=_HasDispatcher)
Method = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]


def _connected() -> bool:
    return bool(
        signals.operation_start.receivers
        or signals.operation_stop.receivers
        or signals.operation_exception.receivers
    )


def instrumented(operation: str) -> Callable[[Method[S, P, R]], Method[S, P, R]]:
    """Send operation_start / operation_stop / operation_exception around an async method.

    With no receiver connected this costs one truthiness check per call.
    """

    def decorate(method: Method[S, P, R]) -> Method[S, P, R]:
        @functools.wraps(method)
        async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
            if not _connected():
                return await method(self, *args, **kwargs)
            dispatcher = self.dispatcher
            dispatcher.send(signals.operation_start, self, operation=operation)
            started = time.perf_counter()
            try:
                result = await method(self, *args, **kwargs)
            except BaseException as exc:
                dispatcher.send(
                    signals.operation_exception, self, operation=operation,
                    duration=time.perf_counter() - started, exception=exc,
                )
                raise
            dispatcher.send(
                signals.operation_stop, self, operation=operation,
                duration=time.perf_counter() - started,
            )
            return result

        return cast(Method[S, P, R], wrapper)

    return decorate


def send_span(
    owner: _HasDispatcher, operation: str, started: float, exc: BaseException | None
) -> None:
    """The end of a span that a decorator cannot wrap (an async generator)."""
    if not _connected():
        return
    kwargs: dict[str, Any] = {"operation": operation, "duration": time.perf_counter() - started}
    if exc is None:
        owner.dispatcher.send(signals.operation_stop, owner, **kwargs)
    else:
        owner.dispatcher.send(signals.operation_exception, owner, exception=exc, **kwargs)


def send_start(owner: _HasDispatcher, operation: str) -> float:
    if _connected():
        owner.dispatcher.send(signals.operation_start, owner, operation=operation)
    return time.perf_counter()
