"""`EventStoreSpanExporter`: OpenTelemetry spans of model calls, recorded in the log.

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EventStoreSpanExporter(store)))

The SDK calls `export` on its own thread (BatchSpanProcessor's worker). The exporter
hands each batch to the store's event loop and waits there for the commit, so
`force_flush()` and `shutdown()` return once what was exported is in the log (or failed,
with a logged reason). The loop records a batch in chunks of `_CHUNK` calls, each one
`record_llm_calls` (one append), concurrently: a chunk is priced and built while the
one before it commits. The app's threads never wait on the store: ending a span only
queues it in the processor. On the store's own loop thread (a SimpleSpanProcessor in
async code) the batch is scheduled without waiting, since waiting would deadlock.

A call is recorded once. An eventstore SDK integration (`instrument_openai`, ...) that
records a call marks the span current when the call starts with `eventstore.recorded`
(that is OpenTelemetry's own SDK instrumentation's span, whichever was installed first:
eventstore hooks in below the SDK methods those instrumentations wrap); the exporter
records no call of a span so marked. So with both on, the integration records the call
(it sees the whole request and response) and the exporter records every other span.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from ...errors import EventStoreError
from ...events import Event, new_event_id
from .._recording import OTEL_MARK
from .spans import CallArgs, SpanData, call_of, is_genai

if TYPE_CHECKING:
    from ...store import EventStore

__all__ = ["TRACE_STEP", "EventStoreSpanExporter", "SpanRecorder", "from_sdk"]

log = logging.getLogger("eventstore.integrations.opentelemetry")

TRACE_STEP: Final = "trace_step"
_REMEMBERED: Final = 100_000
# calls per record_llm_calls: a batch goes in a few, so the loop prices and builds the
# next while the previous one commits
_CHUNK: Final = 128


def from_sdk(span: ReadableSpan) -> SpanData:
    """The mapping's view of an SDK span."""
    context = span.get_span_context()
    parent = span.parent
    scope = span.instrumentation_scope
    return SpanData(
        name=span.name,
        trace_id=format(context.trace_id, "032x") if context else "0" * 32,
        span_id=format(context.span_id, "016x") if context else "0" * 16,
        parent_span_id=format(parent.span_id, "016x") if parent is not None else None,
        start_ns=span.start_time or 0, end_ns=span.end_time or span.start_time or 0,
        attributes=dict(span.attributes or {}),
        events=[(e.name, dict(e.attributes or {})) for e in span.events],
        failed=span.status.status_code is StatusCode.ERROR,
        status_message=span.status.description,
        scope=scope.name if scope is not None else None,
    )


class SpanRecorder:
    """Turns finished spans into model calls and named steps (the exporter and the OTLP
    receiver share one per store). Runs on the store's loop."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._seen: OrderedDict[str, None] = OrderedDict()  # span ids recorded: a resent batch
        self._parents: OrderedDict[str, str] = OrderedDict()  # parent span id -> trace id
        self.recorded = 0
        self.skipped = 0

    @staticmethod
    def _remember(table: OrderedDict[str, Any], key: str, value: Any = None) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > _REMEMBERED:
            table.popitem(last=False)

    def plan(self, spans: Sequence[SpanData]) -> tuple[list[CallArgs], list[Event]]:
        """The calls and the step events a batch holds (pure; no I/O)."""
        calls: list[CallArgs] = []
        steps: list[Event] = []
        for span in spans:
            if span.span_id in self._seen:
                continue
            genai = is_genai(span)
            if genai and span.attributes.get(OTEL_MARK):  # an eventstore integration has it
                self.skipped += 1
                continue
            if genai:
                calls.append(call_of(span))
                self._remember(self._seen, span.span_id)
                if span.parent_span_id is not None:
                    self._remember(self._parents, span.parent_span_id, span.trace_id)
            elif span.span_id in self._parents:
                # A named parent (an agent run, a tool, a workflow step) of recorded calls:
                # children end first, so its name arrives after them.
                self._remember(self._seen, span.span_id)
                steps.append(Event(
                    type=TRACE_STEP, id=new_event_id(),
                    data={"name": span.name, "step_id": span.span_id,
                          "duration_ms": max(span.end_ns - span.start_ns, 0) / 1e6,
                          "failed": span.failed},
                    metadata={"trace_id": span.trace_id, "span_id": span.span_id,
                              "parent_step_id": span.parent_span_id or span.trace_id,
                              "source": "opentelemetry"},
                ))
        return calls, steps

    async def record(self, spans: Sequence[SpanData]) -> int:
        """Record a batch; returns how many calls could not be recorded. A call that
        cannot be recorded (a malformed span, a closed store) is logged and skipped: it
        never fails the others.

        The calls go to the store in chunks, each one `record_llm_calls` (one append);
        should a chunk fail, its calls are recorded one by one, so only the call at fault
        is lost: those of different conversations concurrently, those of one
        conversation in order, since each references the messages the previous ones
        stored. Chunks keep that order too (each takes its conversations' locks before
        the next is built); a chunk recorded one by one may land after the next."""
        calls, steps = self.plan(spans)
        done = sum(await asyncio.gather(*(self._record_chunk(calls[i:i + _CHUNK])
                                          for i in range(0, len(calls), _CHUNK))))
        if steps:
            await self._store.append_many(steps)
        self.recorded += done
        return len(calls) - done

    async def _record_chunk(self, calls: list[CallArgs]) -> int:
        try:
            return len(await self._store.record_llm_calls([c.kwargs() for c in calls]))
        except EventStoreError:
            pass  # one by one, so only the call at fault is lost
        by_conversation: dict[str | None, list[CallArgs]] = {}
        for call in calls:
            by_conversation.setdefault(call.conversation_id, []).append(call)
        return sum(await asyncio.gather(*(self._record_in_order(group)
                                          for group in by_conversation.values())))

    async def _record_in_order(self, calls: list[CallArgs]) -> int:
        done = 0
        for call in calls:
            try:
                await self._store.record_llm_call(**call.kwargs())
                done += 1
            except EventStoreError as exc:
                log.warning("span %s of trace %s not recorded: %s",
                            call.metadata.get("span_id"), call.metadata.get("trace_id"), exc)
        return done


class EventStoreSpanExporter(SpanExporter):
    """An OpenTelemetry SpanExporter that records every finished GenAI span as a model call
    (see the module docstring)."""

    def __init__(self, store: EventStore, *, timeout: float = 30.0) -> None:
        self._store = store
        self._recorder = SpanRecorder(store)
        self._timeout = timeout
        self._pending: set[concurrent.futures.Future[int]] = set()
        self._lock = threading.Lock()
        self._shut = False
        _warm_prices()

    @property
    def recorded(self) -> int:
        """How many calls this exporter recorded."""
        return self._recorder.recorded

    def _loop(self) -> asyncio.AbstractEventLoop | None:
        try:
            loop = self._store.loop
        except EventStoreError:
            return None
        return None if loop.is_closed() or not loop.is_running() else loop

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Record the batch; waits for the commit unless called on the store's own loop."""
        if self._shut:
            return SpanExportResult.FAILURE
        batch = [from_sdk(span) for span in spans]
        loop = self._loop()
        if loop is None:
            log.warning("%d spans not recorded: the store is closed", len(batch))
            return SpanExportResult.FAILURE
        future = asyncio.run_coroutine_threadsafe(self._recorder.record(batch), loop)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        if _on_loop(loop):
            return SpanExportResult.SUCCESS
        try:
            lost = future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            log.error("recording %d spans took over %.0f s; they are still on their way",
                      len(batch), self._timeout)
            return SpanExportResult.FAILURE
        except Exception:
            log.exception("%d spans not recorded", len(batch))
            return SpanExportResult.FAILURE
        return SpanExportResult.FAILURE if lost else SpanExportResult.SUCCESS

    def _done(self, future: concurrent.futures.Future[int]) -> None:
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("recording spans failed: %r", future.exception())

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every batch handed to the store is committed (or failed)."""
        with self._lock:
            pending = list(self._pending)
        if not pending:
            return True
        loop = self._loop()
        if loop is None or _on_loop(loop):
            return not pending if loop is None else False
        _, not_done = concurrent.futures.wait(pending, timeout=timeout_millis / 1000)
        return not not_done

    def shutdown(self) -> None:
        """Refuse further batches and wait (bounded) for those on their way. Returns at once
        when the store is closed."""
        self._shut = True
        self.force_flush(timeout_millis=int(self._timeout * 1000))


def _warm_prices() -> None:
    """Load genai-prices' dataset on a thread of its own now, so the first batch of spans
    does not wait the moment that takes on the store's loop."""
    def load() -> None:
        from genai_prices import data_snapshot

        data_snapshot.get_snapshot()

    threading.Thread(target=load, name="eventstore-prices-warmup", daemon=True).start()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
