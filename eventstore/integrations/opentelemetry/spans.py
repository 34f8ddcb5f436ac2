"""GenAI spans as model calls: the mapping the exporter and the OTLP receiver share.

A span is a model call when it carries the GenAI semantic conventions (semantic-conventions
0.66b; `gen_ai.operation.name` of a model operation and a request or response model).
It becomes the `request` / `response` bodies `EventStore.record_llm_call` takes, in the
API flavour of its provider (OpenAI chat, Anthropic Messages or Gemini), so the call is
priced, redacted, encrypted and de-duplicated like any call an SDK integration records:

- usage: `gen_ai.usage.input_tokens` (the whole input, cached tokens included, as the
  conventions define it), `output_tokens`, `cache_read.input_tokens`,
  `cache_creation.input_tokens`, `reasoning.output_tokens`, and the deprecated
  `prompt_tokens` / `completion_tokens` (accepted, never written);
- provider: `gen_ai.provider.name`, or the deprecated `gen_ai.system`;
- messages: the current `gen_ai.system_instructions`, `gen_ai.input.messages` and
  `gen_ai.output.messages` attributes (JSON, as opentelemetry-util-genai writes them),
  the older per-message span events (`gen_ai.system.message`, `gen_ai.user.message`,
  `gen_ai.assistant.message`, `gen_ai.tool.message`, `gen_ai.choice`), and OpenLLMetry's
  indexed `gen_ai.prompt.N.*` / `gen_ai.completion.N.*` attributes;
- who and where: `gen_ai.conversation.id`, `user.id` / `enduser.id`; the trace id, the
  span id and the parent span id go into the call's metadata (`trace_id`,
  `parent_step_id`, `span_id`), so the calls of one agent run nest like `store.trace()`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["CallArgs", "SpanData", "call_of", "is_genai"]

# Operations that are not a call to a model (an agent or a tool run): never recorded as
# calls, only kept as the named parents of the calls inside them.
_NOT_CALLS: Final = frozenset({"execute_tool", "invoke_agent", "create_agent",
                               "invoke_workflow"})
_MESSAGES_FLAVOR: Final = frozenset({"anthropic", "aws.bedrock"})
_GEMINI_PROVIDERS: Final = frozenset({"gcp.gemini", "gcp.vertex_ai", "gcp.gen_ai", "gemini",
                                      "vertex_ai", "google"})
# gen_ai.request.* attributes and the request field each flavour calls them
_PARAMS: Final = {
    "temperature": "temperature", "max_tokens": "max_tokens", "top_p": "top_p",
    "top_k": "top_k", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty", "stop_sequences": "stop", "seed": "seed",
    "choice.count": "n",
}


@dataclass(frozen=True, slots=True)
class SpanData:
    """What the mapping reads of a finished span, from an SDK span or an OTLP message."""

    name: str
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    events: Sequence[tuple[str, Mapping[str, Any]]] = ()
    failed: bool = False
    status_message: str | None = None
    scope: str | None = None


@dataclass(slots=True)
class CallArgs:
    """Keyword arguments of `EventStore.record_llm_call` for one span."""

    provider: str
    model: str | None
    request: dict[str, Any]
    response: dict[str, Any] | None
    latency_ms: float
    occurred_at: datetime
    error: dict[str, Any] | None = None
    conversation_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "request": self.request,
                "response": self.response, "latency_ms": self.latency_ms,
                "occurred_at": self.occurred_at, "error": self.error,
                "conversation_id": self.conversation_id, "user_id": self.user_id,
                "metadata": self.metadata}


def is_genai(span: SpanData) -> bool:
    """A model call by the GenAI conventions (an agent or tool span is not)."""
    a = span.attributes
    operation = a.get("gen_ai.operation.name") or a.get("llm.request.type")
    if operation in _NOT_CALLS:
        return False
    has_model = bool(a.get("gen_ai.request.model") or a.get("gen_ai.response.model"))
    return has_model and bool(operation or a.get("gen_ai.provider.name")
                              or a.get("gen_ai.system"))


def _int(a: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = a.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _str(a: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = a.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


# --- messages: one neutral form, then each flavour's shape -------------------------------

@dataclass(slots=True)
class _Message:
    role: str
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # id, name, arguments
    tool_call_id: str | None = None
    finish_reason: str | None = None


def _from_parts(role: str, parts: Any, finish_reason: Any = None) -> list[_Message]:
    """Messages of one convention message: tool responses each become a message of their
    own (the APIs send them that way)."""
    out: list[_Message] = []
    message = _Message(role=role, finish_reason=finish_reason if isinstance(
        finish_reason, str) else None)
    texts: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("content"), str):
            texts.append(part["content"])
        elif kind == "tool_call":
            message.tool_calls.append({"id": part.get("id"), "name": part.get("name"),
                                       "arguments": part.get("arguments")})
        elif kind == "tool_call_response":  # pydantic-ai names it `result`
            response = part.get("response", part.get("result"))
            out.append(_Message(role="tool", tool_call_id=part.get("id"),
                                text=response if isinstance(response, str)
                                else json.dumps(response, default=str)))
    message.text = "".join(texts)
    if message.text or message.tool_calls or not out:
        out.insert(0, message)
    return out


def _convention_messages(a: Mapping[str, Any]) -> tuple[str | None, list[_Message],
                                                         list[_Message]] | None:
    if "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a:
        return None
    system = None
    instructions = _json(a.get("gen_ai.system_instructions"))
    if isinstance(instructions, list):
        system = "".join(p.get("content", "") for p in instructions
                         if isinstance(p, Mapping) and p.get("type") == "text") or None
    inputs: list[_Message] = []
    for item in _json(a.get("gen_ai.input.messages")) or []:
        if isinstance(item, Mapping):
            inputs += _from_parts(str(item.get("role", "user")), item.get("parts"))
    outputs: list[_Message] = []
    for item in _json(a.get("gen_ai.output.messages")) or []:
        if isinstance(item, Mapping):
            outputs += _from_parts(str(item.get("role", "assistant")), item.get("parts"),
                                   item.get("finish_reason"))
    if inputs and inputs[0].role == "system" and system is None:
        system = inputs.pop(0).text
    return system, inputs, outputs


_EVENT_ROLES: Final = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                       "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}


def _event_messages(events: Sequence[tuple[str, Mapping[str, Any]]]
                    ) -> tuple[str | None, list[_Message], list[_Message]] | None:
    if not any(name in _EVENT_ROLES or name == "gen_ai.choice" for name, _ in events):
        return None
    system = None
    inputs: list[_Message] = []
    outputs: list[_Message] = []
    for name, attrs in events:
        if name in _EVENT_ROLES:
            content = attrs.get("content")
            message = _Message(role=_EVENT_ROLES[name], text=content if isinstance(
                content, str) else "", tool_call_id=attrs.get("id"))
            if message.role == "system" and system is None and not inputs:
                system = message.text
            else:
                inputs.append(message)
        elif name == "gen_ai.choice":
            body = _json(attrs.get("message")) or {}
            content = body.get("content") if isinstance(body, Mapping) else None
            outputs.append(_Message(role="assistant", text=content if isinstance(
                content, str) else "", finish_reason=attrs.get("finish_reason")))
    return system, inputs, outputs


def _indexed_messages(a: Mapping[str, Any]
                      ) -> tuple[str | None, list[_Message], list[_Message]] | None:
    """OpenLLMetry (traceloop) writes gen_ai.prompt.0.role, gen_ai.prompt.0.content, ..."""
    def collect(prefix: str) -> list[_Message]:
        out = []
        index = 0
        while f"{prefix}.{index}.role" in a or f"{prefix}.{index}.content" in a:
            p = f"{prefix}.{index}"
            message = _Message(role=str(a.get(f"{p}.role", "user")),
                               text=str(a.get(f"{p}.content", "") or ""),
                               finish_reason=_str(a, f"{p}.finish_reason"),
                               tool_call_id=_str(a, f"{p}.tool_call_id"))
            call = 0
            while f"{p}.tool_calls.{call}.name" in a:
                q = f"{p}.tool_calls.{call}"
                message.tool_calls.append({"id": a.get(f"{q}.id"), "name": a.get(f"{q}.name"),
                                           "arguments": _json(a.get(f"{q}.arguments"))})
                call += 1
            out.append(message)
            index += 1
        return out

    inputs, outputs = collect("gen_ai.prompt"), collect("gen_ai.completion")
    if not inputs and not outputs:
        return None
    system = None
    if inputs and inputs[0].role == "system":
        system = inputs.pop(0).text
    return system, inputs, outputs


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _chat_message(m: _Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text or None}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
            "name": c["name"], "arguments": _arguments(c["arguments"])}} for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if out["content"] is None and m.role != "assistant":
        out["content"] = ""
    return out


def _anthropic_content(m: _Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.text}] if m.text else []
    for c in m.tool_calls:
        arguments = _json(c["arguments"])
        blocks.append({"type": "tool_use", "id": c["id"], "name": c["name"],
                       "input": arguments if isinstance(arguments, Mapping) else {}})
    return blocks


def _gemini_parts(m: _Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": m.text}] if m.text else []
    for c in m.tool_calls:
        parts.append({"functionCall": {"name": c["name"], "args": _json(c["arguments"])}})
    if m.role == "tool":
        parts = [{"functionResponse": {"name": m.tool_call_id, "response": {
            "content": m.text}}}]
    return parts


def _flavor(provider: str) -> str:
    if provider in _MESSAGES_FLAVOR:
        return "messages"
    if provider in _GEMINI_PROVIDERS:
        return "gemini"
    return "chat"


def call_of(span: SpanData) -> CallArgs:
    """The record_llm_call arguments of a GenAI span (see `is_genai`)."""
    a = span.attributes
    provider = (_str(a, "gen_ai.provider.name", "gen_ai.system") or "unknown").lower()
    flavor = _flavor(provider)
    request_model = _str(a, "gen_ai.request.model")
    response_model = _str(a, "gen_ai.response.model")
    messages = (_convention_messages(a) or _event_messages(span.events)
                or _indexed_messages(a) or (None, [], []))
    system, inputs, outputs = messages
    params: dict[str, Any] = {}
    for suffix, name in _PARAMS.items():
        value = a.get(f"gen_ai.request.{suffix}")
        if value is not None:
            params[name] = list(value) if isinstance(value, tuple) else value
    tier = _str(a, "openai.request.service_tier", "gen_ai.openai.request.service_tier")
    if tier:
        params["service_tier"] = tier
    tools = _json(a.get("gen_ai.tool.definitions"))
    if isinstance(tools, list):
        params["tools"] = tools

    usage_in = _int(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    usage_out = _int(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
    cache_read = _int(a, "gen_ai.usage.cache_read.input_tokens",
                      "gen_ai.usage.cache_read_input_tokens") or 0
    cache_write = _int(a, "gen_ai.usage.cache_creation.input_tokens",
                       "gen_ai.usage.cache_creation_input_tokens") or 0
    reasoning = _int(a, "gen_ai.usage.reasoning.output_tokens") or 0
    has_usage = usage_in is not None or usage_out is not None
    usage_in, usage_out = usage_in or 0, usage_out or 0
    finish = a.get("gen_ai.response.finish_reasons")
    finish_reasons = [str(f) for f in finish] if isinstance(finish, list | tuple) else []
    response_id = _str(a, "gen_ai.response.id")
    served_tier = _str(a, "openai.response.service_tier", "gen_ai.openai.response.service_tier")

    request: dict[str, Any]
    response: dict[str, Any] | None
    if flavor == "messages":
        request = {"model": request_model, **params,
                   "messages": [{"role": "user" if m.role == "tool" else m.role,
                                 "content": _anthropic_content(m)} for m in inputs]}
        if system is not None:
            request["system"] = system
        response = {"type": "message", "role": "assistant", "id": response_id,
                    "model": response_model or request_model,
                    "content": [b for m in outputs for b in _anthropic_content(m)],
                    "stop_reason": finish_reasons[0] if finish_reasons else None}
        if has_usage:
            response["usage"] = {
                "input_tokens": max(usage_in - cache_read - cache_write, 0),
                "output_tokens": usage_out, "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": cache_write}
    elif flavor == "gemini":
        request = {"model": request_model, **params, "contents": [
            {"role": "model" if m.role == "assistant" else "user", "parts": _gemini_parts(m)}
            for m in inputs]}
        if system is not None:
            request["system_instruction"] = {"parts": [{"text": system}]}
        response = {"modelVersion": response_model or request_model, "responseId": response_id,
                    "candidates": [{"content": {"role": "model", "parts": _gemini_parts(m)},
                                    "finishReason": m.finish_reason or (
                                        finish_reasons[i] if i < len(finish_reasons) else None)}
                                   for i, m in enumerate(outputs)]}
        if has_usage:
            response["usageMetadata"] = {
                "promptTokenCount": usage_in, "candidatesTokenCount": usage_out,
                "cachedContentTokenCount": cache_read, "thoughtsTokenCount": reasoning,
                "totalTokenCount": usage_in + usage_out}
    else:
        chat = [_chat_message(m) for m in inputs]
        if system is not None:
            chat.insert(0, {"role": "system", "content": system})
        request = {"model": request_model, **params, "messages": chat}
        response = {"object": "chat.completion", "id": response_id,
                    "model": response_model or request_model,
                    "choices": [{"index": i, "message": _chat_message(m),
                                 "finish_reason": m.finish_reason or (
                                     finish_reasons[i] if i < len(finish_reasons) else None)}
                                for i, m in enumerate(outputs)]}
        if served_tier:
            response["service_tier"] = served_tier
        if has_usage:
            response["usage"] = {
                "prompt_tokens": usage_in, "completion_tokens": usage_out,
                "total_tokens": usage_in + usage_out,
                "prompt_tokens_details": {"cached_tokens": cache_read},
                "completion_tokens_details": {"reasoning_tokens": reasoning}}

    error: dict[str, Any] | None = None
    error_type = _str(a, "error.type")
    if span.failed or error_type:
        error = {"type": error_type or "error",
                 "message": span.status_message or error_type or "the span failed"}
        status = _int(a, "http.response.status_code")
        if status is not None:
            error["status_code"] = status
        response = None if not outputs and not has_usage else response
    metadata: dict[str, Any] = {"trace_id": span.trace_id, "span_id": span.span_id,
                                "parent_step_id": span.parent_span_id or span.trace_id,
                                "step_name": span.name, "source": "opentelemetry"}
    operation = _str(a, "gen_ai.operation.name")
    if operation:
        metadata["operation"] = operation
    if span.scope:
        metadata["instrumentation_scope"] = span.scope
    return CallArgs(
        provider=provider, model=response_model or request_model, request=request,
        response=response, latency_ms=max(span.end_ns - span.start_ns, 0) / 1e6,
        occurred_at=datetime.fromtimestamp(span.start_ns / 1e9, UTC), error=error,
        conversation_id=_str(a, "gen_ai.conversation.id"),
        user_id=_str(a, "user.id", "enduser.id"), metadata=metadata,
    )
