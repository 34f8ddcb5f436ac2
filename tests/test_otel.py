"""OpenTelemetry GenAI in and out: the span exporter, the OTLP/HTTP receiver and the
store's own spans, with the real opentelemetry-sdk.

The attribute sets below are those the instrumentations emit:
- OpenTelemetry's openai-v2 instrumentation 2.4b0 with opentelemetry-util-genai 1.0b0
  (`gen_ai.input.messages` / `gen_ai.output.messages` JSON, util/genai/_invocation.py
  `get_content_attributes`; the real instrumentor is also driven below);
- pydantic-ai 1.x with InstrumentationSettings (tests/test_logfire.py of pydantic-ai:
  `gen_ai.provider.name` and the deprecated `gen_ai.system` both set,
  `gen_ai.system_instructions`, tool-call parts, an `invoke_agent` parent span);
- OpenLLMetry (traceloop opentelemetry-instrumentation-openai / -anthropic): the
  deprecated `gen_ai.system` and `gen_ai.usage.prompt_tokens`/`completion_tokens`, and the
  indexed `gen_ai.prompt.N.*` / `gen_ai.completion.N.*` attributes;
- the older per-message span events (`gen_ai.user.message`, `gen_ai.choice`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from genai_prices import Usage, calc_price
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from eventstore import EventStore
from eventstore.integrations.opentelemetry import (
    EventStoreSpanExporter,
    instrument_store,
    otlp_app,
    spans_from_otlp,
)

from .conftest import StoreFactory
from .fake_llm_api import Answer, FakeAPI


def provider_with(exporter: Any, *, batch: bool = False) -> TracerProvider:
    provider = TracerProvider()
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider


def emit(provider: TracerProvider, name: str, attributes: dict[str, Any], *,
         events: list[tuple[str, dict[str, Any]]] = (),  # type: ignore[assignment]
         error: str | None = None, parent: Any = None) -> None:
    tracer = provider.get_tracer("tests")
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    span = tracer.start_span(name, context=ctx, attributes=attributes)
    for event_name, event_attrs in events:
        span.add_event(event_name, event_attrs)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def expected_cost(provider: str, model: str, when: datetime, **usage: int) -> Decimal:
    return calc_price(Usage(**usage), model_ref=model, provider_id=provider,
                      genai_request_timestamp=when).total_price


async def export_in_thread(exporter: EventStoreSpanExporter, provider: TracerProvider,
                           *spans: tuple[str, dict[str, Any]]) -> None:
    """Spans end on another thread, as in an app: the exporter hands them to the loop."""
    def work() -> None:
        for name, attributes in spans:
            emit(provider, name, attributes)

    await asyncio.to_thread(work)


@pytest.fixture
async def ostore(open_store: StoreFactory) -> AsyncIterator[EventStore]:
    async with open_store() as opened:
        yield opened


OPENAI_V2 = {
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 64,
    "gen_ai.response.id": "chatcmpl-9", "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.cache_read.input_tokens": 200,
    "gen_ai.conversation.id": "conv-otel", "user.id": "u-otel",
    "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
    "gen_ai.input.messages": json.dumps([
        {"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}]),
    "gen_ai.output.messages": json.dumps([
        {"role": "assistant", "parts": [{"type": "text", "content": "4"}],
         "finish_reason": "stop"}]),
}


async def test_an_openai_v2_span_is_a_priced_call_with_its_messages(ostore: EventStore) -> None:
    exporter = EventStoreSpanExporter(ostore)
    provider = provider_with(exporter)
    await export_in_thread(exporter, provider, ("chat gpt-4o", OPENAI_V2))
    (call,) = await ostore.calls(conversation_id="conv-otel")
    assert (call.provider, call.model, call.user_id) == ("openai", "gpt-4o-2024-08-06",
                                                         "u-otel")
    assert call.request["messages"] == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "What is 2+2?"}]
    assert call.request["temperature"] == 0.2 and call.request["max_tokens"] == 64
    assert call.response is not None
    assert call.response["choices"][0]["message"]["content"] == "4"
    assert call.latency_ms is not None and call.latency_ms >= 0
    assert call.event.metadata["source"] == "opentelemetry"
    assert len(call.event.metadata["trace_id"]) == 32
    spent = await ostore.sum_cost(conversation_id="conv-otel")
    assert spent == expected_cost("openai", "gpt-4o-2024-08-06", call.occurred_at,
                                  input_tokens=1200, output_tokens=300, cache_read_tokens=200)
    transcript = [e.data["content"] async for e in ostore.read(type="message_sent")]
    assert transcript == ["Be brief.", "What is 2+2?", "4"]


async def test_a_pydantic_ai_run_nests_its_calls_under_the_agent_step(ostore: EventStore) -> None:
    exporter = EventStoreSpanExporter(ostore)
    provider = provider_with(exporter)
    tracer = provider.get_tracer("pydantic-ai")

    def run() -> None:
        with tracer.start_as_current_span("invoke_agent my_agent", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "my_agent",
                "gen_ai.conversation.id": "pyd"}) as agent:
            emit(provider, "chat claude-sonnet-4-5", {
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
                "gen_ai.response.model": "claude-sonnet-4-5",
                "gen_ai.usage.input_tokens": 5000, "gen_ai.usage.output_tokens": 40,
                "gen_ai.usage.cache_read.input_tokens": 3000,
                "gen_ai.usage.cache_creation.input_tokens": 1000,
                "gen_ai.conversation.id": "pyd",
                "gen_ai.system_instructions": json.dumps(
                    [{"type": "text", "content": "Here are some instructions"}]),
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Hello"}]}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "call_1", "name": "final_result",
                     "arguments": {"content": "a"}}]}]),
                "gen_ai.tool.definitions": json.dumps(
                    [{"type": "function", "name": "final_result", "parameters": {}}]),
            }, parent=agent)

    await asyncio.to_thread(run)
    (call,) = await ostore.calls(conversation_id="pyd")
    assert call.provider == "anthropic" and call.api == "messages"
    assert call.request["system"] == "Here are some instructions"
    assert call.response is not None
    assert call.response["content"] == [{"type": "tool_use", "id": "call_1",
                                         "name": "final_result", "input": {"content": "a"}}]
    # The conventions' input total includes the cached tokens; Anthropic's body does not.
    assert call.response["usage"]["input_tokens"] == 1000
    assert await ostore.sum_cost(conversation_id="pyd") == expected_cost(
        "anthropic", "claude-sonnet-4-5", call.occurred_at, input_tokens=5000,
        output_tokens=40, cache_read_tokens=3000, cache_write_tokens=1000)
    (step,) = [e async for e in ostore.read(type="trace_step")]
    assert step.data["name"] == "invoke_agent my_agent"
    assert step.metadata["trace_id"] == call.event.metadata["trace_id"]
    assert call.event.metadata["parent_step_id"] == step.data["step_id"]


async def test_openllmetry_indexed_attributes_and_deprecated_names(ostore: EventStore) -> None:
    exporter = EventStoreSpanExporter(ostore)
    provider = provider_with(exporter)
    await export_in_thread(exporter, provider, ("openai.chat", {
        "gen_ai.system": "OpenAI", "llm.request.type": "chat",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 900, "gen_ai.usage.completion_tokens": 100,
        "llm.usage.total_tokens": 1000, "enduser.id": "u-llmetry",
        "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "You are terse.",
        "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Weather?",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.id": "call_w",
        "gen_ai.completion.0.tool_calls.0.name": "weather",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Oslo"}',
    }))
    (call,) = await ostore.calls(user_id="u-llmetry")
    assert call.provider == "openai"
    assert call.request["messages"][0] == {"role": "system", "content": "You are terse."}
    assert call.response is not None
    choice = call.response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [{"id": "call_w", "type": "function", "function": {
        "name": "weather", "arguments": '{"city": "Oslo"}'}}]
    assert await ostore.sum_cost(user_id="u-llmetry") == expected_cost(
        "openai", "gpt-4o-mini", call.occurred_at, input_tokens=900, output_tokens=100)


async def test_older_per_message_span_events(ostore: EventStore) -> None:
    exporter = EventStoreSpanExporter(ostore)
    provider = provider_with(exporter)

    def work() -> None:
        emit(provider, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 2, "gen_ai.conversation.id": "old"},
            events=[("gen_ai.system.message", {"content": "sys"}),
                    ("gen_ai.user.message", {"content": "hi"}),
                    ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                       "message": json.dumps({"content": "hello"})})])

    await asyncio.to_thread(work)
    (call,) = await ostore.calls(conversation_id="old")
    assert call.request["messages"] == [{"role": "system", "content": "sys"},
                                        {"role": "user", "content": "hi"}]
    assert call.response is not None
    assert call.response["choices"][0]["message"]["content"] == "hello"


async def test_failed_unknown_and_non_genai_spans(ostore: EventStore) -> None:
    exporter = EventStoreSpanExporter(ostore)
    provider = provider_with(exporter)

    def work() -> None:
        emit(provider, "GET /health", {"http.request.method": "GET"})  # not a model call
        emit(provider, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "error.type": "RateLimitError",
            "http.response.status_code": 429, "gen_ai.conversation.id": "bad"},
            error="rate limited")
        emit(provider, "chat my-finetune", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "ft:my-finetune-xyz", "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 5, "gen_ai.conversation.id": "ft"})

    await asyncio.to_thread(work)
    assert exporter.recorded == 2
    (failed,) = await ostore.calls(conversation_id="bad")
    assert failed.error is not None
    assert failed.error["type"] == "RateLimitError" and failed.error["status_code"] == 429
    (unpriced,) = await ostore.calls(conversation_id="ft")
    assert not unpriced.priced  # never $0
    assert unpriced.usage["input_tokens"] == 50
    metrics = await ostore.metrics(conversation_id="ft")
    assert metrics.unpriced_calls == 1 and metrics.input_tokens == 50


async def test_a_resent_span_is_recorded_once(ostore: EventStore) -> None:
    memory = InMemorySpanExporter()
    provider = provider_with(memory)
    emit(provider, "chat gpt-4o", OPENAI_V2)
    (span,) = memory.get_finished_spans()
    exporter = EventStoreSpanExporter(ostore)
    await asyncio.to_thread(exporter.export, [span])
    await asyncio.to_thread(exporter.export, [span])
    assert len(await ostore.calls(conversation_id="conv-otel")) == 1


@pytest.mark.slow
async def test_a_batch_processor_from_four_threads_records_every_span_once(
        tmp_path: Path) -> None:
    async with EventStore.open(f"sqlite:///{tmp_path / 'otel.db'}") as store:
        exporter = EventStoreSpanExporter(store)
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=20_000, max_export_batch_size=512))
        per_thread = 2_500

        def app_thread(k: int) -> None:
            for i in range(per_thread):
                emit(provider, "chat gpt-4o-mini", {
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 1, "gen_ai.conversation.id": f"t{k}-{i}"})

        # 10k calls cost about 1-2 ms each on a quiet 2-core machine (pricing, encoding)
        with anyio.fail_after(600):
            await asyncio.gather(*[asyncio.to_thread(app_thread, k) for k in range(4)])
            assert await asyncio.to_thread(provider.force_flush, 600_000)
        assert await store.count_events(type="llm_call") == 4 * per_thread
        ids = {e.metadata["span_id"] async for e in store.read(type="llm_call")}
        assert len(ids) == 4 * per_thread
    # the store is closed: shutting the processor down returns at once, losing nothing
    started = time.monotonic()
    await asyncio.to_thread(provider.shutdown)
    assert time.monotonic() - started < 5


async def test_export_after_the_store_closed_fails_fast(tmp_path: Path) -> None:
    store = EventStore.open("memory://")
    await store.start()
    exporter = EventStoreSpanExporter(store)
    await store.close()
    memory = InMemorySpanExporter()
    emit(provider_with(memory), "chat gpt-4o", OPENAI_V2)
    started = time.monotonic()
    result = await asyncio.to_thread(exporter.export, memory.get_finished_spans())
    assert result.name == "FAILURE" and time.monotonic() - started < 5
    await asyncio.to_thread(exporter.shutdown)


# --- the real openai-v2 instrumentor around a real client ---------------------------------

def chat_answer() -> dict[str, Any]:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1_700_000_000,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hi!"}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}}


@pytest.fixture
def openai_v2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    instrumentor = OpenAIInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()


@pytest.mark.parametrize("also_instrument_openai", [False, True])
async def test_the_openai_v2_instrumentor_is_recorded_once(
        api: FakeAPI, openai_v2: Any, also_instrument_openai: bool,
        tmp_path: Path) -> None:
    import openai

    from eventstore.integrations import instrument_openai

    api.answer("/v1/chat/completions", Answer(body=chat_answer()))
    async with EventStore.open(f"sqlite:///{tmp_path / 'v2.db'}") as store:
        exporter = EventStoreSpanExporter(store)
        provider = provider_with(exporter, batch=True)
        openai_v2.instrument(tracer_provider=provider)
        client = openai.OpenAI(api_key="sk-test", base_url=f"{api.url}/v1", max_retries=0)
        if also_instrument_openai:
            client = instrument_openai(client, store, "c-v2", "u-v2")

        def call() -> None:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])

        await asyncio.to_thread(call)
        assert await asyncio.to_thread(provider.force_flush, 30_000)
        calls = await store.calls()
        assert len(calls) == 1
        (recorded,) = calls
        assert recorded.model == "gpt-4o-2024-08-06"
        assert recorded.request["messages"][-1]["content"] == "Hello"
        source = recorded.event.metadata.get("source")
        assert source == (None if also_instrument_openai else "opentelemetry")
        assert await store.sum_cost() == expected_cost(
            "openai", "gpt-4o-2024-08-06", recorded.occurred_at, input_tokens=20,
            output_tokens=3)
        await asyncio.to_thread(provider.shutdown)


# --- OTLP/HTTP --------------------------------------------------------------------------

def otlp_request(spans: list[tuple[str, dict[str, Any]]]) -> bytes:
    """An ExportTraceServiceRequest made by the SDK's own OTLP encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    memory = InMemorySpanExporter()
    provider = provider_with(memory)
    for name, attributes in spans:
        emit(provider, name, attributes)
    message: bytes = encode_spans(memory.get_finished_spans()).SerializeToString()
    return message


async def test_the_otlp_app_takes_protobuf_and_json_behind_its_token(
        ostore: EventStore) -> None:
    app = otlp_app(ostore, "s3cret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://eventstore") as http:
        body = otlp_request([("chat gpt-4o", OPENAI_V2)])
        refused = await http.post("/v1/traces", content=body,
                                  headers={"content-type": "application/x-protobuf"})
        assert refused.status_code == 401 and b"conv-otel" not in refused.content
        wrong = await http.post("/v1/traces", content=body, headers={
            "content-type": "application/x-protobuf", "authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await http.post("/v1/traces", content=body, headers={
            "content-type": "application/x-protobuf", "authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        as_json = {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "js"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": "chat gpt-4o", "startTimeUnixNano": "1764633600000000000",
            "endTimeUnixNano": "1764633600500000000",
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "100"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 10}},
                {"key": "gen_ai.conversation.id", "value": {"stringValue": "from-js"}}],
        }]}]}]}
        ok = await http.post("/v1/traces", json=as_json,
                             headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        garbage = await http.post("/v1/traces", content=b"\x00garbage", headers={
            "content-type": "application/x-protobuf", "authorization": "Bearer s3cret"})
        assert garbage.status_code == 400
    (from_proto,) = await ostore.calls(conversation_id="conv-otel")
    assert from_proto.model == "gpt-4o-2024-08-06"
    (from_js,) = await ostore.calls(conversation_id="from-js")
    assert from_js.latency_ms == 500.0
    assert from_js.event.metadata["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert from_js.occurred_at == datetime(2025, 12, 2, tzinfo=UTC)


def test_protobuf_and_json_decode_to_the_same_spans() -> None:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    body = otlp_request([("chat gpt-4o", OPENAI_V2)])
    (proto,) = spans_from_otlp(body, "application/x-protobuf")
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    as_json = MessageToDict(message)
    for spans in as_json["resourceSpans"]:
        for scope in spans["scopeSpans"]:
            for span in scope["spans"]:  # OTLP/JSON writes ids in hex
                import base64
                span["traceId"] = base64.b64decode(span["traceId"]).hex()
                span["spanId"] = base64.b64decode(span["spanId"]).hex()
    (js,) = spans_from_otlp(json.dumps(as_json).encode(), "application/json")
    assert proto == js
    assert proto.attributes["gen_ai.usage.input_tokens"] == 1200


@pytest.mark.slow
def test_another_process_exports_over_otlp_to_eventstore_serve(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    url = f"sqlite:///{db}"
    subprocess.run([sys.executable, "-c", f"import asyncio\nfrom eventstore import EventStore\n"
                    f"async def m():\n    async with EventStore.open({url!r}): pass\n"
                    "asyncio.run(m())"], check=True, timeout=60)
    server = subprocess.Popen(
        [sys.executable, "-m", "eventstore", "serve", "--db", url, "--port", "0",
         "--token", "tok-otlp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = _served_url(server)
        sender = f"""
import os
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
    endpoint={base + '/v1/traces'!r}, headers={{"authorization": os.environ["TOKEN"]}})))
tracer = provider.get_tracer("other-process")
attrs = {json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in OPENAI_V2.items()})}
with tracer.start_as_current_span("chat gpt-4o", attributes=attrs):
    pass
provider.shutdown()
"""
        env = {**os.environ}
        done = subprocess.run([sys.executable, "-c", sender], timeout=120, capture_output=True,
                              text=True, env={**env, "TOKEN": "Bearer tok-otlp"})
        assert done.returncode == 0, done.stderr
        refused = httpx.post(base + "/v1/traces", content=b"", timeout=10)
        assert refused.status_code == 401
    finally:
        server.terminate()
        server.wait(30)

    async def check() -> None:
        async with EventStore.open(url) as store:
            (call,) = await store.calls(conversation_id="conv-otel")
            assert call.event.metadata["instrumentation_scope"] == "other-process"

    asyncio.run(check())


def _served_url(server: subprocess.Popen[str]) -> str:
    """The base URL `eventstore serve` prints, read from its output (bounded)."""
    import re
    import selectors

    assert server.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(server.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        if not selector.select(timeout=1):
            continue
        line = server.stdout.readline()
        seen += line
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if found:
            return found.group(1)
        if server.poll() is not None:
            break
    raise AssertionError(f"eventstore serve printed no URL: {seen}")


# --- out: the store's own operations as spans ----------------------------------------------

async def test_instrument_store_makes_a_span_per_operation(ostore: EventStore) -> None:
    from eventstore import Event, InvalidQueryError

    memory = InMemorySpanExporter()
    provider = provider_with(memory)
    instrumentation = instrument_store(ostore, tracer_provider=provider)
    app = provider.get_tracer("app")
    with app.start_as_current_span("request") as parent:
        await ostore.append(Event(type="message_sent", data={"role": "user", "content": "x"}))
        with pytest.raises(InvalidQueryError):
            await ostore.list_events(limit=0)
    instrumentation.uninstrument()
    await ostore.count_events()
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert {"eventstore.append", "eventstore.list_events", "request"} <= set(spans)
    assert "eventstore.count_events" not in spans
    append = spans["eventstore.append"]
    assert append.parent is not None
    assert append.parent.span_id == parent.get_span_context().span_id
    assert append.end_time is not None and append.start_time is not None
    assert append.end_time >= append.start_time
    failed = spans["eventstore.list_events"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "InvalidQueryError"


def test_threads_are_not_left_behind() -> None:
    # The exporter starts no thread of its own: the SDK's processor owns the worker.
    before = {t.name for t in threading.enumerate()}
    EventStoreSpanExporter.__init__  # noqa: B018  (construction needs a store; see above)
    assert {t.name for t in threading.enumerate()} == before
