"""The API flavours a model call can have, and where each keeps its messages.

A request body is split into its *messages* (the parts that repeat from call to call of
a conversation: system or developer instructions and every input message or item) and
its *parameters* (model, temperature, tools, response format, service tier, ...).
`split_request` and `join_request` are exact inverses, so a stored call gives back the
very request that was sent.

| flavour     | API                         | message fields                     |
|-------------|-----------------------------|------------------------------------|
| chat        | OpenAI chat completions     | messages                           |
| responses   | OpenAI Responses            | instructions, input                |
| messages    | Anthropic Messages          | system, messages                   |
| gemini      | Google Gemini generateContent | systemInstruction, contents      |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["FLAVORS", "detect_flavor", "join_request", "split_request"]

# Per flavour: the fields whose value is a list of messages, and those holding one value
# (a system prompt, or Responses' `input` when it is a plain string).
FLAVORS: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "chat": (("messages",), ()),
    "responses": (("input",), ("instructions",)),
    "messages": (("messages",), ("system",)),
    "gemini": (("contents",), ("systemInstruction", "system_instruction")),
}

_PROVIDER_FLAVOR: Final = {"anthropic": "messages", "aws.bedrock": "messages",
                           "gcp.gemini": "gemini", "gcp.vertex_ai": "gemini",
                           "google": "gemini", "gemini": "gemini"}


def detect_flavor(provider: str, request: Mapping[str, Any],
                  response: Mapping[str, Any] | None) -> str:
    """The flavour of a call from its bodies' shapes (the provider decides only when the
    shapes say nothing)."""
    answered = response if isinstance(response, Mapping) else {}
    kind = answered.get("object")
    if kind in ("chat.completion", "chat.completion.chunk"):
        return "chat"
    if kind == "response":
        return "responses"
    if answered.get("type") == "message" or "system" in request:
        return "messages"
    if "contents" in request or "candidates" in answered or "usageMetadata" in answered:
        return "gemini"
    if "input" in request or "instructions" in request:
        return "responses"
    if "messages" in request:
        return _PROVIDER_FLAVOR.get(provider.strip().lower(), "chat")
    return _PROVIDER_FLAVOR.get(provider.strip().lower(), "chat")


def split_request(flavor: str, request: Mapping[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any]]:
    """(parameters, list fields -> their messages, single fields -> their value)."""
    list_fields, value_fields = FLAVORS.get(flavor, (("messages",), ()))
    params: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {}
    values: dict[str, Any] = {}
    for key, value in request.items():
        if key in list_fields and isinstance(value, list):
            lists[key] = value
        elif key in list_fields or key in value_fields:
            values[key] = value
        else:
            params[key] = value
    return params, lists, values


def join_request(params: Mapping[str, Any], lists: Mapping[str, list[Any]],
                 values: Mapping[str, Any]) -> dict[str, Any]:
    """The request `split_request` took apart."""
    return {**params, **lists, **values}


def role_of(item: Any, field: str) -> str:
    """A message's role for transcripts: its role, else its item type (Responses'
    function_call / function_call_output), else what the field holds."""
    if field in ("instructions", "system", "systemInstruction", "system_instruction"):
        return "system"
    if isinstance(item, Mapping):
        role = item.get("role") or item.get("type")
        if isinstance(role, str):
            return role
    return "user"
