"""The OTLP/HTTP trace receiver: POST /v1/traces, protobuf or JSON, into the store.

Apps in other processes and languages point `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` at
`eventstore serve` (`http://127.0.0.1:8765/v1/traces`, with the header
`Authorization: Bearer <token>`); their spans go through the same mapping as the
in-process exporter's. `otlp_app(store, token)` is a bare ASGI app, so the viewer mounts
it and tests drive it directly.

OTLP/JSON differs from protobuf's JSON mapping: trace and span ids are hex strings, not
base64, and 64-bit integers may come as strings; both are accepted.
"""

from __future__ import annotations

import gzip
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .exporter import SpanRecorder
from .spans import SpanData

if TYPE_CHECKING:
    from ...store import EventStore

__all__ = ["otlp_app", "otlp_receiver", "spans_from_otlp"]

log = logging.getLogger("eventstore.integrations.opentelemetry")

_MAX_BODY: Final = 32 * 1024 * 1024
_STATUS_ERROR: Final = 2  # Status.StatusCode.STATUS_CODE_ERROR

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _value(any_value: Mapping[str, Any]) -> Any:
    """An OTLP AnyValue (JSON form) as a Python value."""
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in any_value:
            return any_value[key]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    if "kvlistValue" in any_value:
        return _attributes(any_value["kvlistValue"].get("values", []))
    if "bytesValue" in any_value:
        return any_value["bytesValue"]
    return None


def _attributes(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items if "key" in item}


def _hex(value: Any, size: int) -> str:
    if isinstance(value, bytes):
        return value.hex()
    text = str(value or "")
    if len(text) != size * 2:  # protobuf's JSON mapping: base64 (case matters there)
        import base64

        try:
            return base64.b64decode(text + "==").hex()
        except ValueError:
            return text.lower()
    return text.lower()


def _spans_from_json(body: Mapping[str, Any]) -> list[SpanData]:
    out: list[SpanData] = []
    for resource_spans in body.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = (scope_spans.get("scope") or {}).get("name")
            for span in scope_spans.get("spans", []):
                parent = span.get("parentSpanId")
                status = span.get("status") or {}
                code = status.get("code")
                out.append(SpanData(
                    name=str(span.get("name", "")),
                    trace_id=_hex(span.get("traceId"), 16),
                    span_id=_hex(span.get("spanId"), 8),
                    parent_span_id=_hex(parent, 8) if parent else None,
                    start_ns=int(span.get("startTimeUnixNano", 0)),
                    end_ns=int(span.get("endTimeUnixNano", 0)),
                    attributes=_attributes(span.get("attributes", [])),
                    events=[(str(e.get("name", "")), _attributes(e.get("attributes", [])))
                            for e in span.get("events", [])],
                    failed=code in (_STATUS_ERROR, "STATUS_CODE_ERROR"),
                    status_message=status.get("message") or None,
                    scope=scope,
                ))
    return out


def spans_from_otlp(body: bytes, content_type: str) -> list[SpanData]:
    """The spans of an ExportTraceServiceRequest, as protobuf or as OTLP/JSON."""
    if content_type.startswith("application/json"):
        return _spans_from_json(json.loads(body))
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    # The dict form of the protobuf is the JSON form, ids in base64 (decoded by _hex).
    return _spans_from_json(MessageToDict(request))


async def _respond(send: Send, status: int, body: bytes,
                   content_type: str = "application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _authorized(scope: Scope, token: str) -> bool:
    headers = dict(scope.get("headers", []))
    given = headers.get(b"authorization", b"").decode("latin-1")
    if given.lower().startswith("bearer "):
        return hmac.compare_digest(given[7:].strip(), token)
    cookie = headers.get(b"cookie", b"").decode("latin-1")
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "eventstore_token":
            return hmac.compare_digest(value, token)
    return False


def otlp_app(store: EventStore, token: str) -> ASGIApp:
    """A standalone ASGI app accepting OTLP/HTTP trace exports at POST /v1/traces for
    `store`, for requests carrying `Authorization: Bearer <token>`."""
    return _receiver(store, token)


def otlp_receiver(store: EventStore) -> ASGIApp:
    """The receiver without a token check of its own, for mounting behind one (the viewer
    of `eventstore serve` mounts it at POST /v1/traces behind its token gate)."""
    return _receiver(store, None)


def _receiver(store: EventStore, token: str | None) -> ASGIApp:
    recorder = SpanRecorder(store)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path", "").rstrip("/") != "/v1/traces":
            await _respond(send, 404, b'{"error": "not found"}')
            return
        if token is not None and not _authorized(scope, token):
            await _respond(send, 401, b'{"error": "missing or wrong token"}')
            return
        if scope.get("method") != "POST":
            await _respond(send, 405, b'{"error": "POST only"}')
            return
        headers = dict(scope.get("headers", []))
        content_type = headers.get(b"content-type", b"application/x-protobuf").decode()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                await _respond(send, 413, b'{"error": "body too large"}')
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if headers.get(b"content-encoding", b"").lower() == b"gzip":
            body = gzip.decompress(body)
        try:
            spans = spans_from_otlp(body, content_type)
        except Exception as exc:  # any decoding failure is the sender's: say so
            await _respond(send, 400, json.dumps({"error": f"not an OTLP trace export: "
                                                  f"{type(exc).__name__}"}).encode())
            return
        await recorder.record(spans)
        if content_type.startswith("application/json"):
            await _respond(send, 200, b"{}")
        else:
            await _respond(send, 200, b"", "application/x-protobuf")

    return app
