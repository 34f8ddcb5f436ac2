"""What the provider integrations share: one in-flight call, and writing it to the store
through `record_llm_call` from sync or async code.

Two rules shape everything here. The caller gets exactly what the SDK returned (the same
objects; a stream is the SDK's own stream object with its iterator wrapped) and the SDK's
exceptions unchanged. And recording never fails the caller's request: every failure to
record becomes a log warning and a count in `stats`.

Sync clients and the async store. The store lives on one event loop (the one it was
opened on). A sync client call records like this:
- off that loop's thread (a worker thread, `asyncio.to_thread`, or a sync app that runs
  the store's loop in a background thread): the write is submitted to the store's loop
  with `run_coroutine_threadsafe` and the call waits for it, at most `record_timeout`
  seconds, so the events are in the log when the call returns (or, for a stream, when it
  ends). Past the timeout the write stays queued and the wait gives up with a warning.
- on the loop's own thread (a sync client called inside a coroutine): waiting would
  deadlock, so the write is scheduled on the loop fire-and-forget.
Async clients await the write on the store's loop (or submit it there from another loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from ..budgets.enforce import refuse_if_exhausted, refuse_if_exhausted_sync
from ..calls import to_json
from ..calls.streams import StreamAccumulator, accumulator_for
from ..scope import current_attribution

if TYPE_CHECKING:
    from ..store import EventStore

log = logging.getLogger("eventstore.integrations")


class IntegrationStats:
    """Process-wide counters of the instrumented calls (safe to read from any thread).

    `failures` counts every record that could not be written: a closed or failing store,
    a redact hook that raised, a write that timed out, a response this code could not
    read. `unpriced` counts calls recorded without a cost (unknown price or no usage).
    `refused` counts calls made on a path that is not recorded (each warned about).
    """

    _names: Final = ("calls", "recorded", "failures", "unpriced", "errors", "refused")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.recorded = 0
        self.failures = 0
        self.unpriced = 0
        self.errors = 0
        self.refused = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {name: getattr(self, name) for name in self._names}

    def __repr__(self) -> str:
        return f"IntegrationStats({self.snapshot()})"


stats = IntegrationStats()
_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object) -> None:
    """A warning the first time, debug after."""
    if key in _warned:
        log.debug(message, *args)
    else:
        _warned.add(key)
        log.warning(message, *args)


def refuse(provider: str, path: str, why: str) -> None:
    """A call on a path this integration does not record: counted and named, never silent."""
    stats.add("refused")
    warn_once(f"refused:{provider}:{path}",
              "eventstore does not record %s calls made through %s: %s", provider, path, why)


def failed(what: str, exc: BaseException) -> None:
    stats.add("failures")
    log.warning("eventstore could not record %s: %s: %s", what, type(exc).__name__, exc,
                exc_info=log.isEnabledFor(logging.DEBUG))


@dataclass(frozen=True, slots=True)
class Binding:
    """What `instrument_*` was given: where and under which ids a client's calls go."""

    store: EventStore
    provider: str
    conversation_id: str | None
    user_id: str | None
    metadata: Mapping[str, Any]
    record_messages: bool
    record_timeout: float
    enforce_budgets: bool = False


@dataclass(slots=True)
class Call:
    """One model call in flight: its request, timings, attempts and (for streams) the
    accumulated response."""

    binding: Binding
    flavor: str
    path: str
    request: dict[str, Any]
    conversation_id: str | None
    user_id: str | None
    metadata: dict[str, Any]
    stream: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)
    attempts: int = 0
    first_token_ms: float | None = None
    latency_ms: float | None = None
    response: dict[str, Any] | None = None
    error: BaseException | None = None
    incomplete: bool = False
    acc: StreamAccumulator | None = None
    done: bool = False

    def observe(self, event: Any) -> None:
        """One stream event: folded into the response; the first output stamps TTFT."""
        if self.acc is None:
            self.acc = accumulator_for(self.flavor)
        if self.acc.add(to_json(event)) and self.first_token_ms is None:
            self.first_token_ms = (time.perf_counter() - self.t0) * 1000

    def end(self, response: Any = None, error: BaseException | None = None, *,
            incomplete: bool = False) -> bool:
        """Close the call once; False if it was already closed."""
        if self.done:
            return False
        self.done = True
        self.latency_ms = (time.perf_counter() - self.t0) * 1000
        if self.acc is not None:
            self.response = self.acc.body()
        elif response is not None:
            self.response = to_json(response)
        if error is not None and not isinstance(error, Exception):
            # Cancelled, closed or interrupted: the call did not fail, it was cut short.
            error, incomplete = None, True
        self.error = error
        self.incomplete = incomplete
        return True


# The call whose HTTP attempts are being made in this context (the SDK's retry loop runs
# inside the call, in the same thread or task).
current_call: ContextVar[Call | None] = ContextVar("eventstore_current_call", default=None)


def start_call(binding: Binding, flavor: str, path: str, request: Mapping[str, Any],
               *, stream: bool) -> Call:
    """The call's attribution is fixed when it starts: a stream that ends outside the
    caller's `conversation(...)` block still belongs to it."""
    stats.add("calls")
    scope = current_attribution()
    call = Call(
        binding=binding, flavor=flavor, path=path, request=to_json(dict(request)),
        conversation_id=binding.conversation_id if binding.conversation_id is not None
        else scope.conversation_id,
        user_id=binding.user_id if binding.user_id is not None else scope.user_id,
        metadata={**scope.metadata, **binding.metadata}, stream=stream,
    )
    mark_current_span()
    return call


def _budget_ids(call: Call) -> dict[str, Any]:
    model = call.request.get("model")
    return {"provider": call.binding.provider, "model": model if isinstance(model, str)
            else None, "user_id": call.user_id, "conversation_id": call.conversation_id,
            "metadata": call.metadata}


def enforce_sync(call: Call) -> None:
    """Before a sync request leaves: with enforce_budgets=True, refuse it (and record the
    refusal) with BudgetExceededError when a budget it falls under is exhausted."""
    if call.binding.enforce_budgets:
        refuse_if_exhausted_sync(call.binding.store, timeout=call.binding.record_timeout,
                                 **_budget_ids(call))


async def enforce_async(call: Call) -> None:
    """enforce_sync for an async request (on the store's loop, or submitted to it)."""
    if not call.binding.enforce_budgets:
        return
    store = call.binding.store
    check = refuse_if_exhausted(store, **_budget_ids(call))
    if _running_loop() is store_loop(store):
        await check
    else:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(check, store.loop))


# The attribute an integration puts on the OpenTelemetry span current when a call starts
# (OpenTelemetry's own SDK instrumentation's span, or the app's), so that
# EventStoreSpanExporter, seeing that span, does not record the same call a second time.
OTEL_MARK: Final = "eventstore.recorded"


def mark_current_span() -> None:
    """Tell the span exporter this call is recorded here (a no-op without OpenTelemetry)."""
    if "opentelemetry.trace" not in sys.modules:  # nobody traces: nothing to mark
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(OTEL_MARK, True)


def count_attempt() -> None:
    """One HTTP attempt of the current call (the SDK's retry loop calls this per try)."""
    call = current_call.get()
    if call is not None:
        call.attempts += 1


# --- writing -----------------------------------------------------------------------------


async def write(call: Call) -> None:
    """Record the call through record_llm_call; nothing raises."""
    binding = call.binding
    try:
        model = call.request.get("model")
        event = await binding.store.record_llm_call(
            provider=binding.provider,
            model=model if isinstance(model, str) else None,
            request=call.request, response=call.response, latency_ms=call.latency_ms,
            error=call.error, conversation_id=call.conversation_id, user_id=call.user_id,
            metadata=call.metadata, occurred_at=call.started_at, api=call.flavor,
            stream=call.stream, time_to_first_token_ms=call.first_token_ms,
            attempts=call.attempts or None, incomplete=call.incomplete,
            record_messages=binding.record_messages,
        )
    except Exception as exc:
        failed(f"a {binding.provider} call", exc)
        return
    stats.add("recorded")
    if call.error is not None:
        stats.add("errors")
    if not event.data.get("priced"):
        stats.add("unpriced")
        warn_once(f"unpriced:{binding.provider}:{event.data.get('model')}",
                  "eventstore recorded a %s call to %s without a cost: %s", binding.provider,
                  event.data.get("model"), event.data.get("unpriced_reason"))


def store_loop(store: EventStore) -> asyncio.AbstractEventLoop:
    # Every store operation must run on this loop (the writer, the backend's connections
    # and locks live there); StoreClosedError (a RuntimeError) if it was never opened.
    loop = store.loop
    if loop.is_closed() or not loop.is_running():
        raise RuntimeError("the store's event loop is not running (was the store closed?)")
    return loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# Fire-and-forget writes, held so the loop does not drop them (it keeps only weak refs).
_pending: set[asyncio.Future[None] | concurrent.futures.Future[None]] = set()


def _keep(future: asyncio.Future[None] | concurrent.futures.Future[None]) -> None:
    _pending.add(future)
    future.add_done_callback(_pending.discard)


def record_sync(call: Call, *, wait: bool = True) -> None:
    """Write the call from sync code (see the module docstring); never raises."""
    try:
        loop = store_loop(call.binding.store)
        if _running_loop() is loop:
            _keep(loop.create_task(write(call), name="eventstore-record"))
            return
        future = asyncio.run_coroutine_threadsafe(write(call), loop)
        if not wait:
            _keep(future)
            return
        try:
            future.result(timeout=call.binding.record_timeout)
        except concurrent.futures.TimeoutError:
            _keep(future)
            stats.add("failures")
            log.warning(
                "eventstore: recording a %s call did not finish within %ss (is the store's "
                "event loop blocked?); it stays queued and the call goes on",
                call.binding.provider, call.binding.record_timeout,
            )
    except Exception as exc:
        failed(f"a {call.binding.provider} call", exc)


async def record_async(call: Call) -> None:
    """Write the call from a coroutine, on the store's loop; never raises."""
    try:
        loop = store_loop(call.binding.store)
        if _running_loop() is loop:
            await write(call)
            return
        future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(write(call), loop))
        done, _ = await asyncio.wait({future}, timeout=call.binding.record_timeout)
        if not done:
            _keep(future)
            stats.add("failures")
            log.warning("eventstore: recording a %s call did not finish within %ss; it "
                        "stays queued", call.binding.provider, call.binding.record_timeout)
    except Exception as exc:
        failed(f"a {call.binding.provider} call", exc)
