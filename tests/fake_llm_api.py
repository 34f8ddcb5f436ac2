"""A local HTTP server that answers like the OpenAI, Anthropic and Gemini APIs, for tests
that drive the real SDKs (loopback only). Answers are queued per path; the last one of a
queue repeats. Every request body is kept, in order, with its path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # a JSON document
    events: list[tuple[str | None, str]] | None = None  # SSE (event name, data line)
    headers: dict[str, str] = field(default_factory=dict)
    # Set to hold the answer until the test lets it go (to block a call mid-flight).
    gate: threading.Event | None = None


@dataclass
class FakeAPI:
    url: str = ""
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    counter: int = 0

    def answer(self, path: str, *answers: Answer) -> None:
        self.answers[path] = list(answers)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.requests if p == path]


def sse(documents: list[dict[str, Any]], *, named: bool = False,
        done: bool = True) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = [
        (doc["type"] if named else None, json.dumps(doc)) for doc in documents]
    return [*events, (None, "[DONE]")] if done else events


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            path = self.path.split("?")[0]
            api.requests.append((path, request))
            api.counter += 1
            queue = api.answers.get(path)
            if not queue:
                self._send(404, "application/json", b'{"error": {"message": "no route"}}', {})
                return
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            if answer.gate is not None:
                answer.gate.wait(10)
            headers = {"x-request-id": f"req_{api.counter}", "request-id": f"req_{api.counter}",
                       **answer.headers}
            if answer.events is not None:
                body = "".join((f"event: {name}\n" if name else "") + f"data: {data}\n\n"
                               for name, data in answer.events).encode()
                self._send(answer.status, "text/event-stream", body, headers)
            else:
                self._send(answer.status, "application/json", json.dumps(answer.body).encode(),
                           headers)

        def _send(self, status: int, content_type: str, body: bytes,
                  headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    fake = FakeAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), name="fake-llm-api",
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
