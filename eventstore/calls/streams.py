"""A stream's events folded back into the response body the stream stands for.

Each accumulator takes the stream's events as JSON dicts, one by one, says whether an
event carried output (for time to first token), and `body()` gives the response as the
non-streaming API would have returned it, as far as the stream got: a stream cancelled
after Anthropic's message_start still has the input usage it reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["StreamAccumulator", "accumulator_for"]


class StreamAccumulator(Protocol):
    def add(self, event: Mapping[str, Any]) -> bool:
        """Take one event; True if it carried output (text, tool call, reasoning)."""
        ...

    def body(self) -> dict[str, Any] | None:
        """The response so far, or None if the stream said nothing yet."""
        ...


class ChatStream:
    """OpenAI chat completion chunks -> a `chat.completion`."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    def add(self, event: Mapping[str, Any]) -> bool:
        for key in ("id", "model", "created", "system_fingerprint", "service_tier"):
            if event.get(key) is not None:
                self.head.setdefault(key, event[key])
        if event.get("usage") is not None:
            self.usage = event["usage"]
        output = False
        for choice in event.get("choices") or ():
            index = choice.get("index", 0)
            state = self.choices.setdefault(index, {"text": [], "tools": {}, "role": None,
                                                    "finish_reason": None, "refusal": []})
            delta = choice.get("delta") or {}
            if delta.get("role"):
                state["role"] = delta["role"]
            if delta.get("content"):
                state["text"].append(delta["content"])
                output = True
            if delta.get("refusal"):
                state["refusal"].append(delta["refusal"])
                output = True
            for tc in delta.get("tool_calls") or ():
                output = True
                slot = state["tools"].setdefault(tc.get("index", 0), {
                    "id": None, "type": "function", "name": None, "arguments": []})
                if tc.get("id"):
                    slot["id"] = tc["id"]
                function = tc.get("function") or {}
                if function.get("name"):
                    slot["name"] = function["name"]
                if function.get("arguments"):
                    slot["arguments"].append(function["arguments"])
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]
        return output

    def body(self) -> dict[str, Any] | None:
        if not self.head and not self.choices:
            return None
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {"role": state["role"] or "assistant",
                                       "content": "".join(state["text"]) or None}
            if state["refusal"]:
                message["refusal"] = "".join(state["refusal"])
            if state["tools"]:
                message["tool_calls"] = [
                    {"id": t["id"], "type": t["type"],
                     "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                    for _, t in sorted(state["tools"].items())]
            choices.append({"index": index, "message": message,
                            "finish_reason": state["finish_reason"]})
        body = {**self.head, "object": "chat.completion", "choices": choices}
        if self.usage is not None:
            body["usage"] = self.usage
        return body


class ResponsesStream:
    """OpenAI Responses stream events -> the `response` the final event carries (or the
    created response with the text that streamed, when the stream stopped early)."""

    def __init__(self) -> None:
        self.response: dict[str, Any] | None = None
        self.final = False
        self.texts: list[str] = []

    def add(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("type", "")
        response = event.get("response")
        if isinstance(response, Mapping) and (not self.final):
            self.response = dict(response)
            self.final = kind in ("response.completed", "response.incomplete",
                                  "response.failed")
        if kind == "response.output_text.delta":
            self.texts.append(event.get("delta") or "")
        return isinstance(kind, str) and kind.endswith(".delta")

    def body(self) -> dict[str, Any] | None:
        if self.response is None:
            return None
        body = dict(self.response)
        if not self.final and self.texts and not body.get("output"):
            body["output"] = [{"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "".join(self.texts)}]}]
        return body


class MessagesStream:
    """Anthropic Messages stream events -> a `message`."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json_parts: dict[int, list[str]] = {}

    def add(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("type")
        if kind == "message_start":
            self.message = dict(event.get("message") or {})
            self.message["usage"] = dict(self.message.get("usage") or {})
        elif kind == "content_block_start":
            index = event.get("index", len(self.blocks))
            self.blocks[index] = dict(event.get("content_block") or {})
            return self.blocks[index].get("type") in ("tool_use", "server_tool_use")
        elif kind == "content_block_delta":
            index = event.get("index", 0)
            block = self.blocks.setdefault(index, {"type": "text", "text": ""})
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif dtype == "input_json_delta":
                self.json_parts.setdefault(index, []).append(delta.get("partial_json", ""))
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif dtype == "signature_delta":
                block["signature"] = delta.get("signature")
            return True
        elif kind == "message_delta" and self.message is not None:
            delta = event.get("delta") or {}
            for key in ("stop_reason", "stop_sequence"):
                if key in delta:
                    self.message[key] = delta[key]
            # message_delta's counts are cumulative; None means "unchanged".
            for key, value in (event.get("usage") or {}).items():
                if value is not None:
                    self.message["usage"][key] = value
        return False

    def body(self) -> dict[str, Any] | None:
        if self.message is None:
            return None
        content = []
        for index in sorted(self.blocks):
            block = dict(self.blocks[index])
            if index in self.json_parts:
                raw = "".join(self.json_parts[index])
                try:
                    block["input"] = json.loads(raw) if raw else {}
                except ValueError:  # a stream cut inside the arguments
                    block["input"] = raw
            content.append(block)
        return {**self.message, "content": content}


class GeminiStream:
    """Gemini generateContent stream chunks -> one response (text parts merged)."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.candidates: dict[int, dict[str, Any]] = {}

    def add(self, event: Mapping[str, Any]) -> bool:
        for key in ("modelVersion", "responseId", "createTime", "usageMetadata"):
            if event.get(key) is not None:
                self.head[key] = event[key]  # usage is cumulative: the last one stands
        output = False
        for position, candidate in enumerate(event.get("candidates") or ()):
            index = candidate.get("index", position)
            state = self.candidates.setdefault(index, {"parts": [], "role": "model"})
            content = candidate.get("content") or {}
            state["role"] = content.get("role", state["role"])
            for part in content.get("parts") or ():
                output = True
                last = state["parts"][-1] if state["parts"] else None
                if (last is not None and set(part) == {"text"} and set(last) == {"text"}):
                    last["text"] += part["text"]
                else:
                    state["parts"].append(dict(part))
            for key, value in candidate.items():
                if key not in ("content", "index"):
                    state[key] = value
        return output

    def body(self) -> dict[str, Any] | None:
        if not self.head and not self.candidates:
            return None
        candidates = []
        for index in sorted(self.candidates):
            state = dict(self.candidates[index])
            parts = state.pop("parts")
            role = state.pop("role")
            candidates.append({"content": {"role": role, "parts": parts}, "index": index,
                               **state})
        return {**self.head, "candidates": candidates}


_ACCUMULATORS: dict[str, type[StreamAccumulator]] = {
    "chat": ChatStream, "responses": ResponsesStream, "messages": MessagesStream,
    "gemini": GeminiStream}


def accumulator_for(flavor: str) -> StreamAccumulator:
    return _ACCUMULATORS[flavor]()
