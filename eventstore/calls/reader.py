"""Reading recorded calls back, each with the exact request that was sent."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from ..errors import MissingMessageError
from ..events import MESSAGE_SENT, RecordedEvent
from ..query import Query
from ..reads import LogReader
from .flavors import join_request
from .messages import item_of, resolve_refs
from .record import LLM_CALL

__all__ = ["LLMCall", "read_calls", "request_of"]


class LLMCall(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded model call: `request` is the body as sent, rebuilt from the call and
    the messages it references; `event` is the `llm_call` event itself."""

    id: str
    provider: str
    model: str
    api: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    usage: dict[str, Any]
    latency_ms: float | None
    time_to_first_token_ms: float | None
    error: dict[str, Any] | None
    priced: bool
    conversation_id: str | None
    user_id: str | None
    occurred_at: datetime
    event: RecordedEvent


def request_of(call: Mapping[str, Any], refs: Mapping[str, Any],
               messages: Mapping[str, Any]) -> dict[str, Any]:
    """The request of an `llm_call` payload whose references `refs` are resolved
    (`resolve_refs`), its digests looked up in `messages` (digest -> exact item)."""
    list_fields = set(call.get("list_fields") or ())
    lists: dict[str, list[Any]] = {}
    values: dict[str, Any] = {}
    try:
        for field, ref in refs.items():
            if field in list_fields:
                lists[field] = [messages[digest] for digest in ref]
            else:
                values[field] = messages[ref]
    except KeyError as exc:
        raise MissingMessageError(f"message {exc.args[0]} of call is not in the log") from None
    return join_request(call.get("request") or {}, lists, values)


def in_window(event: RecordedEvent, query: Query) -> bool:
    """Cost and call questions bound the call's own time (occurred_at), inclusive."""
    return ((query.after is None or event.occurred_at >= query.after)
            and (query.before is None or event.occurred_at <= query.before))


def _call(event: RecordedEvent, refs: Mapping[str, Any], messages: Mapping[str, Any]) -> LLMCall:
    data = event.data
    return LLMCall(
        id=event.id, provider=data.get("provider", ""), model=data.get("model", ""),
        api=data.get("api", ""), request=request_of(data, refs, messages),
        response=data.get("response"), usage=data.get("usage") or {},
        latency_ms=data.get("latency_ms"),
        time_to_first_token_ms=data.get("time_to_first_token_ms"),
        error=data.get("error"), priced=bool(data.get("priced")),
        conversation_id=event.conversation_id, user_id=event.user_id,
        occurred_at=event.occurred_at, event=event,
    )


async def read_calls(reader: LogReader, query: Query) -> list[LLMCall]:
    """The recorded calls matching the query's conversation and user, in log order, each
    request rebuilt; `after` / `before` bound the calls' time (occurred_at)."""
    by_conversation: dict[str | None, dict[str, Any]] = {}
    by_call: dict[str, dict[str, Any]] = {}
    calls: list[RecordedEvent] = []
    wanted = Query(conversation_id=query.conversation_id, user_id=query.user_id,
                   types=frozenset({MESSAGE_SENT, LLM_CALL}))
    async for event in reader.read(wanted):
        if event.type == LLM_CALL:
            calls.append(event)
            continue
        digest = event.data.get("hash")
        if not isinstance(digest, str):
            continue
        # Within a conversation the first copy of a digest is the message; calls without
        # a conversation share nothing, so theirs resolve through the call that stored them.
        item = item_of(event.data)
        if event.conversation_id is not None:
            by_conversation.setdefault(event.conversation_id, {}).setdefault(digest, item)
        call_id = event.data.get("call_id")
        if isinstance(call_id, str):
            by_call.setdefault(call_id, {}).setdefault(digest, item)
    out = []
    resolved: dict[str, dict[str, Any]] = {}
    for event in calls:
        if not in_window(event, query):
            continue
        try:
            refs = resolve_refs(event.data.get("messages") or {}, resolved)
        except KeyError as exc:
            raise MissingMessageError(f"call {event.id} extends call {exc.args[0]}, which "
                                      "is not among the calls read") from None
        resolved[event.id] = refs
        if event.conversation_id is not None:
            known = by_conversation.get(event.conversation_id, {})
        else:
            known = by_call.get(event.id, {})
        out.append(_call(event, refs, known))
    return out
