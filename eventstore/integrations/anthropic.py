"""Record the calls an Anthropic client makes through `messages.create`.

    client = instrument_anthropic(Anthropic(), store, conversation_id="c1")

Each call appends a `message_sent` for the prompt (the last user message) and one for
the reply, a `cost_recorded` priced by the store, or an `llm_error` if the API call
failed (the error still reaches the caller unchanged).

Anthropic's `input_tokens` excludes cached tokens; the recorded input is the
OpenTelemetry total, input_tokens + cache_read_input_tokens + cache_creation_input_tokens,
with the two cache counts as cache_read_tokens and cache_write_tokens. Streams
(`stream=True`) carry usage in message_start and, final for the output, in
message_delta; a stream closed before its message_delta has no known output count and
is recorded without cost.

Not recorded: `with_raw_response` / `with_streaming_response`, the `messages.stream()`
helper, the beta namespace, and clients copied with `with_options()` after instrumenting.
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
    from anthropic import Anthropic, AsyncAnthropic

    from ..store import EventStore

__all__ = ["instrument_anthropic"]

ClientT = TypeVar("ClientT", bound="Anthropic | AsyncAnthropic")

_TEXT_PARTS: Final = frozenset({"text"})


def instrument_anthropic(
    client: ClientT,
    store: EventStore,
    conversation_id: str | None = None,
    user_id: str | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    record_messages: bool = True,
    record_timeout: float = 5.0,
) -> ClientT:
    """Record every `messages.create` call of `client` (an `anthropic.Anthropic` or
    `AsyncAnthropic`) in `store`; returns the client. The options are those of
    `instrument_openai`."""
    from anthropic.resources.messages import AsyncMessages

    binding = Binding(
        store=store, provider="anthropic", conversation_id=conversation_id,
        user_id=user_id, metadata=dict(metadata or {}), record_messages=record_messages,
        record_timeout=record_timeout,
    )
    messages = client.messages
    patch_create(messages, binding, _MessagesAdapter(),
                 is_async=isinstance(messages, AsyncMessages))
    return client


def _usage(input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> Usage:
    return Usage(input_tokens=input_tokens + cache_read + cache_write,
                 output_tokens=output_tokens, cache_read_tokens=cache_read,
                 cache_write_tokens=cache_write)


def _tool_names(blocks: Any) -> list[str]:
    return [name for block in blocks or ()
            if get(block, "type") == "tool_use" and isinstance(name := get(block, "name"), str)]


class _MessagesAdapter(SdkTypes):
    api = "messages"

    def __init__(self) -> None:
        import anthropic
        from anthropic.types import Message

        super().__init__(Message, (anthropic.Stream, anthropic.AsyncStream))

    def prompt(self, kwargs: Mapping[str, Any]) -> str | None:
        return last_user_text(kwargs.get("messages"), _TEXT_PARTS)

    def read_response(self, result: Any, call: Call) -> None:
        call.response_model = result.model
        call.response_id = result.id
        call.replies = [Reply(
            text="".join(block.text for block in result.content if block.type == "text"),
            tool_calls=_tool_names(result.content),
        )]
        if result.stop_reason:
            call.finish_reasons = [result.stop_reason]
        usage = result.usage
        call.usage = _usage(count(usage.input_tokens), count(usage.output_tokens),
                            count(usage.cache_read_input_tokens),
                            count(usage.cache_creation_input_tokens))

    def accumulator(self, kwargs: Mapping[str, Any]) -> _MessagesStream:
        return _MessagesStream()


class _MessagesStream:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.tools: list[str] = []
        self.counts = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                       "cache_creation_input_tokens": 0}
        # The output count is final only in message_delta; before it there is no cost.
        self.ended = False
        self.stop_reason: str | None = None

    def _take_counts(self, usage: Any) -> None:
        # message_delta repeats input counts only when they changed (None otherwise), and
        # every count it gives is cumulative, so the latest non-None value wins.
        for name in self.counts:
            value = get(usage, name)
            if isinstance(value, int):
                self.counts[name] = value

    def add(self, event: Any, call: Call) -> None:
        kind = get(event, "type")
        if kind == "content_block_delta":
            delta = event.delta
            if get(delta, "type") == "text_delta":
                call.first_token()
                self.texts.append(delta.text)
        elif kind == "content_block_start":
            self.tools.extend(_tool_names([event.content_block]))
        elif kind == "message_start":
            message = event.message
            call.response_id = message.id
            call.response_model = message.model
            self._take_counts(message.usage)
        elif kind == "message_delta":
            self.ended = True
            self.stop_reason = get(event.delta, "stop_reason")
            self._take_counts(event.usage)

    def finish(self, call: Call) -> None:
        call.replies = [Reply("".join(self.texts), self.tools)]
        if self.stop_reason:
            call.finish_reasons = [self.stop_reason]
        if self.ended:
            c = self.counts
            call.usage = _usage(c["input_tokens"], c["output_tokens"],
                                c["cache_read_input_tokens"], c["cache_creation_input_tokens"])
        else:
            call.usage_note = "the stream ended before message_delta reported the output tokens"
