"""Record the calls a google-genai client makes: `models.generate_content`,
`models.generate_content_stream` and their `aio` variants.

    client = instrument_gemini(genai.Client(api_key=...), store, conversation_id="c1")

Every HTTP request those methods send is recorded through `record_llm_call`, with the
body as sent on the wire (contents, systemInstruction, generationConfig, tools) and the
response as it came back (usageMetadata read by genai-prices): automatic function
calling, which sends several requests for one `generate_content`, records each of them.
The SDK's other model calls (`embed_content`, `generate_images`, live sessions) are not
recorded and say so once.

How: `wrapt` wraps the SDK's `Models` / `AsyncModels` content methods, which mark the
client they run for in a context variable, and its API client's `request` methods, which
record the requests made under that mark. Other instrumentations wrapping the same
methods chain with these in either order.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from ._recording import (
    Binding,
    Call,
    failed,
    record_async,
    record_sync,
    refuse,
    start_call,
)

if TYPE_CHECKING:
    from google.genai import Client

    from ..store import EventStore

__all__ = ["instrument_gemini"]

ClientT = TypeVar("ClientT", bound="Client")

_bindings: weakref.WeakKeyDictionary[Any, Binding] = weakref.WeakKeyDictionary()
# The binding of the Models call running here (its HTTP requests are made inside it).
_current: ContextVar[Binding | None] = ContextVar("eventstore_gemini_binding", default=None)
_installed: list[bool] = []
_MODELS = "google.genai.models"
_API = "google.genai._api_client"


def instrument_gemini(
    client: ClientT,
    store: EventStore,
    conversation_id: str | None = None,
    user_id: str | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    record_messages: bool = True,
    record_timeout: float = 5.0,
) -> ClientT:
    """Record every generate_content call of `client` (a `google.genai.Client`, sync and
    `client.aio`) in `store`; returns the client. The options are those of
    `instrument_openai`. Vertex AI clients record provider "gcp.vertex_ai", others
    "gcp.gemini"."""
    _install()
    vertex = bool(getattr(client, "vertexai", False))
    binding = Binding(
        store=store, provider="gcp.vertex_ai" if vertex else "gcp.gemini",
        conversation_id=conversation_id, user_id=user_id, metadata=dict(metadata or {}),
        record_messages=record_messages, record_timeout=record_timeout,
    )
    _bindings[client.models] = binding
    _bindings[client.aio.models] = binding
    return client


def _install() -> None:
    if _installed:
        return
    import wrapt

    for cls in ("Models", "AsyncModels"):
        for method in ("generate_content", "generate_content_stream"):
            wrapt.wrap_function_wrapper(_MODELS, f"{cls}.{method}", _mark)
        for method in ("embed_content", "generate_images", "generate_videos"):
            wrapt.wrap_function_wrapper(_MODELS, f"{cls}.{method}", _refused(method))
    wrapt.wrap_function_wrapper(_API, "BaseApiClient.request", _request)
    wrapt.wrap_function_wrapper(_API, "BaseApiClient.request_streamed", _request_streamed)
    wrapt.wrap_function_wrapper(_API, "BaseApiClient.async_request", _async_request)
    wrapt.wrap_function_wrapper(_API, "BaseApiClient.async_request_streamed",
                                _async_request_streamed)
    _installed.append(True)


def _refused(method: str) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        binding = _bindings.get(instance)
        if binding is not None:
            refuse(binding.provider, f"models.{method}", "only generate_content is recorded")
        return wrapped(*args, **kwargs)

    return wrapper


def _mark(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    """Run a Models method with its client's binding in context, for the whole call: a
    coroutine's body, every step of a (sync or async) stream."""
    binding = _bindings.get(instance)
    if binding is None:
        return wrapped(*args, **kwargs)
    token = _current.set(binding)
    try:
        result = wrapped(*args, **kwargs)
    finally:
        _current.reset(token)
    if hasattr(result, "__await__"):
        return _marked_coroutine(result, binding)
    if hasattr(result, "__next__"):
        return _marked_iterator(result, binding)
    if hasattr(result, "__anext__"):
        return _marked_async_iterator(result, binding)
    return result


async def _marked_coroutine(coroutine: Any, binding: Binding) -> Any:
    token = _current.set(binding)
    try:
        result = await coroutine
    finally:
        _current.reset(token)
    if hasattr(result, "__anext__"):  # aio generate_content_stream returns an iterator
        return _marked_async_iterator(result, binding)
    return result


def _marked_iterator(inner: Iterator[Any], binding: Binding) -> Iterator[Any]:
    while True:
        token = _current.set(binding)
        try:
            item = next(inner)
        except StopIteration:
            return
        finally:
            _current.reset(token)
        yield item


async def _marked_async_iterator(inner: AsyncIterator[Any], binding: Binding
                                 ) -> AsyncIterator[Any]:
    while True:
        token = _current.set(binding)
        try:
            item = await inner.__anext__()
        except StopAsyncIteration:
            return
        finally:
            _current.reset(token)
        yield item


def _start(args: tuple[Any, ...], kwargs: dict[str, Any], *, stream: bool) -> Call | None:
    binding = _current.get()
    if binding is None:
        return None
    try:
        names = ("http_method", "path", "request_dict")
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        path = str(given.get("path", ""))
        if not path.split("?")[0].endswith(("generateContent", "streamGenerateContent")):
            return None
        # `_url` / `_query` are the SDK's notes for building the URL, not part of the body.
        body = {k: v for k, v in dict(given.get("request_dict") or {}).items()
                if not str(k).startswith("_")}
        model = path.split("?")[0].rsplit(":", 1)[0].removeprefix("models/")
        call = start_call(binding, "gemini", path, body, stream=stream)
        call.request.setdefault("model", model)
        return call
    except Exception as exc:
        failed("a gemini request", exc)
        return None


def _body(response: Any) -> Any:
    """The JSON of an API client answer: newer SDKs hand back the body text, older ones an
    HttpResponse with `.json`, or the parsed chunk itself."""
    if isinstance(response, Mapping):
        return response
    body = getattr(response, "body", None)
    if isinstance(body, str) and body:
        return json.loads(body)
    parsed = getattr(response, "json", None)
    return parsed if isinstance(parsed, Mapping) else None


def _request(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
    call = _start(args, kwargs, stream=False)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except Exception as exc:
        if call.end(error=exc):
            record_sync(call)
        raise
    try:
        call.end(_body(response))
        record_sync(call)
    except Exception as exc:
        failed("a gemini response", exc)
    return response


async def _async_request(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
    call = _start(args, kwargs, stream=False)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        if call.end(error=exc):
            if isinstance(exc, Exception):
                await record_async(call)
            else:
                record_sync(call, wait=False)
        raise
    try:
        call.end(_body(response))
        await record_async(call)
    except Exception as exc:
        failed("a gemini response", exc)
    return response


def _observe(call: Call, chunk: Any) -> None:
    try:
        body = _body(chunk)
        if isinstance(body, Mapping):
            call.observe(body)
    except Exception as exc:  # never break the caller's loop
        failed("a gemini stream chunk", exc)


def _request_streamed(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    call = _start(args, kwargs, stream=True)
    inner = wrapped(*args, **kwargs)
    if call is None:
        return inner

    def chunks() -> Iterator[Any]:
        error: BaseException | None = None
        complete = False
        try:
            for chunk in inner:
                _observe(call, chunk)
                yield chunk
            complete = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            if call.end(error=error, incomplete=not complete):
                record_sync(call, wait=complete or isinstance(error, Exception))

    return chunks()


async def _async_request_streamed(wrapped: Callable[..., Any], instance: Any,
                                  args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _start(args, kwargs, stream=True)
    try:
        inner = await wrapped(*args, **kwargs)
    except Exception as exc:
        if call is not None and call.end(error=exc):
            await record_async(call)
        raise
    if call is None:
        return inner

    async def chunks() -> AsyncIterator[Any]:
        error: BaseException | None = None
        complete = False
        try:
            async for chunk in inner:
                _observe(call, chunk)
                yield chunk
            complete = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            if call.end(error=error, incomplete=not complete):
                if complete or isinstance(error, Exception):
                    await record_async(call)
                else:
                    record_sync(call, wait=False)

    return chunks()
