"""What the provider integrations share: one call's record, writing it to the store, and
wrapping a client's `create` method and the streams it returns.

Two rules shape everything here. The caller gets exactly what the SDK returned (the same
objects; a stream is the SDK's own stream object with its iterator wrapped) and the SDK's
exceptions unchanged. And recording never fails the caller's request: every failure to
record becomes a log warning and a count in `stats`.

Sync clients and the async store. The store lives on one event loop (the one it was
opened on). A sync client call records like this:
- off that loop's thread (a worker thread, `asyncio.to_thread`, or a sync app that runs
  the store's loop in a background thread): the write is submitted to the store's loop
  with `run_coroutine_threadsafe` and the call waits for it, at most `record_timeout`
  seconds, so the events are in the log when `create` returns (or, for a stream, when it
  ends). Past the timeout the write stays queued and the wait gives up with a warning:
  a blocked loop can delay the caller, never hang it.
- on the loop's own thread (a sync client called inside a coroutine, which blocks the
  loop for the whole HTTP request; prefer the async client there): waiting would
  deadlock, so the write is scheduled on the loop fire-and-forget and happens as soon as
  the caller next yields to the loop.
Async clients await the write on the store's loop (or submit it there if they run on
another loop), so the events are in the log when `create` returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import UnknownModelError
from ..events import MESSAGE_SENT, Event
from ..scope import current_attribution

if TYPE_CHECKING:
    from ..store import EventStore

log = logging.getLogger("eventstore.integrations")

LLM_ERROR: Final = "llm_error"
# Marks a wrapped `create` so instrumenting a client twice re-binds instead of recording
# every call twice.
_ORIGINAL: Final = "__eventstore_original__"
_MAX_ERROR_MESSAGE: Final = 2_000


class IntegrationStats:
    """Process-wide counters of the instrumented calls (safe to read from any thread).

    `failures` counts every record that could not be written in full: a closed or failing
    store, a redact hook that raised, an unknown model price, a write that timed out, or a
    response this code could not read. `unknown_models` and `missing_usage` (calls whose
    tokens the provider did not report, so no cost was recorded) break some of them out.
    """

    _names: Final = ("calls", "recorded", "failures", "unknown_models", "missing_usage",
                     "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.recorded = 0
        self.failures = 0
        self.unknown_models = 0
        self.missing_usage = 0
        self.errors = 0

    def add(self, name: str, n: int = 1) -> None:
        # += on an attribute is not atomic across threads, and sync clients record from many.
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {name: getattr(self, name) for name in self._names}

    def __repr__(self) -> str:
        return f"IntegrationStats({self.snapshot()})"


stats = IntegrationStats()
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    """A warning the first time, debug after: a missing-usage stream repeats on every call."""
    if key in _warned:
        log.debug(message, *args)
    else:
        _warned.add(key)
        log.warning(message, *args)


def _failed(what: str, exc: BaseException) -> None:
    stats.add("failures")
    log.warning("eventstore could not record %s: %s: %s", what, type(exc).__name__, exc,
                exc_info=log.isEnabledFor(logging.DEBUG))


# --- one call ----------------------------------------------------------------------------


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


@dataclass(slots=True)
class Usage:
    """Token counts in OpenTelemetry's sense: input includes cache reads and writes."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int | None = None


@dataclass(slots=True)
class Reply:
    text: str = ""
    tool_calls: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Call:
    binding: Binding
    api: str
    stream: bool
    request_model: str | None
    prompt: str | None
    conversation_id: str | None
    user_id: str | None
    metadata: dict[str, Any]
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)
    ended_at: datetime | None = None
    latency_ms: float | None = None
    first_token_ms: float | None = None
    replies: list[Reply] = field(default_factory=list)
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    usage: Usage | None = None
    # Why usage is None, for the warning: None means the response simply had none.
    usage_note: str | None = None
    error: BaseException | None = None
    incomplete: bool = False
    done: bool = False

    def first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = (time.perf_counter() - self.t0) * 1000

    def end(self, error: BaseException | None = None, *, incomplete: bool = False) -> None:
        self.latency_ms = (time.perf_counter() - self.t0) * 1000
        self.ended_at = datetime.now(UTC)
        self.error = error
        self.incomplete = incomplete


def start_call(binding: Binding, api: str, kwargs: Mapping[str, Any],
               prompt: Callable[[Mapping[str, Any]], str | None]) -> Call:
    """The call's attribution is fixed here, when it starts: a stream that ends outside the
    caller's `conversation(...)` block still belongs to it."""
    scope = current_attribution()
    model = kwargs.get("model")
    return Call(
        binding=binding, api=api, stream=kwargs.get("stream") is True,
        request_model=model if isinstance(model, str) else None,
        prompt=prompt(kwargs) if binding.record_messages else None,
        conversation_id=binding.conversation_id if binding.conversation_id is not None
        else scope.conversation_id,
        user_id=binding.user_id if binding.user_id is not None else scope.user_id,
        metadata={**scope.metadata, **binding.metadata},
    )


def get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of an SDK object or of the plain dict a caller passed in its place."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def text_of(content: Any, part_types: frozenset[str]) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        return "".join(
            text for part in content
            if get(part, "type") in part_types and isinstance(text := get(part, "text"), str)
        )
    return ""


def last_user_text(messages: Any, part_types: frozenset[str]) -> str | None:
    if not isinstance(messages, list | tuple):
        return None
    for message in reversed(messages):
        if get(message, "role") == "user":
            return text_of(get(message, "content"), part_types)
    return None


# --- writing -----------------------------------------------------------------------------


def _metadata(call: Call) -> dict[str, Any]:
    meta = dict(call.metadata)
    otel = {
        "gen_ai.provider.name": call.binding.provider,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": call.request_model,
        "gen_ai.response.model": call.response_model,
        "gen_ai.response.id": call.response_id,
        "gen_ai.response.finish_reasons": call.finish_reasons or None,
        "eventstore.api": call.api,
        "eventstore.stream": call.stream,
        "eventstore.incomplete": call.incomplete or None,
        "time_to_first_token_ms": call.first_token_ms,
    }
    meta.update((k, v) for k, v in otel.items() if v is not None)
    if call.usage is not None and call.usage.reasoning_tokens:
        meta["gen_ai.usage.reasoning.output_tokens"] = call.usage.reasoning_tokens
    return meta


def _message_events(call: Call, meta: dict[str, Any]) -> list[Event]:
    if not call.binding.record_messages:
        return []
    ids: dict[str, Any] = {"conversation_id": call.conversation_id, "user_id": call.user_id}
    events: list[Event] = []
    if call.prompt is not None:
        events.append(Event(type=MESSAGE_SENT, data={"role": "user", "content": call.prompt},
                            metadata=dict(meta), occurred_at=call.started_at, **ids))
    # With several choices the output tokens cannot be split between them.
    tokens = call.usage.output_tokens if call.usage is not None and len(call.replies) == 1 \
        else None
    for index, reply in enumerate(call.replies):
        data: dict[str, Any] = {"role": "assistant", "content": reply.text, "tokens": tokens}
        if reply.tool_calls:
            data["tool_calls"] = reply.tool_calls
        if len(call.replies) > 1:
            data["choice_index"] = index
        # A dict of its own per event: a redact hook may change one event's metadata.
        events.append(Event(type=MESSAGE_SENT, data=data, metadata=dict(meta),
                            occurred_at=call.ended_at or call.started_at, **ids))
    return events


async def write(call: Call) -> None:
    """Append the call's events; each part is tried on its own, and nothing raises."""
    store = call.binding.store
    meta = _metadata(call)
    ok = True
    try:
        messages = _message_events(call, meta)
        if messages:
            await store.append_many(messages)
    except Exception as exc:
        ok = False
        _failed(f"the messages of a {call.binding.provider} call", exc)
    if call.error is not None:
        stats.add("errors")
        error = call.error
        code = getattr(error, "code", None)
        data = {
            "error.type": type(error).__qualname__,
            "status_code": getattr(error, "status_code", None),
            "code": code if isinstance(code, str) else None,
            "message": str(error)[:_MAX_ERROR_MESSAGE],
            "provider": call.binding.provider,
            "model": call.response_model or call.request_model,
            "latency_ms": call.latency_ms,
        }
        try:
            await store.track(LLM_ERROR, {k: v for k, v in data.items() if v is not None},
                              conversation_id=call.conversation_id, user_id=call.user_id,
                              metadata=dict(meta), occurred_at=call.ended_at)
        except Exception as exc:
            ok = False
            _failed(f"the error of a {call.binding.provider} call", exc)
    usage = call.usage
    model = call.response_model or call.request_model
    if usage is not None and model:
        try:
            await store.record_cost(
                provider=call.binding.provider, model=model,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                conversation_id=call.conversation_id, user_id=call.user_id,
                latency_ms=call.latency_ms, metadata=meta, occurred_at=call.ended_at,
            )
        except UnknownModelError as exc:
            ok = False
            stats.add("unknown_models")
            _failed(f"the cost of a {call.binding.provider} call", exc)
        except Exception as exc:
            ok = False
            _failed(f"the cost of a {call.binding.provider} call", exc)
    elif call.error is None:
        stats.add("missing_usage")
        _warn_once(
            f"{call.binding.provider}:{call.api}:{call.usage_note}",
            "eventstore recorded a %s %s call without tokens or cost: %s",
            call.binding.provider, call.api,
            call.usage_note or "the response reported no usage",
        )
    if ok:
        stats.add("recorded")


def _store_loop(store: EventStore) -> asyncio.AbstractEventLoop:
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
        loop = _store_loop(call.binding.store)
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
        _failed(f"a {call.binding.provider} call", exc)


async def record_async(call: Call) -> None:
    """Write the call from a coroutine, on the store's loop; never raises."""
    try:
        loop = _store_loop(call.binding.store)
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
        _failed(f"a {call.binding.provider} call", exc)


# --- wrapping create ---------------------------------------------------------------------


class Accumulator(Protocol):
    """Reads a stream's chunks as they pass and fills the call when it ends."""

    def add(self, chunk: Any, call: Call) -> None: ...

    def finish(self, call: Call) -> None: ...


class Adapter(Protocol):
    """How one API (chat completions, responses, messages) looks to the recorder."""

    api: str

    def prompt(self, kwargs: Mapping[str, Any]) -> str | None: ...

    def is_response(self, result: Any) -> bool: ...

    def is_stream(self, result: Any) -> bool: ...

    def read_response(self, result: Any, call: Call) -> None: ...

    def accumulator(self, kwargs: Mapping[str, Any]) -> Accumulator: ...


class SdkTypes:
    """The type checks of an Adapter: the SDK's response class and its stream classes
    (imported when the adapter is made, as the SDKs are optional)."""

    def __init__(self, response_type: type, stream_types: tuple[type, ...]) -> None:
        self._response_type = response_type
        self._stream_types = stream_types

    def is_response(self, result: Any) -> bool:
        return isinstance(result, self._response_type)

    def is_stream(self, result: Any) -> bool:
        return isinstance(result, self._stream_types)


def patch_create(resource: Any, binding: Binding, adapter: Adapter, *, is_async: bool) -> None:
    """Replace `resource.create` on this instance (the SDK caches resources per client, so
    every `client.chat.completions.create` afterwards goes through the wrapper)."""
    current = resource.create
    original = getattr(current, _ORIGINAL, current)
    wrapper = (_async_create if is_async else _sync_create)(original, binding, adapter)
    setattr(wrapper, _ORIGINAL, original)
    resource.create = wrapper


def _start(binding: Binding, adapter: Adapter, kwargs: Mapping[str, Any]) -> Call | None:
    stats.add("calls")
    try:
        return start_call(binding, adapter.api, kwargs, adapter.prompt)
    except Exception as exc:
        _failed(f"a {binding.provider} call", exc)
        return None


def _finish_response(call: Call, adapter: Adapter, result: Any) -> bool:
    """Fill the call from a whole response; False if it is not one this code records (a
    raw response from `with_raw_response`, say, which the caller parses)."""
    if not adapter.is_response(result):
        return False
    call.end()
    adapter.read_response(result, call)
    return True


def _sync_create(original: Callable[..., Any], binding: Binding,
                 adapter: Adapter) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        call = _start(binding, adapter, kwargs)
        try:
            result = original(*args, **kwargs)
        except Exception as exc:
            if call is not None:
                call.end(exc)
                record_sync(call)
            raise
        if call is None:
            return result
        try:
            if adapter.is_stream(result):
                return wrap_sync_stream(result, call, adapter.accumulator(kwargs))
            if _finish_response(call, adapter, result):
                record_sync(call)
        except Exception as exc:
            _failed(f"a {binding.provider} response", exc)
        return result

    return create


def _async_create(original: Callable[..., Any], binding: Binding,
                  adapter: Adapter) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        call = _start(binding, adapter, kwargs)
        try:
            result = await original(*args, **kwargs)
        except Exception as exc:
            if call is not None:
                call.end(exc)
                await record_async(call)
            raise
        if call is None:
            return result
        try:
            if adapter.is_stream(result):
                return wrap_async_stream(result, call, adapter.accumulator(kwargs))
            if _finish_response(call, adapter, result):
                await record_async(call)
        except Exception as exc:
            _failed(f"a {binding.provider} response", exc)
        return result

    return create


# --- wrapping streams --------------------------------------------------------------------
#
# The caller keeps the SDK's own Stream object (same type, same `response`, same context
# manager); only its `_iterator`, which both SDKs' `__iter__`/`__next__` read, is replaced
# by a generator that passes every chunk through unchanged and records when it ends. Its
# `close` is wrapped too, so a stream the caller abandons is recorded when it is closed.


class _StreamEnd:
    """Records a stream exactly once, however it ends."""

    def __init__(self, call: Call, acc: Accumulator) -> None:
        self.call = call
        self.acc = acc
        self.broken = False

    def observe(self, chunk: Any) -> None:
        if self.broken:
            return
        try:
            self.acc.add(chunk, self.call)
        except Exception as exc:  # an unexpected chunk must not break the caller's loop
            self.broken = True
            _failed(f"a {self.call.binding.provider} stream chunk", exc)

    def take(self, error: BaseException | None, *, complete: bool) -> Call | None:
        call = self.call
        if call.done:
            return None
        call.done = True
        call.end(error, incomplete=not complete)
        try:
            self.acc.finish(call)
        except Exception as exc:
            _failed(f"the end of a {call.binding.provider} stream", exc)
        return call


def wrap_sync_stream(stream: Any, call: Call, acc: Accumulator) -> Any:
    inner: Iterator[Any] = stream._iterator
    end = _StreamEnd(call, acc)

    def iterate() -> Iterator[Any]:
        complete = False
        error: BaseException | None = None
        try:
            for chunk in inner:
                end.observe(chunk)
                yield chunk
            complete = True
        except Exception as exc:
            error = exc
            raise
        finally:
            ended = end.take(error, complete=complete)
            if ended is not None:
                # Not waiting when the generator is being closed or collected: that may
                # be the garbage collector, on any thread.
                record_sync(ended, wait=complete or error is not None)

    # A weak reference: the stream must stay collectable by reference counting, so an
    # abandoned stream still releases its connection promptly.
    ref = weakref.ref(stream)
    sdk_close = type(stream).close

    def close() -> None:
        try:
            if (target := ref()) is not None:
                sdk_close(target)
        finally:
            if (ended := end.take(None, complete=False)) is not None:
                record_sync(ended)

    stream._iterator = iterate()
    stream.close = close
    return stream


def wrap_async_stream(stream: Any, call: Call, acc: Accumulator) -> Any:
    inner: AsyncIterator[Any] = stream._iterator
    end = _StreamEnd(call, acc)

    async def iterate() -> AsyncIterator[Any]:
        complete = False
        error: BaseException | None = None
        try:
            async for chunk in inner:
                end.observe(chunk)
                yield chunk
            complete = True
        except Exception as exc:
            error = exc
            raise
        finally:
            ended = end.take(error, complete=complete)
            if ended is not None:
                if complete or error is not None:
                    await record_async(ended)
                else:
                    # Closed, collected or cancelled: awaiting here could be cancelled
                    # again at once, so the write is handed to the store's loop.
                    record_sync(ended, wait=False)

    ref = weakref.ref(stream)
    sdk_close = type(stream).close

    async def close() -> None:
        try:
            if (target := ref()) is not None:
                await sdk_close(target)
        finally:
            if (ended := end.take(None, complete=False)) is not None:
                await record_async(ended)

    stream._iterator = iterate()
    stream.close = close
    return stream
