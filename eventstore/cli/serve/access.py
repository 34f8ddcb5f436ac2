"""Who may read the viewer: the holder of its token, and nobody else.

The token arrives once in the URL the command prints (`?token=`); the gate answers with an
HttpOnly, SameSite=Strict cookie and, for pages, a redirect to the same address without
the token, so it does not linger in the address bar, the history or a Referer. Scripts
send `Authorization: Bearer <token>`. Anything else gets a 401 that carries no data.

Every response, the 401 included, carries the headers that keep the pages self-contained:
a Content-Security-Policy that allows only this origin's own files (no inline script or
style, no other host, no frames), no Referer, no caching, no MIME sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")

SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "cross-origin-resource-policy": "same-origin",
}


def new_token() -> str:
    """A random access token (URL-safe, 128 bits)."""
    return secrets.token_urlsafe(16)


def cookie_name(token: str) -> str:
    # One cookie per token: two viewers on one host (cookies ignore ports) do not
    # overwrite each other's.
    return "eventstore_" + hashlib.sha256(token.encode()).hexdigest()[:12]


class TokenGate:
    """ASGI middleware: pass requests that carry the token, refuse the rest with 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()
        self._cookie = cookie_name(token)

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        bearer = headers.get("authorization", "")
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token, not a crash
            cookies = SimpleCookie()
        cookie = cookies[self._cookie].value if self._cookie in cookies else None
        by_header = bearer[:7].lower() == "bearer " and self._matches(bearer[7:].strip())
        by_query = self._matches(given)
        if not (by_header or by_query or self._matches(cookie)):
            await _respond(send, 401, b"401 Unauthorized: open the address that "
                           b"`eventstore serve` printed (it carries the access token)\n",
                           [("content-type", "text/plain; charset=utf-8"),
                            ("www-authenticate", 'Bearer realm="eventstore"')])
            return
        set_cookie = None
        if by_query:
            set_cookie = (f"{self._cookie}={given}; HttpOnly; SameSite=Strict; Path=/")
            path: str = scope.get("path", "/")
            if path.startswith("//"):  # never a redirect to another host ("//evil.example")
                path = "/" + path.lstrip("/")
            if scope.get("method") == "GET" and not path.startswith("/api/"):
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                await _respond(send, 303, b"", [("location", path + (f"?{rest}" if rest else "")),
                                                ("set-cookie", set_cookie)])
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out.setdefault(name, value)
                if set_cookie is not None:
                    out.append("set-cookie", set_cookie)
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1"))
           for k, v in [*SECURITY_HEADERS.items(), *headers,
                        ("content-length", str(len(body)))]]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
