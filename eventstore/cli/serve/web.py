"""The viewer's ASGI app: pages and the same data as JSON under /api/.

Each view gathers one dict of data; the page renders it through a Jinja2 template (which
escapes everything: event text is attacker-controlled), the API encodes it as JSON. Lists
page by cursor: the store's own cursors for event lists, a seq for the conversation index.
The app only reads (`list_events`, `read`, `head`, a non-durable subscription for the
live parts); it opens the store itself in its lifespan, so the store lives on the event
loop that serves the requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import InvalidCursorError, InvalidQueryError
from ...events import (
    COST_RECORDED,
    MEMORY_TRIMMED,
    MESSAGE_SENT,
    POLICY_VIOLATION,
    RecordedEvent,
)
from ...query import Query, build_query
from ...store import EventStore
from ..base import parse_time
from ..follow import last_events, reading
from ..render import compact_json, cost_of, describe, fmt_money, fmt_ms, fmt_time, iso
from ..subscriptions import subscription_rows
from .access import TokenGate
from .charts import bar_chart
from .index import ALERTS, CALL_TYPES, LLM_CALL, ConversationRow, ViewerIndex, call_usage

HERE = Path(__file__).parent
MAX_PAGE = 500
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet log (proxies drop idle streams)

_json = msgspec.json.Encoder(decimal_format="string")


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- live state --------------------------------------------------------------------------


class Live:
    """The seq the viewer's subscription has reached, and a wake-up for whoever waits for
    it to move (the SSE streams): one subscription for all clients, no polling."""

    def __init__(self, index: ViewerIndex) -> None:
        self.index = index
        self.seq = 0
        self._moved = asyncio.Event()

    def on_event(self, event: RecordedEvent) -> None:
        self.index.apply_event(event)
        self.seq = max(self.seq, event.seq)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait_past(self, seq: int) -> None:
        """Return once the log has moved past `seq` (callers bound the wait)."""
        while self.seq <= seq:
            await self._moved.wait()


@dataclass
class Viewer:
    store: EventStore
    index: ViewerIndex
    live: Live
    mounts: dict[str, ASGIApp] = field(default_factory=dict)


def viewer(request: Request) -> Viewer:
    found: Viewer = request.app.state.viewer
    return found


# --- request parsing ---------------------------------------------------------------------


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def _time(request: Request, name: str) -> datetime | None:
    value = _text(request, name)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise BadRequest(400, f"{name}: {exc}") from exc


def _limit(request: Request, default: int) -> int:
    value = _text(request, "limit")
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(value)


def _seq_cursor(request: Request) -> int | None:
    """The conversations listing's cursor: the last seq of the previous page's last row."""
    value = _text(request, "cursor")
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
    v = viewer(request)
    filters = {"user": _text(request, "user"), "conversation": _text(request, "conversation"),
               "tag": _text(request, "tag"), "after": _text(request, "after"),
               "before": _text(request, "before")}
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
        "next_link": _link("/conversations", {**filters, "limit": _text(request, "limit"),
                                              "cursor": next_cursor}) if more else None,
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
        return {**base, "kind": "message", "role": role, "side": kind,
                "text": data["content"], "tokens": data.get("tokens")}
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
    v = viewer(request)
    cid: str = request.path_params["conversation_id"]
    row = v.index.conversation(cid)
    if row is None:
        raise BadRequest(404, f"no conversation {cid!r}")
    limit = _limit(request, 200)
    page = await v.store.list_events(conversation_id=cid, limit=limit,
                                     cursor=_text(request, "cursor"))
    return {
        "conversation": _conversation_json(row),
        "events": page.events,
        "entries": entries(page.events),
        "next_cursor": page.next_cursor,
        "next_link": _link(f"/conversations/{cid}", {"limit": _text(request, "limit"),
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
    return {"event": found, "time": fmt_time(found.recorded_at),
            "data_json": msgspec.json.format(_json.encode(found.data), indent=2).decode(),
            "metadata_json": msgspec.json.format(_json.encode(found.metadata),
                                                 indent=2).decode()}


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
    index = viewer(request).index
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
    v = viewer(request)
    page = await v.store.list_events(type=ALERTS, limit=_limit(request, 100),
                                     cursor=_text(request, "cursor"))
    return {
        "events": page.events,
        "entries": [{**entry(e), "conversation_id": e.conversation_id} for e in page.events],
        "total": v.index.alerts,
        "next_cursor": page.next_cursor,
        "next_link": _link("/violations", {"limit": _text(request, "limit"),
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
    backlog, position = await last_events(v.store, _tail_query(request), 20)
    return {"events": [tail_item(e) for e in backlog], "position": position,
            "stream": _link("/api/tail", {"after": position, "type": _text(request, "type")})}


def _tail_query(request: Request) -> Query:
    try:
        return build_query(type=_text(request, "type"))
    except InvalidQueryError as exc:
        raise BadRequest(400, str(exc)) from exc


# --- routes ------------------------------------------------------------------------------

View = Callable[[Request], Awaitable[dict[str, Any]]]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["money"] = fmt_money
    env.filters["when"] = fmt_time
    env.filters["json"] = compact_json
    return env


TEMPLATES = _templates()


def _error(request: Request, status: int, message: str, *, api: bool) -> Response:
    if api:
        return Response(_json.encode({"error": message}), status,
                        media_type="application/json")
    html = TEMPLATES.get_template("error.html").render(status=status, message=message,
                                                       nav=_nav(request))
    return HTMLResponse(html, status)


def _nav(request: Request) -> list[tuple[str, str, bool]]:
    path = request.url.path
    items = [("/conversations", "Conversations"), ("/costs", "Costs"),
             ("/violations", "Violations"), ("/tail", "Live tail"),
             ("/subscriptions", "Subscriptions")]
    return [(href, label, path == href or path.startswith(href + "/")) for href, label in items]


def page(view: View, template: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            data = await view(request)
        except BadRequest as exc:
            return _error(request, exc.status, exc.message, api=False)
        except (InvalidCursorError, InvalidQueryError) as exc:
            return _error(request, 400, str(exc), api=False)
        html = TEMPLATES.get_template(template).render(**data, nav=_nav(request),
                                                       request=request)
        return HTMLResponse(html)

    return endpoint


def api(view: View, drop: tuple[str, ...] = ()) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            data = await view(request)
        except BadRequest as exc:
            return _error(request, exc.status, exc.message, api=True)
        except (InvalidCursorError, InvalidQueryError) as exc:
            return _error(request, 400, str(exc), api=True)
        body = {k: v for k, v in data.items() if k not in drop}
        return Response(_json.encode(body), media_type="application/json")

    return endpoint


async def tail_stream(request: Request) -> Response:
    """Server-sent events: every event after `after` (or Last-Event-ID, or the head), as
    it commits in any process. Read from the log by seq, woken by the subscription."""
    v = viewer(request)
    try:
        query = _tail_query(request)
        start = request.headers.get("last-event-id") or _text(request, "after")
        if start is not None and not start.isdigit():
            raise BadRequest(400, "after must be a seq (a non-negative integer)")
    except BadRequest as exc:
        return _error(request, exc.status, exc.message, api=True)
    position = int(start) if start is not None else await v.store.head()

    async def events() -> AsyncIterator[bytes]:
        nonlocal position
        yield b"retry: 1000\n\n"
        while True:
            head = await v.store.head()
            async with reading(v.store.read(position + 1, type=query.types)) as stream:
                async for event in stream:
                    position = event.seq
                    yield (f"id: {event.seq}\nevent: append\ndata: ".encode()
                           + _json.encode(tail_item(event)) + b"\n\n")
            # Everything up to `head` had committed before the read began (no holes below
            # the head), so nothing matching is left behind it.
            position = max(position, head)
            try:
                async with asyncio.timeout(KEEPALIVE):
                    await v.live.wait_past(position)
            except TimeoutError:
                yield b": keepalive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"x-accel-buffering": "no"})


async def home(request: Request) -> Response:
    return RedirectResponse("/conversations", 303)


async def favicon(request: Request) -> Response:
    return RedirectResponse("/static/favicon.svg", 308)


class LateMount:
    """An app mounted at a path whose real handler is made once the store is open (an
    OTLP receiver needs the store); 404 until then or when there is none."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = scope["app"].state.viewer.mounts.get(self.name)
        if target is None:
            await Response("not found", 404)(scope, receive, send)
            return
        await target(scope, receive, send)


Opener = Callable[[], contextlib.AbstractAsyncContextManager[EventStore]]
Receiver = Callable[[EventStore], ASGIApp]


def build_app(open_store: Opener, token: str, *, otlp: Receiver | None = None,
              on_ready: Callable[[Viewer], None] | None = None) -> ASGIApp:
    """The viewer behind its token gate. `open_store` is called in the app's lifespan; the
    index is rebuilt from the log before the first request is answered. `otlp`, given the
    open store, makes the OTLP/HTTP receiver mounted at POST /v1/traces."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_store() as store:
            index = ViewerIndex()
            await store.rebuild(index)
            live = Live(index)
            live.seq = index.position
            # Not durable: the viewer writes nothing, not even a checkpoint.
            subscription = await store.subscribe(live.on_event, from_seq=index.position + 1)
            app.state.viewer = Viewer(store, index, live)
            if otlp is not None:
                app.state.viewer.mounts["otlp"] = otlp(store)
            if on_ready is not None:
                on_ready(app.state.viewer)
            try:
                yield
            finally:
                await subscription.stop()

    routes = [
        Route("/", home),
        Route("/favicon.ico", favicon),
        Route("/conversations", page(conversations_view, "conversations.html")),
        Route("/conversations/{conversation_id:path}",
              page(conversation_view, "conversation.html")),
        Route("/events/{seq:int}", page(event_view, "event.html")),
        Route("/costs", page(costs_view, "costs.html")),
        Route("/violations", page(violations_view, "violations.html")),
        Route("/tail", page(tail_view, "tail.html")),
        Route("/subscriptions", page(subscriptions_view, "subscriptions.html")),
        Route("/api/conversations", api(conversations_view, ("next_link", "filters"))),
        Route("/api/conversations/{conversation_id:path}",
              api(conversation_view, ("entries", "next_link"))),
        Route("/api/events/{seq:int}", api(event_view, ("time", "data_json",
                                                        "metadata_json"))),
        Route("/api/costs", api(costs_view, ("chart",))),
        Route("/api/violations", api(violations_view, ("entries", "next_link"))),
        Route("/api/subscriptions", api(subscriptions_view)),
        Route("/api/tail", tail_stream),
        Route("/v1/traces", LateMount("otlp"), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return TokenGate(Starlette(routes=routes, lifespan=lifespan), token)
