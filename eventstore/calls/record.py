"""record_llm_call: the one way a model call is recorded (every integration comes here).

One call appends, atomically (one `append_many`):
- a `message_sent` for each message of the request its conversation has not stored yet
  (see `messages`), and one per output message of the response (role "assistant",
  `source` "response": the transcript's replies);
- the `llm_call` event: provider, model, API flavour, the request's parameters and the
  digests of its messages in order, the whole response body, usage by kind (genai-prices'
  keys), latency, time to first token, attempts, the error; `priced` says whether a cost
  was recorded, `unpriced_reason` why not;
- a `cost_recorded` event (the contract's payload, plus `call_id`) when the call has a
  price: every cost question counts each call once, through its `cost_recorded`.

Every event carries the call's conversation_id, user_id and metadata. The `llm_call`
event's id is the call id (`feedback(call_id=...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from ..errors import InvalidCallError
from ..events import COST_RECORDED, MESSAGE_SENT, Event, RecordedEvent, new_event_id
from ..pricing.prices import PricingProvider
from ..pricing.usage import CallPrice, other_cost, price_call, price_context_of, read_usage
from ..reads import LogReader
from ..scope import scoped
from .flavors import FLAVORS, detect_flavor, split_request
from .messages import (
    Conversation,
    MessageIndex,
    compact_refs,
    digest_of_item,
    message_data,
    stored_digest,
    text_of,
)

if TYPE_CHECKING:
    from ..pipeline import WritePipeline

__all__ = ["LLM_CALL", "CallRecorder", "to_json"]

LLM_CALL: Final = "llm_call"
_MAX_ERROR_MESSAGE: Final = 4_000
_MAX_TRACEBACK: Final = 16_000  # its innermost frames, where a traceback is longer


def to_json(value: Any) -> Any:
    """A JSON-ready copy of a body: SDK (pydantic) objects dumped as the API writes them,
    Decimals kept, tuples as lists, None values kept (they are part of what was sent)."""
    if value is None or isinstance(value, str | int | float | bool | Decimal):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items() if not _omitted(v)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_json(dump(mode="json", exclude_unset=True, by_alias=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, type):  # a response_format given as a pydantic class
        schema = getattr(value, "model_json_schema", None)
        return {"type": value.__name__, **({"schema": schema()} if callable(schema) else {})}
    return str(value)


def _omitted(value: Any) -> bool:
    # The SDKs' "argument not given" sentinels (NotGiven, Omit) are never sent.
    return type(value).__name__ in ("NotGiven", "Omit")


def error_data(error: BaseException | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An error as the call records it: type, message, status_code, request_id, code and
    the provider's own error type (Anthropic's "overloaded_error", OpenAI's codes)."""
    if error is None:
        return None
    if isinstance(error, Mapping):
        if not isinstance(error.get("type"), str) or not isinstance(error.get("message"), str):
            raise InvalidCallError("error= must be an exception or a dict with 'type' and "
                                   "'message' strings (and optionally status_code, request_id)")
        return to_json(dict(error))  # type: ignore[no-any-return]
    if not isinstance(error, BaseException):
        raise InvalidCallError(f"error= must be None, an exception or a dict, not "
                               f"{type(error).__name__}")
    data: dict[str, Any] = {"type": type(error).__qualname__,
                            "message": str(error)[:_MAX_ERROR_MESSAGE]}
    status = getattr(error, "status_code", None)
    code = getattr(error, "code", None)
    if not isinstance(status, int) and isinstance(code, int) and 100 <= code < 600:
        status = code  # google-genai's APIError keeps the HTTP status as `code`
    if isinstance(status, int) and not isinstance(status, bool):
        data["status_code"] = status
    request_id = getattr(error, "request_id", None)
    if isinstance(request_id, str):
        data["request_id"] = request_id
    if isinstance(code, str):
        data["code"] = code
    if error.__traceback__ is not None:
        # AiCore keeps the stack of a failed call; the store's redact hooks see it as text
        # like any other field, so what is stored is the redacted traceback
        data["traceback"] = "".join(traceback.format_exception(error))[-_MAX_TRACEBACK:]
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        nested = body.get("error")
        inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
        kind = inner.get("type")
        if isinstance(kind, str) and kind != "error":
            data["provider_type"] = kind
    return data


def _check(provider: Any, model: Any, request: Any, response: Any, latency_ms: Any,
           occurred_at: Any) -> None:
    if not isinstance(provider, str) or not provider.strip():
        raise InvalidCallError("provider= must be a non-empty string, e.g. 'openai'")
    if model is not None and not isinstance(model, str):
        raise InvalidCallError("model= must be a string (the model the request named)")
    if not isinstance(request, Mapping):
        raise InvalidCallError(f"request= must be the request body as a dict, not "
                               f"{type(request).__name__}")
    if response is not None and not isinstance(response, Mapping):
        raise InvalidCallError(f"response= must be the response body as a dict or None, not "
                               f"{type(response).__name__}")
    if latency_ms is not None and (isinstance(latency_ms, bool)
                                   or not isinstance(latency_ms, int | float)
                                   or not math.isfinite(latency_ms) or latency_ms < 0):
        raise InvalidCallError(f"latency_ms={latency_ms!r} must be a finite number >= 0")
    if occurred_at is not None and (not isinstance(occurred_at, datetime)
                                    or occurred_at.utcoffset() is None):
        raise InvalidCallError("occurred_at= must be a timezone-aware datetime")


def _outputs(flavor: str, response: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The response's output messages as transcript entries (text and tool calls)."""
    if not isinstance(response, Mapping):
        return []
    out: list[dict[str, Any]] = []
    if flavor == "chat":
        for choice in response.get("choices") or ():
            message = choice.get("message") or {} if isinstance(choice, Mapping) else {}
            calls = [{"id": tc.get("id"), "name": (tc.get("function") or {}).get("name"),
                      "arguments": (tc.get("function") or {}).get("arguments")}
                     for tc in message.get("tool_calls") or () if isinstance(tc, Mapping)]
            out.append({"content": text_of(message.get("content")), "tool_calls": calls,
                        "choice_index": choice.get("index")})
    elif flavor == "responses":
        texts: list[str] = []
        calls = []
        for item in response.get("output") or ():
            if not isinstance(item, Mapping):
                continue
            if item.get("type") == "message":
                texts.append(text_of(item.get("content")))
            elif item.get("type") == "function_call":
                calls.append({"id": item.get("call_id"), "name": item.get("name"),
                              "arguments": item.get("arguments")})
        out.append({"content": "".join(texts), "tool_calls": calls})
    elif flavor == "messages":
        blocks = [b for b in response.get("content") or () if isinstance(b, Mapping)]
        out.append({"content": "".join(b.get("text", "") for b in blocks
                                       if b.get("type") == "text"),
                    "tool_calls": [{"id": b.get("id"), "name": b.get("name"),
                                    "arguments": b.get("input")}
                                   for b in blocks if b.get("type") == "tool_use"]})
    elif flavor == "gemini":
        for index, candidate in enumerate(response.get("candidates") or ()):
            parts = ((candidate.get("content") or {}).get("parts") or ()) \
                if isinstance(candidate, Mapping) else ()
            parts = [p for p in parts if isinstance(p, Mapping)]
            out.append({"content": "".join(p["text"] for p in parts
                                           if isinstance(p.get("text"), str)),
                        "tool_calls": [{"id": (p["functionCall"]).get("id"),
                                        "name": p["functionCall"].get("name"),
                                        "arguments": p["functionCall"].get("args")}
                                       for p in parts
                                       if isinstance(p.get("functionCall"), Mapping)],
                        "choice_index": index})
    return [o for o in out if o["content"] or o["tool_calls"]]


_CONTENT_KEYS: Final = frozenset({"choices", "output", "content", "candidates", "output_text"})


def _without_content(response: dict[str, Any] | None) -> dict[str, Any] | None:
    if response is None:
        return None
    return {k: v for k, v in response.items() if k not in _CONTENT_KEYS}


def _cost_data(provider: str, model: str, tokens: Mapping[str, int], price: CallPrice,
               latency_ms: float | None, call_id: str) -> dict[str, Any]:
    assert price.input_cost is not None and price.output_cost is not None
    assert price.total_cost is not None
    data: dict[str, Any] = {
        "provider": provider, "model": model, **tokens,
        "input_cost": format(price.input_cost, "f"),
        "output_cost": format(price.output_cost, "f"),
        "total_cost": format(price.total_cost, "f"),
        "price_source": price.price_source or "unknown", "call_id": call_id,
    }
    extra = other_cost(price)
    if extra:
        data["other_cost"] = format(extra, "f")
    if latency_ms is not None:
        data["latency_ms"] = latency_ms
    return data


class CallRecorder:
    """Records model calls into the log: `record` is the store's record_llm_call,
    `record_many` its batch form (one append for a whole batch of calls)."""

    def __init__(self, reader: LogReader,
                 append_many: Callable[[list[Event]], Awaitable[list[RecordedEvent]]],
                 pricing: Callable[[], PricingProvider], pipeline: WritePipeline) -> None:
        self._append_many = append_many
        self._pricing = pricing
        self._pipeline = pipeline
        self._index = MessageIndex(reader, LLM_CALL)

    def _namer(self) -> Callable[[Conversation, str, Event], Awaitable[str]] | None:
        pipeline = self._pipeline
        # with neither hooks nor encryption a message is stored as sent, named as sent
        return self._name if pipeline.redacts or pipeline.encryption is not None else None

    async def _name(self, state: Conversation, sent: str, message: Event) -> str:
        """The digest a message (`sent`: the digest of it as sent) is stored under: that
        of what the redact hooks leave of it, keyed with its user's data key when it is
        encrypted. The redacted digest is kept per conversation, in memory only (the
        sent digest names unredacted text); the keyed one is taken anew each time, since
        forget_user replaces the key."""
        pipeline = self._pipeline
        redacted = state.redacted.get(sent)
        if redacted is None:
            redacted = (await pipeline.redacted_digest(message, stored_digest)
                        if pipeline.redacts else bytes.fromhex(sent))
            state.redacted[sent] = redacted
        return (await pipeline.keyed_digest(message, redacted)).hex()

    async def record(self, **call: Any) -> RecordedEvent:
        (recorded,) = await self._commit([_prepare(self._pricing(), self._namer(), **call)])
        return recorded

    async def record_many(self, calls: Sequence[Mapping[str, Any]]) -> list[RecordedEvent]:
        """Record every call, in order, in one append: all are recorded or none is (a
        malformed one raises InvalidCallError before anything is written)."""
        pricing, name = self._pricing(), self._namer()
        planned = []
        for i, call in enumerate(calls):
            try:
                planned.append(_prepare(pricing, name, **call))
            except TypeError as exc:  # a key record_llm_call does not take
                raise InvalidCallError(f"call {i} of the batch: {exc}") from None
        return await self._commit(planned)

    async def _commit(self, planned: list[_Planned]) -> list[RecordedEvent]:
        """Build each call's events against its conversation's stored messages (the
        conversations' locks held, in a fixed order) and append them all at once."""
        if not planned:
            return []
        conversations = sorted({p.conversation_id for p in planned
                                if p.conversation_id is not None})
        async with contextlib.AsyncExitStack() as stack:
            for conversation_id in conversations:
                await stack.enter_async_context(self._index.lock(conversation_id))
            # concurrently: a conversation this process has not seen is read from the log
            states = dict(zip(conversations, await asyncio.gather(
                *(self._index.conversation(c) for c in conversations)), strict=True))
            before = {c: (set(s.digests), s.last) for c, s in states.items()}
            events: list[Event] = []
            counts: list[int] = []
            try:
                for p in planned:
                    built = await p.build(states[p.conversation_id]
                                          if p.conversation_id is not None else Conversation())
                    events += built
                    counts.append(len(built))
                recorded = await self._append_many(events)
            except BaseException:
                for c, (digests, last) in before.items():  # nothing was written
                    states[c].digests, states[c].last = digests, last
                raise
        calls: list[RecordedEvent] = []
        start = 0
        for count in counts:
            calls.append(next(r for r in recorded[start:start + count] if r.type == LLM_CALL))
            start += count
        return calls


class _Planned:
    """One call, checked and priced: `build` makes its events for a conversation state."""

    __slots__ = ("build", "conversation_id")

    def __init__(self, conversation_id: str | None,
                 build: Callable[[Conversation], Awaitable[list[Event]]]) -> None:
        self.conversation_id = conversation_id
        self.build = build


def _prepare(
    pricing: PricingProvider,
    name: Callable[[Conversation, str, Event], Awaitable[str]] | None,
    *,
    provider: str,
    model: str | None,
    request: Mapping[str, Any],
    response: Mapping[str, Any] | None,
    latency_ms: float | None,
    error: BaseException | Mapping[str, Any] | None = None,
    conversation_id: str | None = None,
    user_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
    api: str | None = None,
    stream: bool = False,
    time_to_first_token_ms: float | None = None,
    attempts: int | None = None,
    price_context: Mapping[str, str] | None = None,
    incomplete: bool = False,
    record_messages: bool = True,
) -> _Planned:
    """Check and price one model call (see the module docstring); its events are built
    when it is committed. Ids left None come from the enclosing `store.conversation(...)`
    scope."""
    # the scopes' ids and metadata (trace, prompt, tags: tags add up)
    conversation_id, user_id, metadata = scoped(conversation_id, user_id, metadata)
    _check(provider, model, request, response, latency_ms, occurred_at)
    if api is not None and api not in FLAVORS:
        raise InvalidCallError(f"api={api!r} must be one of {sorted(FLAVORS)}")
    when = (occurred_at or datetime.now(UTC)).astimezone(UTC)
    sent: dict[str, Any] = to_json(request)
    answered: dict[str, Any] | None = to_json(response) if response is not None else None
    flavor = api or detect_flavor(provider, sent, answered)
    err = error_data(error)
    call_id = new_event_id()
    model_name = (answered or {}).get("model") or (answered or {}).get("modelVersion") or model
    if not isinstance(model_name, str):
        model_name = model or ""

    usage = read_usage(provider, flavor, answered)
    context = price_context_of(flavor, sent, answered, price_context)
    price = price_call(pricing, provider=provider, model=model_name, usage=usage,
                       at=when, context=context)
    tokens = usage.tokens() if usage is not None else {}

    meta = dict(metadata or {})
    ids: dict[str, Any] = {"conversation_id": conversation_id, "user_id": user_id}
    params, lists, values = split_request(flavor, sent)
    if not record_messages:
        # Parameters, usage, cost, timings and errors only: no message, no output content.
        lists, values = {}, {}
        answered = _without_content(answered)

    def event(kind: str, data: dict[str, Any], **extra: Any) -> Event:
        # A metadata dict of its own per event: a redact hook may change one event's.
        return Event(type=kind, data=data, metadata=dict(meta), occurred_at=when, **ids,
                     **extra)

    async def build(state: Conversation) -> list[Event]:
        known = state.digests
        fresh: list[str] = []
        events: list[Event] = []
        refs: dict[str, Any] = {}

        async def ref(item: Any, field: str) -> str:
            sent = digest_of_item(item)
            message: Event | None = None
            digest = sent
            if name is not None:
                message = event(MESSAGE_SENT, message_data(item, field, "", call_id))
                digest = await name(state, sent, message)
            if digest not in known and digest not in fresh:
                fresh.append(digest)
                if message is None:
                    message = event(MESSAGE_SENT, message_data(item, field, "", call_id))
                message.data["hash"] = digest
                events.append(message)
            return digest

        for field, value in values.items():
            refs[field] = await ref(value, field)
        for field, items in lists.items():
            refs[field] = [await ref(item, field) for item in items]
        data: dict[str, Any] = {
            "provider": provider, "model": model_name, "api": flavor,
            "request": params,
            "messages": compact_refs(refs, state.last, set(lists)),
            "list_fields": sorted(lists), "response": answered,
            "usage": {k: (format(v, "f") if isinstance(v, Decimal) else v)
                      for k, v in (usage.values.items() if usage is not None else ())},
            **tokens, "latency_ms": latency_ms, "stream": stream,
            "priced": price.priced,
        }
        if time_to_first_token_ms is not None:
            data["time_to_first_token_ms"] = time_to_first_token_ms
        if attempts is not None:
            data["attempts"] = attempts
            data["retries"] = max(attempts - 1, 0)
        if err is not None:
            data["error"] = err
        if incomplete:
            data["incomplete"] = True
        if price.context:
            data["price_context"] = price.context
        if not price.priced:
            data["unpriced_reason"] = price.unpriced_reason
        if model and model != model_name:
            data["request_model"] = model
        if not record_messages:
            data["messages_recorded"] = False
        for index_, output in enumerate(_outputs(flavor, answered)):
            events.append(event(MESSAGE_SENT, {
                "role": "assistant", "source": "response", "call_id": call_id,
                **({"tokens": tokens.get("output_tokens")}
                   if len(_outputs(flavor, answered)) == 1 and tokens else {}),
                **output, **({} if "choice_index" in output else {"choice_index": index_}),
            }))
        events.append(event(LLM_CALL, data, id=call_id))
        if price.priced:
            events.append(event(COST_RECORDED, _cost_data(
                provider, model_name, {k: tokens.get(k, 0) for k in (
                    "input_tokens", "output_tokens", "cache_read_tokens",
                    "cache_write_tokens")}, price, latency_ms, call_id)))
        state.digests.update(fresh)
        state.last = (call_id, refs)
        return events

    return _Planned(conversation_id, build)
