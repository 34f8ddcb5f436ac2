"""`eventstore serve`, over HTTP: every page and API route against a known log, the token
rules, escaping of hostile event text, the security headers, and that nothing any
response sends points at another host. Starlette's TestClient drives the app in-process
(its lifespan opens the store); one test runs the real command on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from markupsafe import escape

from eventstore import Budget, Event, EventStore, RecordedEvent
from eventstore.backends import Checkpoint
from eventstore.integrity import format_checkpoint
from eventstore.pricing import ModelPrice, PriceTable

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from eventstore.cli.serve import is_loopback
from eventstore.cli.serve.access import CSP, TokenGate, cookie_name
from eventstore.cli.serve.web import build_app

from .test_budgets import settled

TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 20  # seconds; only reached when something is broken

PRICES = PriceTable({
    "openai/gpt-4o": ModelPrice.per_million(input="2.5", output="10"),
    "anthropic/claude-sonnet": ModelPrice.per_million(input="3", output="15"),
})
HOSTILE = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
EVIL_ID = "<b>evil</b>&id"
# A model call with no known price, as record_llm_call writes it: counted, never $0.
UNPRICED = {"provider": "acme", "model": "mystery-1", "latency_ms": 3.25,
            "usage": {"input_tokens": 7, "output_tokens": 3},
            "error": {"type": "RateLimitError", "message": "slow down", "status_code": 429},
            "tool_calls": [{"id": "t1", "name": "lookup", "arguments": {"q": "x"}}]}


@dataclass
class Log:
    url: str
    events: list[RecordedEvent]

    def where(self, **match: Any) -> list[RecordedEvent]:
        return [e for e in self.events if all(getattr(e, k) == v for k, v in match.items())]


async def seed(url: str) -> Log:
    async with EventStore.open(url, pricing=PRICES) as store:
        c1: dict[str, Any] = {"conversation_id": "c1", "user_id": "u1",
                              "metadata": {"tags": ["prod"]}}
        c2: dict[str, Any] = {"conversation_id": "c2", "user_id": "u2",
                              "metadata": {"tags": ["beta"]}}
        await store.track("conversation_created", {"title": "Trip"}, **c1)
        await store.track("message_sent", {"role": "user", "content": "Hi there"}, **c1)
        await store.track("message_sent",
                          {"role": "assistant", "content": "Hello!\nHow can I help?"}, **c1)
        await store.record_cost(provider="openai", model="gpt-4o", input_tokens=1200,
                                output_tokens=300, latency_ms=420.4, **c1)
        await store.track("policy_violation",
                          {"policy": "pii", "reason": "card number", "severity": "high"}, **c1)
        await store.track("memory_trimmed", {"strategy": "summarize", "messages_before": 10,
                                             "messages_after": 4, "tokens_removed": 500}, **c1)
        await store.track("user_feedback", {"rating": 5, "comment": "great"}, **c1)
        await store.track("message_sent", {"role": "user", "content": "Plan"}, **c2)
        await store.record_cost(provider="anthropic", model="claude-sonnet",
                                input_tokens=1000, output_tokens=500, **c2)
        await store.append(Event(type="llm_call", data=UNPRICED, **c2))
        # Attacker-controlled text everywhere a person will read it.
        evil: dict[str, Any] = {"conversation_id": EVIL_ID, "user_id": HOSTILE,
                                "metadata": {"tags": [HOSTILE]}}
        await store.track("conversation_created", {"title": HOSTILE}, **evil)
        await store.track("message_sent", {"role": "user", "content": HOSTILE}, **evil)
        await store.track("policy_violation", {"policy": HOSTILE, "reason": HOSTILE}, **evil)
        await store.backend.save_checkpoint(Checkpoint(name="reports", position=3))
        events = [e async for e in store.read()]
    return Log(url, events)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    path = tmp_path_factory.mktemp("serve") / "audit.db"
    return asyncio.run(seed(f"sqlite:///{path}"))


@pytest.fixture(scope="module")
def client(log: Log) -> Iterator[TestClient]:
    app = build_app(lambda: EventStore.open(log.url), TOKEN)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c


def get(client: TestClient, path: str, **kwargs: Any) -> Any:
    response = client.get(path, headers=AUTH, **kwargs)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return response


def api(client: TestClient, path: str) -> Any:
    return msgspec.json.decode(get(client, path).content)


PAGES = ["/conversations", "/conversations/c1", f"/conversations/{quote(EVIL_ID)}",
         "/events/4", "/costs", "/violations", "/tail", "/subscriptions", "/integrity"]
APIS = ["/api/conversations", "/api/conversations/c1", "/api/events/4", "/api/costs",
        "/api/violations", "/api/subscriptions", "/api/integrity"]
STATIC = ["/static/style.css", "/static/tail.js"]


# --- access --------------------------------------------------------------------------------


def test_without_the_token_every_route_is_401_with_no_data(client: TestClient,
                                                           log: Log) -> None:
    client.cookies.clear()
    wrong = {"Authorization": "Bearer not-the-token"}
    for path in [*PAGES, *APIS, *STATIC, "/api/tail", "/"]:
        for response in (client.get(path), client.get(path, headers=wrong),
                         client.get(path + ("&" if "?" in path else "?") + "token=nope"),
                         client.get(path, headers={"Cookie": f"{cookie_name(TOKEN)}=nope"}),
                         client.get(path, headers={"Authorization": TOKEN})):  # no scheme
            assert response.status_code == 401, path
            assert response.headers["content-security-policy"] == CSP
            assert "set-cookie" not in response.headers
            for secret in ("Hi there", "c1", "u1", "gpt-4o", "card number"):
                assert secret not in response.text
    for path in ("/v1/traces", "/integrity/verify", "/api/integrity/verify"):
        post = client.post(path, content=b"{}")
        assert post.status_code == 401 and "first_bad_seq" not in post.text, path
    assert api(client, "/api/integrity")["verify"] is None  # the refused posts ran nothing


def test_the_token_in_the_url_once_then_a_strict_httponly_cookie(client: TestClient) -> None:
    client.cookies.clear()
    first = client.get(f"/conversations?user=u1&token={TOKEN}", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/conversations?user=u1"  # the token leaves the URL
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(TOKEN)}={TOKEN};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    # The client keeps the cookie, as a browser does: no token needed any more.
    page = client.get(first.headers["location"])
    assert page.status_code == 200 and ">c1</a>" in page.text
    client.cookies.clear()
    assert client.get("/conversations").status_code == 401
    # Scripts: the query token on an API route answers directly; or a bearer header.
    direct = client.get(f"/api/conversations?token={TOKEN}")
    assert direct.status_code == 200 and direct.json()["conversations"]
    assert client.get("/api/conversations", headers=AUTH).status_code == 200
    client.cookies.clear()


def test_every_response_carries_the_csp_and_references_no_other_host(client: TestClient
                                                                      ) -> None:
    for path in [*PAGES, *APIS, *STATIC]:
        response = get(client, path)
        headers = response.headers
        assert headers["content-security-policy"] == CSP, path
        assert "'unsafe-inline'" not in CSP and "http" not in CSP
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        body = response.text
        assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", body, re.IGNORECASE), path
        for ref in re.findall(r'(?:src|href|action)="([^"]*)"', body):
            assert ref.startswith(("/", "#", "?")) and not ref.startswith("//"), (path, ref)
        if headers["content-type"].startswith("text/html"):
            # No inline script or style: the CSP would block them, so none may be needed.
            assert not re.search(r"<script(?![^>]*\bsrc=)", body), path
            assert not re.search(r"\sstyle=|<style", body), path
        else:  # JSON carries event text as is: never served as something a browser runs
            assert headers["content-type"].split(";")[0] in (
                "application/json", "text/css", "text/javascript", "application/javascript")


def test_hostile_event_text_renders_as_text_everywhere(client: TestClient) -> None:
    escaped = str(escape(HOSTILE))  # as the templates escape: quotes too
    for path in ["/conversations", f"/conversations/{quote(EVIL_ID)}", "/violations", "/tail",
                 "/events/13"]:
        body = get(client, path).text
        assert HOSTILE not in body, path
        assert "<script>alert" not in body and "<img src=x" not in body, path
        assert escaped in body, path
    assert str(escape(EVIL_ID)) in get(client, "/conversations").text
    assert api(client, f"/api/conversations/{quote(EVIL_ID)}")["conversation"]["title"] == HOSTILE


# --- pages and their JSON ------------------------------------------------------------------


def test_conversations_newest_first_with_totals_filters_and_cursor_pages(
    client: TestClient, log: Log,
) -> None:
    doc = api(client, "/api/conversations")
    rows = doc["conversations"]
    assert [r["id"] for r in rows] == [EVIL_ID, "c2", "c1"]
    assert doc["next_cursor"] is None
    c1 = rows[2]
    c1_events = log.where(conversation_id="c1")
    assert (c1["user_id"], c1["title"], c1["messages"], c1["calls"], c1["violations"],
            c1["tags"], c1["events"]) == ("u1", "Trip", 2, 1, 1, ["prod"], 7)
    assert Decimal(c1["cost"]) == Decimal("0.006")
    assert c1["first_at"] == c1_events[0].recorded_at.isoformat().replace("+00:00", "Z")
    c2 = rows[1]
    assert (Decimal(c2["cost"]), c2["calls"], c2["unpriced_calls"]) == (Decimal("0.0105"), 2, 1)

    assert [r["id"] for r in api(client, "/api/conversations?user=u2")["conversations"]] == [
        "c2"]
    assert [r["id"] for r in api(client, "/api/conversations?tag=prod")["conversations"]] == [
        "c1"]
    assert [r["id"] for r in api(client, "/api/conversations?conversation=c1")[
        "conversations"]] == ["c1"]
    assert api(client, "/api/conversations?conversation=nope")["conversations"] == []
    c2_start = log.where(conversation_id="c2")[0].recorded_at.isoformat()
    c1_end = c1_events[-1].recorded_at.isoformat()
    after = api(client, f"/api/conversations?after={quote(c2_start)}")["conversations"]
    before = api(client, f"/api/conversations?before={quote(c1_end)}")["conversations"]
    assert [r["id"] for r in after] == [EVIL_ID, "c2"]
    assert [r["id"] for r in before] == ["c1"]

    seen: list[str] = []
    path = "/api/conversations?limit=1"
    while True:
        page = api(client, path)
        assert len(page["conversations"]) == 1
        seen += [r["id"] for r in page["conversations"]]
        if page["next_cursor"] is None:
            break
        path = f"/api/conversations?limit=1&cursor={page['next_cursor']}"
    assert seen == [EVIL_ID, "c2", "c1"]

    html_page = get(client, "/conversations?limit=2").text
    assert ">c2</a>" in html_page and ">c1</a>" not in html_page
    assert 'rel="next" href="/conversations?limit=2&amp;cursor=' in html_page
    assert '<td class="n cost">$0.006</td>' in get(client, "/conversations").text
    for bad, message in (("cursor=abc", "cursor is malformed"), ("after=yesterday", "after:"),
                         ("limit=0", "limit must be")):
        response = client.get(f"/api/conversations?{bad}", headers=AUTH)
        assert response.status_code == 400 and response.json()["error"].startswith(message)
        assert client.get(f"/conversations?{bad}", headers=AUTH).status_code == 400


def test_a_conversation_is_a_transcript_with_each_call_and_notice_inline(
    client: TestClient, log: Log,
) -> None:
    body = get(client, "/conversations/c1").text
    assert '<div class="bubble user" id="e2">' in body
    assert '<div class="text">Hi there</div>' in body
    assert '<div class="text">Hello!\nHow can I help?</div>' in body
    assert '<span class="model">openai/gpt-4o</span>' in body
    assert "1200 in / 300 out" in body
    assert '<span class="latency">420 ms</span>' in body  # rounded
    assert '<span class="cost">$0.006</span>' in body
    assert '<a class="request" href="/events/4">request</a>' in body
    assert "pii: card number [high]" in body
    assert "summarize: 10 → 4 messages, 500 tokens removed" in body
    assert '<div class="notice feedback"' in body
    assert '<span class="cost total">$0.006</span>' in body
    c2 = get(client, "/conversations/c2").text
    assert '<span class="cost">unpriced</span>' in c2 and "(+1 unpriced)" in c2
    assert '<span class="latency">3.2 ms</span>' in c2 and "7 in / 3 out" in c2
    assert str(escape('error: {"type":"RateLimitError","message":"slow down",'
                      '"status_code":429}')) in c2
    assert "tool call: <code>" + str(escape(
        '{"id":"t1","name":"lookup","arguments":{"q":"x"}}')) + "</code>" in c2

    doc = api(client, "/api/conversations/c1")
    assert msgspec.convert(doc["events"], list[RecordedEvent]) == log.where(
        conversation_id="c1")
    assert doc["next_cursor"] is None
    first = api(client, "/api/conversations/c1?limit=3")
    rest = api(client, f"/api/conversations/c1?limit=10&cursor={first['next_cursor']}")
    assert [e["seq"] for e in first["events"]] == [1, 2, 3]
    assert [e["seq"] for e in rest["events"]] == [4, 5, 6, 7]
    paged = get(client, "/conversations/c1?limit=3").text
    assert "Hello!" in paged and "openai/gpt-4o" not in paged
    assert f'href="/conversations/c1?limit=3&amp;cursor={first["next_cursor"]}"' in paged
    other = client.get(f"/api/conversations/c1?cursor={first['next_cursor']}&limit=3",
                       headers=AUTH)
    assert other.status_code == 200
    mismatch = client.get(f"/api/conversations/c2?cursor={first['next_cursor']}",
                          headers=AUTH)
    assert mismatch.status_code == 400 and "other filters" in mismatch.json()["error"]
    for path in ("/conversations/nope", "/api/conversations/nope"):
        assert client.get(path, headers=AUTH).status_code == 404


def test_an_event_page_shows_the_exact_recorded_call(client: TestClient, log: Log) -> None:
    call = log.events[3]
    body = html.unescape(get(client, "/events/4").text)
    assert '"model": "gpt-4o"' in body and '"latency_ms": 420.4' in body
    assert f"<code>{call.id}</code>" in body
    assert msgspec.convert(api(client, "/api/events/4")["event"], RecordedEvent) == call
    for path in ("/events/999", "/api/events/0"):
        assert client.get(path, headers=AUTH).status_code == 404


def test_costs_by_day_model_user_and_tag_with_unpriced_calls_counted(
    client: TestClient, log: Log,
) -> None:
    async def store_totals() -> tuple[Decimal, Decimal]:
        async with EventStore.open(log.url) as store:
            return await store.sum_cost(), await store.sum_cost(user_id="u2")

    total, u2 = asyncio.run(store_totals())
    doc = api(client, "/api/costs")
    assert Decimal(doc["total"]["cost"]) == total == Decimal("0.0165")
    assert (doc["total"]["calls"], doc["total"]["unpriced_calls"]) == (3, 1)
    assert {r["key"]: Decimal(r["cost"]) for r in doc["by_model"]} == {
        "claude-sonnet": Decimal("0.0105"), "gpt-4o": Decimal("0.006"), "mystery-1": 0}
    by_user = {r["key"]: r for r in doc["by_user"]}
    assert Decimal(by_user["u2"]["cost"]) == u2 and by_user["u2"]["unpriced_calls"] == 1
    assert [r["key"] for r in doc["by_tag"]] == ["beta", "prod"]
    (day,) = doc["by_day"]
    assert day["key"] == log.events[3].occurred_at.date().isoformat() and day["calls"] == 3
    body = get(client, "/costs").text
    assert '<small class="cost total">$0.0165</small>' in body
    assert "1 unpriced (not in the totals)" in body
    assert body.count('<rect class="bar"') == 1 and "<svg" in body


def test_violations_and_alerts_page_by_the_stores_cursor(client: TestClient, log: Log) -> None:
    doc = api(client, "/api/violations")
    assert [e["seq"] for e in doc["events"]] == [
        e.seq for e in log.events if e.type == "policy_violation"]
    assert doc["total"] == 2
    first = api(client, "/api/violations?limit=1")
    second = api(client, f"/api/violations?limit=1&cursor={first['next_cursor']}")
    assert [e["seq"] for e in first["events"] + second["events"]] == [5, 13]
    assert second["next_cursor"] is None
    body = get(client, "/violations").text
    assert "pii: card number [high]" in body and 'href="/conversations/c1#e5"' in body


def test_subscriptions_show_position_lag_and_status(client: TestClient, log: Log) -> None:
    (row,) = api(client, "/api/subscriptions")["subscriptions"]
    assert (row["name"], row["position"], row["lag"], row["status"]) == (
        "reports", 3, len(log.events) - 3, "stored")
    body = get(client, "/subscriptions").text
    assert f'<td>reports</td><td class="n">3</td><td class="n bad">{len(log.events) - 3}</td>' \
        in body


# --- the live tail -------------------------------------------------------------------------


def read_stream(client: TestClient, path: str, want: int, headers: dict[str, str] | None = None
                ) -> list[dict[str, Any]]:
    """The first `want` events of an SSE stream, read in a thread bounded by TIMEOUT."""
    got: list[dict[str, Any]] = []
    ids: list[str] = []
    done = threading.Event()

    def pump() -> None:
        with client.stream("GET", path, headers={**AUTH, **(headers or {})}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("id: "):
                    ids.append(line[4:])
                if line.startswith("data: "):
                    got.append(msgspec.json.decode(line[6:]))
                    if len(got) == want:
                        break
        done.set()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    assert done.wait(TIMEOUT), f"the stream sent {len(got)} of {want} events in time"
    assert ids == [str(e["seq"]) for e in got]
    return got


async def append(url: str, *events: Event) -> list[RecordedEvent]:
    async with EventStore.open(url) as store:
        return await store.append_many(events)


def test_tail_page_and_stream_show_events_as_another_store_commits(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'tail.db'}"
    seeded = asyncio.run(append(url, *(Event(type="message_sent", conversation_id="t",
                                             data={"role": "user", "content": f"m{i}"})
                                       for i in range(3))))
    app = build_app(lambda: EventStore.open(url), TOKEN)
    with TestClient(app) as client:
        body = get(client, "/tail").text
        assert [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', body)] == [1, 2, 3]
        assert 'data-stream="/api/tail?after=3"' in body
        # From a seq: the backlog after it, straight from the log.
        assert [e["seq"] for e in read_stream(client, "/api/tail?after=1", 2)] == [2, 3]
        # Resuming by Last-Event-ID, as EventSource does after a reconnect.
        assert [e["seq"] for e in read_stream(client, "/api/tail", 1,
                                              {"Last-Event-ID": "2"})] == [3]

        # Live: appended by another store (another connection, as another process would).
        result: list[list[dict[str, Any]]] = []
        reader = threading.Thread(target=lambda: result.append(
            read_stream(client, "/api/tail?after=3&type=ping", 1)), daemon=True)
        reader.start()
        (ping,) = asyncio.run(append(url, Event(type="message_sent", conversation_id="t",
                                                data={"role": "user", "content": "skip"}),
                                     Event(type="ping", data={"n": HOSTILE})))[1:]
        reader.join(TIMEOUT)
        assert result and [(e["seq"], e["type"]) for e in result[0]] == [(ping.seq, "ping")]
        assert result[0][0]["summary"] == msgspec.json.encode({"n": HOSTILE}).decode()
        # The index follows too (through its subscription, which may trail the stream's
        # own read of the log): the conversation listing learns of the new message.
        deadline = time.monotonic() + TIMEOUT
        while api(client, "/api/conversations")["conversations"][0]["messages"] != 4:
            assert time.monotonic() < deadline, "the index never saw the new message"
            time.sleep(0.02)
        bad = client.get("/api/tail?after=x", headers=AUTH)
        assert bad.status_code == 400
    assert seeded[-1].seq == 3


# --- the command ---------------------------------------------------------------------------


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org", "10.0.0.1"):
        assert not is_loopback(host), host


def test_the_serve_command_prints_its_url_and_guards_it(log: Log, tmp_path: Path) -> None:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "eventstore", "--db", log.url, "serve",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]+)", line)
        assert match, (line, proc.poll())
        base, token = f"http://127.0.0.1:{match[1]}", match[2]
        assert len(token) >= 20
        with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
            assert http.get("/api/conversations").status_code == 401
            opened = http.get(f"/?token={token}", follow_redirects=True)
            assert opened.status_code == 200 and ">c1</a>" in opened.text
            assert str(opened.url) == f"{base}/conversations"
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
    missing = subprocess.run([sys.executable, "-m", "eventstore", "--db",
                              f"sqlite:///{tmp_path / 'nope.db'}", "serve", "--port", "0"],
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no eventstore database")


def test_a_recorded_llm_call_and_its_cost_record_are_one_call(tmp_path: Path) -> None:
    """record_llm_call writes an llm_call and, when priced, a cost_recorded carrying the
    call's id: the viewer counts and shows that as one call, with its cost."""
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    call = Event(type="llm_call", conversation_id="k", user_id="u",
                 data={"provider": "openai", "model": "gpt-4o", "input_tokens": 100,
                       "output_tokens": 20, "latency_ms": 250.0, "priced": True})
    cost = Event(type="cost_recorded", conversation_id="k", user_id="u",
                 data={"provider": "openai", "model": "gpt-4o", "input_tokens": 100,
                       "output_tokens": 20, "cache_read_tokens": 0, "cache_write_tokens": 0,
                       "input_cost": "0.00025", "output_cost": "0.0002",
                       "total_cost": "0.00045", "price_source": "genai-prices",
                       "call_id": call.id})
    asyncio.run(append(url, call, cost))
    with TestClient(build_app(lambda: EventStore.open(url), TOKEN)) as client:
        (row,) = api(client, "/api/conversations")["conversations"]
        assert (row["calls"], row["unpriced_calls"], Decimal(row["cost"])) == (
            1, 0, Decimal("0.00045"))
        costs = api(client, "/api/costs")["total"]
        assert (costs["calls"], costs["unpriced_calls"]) == (1, 0)
        body = get(client, "/conversations/k").text
        assert body.count('<div class="call"') == 1
        assert '<span class="cost">$0.00045</span>' in body and "250 ms" in body


def test_home_favicon_and_the_otlp_mount_behind_the_same_token(log: Log) -> None:
    received: list[tuple[str, bytes]] = []

    def receiver(store: EventStore) -> Any:
        assert isinstance(store, EventStore)  # made once the store is open

        async def app(scope: Any, receive: Any, send: Any) -> None:
            body = (await receive())["body"]
            received.append((scope["method"], body))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b"{}"})

        return app

    with TestClient(build_app(lambda: EventStore.open(log.url), TOKEN, otlp=receiver)) as c:
        home = c.get("/", headers=AUTH, follow_redirects=False)
        assert (home.status_code, home.headers["location"]) == (303, "/conversations")
        icon = c.get("/favicon.ico", headers=AUTH)
        assert icon.status_code == 200 and icon.text.startswith("<svg")
        assert c.post("/v1/traces", content=b"spans").status_code == 401
        assert received == []
        ok = c.post("/v1/traces", content=b"spans", headers=AUTH)
        assert ok.status_code == 200 and ok.headers["content-security-policy"] == CSP
        assert received == [("POST", b"spans")]
    with TestClient(build_app(lambda: EventStore.open(log.url), TOKEN)) as c:
        assert c.post("/v1/traces", content=b"x", headers=AUTH).status_code == 404


def test_a_host_other_than_loopback_is_served_with_a_warning(
    log: Log, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn
    from click.testing import CliRunner

    from eventstore.cli.app import cli

    hosts: list[str] = []

    async def serve(self: Any, sockets: Any = None) -> None:  # bind nothing, return at once
        hosts.append(self.config.host)

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    exposed = CliRunner().invoke(cli, ["--db", log.url, "serve", "--host", "0.0.0.0"])
    local = CliRunner().invoke(cli, ["--db", log.url, "serve"])
    assert hosts == ["0.0.0.0", "127.0.0.1"]
    assert "warning: listening on 0.0.0.0, not loopback" in exposed.stderr
    assert "personal data" in exposed.stderr
    assert "warning" not in local.stderr


def test_a_large_log_is_indexed_in_the_background_while_the_viewer_answers(
    log: Log,
) -> None:
    gate = threading.Event()

    def opener() -> EventStore:
        store = EventStore.open(log.url)
        rebuild = store.rebuild

        async def held(*projections: Any) -> Any:  # the index waits until the test says
            await asyncio.to_thread(gate.wait, TIMEOUT)
            return await rebuild(*projections)

        store.rebuild = held  # type: ignore[method-assign]
        return store

    with TestClient(build_app(opener, TOKEN, index_before_serving=0)) as client:
        for path in ("/api/conversations", "/api/costs", "/api/conversations/c1",
                     "/api/violations"):
            waiting = client.get(path, headers=AUTH)
            assert waiting.status_code == 503, path
            assert waiting.headers["retry-after"] == "2"
            assert waiting.json()["error"].startswith("indexing the log: 0 of 0 events")
        page = client.get("/conversations", headers=AUTH)
        assert page.status_code == 503 and '<meta http-equiv="refresh" content="2">' in page.text
        # What needs no index answers at once.
        assert get(client, "/api/events/1").json()["event"]["seq"] == 1
        assert get(client, "/subscriptions").status_code == 200
        gate.set()
        deadline = time.monotonic() + TIMEOUT
        while (response := client.get("/api/conversations", headers=AUTH)).status_code == 503:
            assert time.monotonic() < deadline, "the index was never built"
            time.sleep(0.02)
        assert [r["id"] for r in response.json()["conversations"]] == [EVIL_ID, "c2", "c1"]


def test_ids_with_slashes_stay_one_link_and_no_redirect_leaves_the_host(tmp_path: Path
                                                                         ) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    odd = "a/../b?x=1#y"
    asyncio.run(append(url, *(Event(type="message_sent", conversation_id=odd,
                                    data={"role": "user", "content": f"m{i}"})
                              for i in range(3))))
    with TestClient(build_app(lambda: EventStore.open(url), TOKEN)) as client:
        listing = get(client, "/conversations").text
        href = f"/conversations/{quote(odd, safe='')}"
        assert f'href="{href}"' in listing
        assert api(client, href.replace("/conversations", "/api/conversations", 1))[
            "conversation"]["id"] == odd
        paged = get(client, f"{href}?limit=1").text
        assert 'href="/conversations/a%2F..%2Fb%3Fx%3D1%23y?limit=1&amp;cursor=' in paged


async def test_the_token_redirect_never_leaves_the_host() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the redirect answers before the app")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "//evil.example/x",
             "query_string": f"token={TOKEN}&a=1".encode(), "headers": []}
    await TokenGate(app, TOKEN)(scope, receive, send)
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 303
    assert headers[b"location"] == b"/evil.example/x?a=1"


def test_record_llm_call_shows_one_card_and_its_exact_request_one_click_away(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'llm.db'}"
    request = {"model": "gpt-4o", "temperature": 0.2,
               "messages": [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "hi <b>there</b>"}]}
    response = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": "looking it up",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {
                        "name": "lookup", "arguments": '{"q":1}'}}]}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}

    async def seed() -> list[RecordedEvent]:
        async with EventStore.open(url) as store:
            priced = await store.record_llm_call(
                provider="openai", model="gpt-4o", request=request, response=response,
                latency_ms=321.5, conversation_id="k", user_id="u")
            failed = await store.record_llm_call(
                provider="acme", model="mystery", latency_ms=10.0, response=None,
                request={"model": "mystery", "messages": [{"role": "user", "content": "x"}]},
                error={"type": "APIError", "message": "boom", "status_code": 500},
                conversation_id="k", user_id="u")
            return [priced, failed]

    priced, failed = asyncio.run(seed())
    with TestClient(build_app(lambda: EventStore.open(url), TOKEN)) as client:
        (row,) = api(client, "/api/conversations")["conversations"]
        assert (row["calls"], row["unpriced_calls"]) == (2, 1)
        assert Decimal(row["cost"]) > 0
        body = get(client, "/conversations/k").text
        assert body.count('<div class="call"') == 2
        assert '<span class="model">openai/gpt-4o</span>' in body and "322 ms" in body
        assert "12 in / 3 out" in body
        assert f'<a class="request" href="/events/{priced.seq}">request</a>' in body
        assert "tool call: <code>" + str(escape('{"id":"call_1","name":"lookup",'
                                              '"arguments":"{\\"q\\":1}"}')) in body
        assert str(escape('error: {"type":"APIError","message":"boom","status_code":500}')) \
            in body
        assert '<span class="cost">unpriced</span>' in body
        doc = api(client, f"/api/events/{priced.seq}")
        assert doc["call"]["request"] == request  # rebuilt from the referenced messages
        assert doc["call"]["response"] == response
        page = html.unescape(get(client, f"/events/{priced.seq}").text)
        assert "request, exactly as sent" in page
        assert '"content": "hi <b>there</b>"' in page
        assert api(client, f"/api/events/{priced.seq + 1}")["call"] is None  # its cost record
        assert api(client, f"/api/events/{failed.seq}")["call"]["response"] is None


# --- violations filters, subscriptions and costs pages by cursor -----------------------------


def test_violations_filter_by_user_conversation_type_and_time(client: TestClient,
                                                              log: Log) -> None:
    def seqs(query: str) -> list[int]:
        return [e["seq"] for e in api(client, f"/api/violations?{query}")["events"]]

    assert seqs("user=u1") == [5]
    assert seqs(f"conversation={quote(EVIL_ID)}") == [13]
    assert seqs("type=policy_violation") == [5, 13]
    assert seqs("type=budget_exceeded") == []
    fifth = log.events[4].recorded_at.isoformat()
    assert seqs(f"after={quote(log.events[5].recorded_at.isoformat())}") == [13]
    assert seqs(f"before={quote(fifth)}") == [5]
    first = api(client, "/api/violations?type=policy_violation&limit=1")
    assert first["filters"]["type"] == "policy_violation"
    rest = api(client, f"/api/violations?type=policy_violation&limit=1&cursor="
                       f"{first['next_cursor']}")
    assert [e["seq"] for e in rest["events"]] == [13]
    body = get(client, "/violations?type=policy_violation&limit=1").text
    assert '<option value="policy_violation" selected>' in body
    assert 'href="/violations?type=policy_violation&amp;limit=1&amp;cursor=' in body
    for bad, message in (("type=nope", "type must be one of"), ("cursor=abc", ""),
                         (f"user=u2&cursor={first['next_cursor']}", "other filters")):
        response = client.get(f"/api/violations?{bad}", headers=AUTH)
        assert response.status_code == 400 and message in response.json()["error"], bad
        assert client.get(f"/violations?{bad}", headers=AUTH).status_code == 400


def test_subscriptions_page_by_a_name_cursor(client: TestClient) -> None:
    doc = api(client, "/api/subscriptions?limit=1")
    assert [r["name"] for r in doc["subscriptions"]] == ["reports"]
    assert doc["next_cursor"] is None
    response = client.get("/api/subscriptions?cursor=Zm9v", headers=AUTH)
    assert response.status_code == 400 and "cursor is malformed" in response.json()["error"]


DAY = timedelta(days=1)


async def seed_budgets(url: str) -> datetime:
    """Two budgets, costs on three days, and the watcher's alerts for today's window."""
    budgets = [Budget(limit=Decimal("1"), per="user", window="day", warn_at=(0.5,),
                      name="per-user"),
               Budget(limit=Decimal("100"), per="total", window="total", name="all-time")]
    now = datetime.now(UTC)
    async with EventStore.open(url, budgets=budgets) as store:
        spend: list[tuple[str, str, datetime]] = [
            ("u1", "0.6", now), ("u1", "0.6", now), (HOSTILE, "0.7", now), ("u3", "0.1", now),
            ("old", "2", now - DAY), ("old", "3", now - 40 * DAY)]
        for user, amount, when in spend:
            await store.record_cost(provider="test", model=f"m-{user}", input_tokens=1,
                                    output_tokens=1, cost=Decimal(amount), user_id=user,
                                    occurred_at=when)
        await store.append(Event(type="llm_call", data=UNPRICED, user_id="u3",
                                 occurred_at=now))
        await settled(store)
    return now


def test_costs_page_shows_budgets_and_their_state_each_table_by_its_own_cursor(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'budgets.db'}"
    now = asyncio.run(seed_budgets(url))
    with TestClient(build_app(lambda: EventStore.open(url), TOKEN)) as c:
        doc = api(c, "/api/costs")
        assert doc["total"]["unpriced_calls"] == 1
        rows = [(b["budget"], b["scope"], b["state"], Decimal(b["spent"]), b["window"],
                 b["alert"]["type"] if b["alert"] else None) for b in doc["budgets"]]
        today = now.strftime("%Y-%m-%d")
        # Scopes: those with an alert in today's window (not u3, under it; not "old",
        # whose alerts are of other days), and the whole of the per-total budget.
        assert rows == [
            ("all-time", None, "ok", Decimal("7.0"), "total", None),
            ("per-user", HOSTILE, "warning (50%)", Decimal("0.7"), today, "budget_warning"),
            ("per-user", "u1", "exceeded", Decimal("1.2"), today, "budget_exceeded"),
        ]
        assert doc["budgets"][0]["unpriced_calls"] == 1  # u3's unpriced call, all time
        assert Decimal(doc["budgets"][2]["remaining"]) == 0
        body = c.get("/costs", headers=AUTH).text
        assert '<tr class="budget exceeded"><td>per-user</td><td>user</td>' in body
        assert '<td class="state">warning (50%)</td>' in body
        assert str(escape(HOSTILE)) in body and HOSTILE not in body

        def walk(table: str, key: str) -> list[Any]:
            seen, query = [], "limit=1"
            while True:
                page = api(c, f"/api/costs?{query}")
                rows = page["budgets"] if table == "budgets" else page[f"by_{table}"]
                assert len(rows) == 1, (table, query)
                seen.append(rows[0][key])
                cursor = page["next_cursors"][table]
                if cursor is None:
                    return seen
                query = f"limit=1&{table}_cursor={cursor}"

        assert walk("budgets", "scope") == [None, HOSTILE, "u1"]
        assert walk("day", "key") == [today, (now - DAY).strftime("%Y-%m-%d"),
                                      (now - 40 * DAY).strftime("%Y-%m-%d")]
        assert walk("user", "key") == ["old", "u1", HOSTILE, "u3"]  # costliest first
        assert len(walk("model", "key")) == 5  # m-u1, m-old, m-<hostile>, m-u3, mystery-1
        paged = c.get("/costs?limit=1", headers=AUTH).text
        assert paged.count('<rect class="bar"') == 1  # the chart: the page's days
        assert 'rel="next" href="/costs?day_cursor=' not in paged  # the limit stays
        assert re.search(r'rel="next" href="/costs\?limit=1&amp;day_cursor=[\w-]+#by-day"',
                         paged)
        model_cursor = api(c, "/api/costs?limit=1")["next_cursors"]["model"]
        for bad in ("budgets_cursor=abc", f"budgets_cursor={model_cursor}",
                    f"day_cursor={model_cursor}", "user_cursor=WyJ1c2VyIiwieCIsInkiXQ",
                    "model_cursor=WzFd"):
            response = c.get(f"/api/costs?{bad}", headers=AUTH)
            assert response.status_code == 400, bad
            assert "is malformed or belongs to another listing" in response.json()["error"]
            assert c.get(f"/costs?{bad}", headers=AUTH).status_code == 400


# --- integrity -----------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_integrity_shows_the_tree_head_and_checkpoint_and_verifies_only_when_asked(
    log: Log,
) -> None:
    async def facts() -> tuple[Any, str]:
        async with EventStore.open(log.url) as store:
            return await store.tree_head(), await store.checkpoint()

    head, checkpoint = asyncio.run(facts())
    with TestClient(build_app(lambda: EventStore.open(log.url), TOKEN)) as c:
        doc = api(c, "/api/integrity")
        assert doc["tree_head"] == {"size": len(log.events),
                                    "root": {"hex": head.root.hex(), "base64": b64(head.root)}}
        assert (doc["checkpoint"]["source"], doc["checkpoint"]["text"]) == (
            "current", checkpoint)
        assert doc["verify"] is None  # loading the page never verifies
        body = get(c, "/integrity").text
        assert f'<code class="root-hex">{head.root.hex()}</code>' in body
        assert f'<td class="size">{len(log.events)} events</td>' in body
        assert '<form method="post" action="/integrity/verify">' in body
        assert "Not verified since this viewer started." in body
        assert c.get("/integrity/verify", headers=AUTH).status_code == 405  # a POST only

        report = c.post("/api/integrity/verify", headers=AUTH).json()
        assert (report["ok"], report["size"], report["first_bad_seq"], report["problems"]) \
            == (True, len(log.events), None, [])
        assert report["root"]["base64"] == b64(head.root)
        button = c.post("/integrity/verify", headers=AUTH, follow_redirects=False)
        assert (button.status_code, button.headers["location"]) == (303, "/integrity#verify")
        assert f"ok: {len(log.events)} events intact" in get(c, "/integrity").text
        assert api(c, "/api/integrity")["verify"]["ok"] is True


async def seed_checkpointed(url: str, checkpoints: Path) -> None:
    async with EventStore.open(url, checkpoint_dir=checkpoints) as store:
        await store.append_many([Event(type="t", conversation_id="c1", data={"i": i})
                                 for i in range(6)])
    # closing wrote checkpoint-000000000006.txt


def test_integrity_reads_the_latest_checkpoint_file_and_names_the_first_bad_seq(
    tmp_path: Path,
) -> None:
    path, checkpoints = tmp_path / "a.db", tmp_path / "checkpoints"
    url = f"sqlite:///{path}"
    asyncio.run(seed_checkpointed(url, checkpoints))
    (written,) = checkpoints.iterdir()
    files_before = sorted(p.name for p in checkpoints.iterdir())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET type = 'other' WHERE seq = 3")
    conn.close()
    with TestClient(build_app(lambda: EventStore.open(url), TOKEN,
                              checkpoints=checkpoints)) as c:
        doc = api(c, "/api/integrity")
        cp = doc["checkpoint"]
        assert (cp["source"], cp["name"], cp["size"], cp["behind"], cp["problem"]) == (
            "file", written.name, 6, 0, None)
        assert cp["text"] == written.read_text()
        assert doc["origin"] == written.read_text().split("\n")[0]
        body = get(c, "/integrity").text
        assert "proves the log extends checkpoint-000000000006.txt" in body

        report = c.post("/api/integrity/verify", headers=AUTH).json()
        assert (report["ok"], report["first_bad_seq"], report["checkpoint"]) == (
            False, 3, written.name)
        assert any("seq 3 was altered" in p for p in report["problems"]), report["problems"]
        c.post("/integrity/verify", headers=AUTH)
        body = get(c, "/integrity").text
        assert 'FAILED: first bad seq <a href="/events/3">3</a>' in body
        assert '<div class="verify-result bad">' in body

        # Newer files that are no checkpoint of this log: shown as such (escaped), unused.
        def shown_but_unused(path: Path, problem: str) -> None:
            cp = api(c, "/api/integrity")["checkpoint"]
            assert cp["name"] == path.name and problem in cp["problem"], cp
            body = get(c, "/integrity").text
            assert HOSTILE not in body and "It cannot be read" in body
            assert str(escape(HOSTILE)) in body
            report = c.post("/api/integrity/verify", headers=AUTH).json()
            assert (report["checkpoint"], report["first_bad_seq"]) == (None, 3)

        foreign = checkpoints / "checkpoint-000000000099.txt"
        foreign.write_text(format_checkpoint(HOSTILE, 99, bytes(32)))
        shown_but_unused(foreign, "not of this log")
        junk = checkpoints / "checkpoint-000000000100.txt"
        junk.write_text(HOSTILE + "\n")
        shown_but_unused(junk, "malformed")
    # The viewer wrote no checkpoint of its own.
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(
        [*files_before, foreign.name, junk.name])


def test_integrity_on_a_backend_without_a_tree_says_so() -> None:
    from eventstore.backends.memory import MemoryBackend

    class Untreed:
        """A backend without the tree's reads (a third party's, say)."""

        def __init__(self) -> None:
            self.inner = MemoryBackend()

        def __getattr__(self, name: str) -> Any:
            if name in ("tree_size", "tree_nodes", "stored_leaves"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    with TestClient(build_app(lambda: EventStore(Untreed()),  # type: ignore[arg-type]
                              TOKEN)) as c:
        doc = api(c, "/api/integrity")
        assert doc["available"] is False and "Merkle tree" in doc["reason"]
        assert "Merkle tree" in get(c, "/integrity").text
        refused = c.post("/api/integrity/verify", headers=AUTH)
        assert refused.status_code == 409 and "Merkle tree" in refused.json()["error"]


def test_integrity_of_a_jsonl_log(tmp_path: Path) -> None:
    url = f"jsonl:///{tmp_path / 'log'}"

    async def seeded() -> None:
        async with EventStore.open(url) as store:
            await store.append_many([Event(type="t", data={"i": i}) for i in range(3)])

    asyncio.run(seeded())
    with TestClient(build_app(lambda: EventStore.open(url), TOKEN)) as c:
        doc = api(c, "/api/integrity")
        assert doc["tree_head"]["size"] == 3, doc
        report = c.post("/api/integrity/verify", headers=AUTH).json()
        assert (report["ok"], report["size"], report["first_bad_seq"]) == (True, 3, None)


def test_a_long_verify_leaves_the_page_showing_it_running_until_done(
    log: Log, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eventstore.cli.serve import web

    monkeypatch.setattr(web, "VERIFY_PAGE_WAIT", 0.01)
    release = threading.Event()
    runs: list[int] = []

    @contextlib.asynccontextmanager
    async def opened() -> Any:
        async with EventStore.open(log.url) as store:
            verify = store.verify

            async def slow_verify(checkpoint: str | None = None) -> Any:
                runs.append(1)
                assert await asyncio.to_thread(release.wait, TIMEOUT)
                return await verify(checkpoint)

            store.verify = slow_verify  # type: ignore[method-assign]
            yield store

    with TestClient(build_app(opened, TOKEN)) as c:
        button = c.post("/integrity/verify", headers=AUTH, follow_redirects=False)
        assert button.status_code == 303  # answered while the run goes on
        doc = api(c, "/api/integrity")
        assert (doc["verifying"], doc["verify"]) == (True, None)
        body = get(c, "/integrity").text
        assert '<meta http-equiv="refresh" content="5">' in body
        assert "A verification is running" in body
        c.post("/integrity/verify", headers=AUTH, follow_redirects=False)  # joins it
        assert api(c, "/api/integrity")["verifying"] is True and len(runs) <= 1
        release.set()
        report = c.post("/api/integrity/verify", headers=AUTH).json()
        assert report["ok"] is True and report["size"] == len(log.events)
        body = get(c, "/integrity").text
        assert "refresh" not in body and f"ok: {len(log.events)} events intact" in body
