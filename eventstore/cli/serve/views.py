"""What each page shows: one dict of data per view, from the request's filters and
cursor. The page renders it, the API encodes it; both share these functions."""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import msgspec
from starlette.requests import Request

from ...clock import utcnow
from ...errors import IntegrityError, InvalidQueryError
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
from .budgets import budget_json, budget_rows
from .charts import bar_chart
from .index import (
    ALERTS,
    CALL_TYPES,
    LLM_CALL,
    ConversationRow,
    CostRollup,
    ViewerIndex,
    call_usage,
)
from .integrity import integrity_data, verify_now
from .live import Viewer

MAX_PAGE = 500
T = TypeVar("T")

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


def key_cursor(request: Request, name: str, kind: str,
               parse: Callable[[list[Any]], tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """The cursor of an in-memory listing: the sort key of the previous page's last row,
    tagged with the listing's kind. Anything else is a 400 that says what to do."""
    value = query_text(request, name)
    if value is None:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if not isinstance(raw, list) or not raw or raw[0] != kind:
            raise ValueError(raw)
        return parse(raw[1:])
    except (binascii.Error, ValueError, TypeError, ArithmeticError, UnicodeDecodeError):
        raise BadRequest(400, f"{name} is malformed or belongs to another listing; start "
                              f"again without {name}=") from None


def make_key_cursor(kind: str, key: list[Any]) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def keyed_page(rows: list[T], key: Callable[[T], tuple[Any, ...]],
               after: tuple[Any, ...] | None, limit: int) -> tuple[list[T], bool]:
    """The `limit` rows after `after` in ascending `key` order (`rows` sorted by it)."""
    start = 0 if after is None else bisect.bisect_right([key(r) for r in rows], after)
    page = rows[start:start + limit + 1]
    return page[:limit], len(page) > limit


def _strings(count: int) -> Callable[[list[Any]], tuple[Any, ...]]:
    def parse(raw: list[Any]) -> tuple[Any, ...]:
        if len(raw) != count or not all(isinstance(v, str) for v in raw):
            raise ValueError(raw)
        return tuple(raw)

    return parse


def _cost_key(raw: list[Any]) -> tuple[Any, ...]:
    cost, key = _strings(2)(raw)
    return (-Decimal(cost), key)


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


ROLLUPS = ("model", "user", "tag", "day")


def _rollup_json(r: CostRollup) -> dict[str, Any]:
    return {"key": r.key, "calls": r.calls, "unpriced_calls": r.unpriced_calls,
            "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "cost": r.cost}


def _rollup_page(request: Request, index: ViewerIndex, by: str,
                 limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a rollup: days newest first, the others costliest first, each with
    its own cursor (`<by>_cursor`) so one table pages while the others stay put."""
    name = f"{by}_cursor"
    rows = index.costs(by)
    if by == "day":  # newest first: walk the calendar order backwards from the cursor
        after = key_cursor(request, name, by, _strings(1))
        end = len(rows) if after is None else bisect.bisect_left(
            [r.key or "" for r in rows], after[0])
        chunk = rows[max(0, end - limit - 1):end][::-1]
        page, more = chunk[:limit], len(chunk) > limit
        cursor = make_key_cursor(by, [page[-1].key or ""]) if more else None
    else:
        after = key_cursor(request, name, by, _cost_key)
        page, more = keyed_page(rows, lambda r: (-r.cost, r.key or ""), after, limit)
        cursor = make_key_cursor(by, [str(page[-1].cost), page[-1].key or ""]) \
            if more else None
    return [_rollup_json(r) for r in page], cursor


async def costs_view(request: Request) -> dict[str, Any]:
    """Totals, the rollups by model, user, tag and day and the budgets' state, each
    paged by its own cursor, from the index: no scan of the log. The chart shows the
    days of the day table's page, in calendar order."""
    v = indexed(request)
    index = v.index
    limit = _limit(request, 50)
    total = index.total
    tables: dict[str, list[dict[str, Any]]] = {}
    cursors: dict[str, str | None] = {}
    for by in ROLLUPS:
        tables[by], cursors[by] = _rollup_page(request, index, by, limit)
    now = utcnow()
    rows, malformed = budget_rows(index, now)
    after = key_cursor(request, "budgets_cursor", "budgets", _strings(2))
    page, more = keyed_page(rows, lambda r: r.key, after, limit)
    budgets = [await budget_json(v.store, row, now) for row in page]
    cursors["budgets"] = make_key_cursor("budgets", list(page[-1].key)) if more else None
    kept = {"limit": query_text(request, "limit")} | {
        f"{name}_cursor": query_text(request, f"{name}_cursor") for name in (*ROLLUPS, "budgets")}
    return {
        "total": {"calls": total.calls, "unpriced_calls": total.unpriced_calls,
                  "input_tokens": total.input_tokens, "output_tokens": total.output_tokens,
                  "cost": total.cost},
        "groups": {by: index.group_count(by) for by in ROLLUPS},
        "by_day": tables["day"], "by_model": tables["model"],
        "by_user": tables["user"], "by_tag": tables["tag"],
        "budgets": budgets, "budget_count": len(rows), "malformed_budgets": malformed,
        "next_cursors": cursors,
        "next_links": {name: _link("/costs", {**kept, f"{name}_cursor": cursor})
                       for name, cursor in cursors.items() if cursor is not None},
        "chart": bar_chart([(r["key"] or "", r["cost"]) for r in reversed(tables["day"])]),
    }


VIOLATION_FILTERS = ("user", "conversation", "type", "after", "before")


async def violations_view(request: Request) -> dict[str, Any]:
    """Guardrail violations and budget alerts, oldest first, by the store's cursor;
    filter by user, conversation, type (one of ALERTS) and time."""
    v = indexed(request)
    filters = {name: query_text(request, name) for name in VIOLATION_FILTERS}
    kind = filters["type"]
    if kind is not None and kind not in ALERTS:
        raise BadRequest(400, f"type must be one of {', '.join(sorted(ALERTS))}")
    page = await v.store.list_events(
        type=kind or ALERTS, user_id=filters["user"], conversation_id=filters["conversation"],
        after=_time(request, "after"), before=_time(request, "before"),
        limit=_limit(request, 100), cursor=query_text(request, "cursor"))
    return {
        "events": page.events,
        "entries": [{**entry(e), "conversation_id": e.conversation_id} for e in page.events],
        "total": v.index.alerts,
        "filters": filters,
        "types": sorted(ALERTS),
        "next_cursor": page.next_cursor,
        "next_link": _link("/violations", {**filters, "limit": query_text(request, "limit"),
                                           "cursor": page.next_cursor})
        if page.next_cursor else None,
    }


async def subscriptions_view(request: Request) -> dict[str, Any]:
    """Durable subscriptions by name, paged by a name cursor."""
    rows = await subscription_rows(viewer(request).store)
    limit = _limit(request, 100)
    after = key_cursor(request, "cursor", "subscriptions", _strings(1))
    page, more = keyed_page(rows, lambda r: (r.name,), after, limit)
    cursor = make_key_cursor("subscriptions", [page[-1].name]) if more else None
    return {"subscriptions": page, "next_cursor": cursor,
            "next_link": _link("/subscriptions", {"limit": query_text(request, "limit"),
                                                  "cursor": cursor}) if cursor else None}


async def integrity_view(request: Request) -> dict[str, Any]:
    """Tree head, latest checkpoint, last verify result. Never verifies (see verify_view)."""
    v = viewer(request)
    return await integrity_data(v.store, v.verification, v.checkpoints)


async def verify_view(request: Request) -> dict[str, Any]:
    """Verify the log now (or join the run in progress): every leaf recomputed."""
    v = viewer(request)
    try:
        result = await verify_now(v.store, v.verification, v.checkpoints)
    except IntegrityError as exc:  # a backend that keeps no tree
        raise BadRequest(409, str(exc)) from exc
    return result.as_dict()


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
