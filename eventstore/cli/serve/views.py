"""What each page shows: one dict of data per view, from the request's filters and
cursor. The page renders it, the API encodes it; both share these functions."""

from __future__ import annotations

import base64
import binascii
import itertools
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from starlette.requests import Request

from ...errors import InvalidQueryError
from ...events import (
    COST_RECORDED,
    MEMORY_TRIMMED,
    MESSAGE_SENT,
    POLICY_VIOLATION,
    RecordedEvent,
)
from ...query import Query, build_query
from ..base import parse_time
from ..follow import last_events, reading
from ..render import compact_json, cost_of, describe, fmt_money, fmt_ms, fmt_time, iso
from ..subscriptions import subscription_rows
from .charts import bar_chart
from .index import ALERTS, CALL_TYPES, LLM_CALL, ConversationRow, ViewerIndex, call_usage
from .live import Viewer

MAX_PAGE = 500

_json = msgspec.json.Encoder(decimal_format="string")


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def viewer(request: Request) -> Viewer:
    found: Viewer = request.app.state.viewer
    return found


def indexed(request: Request) -> Viewer:
    """The viewer, once its index is built; until then a 503 that says how far it got."""
    v = viewer(request)
    if not v.ready.is_set():
        position, head = v.indexed
        raise BadRequest(503, f"indexing the log: {position} of {head} events so far; "
                              "this page appears when it is done")
    return v


# --- request parsing ---------------------------------------------------------------------


def query_text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def _time(request: Request, name: str) -> datetime | None:
    value = query_text(request, name)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise BadRequest(400, f"{name}: {exc}") from exc


def _limit(request: Request, default: int) -> int:
    value = query_text(request, "limit")
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(value)


def _seq_cursor(request: Request) -> int | None:
    """The conversations listing's cursor: the last seq of the previous page's last row."""
    value = query_text(request, "cursor")
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
        if not raw.startswith("c") or not raw[1:].isdigit():
            raise ValueError(raw)
        return int(raw[1:])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest(400, "cursor is malformed; start again without cursor=") from None


def _make_seq_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"c{seq}".encode()).rstrip(b"=").decode("ascii")


def _link(path: str, params: dict[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return path + (f"?{urlencode(kept)}" if kept else "")


# --- views (one dict of data each) -------------------------------------------------------


def _conversation_json(row: ConversationRow) -> dict[str, Any]:
    return {"id": row.id, "user_id": row.user_id, "title": row.title,
            "first_at": row.first_at, "last_at": row.last_at, "events": row.events,
            "messages": row.messages, "calls": row.calls,
            "unpriced_calls": row.unpriced_calls, "cost": row.cost,
            "violations": row.violations, "tags": row.tags}


async def conversations_view(request: Request) -> dict[str, Any]:
    v = indexed(request)
    filters = {name: query_text(request, name)
               for name in ("user", "conversation", "tag", "after", "before")}
    limit = _limit(request, 50)
    rows = v.index.conversations(
        user_id=filters["user"], conversation_id=filters["conversation"], tag=filters["tag"],
        after=_time(request, "after"), before=_time(request, "before"),
        below_seq=_seq_cursor(request))
    page = list(itertools.islice(rows, limit + 1))
    more = len(page) > limit
    page = page[:limit]
    next_cursor = _make_seq_cursor(page[-1].last_seq) if more else None
    return {
        "conversations": [_conversation_json(r) for r in page],
        "next_cursor": next_cursor,
        "filters": filters,
        "total_conversations": v.index.conversation_count,
        "next_link": _link("/conversations", {**filters, "limit": query_text(request, "limit"),
                                              "cursor": next_cursor})
        if more else None,
    }


def _call_view(event: RecordedEvent) -> dict[str, Any]:
    data = event.data
    usage = call_usage(data)
    cost = cost_of(event)
    tool_calls = data.get("tool_calls")
    return {
        "provider": data.get("provider"), "model": data.get("model"),
        "input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
        "cache_read_tokens": usage.get("cache_read_tokens"),
        "cache_write_tokens": usage.get("cache_write_tokens"),
        "latency": fmt_ms(data["latency_ms"]) + " ms"
        if data.get("latency_ms") is not None else None,
        "cost": fmt_money(cost) if cost is not None else None,
        "error": compact_json(data["error"]) if data.get("error") is not None else None,
        "tool_calls": [compact_json(t) for t in tool_calls]
        if isinstance(tool_calls, list) else [],
    }


def entry(event: RecordedEvent) -> dict[str, Any]:
    """How the transcript shows one event: a bubble, a call card or an inline notice."""
    data = event.data if isinstance(event.data, dict) else {}
    base = {"seq": event.seq, "type": event.type, "time": fmt_time(event.recorded_at),
            "user_id": event.user_id}
    if event.type == MESSAGE_SENT and isinstance(data.get("content"), str):
        role = str(data.get("role", "message"))
        kind = role if role in ("user", "assistant", "system", "tool") else "other"
        tool_calls = data.get("tool_calls")
        return {**base, "kind": "message", "role": role, "side": kind,
                "text": data["content"], "tokens": data.get("tokens"),
                "tool_calls": [compact_json(t) for t in tool_calls]
                if isinstance(tool_calls, list) else []}
    if event.type in CALL_TYPES and isinstance(data.get("model"), str):
        return {**base, "kind": "call", "call": _call_view(event)}
    if event.type in ALERTS or event.type == POLICY_VIOLATION:
        return {**base, "kind": "violation", "text": describe(event)}
    if event.type == MEMORY_TRIMMED:
        return {**base, "kind": "trim", "text": describe(event)}
    if event.type == "user_feedback":
        return {**base, "kind": "feedback", "text": describe(event)}
    return {**base, "kind": "event", "text": f"{event.type} {describe(event)}"}


def entries(events: list[RecordedEvent]) -> list[dict[str, Any]]:
    """The transcript's entries. The cost_recorded that record_llm_call writes beside its
    llm_call joins that call's card instead of showing as a second call."""
    out: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    for event in events:
        call_id = event.data.get("call_id") if isinstance(event.data, dict) else None
        if event.type == COST_RECORDED and isinstance(call_id, str) and call_id in calls:
            card = calls[call_id]["call"]
            cost = cost_of(event)
            card["cost"] = fmt_money(cost) if cost is not None else None
            continue
        item = entry(event)
        if event.type == LLM_CALL:
            calls[event.id] = item
        out.append(item)
    return out


async def conversation_view(request: Request) -> dict[str, Any]:
    v = indexed(request)
    cid: str = request.path_params["conversation_id"]
    row = v.index.conversation(cid)
    if row is None:
        raise BadRequest(404, f"no conversation {cid!r}")
    limit = _limit(request, 200)
    page = await v.store.list_events(conversation_id=cid, limit=limit,
                                     cursor=query_text(request, "cursor"))
    return {
        "conversation": _conversation_json(row),
        "events": page.events,
        "entries": entries(page.events),
        "next_cursor": page.next_cursor,
        "next_link": _link(f"/conversations/{quote(cid, safe='')}",
                           {"limit": query_text(request, "limit"),
                                                      "cursor": page.next_cursor})
        if page.next_cursor else None,
    }


async def event_view(request: Request) -> dict[str, Any]:
    """One event in full: for a model call, the exact request and response recorded."""
    v = viewer(request)
    seq: int = request.path_params["seq"]
    if seq < 1:
        raise BadRequest(404, f"no event #{seq}")
    found: RecordedEvent | None = None
    async with reading(v.store.read(seq, batch_size=1)) as events:
        async for event in events:
            found = event if event.seq == seq else None
            break
    if found is None:
        raise BadRequest(404, f"no event #{seq}")
    call = await _exact_call(v, found)
    return {"event": found, "time": fmt_time(found.recorded_at), "call": call,
            "data_json": _pretty(found.data), "metadata_json": _pretty(found.metadata),
            "request_json": _pretty(call["request"]) if call else None,
            "response_json": _pretty(call["response"]) if call else None}


def _pretty(value: Any) -> str:
    return msgspec.json.format(_json.encode(value), indent=2).decode()


async def _exact_call(v: Viewer, event: RecordedEvent) -> dict[str, Any] | None:
    """For an llm_call, the request exactly as sent (its messages are stored once per
    conversation and referenced, so it is rebuilt by the store's call reader) and the
    response. Only within a conversation: a call outside one would mean reading the log."""
    if event.type != LLM_CALL or event.conversation_id is None:
        return None
    for call in await v.store.calls(conversation_id=event.conversation_id,
                                    after=event.occurred_at, before=event.occurred_at):
        if call.id == event.id:
            return {"request": call.request, "response": call.response}
    return None


def _rollups(index: ViewerIndex, by: str, limit: int) -> list[dict[str, Any]]:
    rows = index.costs(by)
    # Days: the latest `limit` in calendar order; the rest: the `limit` costliest.
    rows = rows[-limit:] if by == "day" else rows[:limit]
    return [{"key": r.key, "calls": r.calls, "unpriced_calls": r.unpriced_calls,
             "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "cost": r.cost}
            for r in rows]


async def costs_view(request: Request) -> dict[str, Any]:
    """Totals and rollups (the `limit` costliest groups of each, default 50, and the
    latest `limit` days), from the index: no scan of the log."""
    index = indexed(request).index
    limit = _limit(request, 50)
    total = index.total
    by_day = _rollups(index, "day", limit)
    return {
        "total": {"calls": total.calls, "unpriced_calls": total.unpriced_calls,
                  "input_tokens": total.input_tokens, "output_tokens": total.output_tokens,
                  "cost": total.cost},
        "groups": {by: index.group_count(by) for by in ("day", "model", "user", "tag")},
        "by_day": by_day, "by_model": _rollups(index, "model", limit),
        "by_user": _rollups(index, "user", limit), "by_tag": _rollups(index, "tag", limit),
        "chart": bar_chart([(r["key"] or "", r["cost"]) for r in by_day]),
    }


async def violations_view(request: Request) -> dict[str, Any]:
    v = indexed(request)
    page = await v.store.list_events(type=ALERTS, limit=_limit(request, 100),
                                     cursor=query_text(request, "cursor"))
    return {
        "events": page.events,
        "entries": [{**entry(e), "conversation_id": e.conversation_id} for e in page.events],
        "total": v.index.alerts,
        "next_cursor": page.next_cursor,
        "next_link": _link("/violations", {"limit": query_text(request, "limit"),
                                           "cursor": page.next_cursor})
        if page.next_cursor else None,
    }


async def subscriptions_view(request: Request) -> dict[str, Any]:
    return {"subscriptions": await subscription_rows(viewer(request).store)}


def tail_item(event: RecordedEvent) -> dict[str, Any]:
    return {"seq": event.seq, "recorded_at": iso(event.recorded_at),
            "time": fmt_time(event.recorded_at), "type": event.type,
            "conversation_id": event.conversation_id, "user_id": event.user_id,
            "summary": describe(event)}


async def tail_view(request: Request) -> dict[str, Any]:
    v = viewer(request)
    backlog, position = await last_events(v.store, tail_query(request), 20)
    return {"events": [tail_item(e) for e in backlog], "position": position,
            "stream": _link("/api/tail", {"after": position,
                                          "type": query_text(request, "type")})}


def tail_query(request: Request) -> Query:
    try:
        return build_query(type=query_text(request, "type"))
    except InvalidQueryError as exc:
        raise BadRequest(400, str(exc)) from exc
