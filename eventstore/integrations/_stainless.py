"""Recording every call of the OpenAI and Anthropic SDKs at their one choke point.

Both SDKs send every API call through their client's `request(cast_to, options, ...)`
method (`create`, `.parse()`, the `.stream()` helpers, `with_raw_response`,
`with_streaming_response`, the beta namespaces and the async variants all end there), and
build one HTTP request per attempt with `_build_request` (the retry loop runs between
the two). Wrapping those two methods on the client *classes* with `wrapt` records every
path at once, and other instrumentations that wrap the resources' methods (OpenTelemetry's
openai-v2 wraps `Completions.create`) stay in the chain in either order. `copy()` /
`with_options()` hand a client's binding to the copy.

Only instrumented clients are recorded (a registry of weak references maps a client to
its Binding); other clients pass straight through.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._recording import (
    Binding,
    Call,
    count_attempt,
    current_call,
    enforce_async,
    enforce_sync,
    failed,
    record_async,
    record_sync,
    refuse,
    start_call,
)

__all__ = ["Sdk", "install"]


@dataclass(frozen=True, slots=True)
class Sdk:
    """One Stainless SDK as this module sees it."""

    name: str
    module: Any  # the SDK's top-level module
    # (method, path) -> API flavour, for the calls that are model calls.
    flavor_of: Callable[[str, str], str | None]
    # Model-call paths that are not recorded, with the reason (warned on use).
    refused: Callable[[str, str], str | None]
    client_classes: tuple[type, ...]


_bindings: weakref.WeakKeyDictionary[Any, Binding] = weakref.WeakKeyDictionary()
_installed: set[str] = set()


def bind(client: Any, binding: Binding) -> None:
    _bindings[client] = binding


def install(sdk: Sdk) -> None:
    """Wrap the SDK's client classes once per process (idempotent)."""
    if sdk.name in _installed:
        return
    import wrapt  # with the SDK extras, like the SDKs themselves

    base, streaming = f"{sdk.name}._base_client", f"{sdk.name}._streaming"
    wrapt.wrap_function_wrapper(base, "SyncAPIClient.request", _sync_request(sdk))
    wrapt.wrap_function_wrapper(base, "AsyncAPIClient.request", _async_request(sdk))
    wrapt.wrap_function_wrapper(base, "BaseClient._build_request", _build_request)
    wrapt.wrap_function_wrapper(streaming, "Stream.__stream__", _sync_events)
    wrapt.wrap_function_wrapper(streaming, "AsyncStream.__stream__", _async_events)
    wrapt.wrap_function_wrapper(streaming, "Stream.close", _sync_close)
    wrapt.wrap_function_wrapper(streaming, "AsyncStream.close", _async_close)
    for cls in sdk.client_classes:
        for name in ("copy", "with_options"):
            if name in vars(cls):
                wrapt.wrap_function_wrapper(cls, name, _copy)
    _installed.add(sdk.name)


def _copy(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    copied = wrapped(*args, **kwargs)
    binding = _bindings.get(instance)
    if binding is not None:
        _bindings[copied] = binding
    return copied


def _build_request(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    count_attempt()
    return wrapped(*args, **kwargs)


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, bool]:
    options = kwargs.get("options", args[1] if len(args) > 1 else None)
    stream = bool(kwargs.get("stream", args[2] if len(args) > 2 else False))
    return options, stream


def _body(options: Any) -> dict[str, Any]:
    body = options.json_data if isinstance(options.json_data, Mapping) else {}
    extra = getattr(options, "extra_json", None)
    return {**body, **(extra if isinstance(extra, Mapping) else {})}


def _raw_mode(options: Any) -> str | None:
    headers = options.headers if isinstance(options.headers, Mapping) else {}
    mode = headers.get("X-Stainless-Raw-Response")
    return mode if isinstance(mode, str) else None


def _start(sdk: Sdk, instance: Any, args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> Call | None:
    binding = _bindings.get(instance)
    if binding is None:
        return None
    try:
        options, stream = _split(args, kwargs)
        method = str(options.method).lower()
        path = str(options.url).split("?")[0]
        flavor = sdk.flavor_of(method, path)
        if flavor is None:
            why = sdk.refused(method, path)
            if why is not None:
                refuse(binding.provider, f"{method.upper()} {path}", why)
            return None
        body = _body(options)
        return start_call(binding, flavor, path, body, stream=stream or body.get("stream") is True)
    except Exception as exc:
        failed(f"a {sdk.name} request", exc)
        return None


def _sync_request(sdk: Sdk) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        call = _start(sdk, instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        enforce_sync(call)
        mode = _raw_mode(_split(args, kwargs)[0])
        token = current_call.set(call)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            if call.end(error=exc, incomplete=not isinstance(exc, Exception)):
                record_sync(call)
            raise
        finally:
            current_call.reset(token)
        try:
            return _sync_result(sdk, call, result, mode)
        except Exception as exc:
            failed(f"a {sdk.name} response", exc)
            return result

    return wrapper


def _async_request(sdk: Sdk) -> Callable[..., Any]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        call = _start(sdk, instance, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        await enforce_async(call)
        mode = _raw_mode(_split(args, kwargs)[0])
        token = current_call.set(call)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            if call.end(error=exc, incomplete=not isinstance(exc, Exception)):
                if isinstance(exc, Exception):
                    await record_async(call)
                else:  # cancelled: awaiting could be cancelled again at once
                    record_sync(call, wait=False)
            raise
        finally:
            current_call.reset(token)
        try:
            return await _async_result(sdk, call, result, mode)
        except Exception as exc:
            failed(f"a {sdk.name} response", exc)
            return result

    return wrapper


def _is_stream(sdk: Sdk, result: Any) -> bool:
    return isinstance(result, sdk.module.Stream | sdk.module.AsyncStream)


# `with_raw_response` / `with_streaming_response` results (LegacyAPIResponse, APIResponse,
# AsyncAPIResponse): the body parsed now (parse() caches what it returns, so the caller's
# own parse() gets the same object) or, for a streaming response, when the caller parses.
_RAW_RESPONSES = ("LegacyAPIResponse", "APIResponse", "AsyncAPIResponse")


def _is_raw(result: Any) -> bool:
    return type(result).__name__ in _RAW_RESPONSES and callable(getattr(result, "parse", None))


def _sync_result(sdk: Sdk, call: Call, result: Any, mode: str | None) -> Any:
    if _is_stream(sdk, result):
        return _bind_stream(result, call)
    if _is_raw(result):
        if mode == "stream":
            _record_on_parse(sdk, result, call)
            return result
        parsed = result.parse()
        if _is_stream(sdk, parsed):
            _bind_stream(parsed, call)
        else:
            call.end(parsed)
            record_sync(call)
        return result
    call.end(result)
    record_sync(call)
    return result


async def _async_result(sdk: Sdk, call: Call, result: Any, mode: str | None) -> Any:
    if _is_stream(sdk, result):
        return _bind_stream(result, call)
    if _is_raw(result):
        if mode == "stream":
            _record_on_parse(sdk, result, call, is_async=inspect.iscoroutinefunction(
                result.parse))
            return result
        parsed = result.parse()
        if inspect.isawaitable(parsed):
            parsed = await parsed
        if _is_stream(sdk, parsed):
            _bind_stream(parsed, call)
        else:
            call.end(parsed)
            await record_async(call)
        return result
    call.end(result)
    await record_async(call)
    return result


def _record_on_parse(sdk: Sdk, response: Any, call: Call, *, is_async: bool = False) -> None:
    """A `with_streaming_response` body is read by the caller: it is recorded when read
    through `parse()`; other ways of reading it (iter_lines, read) are not, and say so."""
    sdk_parse = response.parse

    def give(parsed: Any) -> Any:
        if _is_stream(sdk, parsed):
            return _bind_stream(parsed, call)
        call.end(parsed)
        return parsed

    if is_async:
        async def parse_async(*args: Any, **kwargs: Any) -> Any:
            parsed = give(await sdk_parse(*args, **kwargs))
            if call.done and not _is_stream(sdk, parsed):
                await record_async(call)
            return parsed

        response.parse = parse_async
    else:
        def parse_sync(*args: Any, **kwargs: Any) -> Any:
            parsed = give(sdk_parse(*args, **kwargs))
            if call.done and not _is_stream(sdk, parsed):
                record_sync(call)
            return parsed

        response.parse = parse_sync
    refuse(call.binding.provider, "with_streaming_response read without .parse()",
           "only a body read through .parse() is recorded")


# --- streams -----------------------------------------------------------------------------
#
# The caller keeps the SDK's own Stream object. Its events come from the class's
# `__stream__` generator (the SDKs may run it on a copy of the stream, made on first use),
# wrapped here: every event passes through unchanged, and the call its HTTP response
# belongs to is recorded once when the generator ends, however it ends (exhausted,
# failed mid-way, closed early, cancelled or collected). `close()` records too, for a
# stream closed before it was iterated to the end.

_streams: weakref.WeakKeyDictionary[Any, Call] = weakref.WeakKeyDictionary()


def _bind_stream(stream: Any, call: Call) -> Any:
    """Tie a stream (by its HTTP response, which copies share) to its call."""
    _streams[stream.response] = call
    call.stream = True
    return stream


def _call_of(stream: Any) -> Call | None:
    response = getattr(stream, "response", None)
    return _streams.get(response) if response is not None else None


def _sync_events(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Iterator[Any]:
    inner = wrapped(*args, **kwargs)

    def events() -> Iterator[Any]:
        # Looked up on the first event: the stream is bound once `request` returns it.
        call = _call_of(instance)
        if call is None:
            yield from inner
            return
        error: BaseException | None = None
        complete = False
        try:
            for event in inner:
                _observe(call, event)
                yield event
            complete = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            if call.end(error=error, incomplete=not complete):
                # Not waiting when closed or collected: that may be the garbage
                # collector, on any thread.
                record_sync(call, wait=complete or isinstance(error, Exception))

    return events()


def _async_events(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    inner = wrapped(*args, **kwargs)

    async def events() -> AsyncIterator[Any]:
        call = _call_of(instance)
        if call is None:
            async for event in inner:
                yield event
            return
        error: BaseException | None = None
        complete = False
        try:
            async for event in inner:
                _observe(call, event)
                yield event
            complete = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            if call.end(error=error, incomplete=not complete):
                if complete or isinstance(error, Exception):
                    await record_async(call)
                else:  # closed, collected or cancelled: awaiting could be cancelled again
                    record_sync(call, wait=False)

    return events()


def _sync_close(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        call = _call_of(instance)
        if call is not None and call.end(incomplete=True):
            record_sync(call)


async def _async_close(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    finally:
        call = _call_of(instance)
        if call is not None and call.end(incomplete=True):
            await record_async(call)


def _observe(call: Call, event: Any) -> None:
    try:
        call.observe(event)
    except Exception as exc:  # an unexpected event must not break the caller's loop
        failed(f"a {call.binding.provider} stream event", exc)
