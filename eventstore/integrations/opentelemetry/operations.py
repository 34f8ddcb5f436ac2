"""`instrument_store`: the store's own operations as OpenTelemetry spans.

Every store operation already sends operation_start / operation_stop /
operation_exception signals with its duration (eventstore.signals). The stop signal is
sent in the task that ran the operation, so a span made at that moment, with its start
set `duration` back, nests under whatever span the caller had open, without keeping any
state between the two signals.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, TracerProvider

from ... import signals

if TYPE_CHECKING:
    from ...store import EventStore

__all__ = ["StoreInstrumentation", "instrument_store"]

SCOPE: Final = "eventstore"


class StoreInstrumentation:
    """The receivers `instrument_store` connected; `uninstrument()` disconnects them."""

    def __init__(self, store: EventStore, tracer_provider: TracerProvider | None) -> None:
        from importlib.metadata import version

        self._store = store
        self._tracer = trace.get_tracer(SCOPE, version("eventstore"),
                                        tracer_provider=tracer_provider)
        signals.operation_stop.connect(self._stopped, sender=store, weak=False)
        signals.operation_exception.connect(self._failed, sender=store, weak=False)

    def _span(self, operation: str, duration: float, exception: BaseException | None) -> None:
        end = time.time_ns()
        span = self._tracer.start_span(
            f"eventstore.{operation}", kind=trace.SpanKind.INTERNAL,
            start_time=end - int(duration * 1e9),
            attributes={"eventstore.operation": operation,
                        "db.system.name": "eventstore"},
        )
        if exception is not None:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
            span.set_attribute("error.type", type(exception).__qualname__)
        span.end(end_time=end)

    def _stopped(self, sender: Any, *, operation: str, duration: float, **_: Any) -> None:
        self._span(operation, duration, None)

    def _failed(self, sender: Any, *, operation: str, duration: float,
                exception: BaseException, **_: Any) -> None:
        self._span(operation, duration, exception)

    def uninstrument(self) -> None:
        """Stop making spans for this store."""
        signals.operation_stop.disconnect(self._stopped, sender=self._store)
        signals.operation_exception.disconnect(self._failed, sender=self._store)


def instrument_store(store: EventStore,
                     tracer_provider: TracerProvider | None = None) -> StoreInstrumentation:
    """Emit an OpenTelemetry span (`eventstore.append`, `eventstore.list_events`, ...) for
    every operation of `store`, with its duration and error (needs the `otel` extra)."""
    return StoreInstrumentation(store, tracer_provider)
