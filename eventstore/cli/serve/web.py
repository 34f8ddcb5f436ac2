"""The viewer's ASGI app: pages and the same data as JSON under /api/, behind the token.

A page renders its view's dict through a Jinja2 template (which escapes everything: event
text is attacker-controlled); the API encodes the same dict as JSON. The app only reads
(`list_events`, `read`, `head`, a non-durable subscription for the live parts); it opens
the store itself in its lifespan, so the store lives on the event loop that serves the
requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import InvalidCursorError, InvalidQueryError
from ...store import EventStore
from ...subscriptions import Subscription
from ..follow import reading
from ..render import compact_json, fmt_money, fmt_time
from .access import TokenGate
from .index import ViewerIndex
from .live import Live, Viewer
from .views import (
    BadRequest,
    conversation_view,
    conversations_view,
    costs_view,
    event_view,
    integrity_view,
    query_text,
    subscriptions_view,
    tail_item,
    tail_query,
    tail_view,
    verify_view,
    viewer,
    violations_view,
)

HERE = Path(__file__).parent
INDEX_BEFORE_SERVING = 50_000  # events: about a second of rebuild on a quiet machine
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet log (proxies drop idle streams)
# How long the "verify now" button waits for the result before showing the page with the
# run in progress (which reloads itself until it is done): minutes on a large loaded log.
VERIFY_PAGE_WAIT = 10.0
_BACKGROUND: set[asyncio.Future[Any]] = set()

_json = msgspec.json.Encoder(decimal_format="string")


# --- routes ------------------------------------------------------------------------------

View = Callable[[Request], Awaitable[dict[str, Any]]]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["money"] = fmt_money
    env.filters["when"] = fmt_time
    env.filters["json"] = compact_json
    # One path segment: "/" and ".." in an id stay inside the link, escaped.
    env.filters["segment"] = lambda value: quote(str(value), safe="")
    return env


TEMPLATES = _templates()


def _error(request: Request, status: int, message: str, *, api: bool) -> Response:
    headers = {"retry-after": "2"} if status == 503 else None
    if api:
        return Response(_json.encode({"error": message}), status, headers=headers,
                        media_type="application/json")
    html = TEMPLATES.get_template("error.html").render(status=status, message=message,
                                                       nav=_nav(request))
    return HTMLResponse(html, status, headers=headers)


def _nav(request: Request) -> list[tuple[str, str, bool]]:
    path = request.url.path
    items = [("/conversations", "Conversations"), ("/costs", "Costs"),
             ("/violations", "Violations"), ("/tail", "Live tail"),
             ("/subscriptions", "Subscriptions"), ("/integrity", "Integrity")]
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
        query = tail_query(request)
        start = request.headers.get("last-event-id") or query_text(request, "after")
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
                    if v.ready.is_set():
                        await v.live.wait_past(position)
                    else:  # the live subscription starts with the index: read again then
                        await v.ready.wait()
            except TimeoutError:
                yield b": keepalive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"x-accel-buffering": "no"})


async def verify_page(request: Request) -> Response:
    """The "verify now" button: verify, then show the integrity page with the result
    (a redirect, so reloading the page does not verify again), or with the run still in
    progress after VERIFY_PAGE_WAIT seconds (the run goes on; the API waits for it)."""
    run = asyncio.ensure_future(verify_view(request))
    _BACKGROUND.add(run)  # the loop keeps only weak references to tasks
    run.add_done_callback(_BACKGROUND.discard)
    await asyncio.wait({run}, timeout=VERIFY_PAGE_WAIT)
    if run.done():
        try:
            run.result()
        except BadRequest as exc:
            return _error(request, exc.status, exc.message, api=False)
    return RedirectResponse("/integrity#verify", 303)


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
              index_before_serving: int = INDEX_BEFORE_SERVING,
              checkpoints: Path | None = None) -> ASGIApp:
    """The viewer behind its token gate. `open_store` is called in the app's lifespan.
    A log of at most `index_before_serving` events is indexed before the first request is
    answered; a larger one is indexed in the background while the pages that need the
    index answer 503 with the progress. `otlp`, given the open store, makes the OTLP/HTTP
    receiver mounted at POST /v1/traces. `checkpoints`: a directory of checkpoint files
    (a store's `checkpoint_dir=`) whose latest the integrity page shows and verifies
    against; only read."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_store() as store:
            index = ViewerIndex()
            v = app.state.viewer = Viewer(store, index, Live(index), checkpoints=checkpoints)
            if otlp is not None:
                v.mounts["otlp"] = otlp(store)
            subscription: Subscription | None = None
            builder: asyncio.Task[Subscription] | None = None
            if await store.head() <= index_before_serving:
                subscription = await v.build_index()
            else:  # a large log: serve now, say how far the index is until it is done
                builder = asyncio.create_task(v.build_index())
            try:
                yield
            finally:
                if builder is not None:
                    if builder.done() and not builder.cancelled() \
                            and builder.exception() is None:
                        subscription = builder.result()
                    else:
                        builder.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await builder
                if subscription is not None:
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
        Route("/integrity", page(integrity_view, "integrity.html")),
        Route("/integrity/verify", verify_page, methods=["POST"]),
        Route("/api/conversations", api(conversations_view, ("next_link", "filters"))),
        Route("/api/conversations/{conversation_id:path}",
              api(conversation_view, ("entries", "next_link"))),
        Route("/api/events/{seq:int}", api(event_view, (
            "time", "data_json", "metadata_json", "request_json", "response_json"))),
        Route("/api/costs", api(costs_view, ("chart", "next_links"))),
        Route("/api/violations", api(violations_view, ("entries", "next_link", "types"))),
        Route("/api/subscriptions", api(subscriptions_view, ("next_link",))),
        Route("/api/integrity", api(integrity_view)),
        Route("/api/integrity/verify", api(verify_view), methods=["POST"]),
        Route("/api/tail", tail_stream),
        Route("/v1/traces", LateMount("otlp"), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return TokenGate(Starlette(routes=routes, lifespan=lifespan), token)
