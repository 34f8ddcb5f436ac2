"""Record the calls an OpenAI client makes: chat completions and the Responses API.

    client = instrument_openai(OpenAI(), store, conversation_id="c1", user_id="u1")
    client.chat.completions.create(model="gpt-4o", messages=[...])   # recorded

Each call appends a `message_sent` for the prompt (the last user message) and one per
reply, a `cost_recorded` priced by the store, or an `llm_error` if the API call failed
(the error still reaches the caller unchanged). `prompt_tokens` already includes cached
tokens, so it is the input total as it is; `cached_tokens` become cache_read_tokens.

Streamed chat completions carry usage only when the caller asks for it with
`stream_options={"include_usage": True}`. This integration does not add that option: it
appends a final chunk with an empty `choices` list, which breaks the common
`chunk.choices[0]` loop. Without it the messages are recorded, the tokens and cost are
not (counted in `stats.missing_usage`, with a warning), and no cost is ever estimated:
pass `include_usage` to get costs for streams. Responses API streams always end with
the full response, usage included.

Not recorded: `with_raw_response` / `with_streaming_response`, the `.stream()` and
`.parse()` helpers, and clients copied with `with_options()` after instrumenting (they
are new resource objects; instrument the copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._recording import (
    Binding,
    Call,
    Reply,
    SdkTypes,
    Usage,
    count,
    get,
    last_user_text,
    patch_create,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI

    from ..store import EventStore

__all__ = ["instrument_openai"]

ClientT = TypeVar("ClientT", bound="OpenAI | AsyncOpenAI")

_CHAT_PARTS: Final = frozenset({"text"})
_RESPONSES_PARTS: Final = frozenset({"input_text", "text"})
_NO_STREAM_USAGE: Final = (
    "OpenAI chat streams report usage only with stream_options={'include_usage': True}"
)


def instrument_openai(
    client: ClientT,
    store: EventStore,
    conversation_id: str | None = None,
    user_id: str | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    record_messages: bool = True,
    record_timeout: float = 5.0,
) -> ClientT:
    """Record every `chat.completions.create` and `responses.create` call of `client`
    (an `openai.OpenAI` or `AsyncOpenAI`) in `store`; returns the client. Azure clients
    record provider "azure.ai.openai", others "openai".

    `conversation_id` / `user_id` attribute every call; when None, those of the enclosing
    `store.conversation(...)` block apply. `metadata` is added to every event.
    `record_messages=False` records costs and errors only, never prompt or reply text.
    `record_timeout` bounds how long a sync call waits for its events to be written.
    """
    from openai import AsyncAzureOpenAI, AzureOpenAI
    from openai.resources.chat.completions import AsyncCompletions
    from openai.resources.responses import AsyncResponses

    # Azure bills its own prices for the same model names: OpenTelemetry's provider name
    # for it is what the pricing providers look up.
    azure = isinstance(client, AzureOpenAI | AsyncAzureOpenAI)
    binding = Binding(
        store=store, provider="azure.ai.openai" if azure else "openai",
        conversation_id=conversation_id, user_id=user_id,
        metadata=dict(metadata or {}), record_messages=record_messages,
        record_timeout=record_timeout,
    )
    completions = client.chat.completions
    patch_create(completions, binding, _ChatAdapter(),
                 is_async=isinstance(completions, AsyncCompletions))
    responses = client.responses
    patch_create(responses, binding, _ResponsesAdapter(),
                 is_async=isinstance(responses, AsyncResponses))
    return client


def _stream_types() -> tuple[type, ...]:
    import openai

    return (openai.Stream, openai.AsyncStream)


# --- chat completions ----------------------------------------------------------------------


def _chat_usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    prompt_details = get(usage, "prompt_tokens_details")
    completion_details = get(usage, "completion_tokens_details")
    return Usage(
        input_tokens=count(get(usage, "prompt_tokens")),
        output_tokens=count(get(usage, "completion_tokens")),
        cache_read_tokens=count(get(prompt_details, "cached_tokens")),
        cache_write_tokens=count(get(prompt_details, "cache_write_tokens")),
        reasoning_tokens=get(completion_details, "reasoning_tokens"),
    )


class _ChatAdapter(SdkTypes):
    api = "chat.completions"

    def __init__(self) -> None:
        from openai.types.chat import ChatCompletion

        super().__init__(ChatCompletion, _stream_types())

    def prompt(self, kwargs: Mapping[str, Any]) -> str | None:
        return last_user_text(kwargs.get("messages"), _CHAT_PARTS)

    def read_response(self, result: Any, call: Call) -> None:
        call.response_model = result.model
        call.response_id = result.id
        for choice in result.choices:
            message = choice.message
            call.replies.append(Reply(
                text=message.content or "",
                tool_calls=[name for tc in message.tool_calls or ()
                            if isinstance(name := get(get(tc, "function"), "name"), str)],
            ))
            if choice.finish_reason:
                call.finish_reasons.append(choice.finish_reason)
        call.usage = _chat_usage(result.usage)

    def accumulator(self, kwargs: Mapping[str, Any]) -> _ChatStream:
        return _ChatStream()


class _ChatStream:
    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = {}
        self.tools: dict[int, list[str]] = {}
        self.reasons: dict[int, str] = {}
        self.usage: Any = None

    def add(self, chunk: Any, call: Call) -> None:
        call.response_id = call.response_id or chunk.id
        call.response_model = call.response_model or chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            texts = self.texts.setdefault(choice.index, [])
            if delta is not None and delta.content:
                call.first_token()
                texts.append(delta.content)
            for tc in (delta.tool_calls if delta is not None else None) or ():
                if isinstance(name := get(get(tc, "function"), "name"), str):
                    call.first_token()
                    self.tools.setdefault(choice.index, []).append(name)
            if choice.finish_reason:
                self.reasons[choice.index] = choice.finish_reason

    def finish(self, call: Call) -> None:
        for index in sorted(self.texts.keys() | self.tools.keys()):
            call.replies.append(Reply("".join(self.texts.get(index, ())),
                                      self.tools.get(index, [])))
        call.finish_reasons = [self.reasons[i] for i in sorted(self.reasons)]
        call.usage = _chat_usage(self.usage)
        if call.usage is None and not call.incomplete:
            call.usage_note = _NO_STREAM_USAGE


# --- the Responses API ---------------------------------------------------------------------


def _responses_prompt(kwargs: Mapping[str, Any]) -> str | None:
    given = kwargs.get("input")
    if isinstance(given, str):
        return given
    return last_user_text(given, _RESPONSES_PARTS)


def _read_response(response: Any, call: Call) -> None:
    call.response_model = response.model
    call.response_id = response.id
    call.replies = [Reply(
        text=response.output_text,
        tool_calls=[item.name for item in response.output or ()
                    if get(item, "type") == "function_call" and isinstance(item.name, str)],
    )]
    if response.status:
        call.finish_reasons = [response.status]
    usage = response.usage
    if usage is not None:
        input_details = get(usage, "input_tokens_details")
        call.usage = Usage(
            input_tokens=count(usage.input_tokens),
            output_tokens=count(usage.output_tokens),
            cache_read_tokens=count(get(input_details, "cached_tokens")),
            cache_write_tokens=count(get(input_details, "cache_write_tokens")),
            reasoning_tokens=get(get(usage, "output_tokens_details"), "reasoning_tokens"),
        )


class _ResponsesAdapter(SdkTypes):
    api = "responses"

    def __init__(self) -> None:
        from openai.types.responses import Response

        super().__init__(Response, _stream_types())

    def prompt(self, kwargs: Mapping[str, Any]) -> str | None:
        return _responses_prompt(kwargs)

    def read_response(self, result: Any, call: Call) -> None:
        _read_response(result, call)

    def accumulator(self, kwargs: Mapping[str, Any]) -> _ResponsesStream:
        return _ResponsesStream()


# The events that carry the whole response as it ended.
_FINAL_EVENTS: Final = frozenset({"response.completed", "response.incomplete",
                                  "response.failed"})


class _ResponsesStream:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.final: Any = None

    def add(self, event: Any, call: Call) -> None:
        kind = get(event, "type")
        if kind == "response.output_text.delta":
            call.first_token()
            self.texts.append(event.delta)
        elif kind == "response.created":
            call.response_id = event.response.id
            call.response_model = event.response.model
        elif kind in _FINAL_EVENTS:
            self.final = event.response

    def finish(self, call: Call) -> None:
        if self.final is not None:
            _read_response(self.final, call)
        else:
            call.replies = [Reply("".join(self.texts))]
