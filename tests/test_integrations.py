"""The OpenAI and Anthropic integrations, driven through the real SDKs against a local
HTTP server that answers like the APIs, on every backend.

What is checked: the caller gets exactly what the server sent (the SDK objects' dicts
equal the JSON the server wrote, stream chunks one for one); the log holds the whole
prompt (each message once), the reply, the call with its request and response, a cost
priced exactly from a PriceTable, and the errors; recording
failures never fail the call; sync clients record from worker threads, from the loop's
own thread and from a sync app whose store runs on a background loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC
from decimal import Decimal
from typing import Any

import anthropic
import openai
import polars as pl
import pytest

from eventstore import EventStore, RecordedEvent
from eventstore.calls import LLM_CALL
from eventstore.integrations import (
    current_attribution,
    instrument_anthropic,
    instrument_openai,
    stats,
)
from eventstore.integrations.polars import MissingDependencyError, to_polars
from eventstore.pricing import ModelPrice, PriceTable

from .conftest import StoreFactory, wait_for
from .fake_llm_api import Answer, FakeAPI, sse

GPT = "gpt-4o-2024-08-06"
CLAUDE = "claude-sonnet-4-5-20250929"
PRICES = PriceTable({
    ("openai", GPT): ModelPrice.per_million(input="2.5", output="10", cache_read="1.25"),
    ("anthropic", CLAUDE): ModelPrice.per_million(input="3", output="15", cache_read="0.3",
                                                  cache_write="3.75"),
})


@pytest.fixture
async def pstore(open_store: StoreFactory) -> AsyncIterator[EventStore]:
    async with open_store(pricing=PRICES) as opened:
        yield opened


def oa_sync(api: FakeAPI) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=f"{api.url}/v1", max_retries=0)


def oa_async(api: FakeAPI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=f"{api.url}/v1", max_retries=0)


def an_sync(api: FakeAPI) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=api.url, max_retries=0)


def an_async(api: FakeAPI) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=api.url, max_retries=0)


# --- what the server answers ---------------------------------------------------------------


def chat_completion(model: str = GPT, text: str = "Hello there!") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
        "model": model, "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": None}}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                  "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }


# 1000 uncached input at 2.5/M, 200 cached at 1.25/M, 300 output at 10/M.
CHAT_COST = Decimal("0.00275") + Decimal("0.003")


def chat_chunks(*, usage: bool) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-s", "object": "chat.completion.chunk",
                "created": 1_700_000_000, "model": GPT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
              chunk({"content": "lo"}), chunk({"content": " world"}), chunk({}, "stop")]
    if usage:
        chunks.append({"id": "chatcmpl-s", "object": "chat.completion.chunk",
                       "created": 1_700_000_000, "model": GPT, "choices": [],
                       "usage": {"prompt_tokens": 1200, "completion_tokens": 300,
                                 "total_tokens": 1500,
                                 "prompt_tokens_details": {"cached_tokens": 200}}})
    return chunks


def responses_answer(status: str = "completed", usage: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "resp_1", "object": "response", "created_at": 1_700_000_000,
        "status": status, "model": GPT, "parallel_tool_calls": True, "tool_choice": "auto",
        "tools": [], "error": None, "incomplete_details": None,
        "output": [{"type": "message", "id": "msg_1", "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Paris.",
                                 "annotations": []}]}],
        "usage": {"input_tokens": 100,
                  "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 0},
                  "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5},
                  "total_tokens": 120},
    }
    if not usage:
        doc["usage"] = None
        doc["output"] = []
    return doc


# 60 uncached at 2.5/M, 40 cached at 1.25/M, 20 output at 10/M.
RESPONSES_COST = Decimal("0.000150") + Decimal("0.00005") + Decimal("0.0002")


def claude_message(model: str = CLAUDE) -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Bonjour"}, {"type": "text", "text": " !"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 50, "cache_read_input_tokens": 1000,
                  "cache_creation_input_tokens": 200, "output_tokens": 30},
    }


# 50 at 3/M, 1000 cache reads at 0.3/M, 200 cache writes at 3.75/M, 30 output at 15/M.
CLAUDE_COST = (Decimal("0.00015") + Decimal("0.0003") + Decimal("0.00075")
               + Decimal("0.00045"))


def claude_stream(*, delta: bool = True) -> list[dict[str, Any]]:
    start = claude_message()
    start.update(content=[], stop_reason=None)
    start["usage"] = {**start["usage"], "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Bon"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "jour !"}},
        {"type": "content_block_stop", "index": 0},
    ]
    if delta:
        events += [
            {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                "stop_sequence": None},
             "usage": {"output_tokens": 30}},
            {"type": "message_stop"},
        ]
    return events


def prompt(text: str = "Say hello") -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello?"},
            {"role": "user", "content": [{"type": "text", "text": text}]}]


# --- helpers ---------------------------------------------------------------------------------


async def events_of(store: EventStore, conversation_id: str) -> list[RecordedEvent]:
    return (await store.list_events(conversation_id=conversation_id, limit=1000)).events


# What one call with prompt() writes: its four messages, the reply, the call, the cost.
CALL_EVENTS = 7


def call_of(events: list[RecordedEvent]) -> RecordedEvent:
    (call,) = [e for e in events if e.type == LLM_CALL]
    return call


def split(events: list[RecordedEvent]) -> tuple[list[RecordedEvent], list[RecordedEvent],
                                                list[RecordedEvent]]:
    messages = [e for e in events if e.type == "message_sent"]
    costs = [e for e in events if e.type == "cost_recorded"]
    errors = [e for e in events if e.type == LLM_CALL and e.data.get("error")]
    return messages, costs, errors


def check_cost(cost: RecordedEvent, *, provider: str, model: str, input_tokens: int,
               output_tokens: int, cache_read: int, cache_write: int, total: Decimal) -> None:
    data = cost.data
    assert (data["provider"], data["model"]) == (provider, model)
    assert (data["input_tokens"], data["output_tokens"]) == (input_tokens, output_tokens)
    assert (data["cache_read_tokens"], data["cache_write_tokens"]) == (cache_read, cache_write)
    assert Decimal(data["total_cost"]) == total
    assert Decimal(data["input_cost"]) + Decimal(data["output_cost"]) == total
    assert data["price_source"] == "override"
    assert data["latency_ms"] > 0
    assert isinstance(data["call_id"], str)


def check_messages(messages: list[RecordedEvent], prompt_text: str, reply: str,
                   tokens: int | None) -> None:
    """The whole prompt is stored (each message once), then the reply."""
    *sent, answer = messages
    assert sent[-1].data["role"] == "user"
    assert sent[-1].data["content"] == prompt_text
    assert all(m.data.get("source") != "response" for m in sent)
    assert (answer.data["role"], answer.data["content"]) == ("assistant", reply)
    assert answer.data["source"] == "response"
    assert answer.data.get("tokens") == tokens


def counts() -> dict[str, int]:
    return stats.snapshot()


def delta(before: dict[str, int]) -> dict[str, int]:
    now = stats.snapshot()
    return {k: now[k] - before[k] for k in now if now[k] != before[k]}


# --- OpenAI ------------------------------------------------------------------------------------


async def test_openai_chat_completion_sync_from_worker_thread(pstore: EventStore,
                                                              api: FakeAPI) -> None:
    body = chat_completion()
    api.answer("/v1/chat/completions", Answer(body=body))
    client = instrument_openai(oa_sync(api), pstore, "c1", "u1", metadata={"app": "test"})
    before = counts()
    # The store's loop keeps running while the worker waits for its events to be written.
    result = await asyncio.to_thread(
        client.chat.completions.create, model="gpt-4o", messages=prompt())
    assert type(result) is openai.types.chat.ChatCompletion
    assert result.to_dict() == body

    messages, costs, errors = split(await events_of(pstore, "c1"))
    check_messages(messages, "Say hello", "Hello there!", 300)
    assert not errors
    (cost,) = costs
    check_cost(cost, provider="openai", model=GPT, input_tokens=1200, output_tokens=300,
               cache_read=200, cache_write=0, total=CHAT_COST)
    assert cost.user_id == "u1"
    assert cost.metadata["app"] == "test"
    call = call_of(await events_of(pstore, "c1"))
    assert call.data["api"] == "chat"
    assert call.data["request"] == {"model": "gpt-4o"}
    assert call.data["response"] == body
    assert call.data["stream"] is False
    assert delta(before) == {"calls": 1, "recorded": 1}
    client.close()


async def test_openai_async_chat_and_record_messages_off(pstore: EventStore,
                                                         api: FakeAPI) -> None:
    body = chat_completion()
    api.answer("/v1/chat/completions", Answer(body=body))
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, "c2", record_messages=False)
        result = await client.chat.completions.create(model="gpt-4o", messages=prompt())
    assert result.to_dict() == body
    messages, costs, _ = split(await events_of(pstore, "c2"))
    assert messages == []  # no prompt or reply text when asked not to
    assert "Hello there" not in json.dumps(call_of(await events_of(pstore, "c2")).data)
    check_cost(costs[0], provider="openai", model=GPT, input_tokens=1200, output_tokens=300,
               cache_read=200, cache_write=0, total=CHAT_COST)


async def test_instrumenting_twice_records_once(pstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_completion()))
    async with oa_async(api) as raw:
        instrument_openai(raw, pstore, "first")
        client = instrument_openai(raw, pstore, "again")
        await client.chat.completions.create(model="gpt-4o", messages=prompt())
    assert await events_of(pstore, "first") == []
    assert len(await events_of(pstore, "again")) == CALL_EVENTS


async def test_azure_client_records_the_azure_provider(open_store: StoreFactory,
                                                       api: FakeAPI) -> None:
    api.answer("/openai/deployments/prod-4o/chat/completions", Answer(body=chat_completion()))
    azure_prices = PriceTable({("azure.ai.openai", GPT): ModelPrice.per_million(
        input="2.5", output="10", cache_read="1.25")})
    async with open_store(pricing=azure_prices) as store, openai.AsyncAzureOpenAI(
        api_key="k", azure_endpoint=api.url, api_version="2024-10-21", max_retries=0,
    ) as raw:
        client = instrument_openai(raw, store, "az")
        await client.chat.completions.create(model="prod-4o", messages=prompt())
        _, costs, _ = split(await events_of(store, "az"))
    check_cost(costs[0], provider="azure.ai.openai", model=GPT, input_tokens=1200,
               output_tokens=300, cache_read=200, cache_write=0, total=CHAT_COST)


async def test_openai_responses_api(pstore: EventStore, api: FakeAPI) -> None:
    body = responses_answer()
    api.answer("/v1/responses", Answer(body=body))
    client = instrument_openai(oa_sync(api), pstore, "r1")
    result = await asyncio.to_thread(client.responses.create, model="gpt-4o",
                                     input="Capital of France?")
    assert type(result) is openai.types.responses.Response
    assert result.to_dict() == body
    messages, costs, _ = split(await events_of(pstore, "r1"))
    check_messages(messages, "Capital of France?", "Paris.", 20)
    check_cost(costs[0], provider="openai", model=GPT, input_tokens=100, output_tokens=20,
               cache_read=40, cache_write=0, total=RESPONSES_COST)
    call = call_of(await events_of(pstore, "r1"))
    assert call.data["usage"]["output_reasoning_tokens"] == 5
    assert call.data["api"] == "responses"
    client.close()


async def test_openai_responses_stream(pstore: EventStore, api: FakeAPI) -> None:
    created = responses_answer(status="in_progress", usage=False)
    events = [
        {"type": "response.created", "sequence_number": 0, "response": created},
        {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
         "output_index": 0, "content_index": 0, "delta": "Par", "logprobs": []},
        {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1",
         "output_index": 0, "content_index": 0, "delta": "is.", "logprobs": []},
        {"type": "response.completed", "sequence_number": 3, "response": responses_answer()},
    ]
    api.answer("/v1/responses", Answer(events=sse(events, named=True, done=False)))
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, "r2")
        stream = await client.responses.create(
            model="gpt-4o", stream=True,
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Capital?"}]}])
        assert type(stream) is openai.AsyncStream
        received = [event async for event in stream]
    assert [e.to_dict() for e in received] == events
    messages, costs, _ = split(await events_of(pstore, "r2"))
    check_messages(messages, "Capital?", "Paris.", 20)
    check_cost(costs[0], provider="openai", model=GPT, input_tokens=100, output_tokens=20,
               cache_read=40, cache_write=0, total=RESPONSES_COST)


async def test_openai_chat_stream_with_usage(pstore: EventStore, api: FakeAPI) -> None:
    chunks = chat_chunks(usage=True)
    api.answer("/v1/chat/completions", Answer(events=sse(chunks)))
    client = instrument_openai(oa_sync(api), pstore, "s1")

    def consume() -> tuple[Any, list[Any], int]:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=prompt(), stream=True,
            stream_options={"include_usage": True})
        with stream as s:  # the SDK's own context manager, on the SDK's own object
            received = []
            for chunk in s:
                received.append(chunk)
                if len(received) == 2:
                    # Mid-stream nothing is recorded yet: it is written when the stream ends.
                    pending = asyncio.run_coroutine_threadsafe(
                        pstore.count_events(conversation_id="s1"), loop).result(5)
        return stream, received, pending

    loop = asyncio.get_running_loop()
    stream, received, pending_mid_stream = await asyncio.to_thread(consume)
    assert type(stream) is openai.Stream
    assert pending_mid_stream == 0
    assert all(type(c) is openai.types.chat.ChatCompletionChunk for c in received)
    assert [c.to_dict() for c in received] == chunks
    assert api.requests[-1][1]["stream_options"] == {"include_usage": True}

    messages, costs, _ = split(await events_of(pstore, "s1"))
    check_messages(messages, "Say hello", "Hello world", 300)
    (cost,) = costs
    check_cost(cost, provider="openai", model=GPT, input_tokens=1200, output_tokens=300,
               cache_read=200, cache_write=0, total=CHAT_COST)
    call = call_of(await events_of(pstore, "s1"))
    assert 0 < call.data["time_to_first_token_ms"] <= cost.data["latency_ms"]
    assert call.data["stream"] is True
    client.close()


async def test_openai_chat_stream_without_usage_records_no_cost(
    pstore: EventStore, api: FakeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventstore.integrations")
    chunks = chat_chunks(usage=False)
    api.answer("/v1/chat/completions", Answer(events=sse(chunks)))
    before = counts()
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, "s2")
        stream = await client.chat.completions.create(model="gpt-4o", messages=prompt(),
                                                      stream=True)
        received = []
        async with stream:
            async for chunk in stream:
                received.append(chunk)
    assert [c.to_dict() for c in received] == chunks
    # The integration must not ask for usage on the caller's behalf: it changes the chunks.
    assert "stream_options" not in api.requests[-1][1]
    messages, costs, _ = split(await events_of(pstore, "s2"))
    check_messages(messages, "Say hello", "Hello world", None)
    assert costs == []
    call = call_of(await events_of(pstore, "s2"))
    assert call.data["priced"] is False
    assert call.data["unpriced_reason"] == "the response reported no usage"
    assert delta(before) == {"calls": 1, "unpriced": 1, "recorded": 1}
    # Warned once per process, then at debug level: either way it says why.
    assert "without a cost" in caplog.text


async def test_openai_stream_closed_early_is_recorded_as_incomplete(
    pstore: EventStore, api: FakeAPI
) -> None:
    api.answer("/v1/chat/completions", Answer(events=sse(chat_chunks(usage=True))))
    client = instrument_openai(oa_sync(api), pstore, "s3")

    def first_two() -> list[str | None]:
        with client.chat.completions.create(model="gpt-4o", messages=prompt(),
                                            stream=True) as stream:
            it = iter(stream)
            return [next(it).choices[0].delta.content, next(it).choices[0].delta.content]

    assert await asyncio.to_thread(first_two) == ["", "Hel"]
    messages, costs, _ = split(await events_of(pstore, "s3"))
    assert [m.data["content"] for m in messages][-2:] == ["Say hello", "Hel"]
    assert call_of(await events_of(pstore, "s3")).data["incomplete"] is True
    assert costs == []
    client.close()


async def test_openai_stream_dropped_unclosed_is_recorded_when_collected(
    pstore: EventStore, api: FakeAPI
) -> None:
    api.answer("/v1/chat/completions", Answer(events=sse(chat_chunks(usage=True))))
    client = instrument_openai(oa_sync(api), pstore, "s4")
    before = counts()

    def abandon() -> None:
        stream = client.chat.completions.create(model="gpt-4o", messages=prompt(),
                                                stream=True)
        next(iter(stream))

    await asyncio.to_thread(abandon)
    gc.collect()  # the SDK's stream and generator form a cycle: only the collector frees it
    await wait_for(lambda: delta(before).get("recorded") == 1)
    messages, _, _ = split(await events_of(pstore, "s4"))
    assert [m.data["content"] for m in messages][-1] == "Say hello"
    assert call_of(await events_of(pstore, "s4")).data["incomplete"] is True
    client.close()


async def test_raw_response_is_recorded_and_passes_through(pstore: EventStore,
                                                          api: FakeAPI) -> None:
    body = chat_completion()
    api.answer("/v1/chat/completions", Answer(body=body))
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, "raw")
        before = counts()
        response = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=prompt())
        assert response.status_code == 200
        assert response.parse().to_dict() == body
    assert call_of(await events_of(pstore, "raw")).data["response"] == body
    assert delta(before) == {"calls": 1, "recorded": 1}


async def test_openai_api_error_propagates_and_is_recorded(pstore: EventStore,
                                                           api: FakeAPI) -> None:
    error = {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests",
                       "param": None, "code": "rate_limit_exceeded"}}
    api.answer("/v1/chat/completions", Answer(status=429, body=error))
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, "e1", "u1")
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=prompt())
    assert caught.value.status_code == 429
    assert caught.value.body == error["error"]
    messages, costs, errors = split(await events_of(pstore, "e1"))
    assert [m.data["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert costs == []
    (err,) = errors
    assert err.data["error"]["type"] == "RateLimitError"
    assert err.data["error"]["status_code"] == 429
    assert err.data["error"]["code"] == "rate_limit_exceeded"
    assert err.data["error"].get("request_id") == caught.value.request_id
    assert err.data["provider"] == "openai"
    assert err.data["latency_ms"] > 0
    assert err.user_id == "u1"


# --- Anthropic ---------------------------------------------------------------------------------


async def test_anthropic_message_with_cache_tokens(pstore: EventStore, api: FakeAPI) -> None:
    body = claude_message()
    api.answer("/v1/messages", Answer(body=body))
    client = instrument_anthropic(an_sync(api), pstore, "a1", "u9")
    result = await asyncio.to_thread(
        client.messages.create, model="claude-test", max_tokens=100,
        system="Be brief.", messages=[{"role": "user", "content": "Say bonjour"}])
    assert type(result) is anthropic.types.Message
    assert result.to_dict() == body
    messages, costs, _ = split(await events_of(pstore, "a1"))
    check_messages(messages, "Say bonjour", "Bonjour !", 30)
    (cost,) = costs
    # OpenTelemetry's input total: 50 uncached + 1000 cache reads + 200 cache writes.
    check_cost(cost, provider="anthropic", model=CLAUDE, input_tokens=1250, output_tokens=30,
               cache_read=1000, cache_write=200, total=CLAUDE_COST)
    assert call_of(await events_of(pstore, "a1")).data["response"]["stop_reason"] == "end_turn"
    assert cost.user_id == "u9"
    client.close()


async def test_anthropic_async_stream(pstore: EventStore, api: FakeAPI) -> None:
    events = claude_stream()
    api.answer("/v1/messages", Answer(events=sse(events, named=True, done=False)))
    async with an_async(api) as raw:
        client = instrument_anthropic(raw, pstore, "a2")
        stream = await client.messages.create(
            model="claude-test", max_tokens=100, stream=True,
            messages=[{"role": "user", "content": [{"type": "text", "text": "Say bonjour"}]}])
        assert type(stream) is anthropic.AsyncStream
        async with stream:
            received = [event async for event in stream]
    # The SDK itself drops pings; everything else arrives as sent.
    assert [e.to_dict() for e in received] == [e for e in events if e["type"] != "ping"]
    messages, costs, _ = split(await events_of(pstore, "a2"))
    check_messages(messages, "Say bonjour", "Bonjour !", 30)
    check_cost(costs[0], provider="anthropic", model=CLAUDE, input_tokens=1250,
               output_tokens=30, cache_read=1000, cache_write=200, total=CLAUDE_COST)
    call = call_of(await events_of(pstore, "a2"))
    assert 0 < call.data["time_to_first_token_ms"] <= costs[0].data["latency_ms"]


async def test_anthropic_sync_stream_and_error_mid_stream(pstore: EventStore,
                                                          api: FakeAPI) -> None:
    events = claude_stream()
    api.answer("/v1/messages", Answer(events=sse(events, named=True, done=False)))
    client = instrument_anthropic(an_sync(api), pstore, "a3")

    def texts() -> list[str]:
        stream = client.messages.create(model="claude-test", max_tokens=100,
                                        stream=True, messages=prompt())
        return [e.delta.text for e in stream if e.type == "content_block_delta"]

    assert await asyncio.to_thread(texts) == ["Bon", "jour !"]
    _, costs, _ = split(await events_of(pstore, "a3"))
    assert costs[0].data["output_tokens"] == 30

    # An error event in the middle of the stream: the SDK raises it, the caller sees it.
    broken = [*sse(claude_stream(delta=False), named=True, done=False),
              ("error", json.dumps({"type": "error", "error": {
                  "type": "overloaded_error", "message": "Overloaded"}}))]
    api.answer("/v1/messages", Answer(events=broken))
    client = instrument_anthropic(client, pstore, "a4")
    with pytest.raises(anthropic.APIStatusError):
        await asyncio.to_thread(texts)
    messages, costs, errors = split(await events_of(pstore, "a4"))
    assert [m.data["content"] for m in messages][-2:] == ["Say hello", "Bonjour !"]
    # message_start reported the input: priced with the output seen so far
    assert costs[0].data["input_tokens"] == 1250
    assert errors[0].data["error"]["provider_type"] == "overloaded_error"
    client.close()


async def test_anthropic_server_error(pstore: EventStore, api: FakeAPI) -> None:
    body = {"type": "error", "error": {"type": "api_error", "message": "Internal error"}}
    api.answer("/v1/messages", Answer(status=500, body=body))
    client = instrument_anthropic(an_sync(api), pstore, "a5")
    with pytest.raises(anthropic.InternalServerError) as caught:
        await asyncio.to_thread(client.messages.create, model="claude-test",
                                max_tokens=10, messages=prompt())
    assert caught.value.status_code == 500
    _, _, errors = split(await events_of(pstore, "a5"))
    error = errors[0].data["error"]
    assert (error["type"], error["status_code"], error["provider_type"]) == (
        "InternalServerError", 500, "api_error")
    client.close()


# --- recording never fails the call --------------------------------------------------------------


async def test_unknown_model_is_recorded_unpriced(pstore: EventStore,
                                                  api: FakeAPI) -> None:
    body = chat_completion(model="gpt-unpriced-1")
    api.answer("/v1/chat/completions", Answer(body=body))
    before = counts()
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, "u1")
        result = await client.chat.completions.create(model="gpt-unpriced",
                                                      messages=prompt())
    assert result.to_dict() == body
    messages, costs, _ = split(await events_of(pstore, "u1"))
    check_messages(messages, "Say hello", "Hello there!", 300)
    assert costs == []  # never a $0 row
    call = call_of(await events_of(pstore, "u1"))
    assert (call.data["priced"], call.data["input_tokens"]) == (False, 1200)
    assert delta(before) == {"calls": 1, "recorded": 1, "unpriced": 1}


async def test_closed_store_does_not_fail_the_call(open_store: StoreFactory,
                                                   api: FakeAPI) -> None:
    store = open_store(pricing=PRICES)
    await store.start()
    await store.close()
    body = chat_completion()
    api.answer("/v1/chat/completions", Answer(body=body))
    before = counts()
    async with oa_async(api) as raw:
        client = instrument_openai(raw, store, "closed")
        result = await client.chat.completions.create(model="gpt-4o", messages=prompt())
    sync_client = instrument_openai(oa_sync(api), store, "closed")
    sync_result = await asyncio.to_thread(sync_client.chat.completions.create,
                                          model="gpt-4o", messages=prompt())
    sync_client.close()
    assert result.to_dict() == sync_result.to_dict() == body
    changed = delta(before)
    assert changed["calls"] == 2
    assert changed["failures"] >= 2
    assert "recorded" not in changed


async def test_failing_redact_hook_does_not_fail_the_call(open_store: StoreFactory,
                                                          api: FakeAPI) -> None:
    def boom(event: Any) -> Any:
        raise RuntimeError("redactor down")

    api.answer("/v1/messages", Answer(body=claude_message()))
    async with open_store(pricing=PRICES, redact=[boom]) as store, an_async(api) as raw:
        client = instrument_anthropic(raw, store, "r")
        before = counts()
        result = await client.messages.create(model="claude-test", max_tokens=10,
                                              messages=prompt())
        assert result.to_dict() == claude_message()
        assert await store.count_events() == 0
        changed = delta(before)
        assert changed["failures"] == 1  # the call's events are one append: none written
        assert "recorded" not in changed


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
async def test_broken_response_shape_is_counted_not_raised(pstore: EventStore,
                                                           api: FakeAPI) -> None:
    body = chat_completion()
    body["choices"] = "not a list"  # nothing the SDK validates, and nothing we can read
    api.answer("/v1/chat/completions", Answer(body=body))
    before = counts()
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, "weird")
        result = await client.chat.completions.create(model="gpt-4o", messages=prompt())
    assert result.to_dict() == body
    assert delta(before)["failures"] == 1


# --- sync clients and the store's loop -----------------------------------------------------------


async def test_sync_client_on_the_loop_thread_records_when_the_loop_is_free(
    pstore: EventStore, api: FakeAPI
) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_completion()))
    client = instrument_openai(oa_sync(api), pstore, "on-loop")
    before = counts()
    # Blocking the loop for the request is the caller's choice; waiting for the write here
    # would deadlock, so it is scheduled and runs once this coroutine yields.
    client.chat.completions.create(model="gpt-4o", messages=prompt())
    await wait_for(lambda: delta(before).get("recorded") == 1)
    assert len(await events_of(pstore, "on-loop")) == CALL_EVENTS
    client.close()


async def test_sync_client_gives_up_waiting_on_a_blocked_loop(pstore: EventStore,
                                                              api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_completion()))
    client = instrument_openai(oa_sync(api), pstore, "blocked", record_timeout=0.05)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(
        client.chat.completions.create(model="gpt-4o", messages=prompt())))
    before = counts()
    worker.start()
    worker.join(10)  # blocks this loop on purpose, as a careless sync call would
    assert not worker.is_alive()
    assert results[0].to_dict() == chat_completion()
    assert delta(before)["failures"] == 1  # the wait timed out ...
    await wait_for(lambda: delta(before).get("recorded") == 1)  # ... the write did not
    assert len(await events_of(pstore, "blocked")) == CALL_EVENTS
    client.close()


async def test_async_client_on_another_loop(pstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/messages", Answer(body=claude_message()))

    async def elsewhere() -> Any:
        async with an_async(api) as raw:
            client = instrument_anthropic(raw, pstore, "other-loop")
            return await client.messages.create(model="claude-test", max_tokens=10,
                                                 messages=prompt())

    result = await asyncio.to_thread(asyncio.run, elsewhere())
    assert result.to_dict() == claude_message()
    assert len(await events_of(pstore, "other-loop")) == CALL_EVENTS


def test_sync_app_with_the_store_on_a_background_loop(tmp_path: Any, api: FakeAPI) -> None:
    """The documented pattern for sync applications: the store runs on a loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="eventstore-loop", daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    store = EventStore.open(f"sqlite:///{tmp_path / 'sync.db'}", pricing=PRICES)
    try:
        run(store.start())
        api.answer("/v1/chat/completions", Answer(body=chat_completion()))
        client = instrument_openai(oa_sync(api), store)
        with store.conversation("sync-app", user_id="u5"):
            client.chat.completions.create(model="gpt-4o", messages=prompt())
        events = run(store.list_events(conversation_id="sync-app")).events
        assert [e.type for e in events] == ["message_sent"] * 5 + [LLM_CALL, "cost_recorded"]
        assert {e.user_id for e in events} == {"u5"}
        client.close()
    finally:
        run(store.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


# --- conversation attribution ---------------------------------------------------------------------


async def test_conversation_scope_attributes_calls(pstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_completion()))
    sync_client = instrument_openai(oa_sync(api), pstore)
    async with oa_async(api) as raw:
        client = instrument_openai(raw, pstore, metadata={"app": "x"})
        async with pstore.conversation("conv-a", user_id="ua", channel="web"):
            await client.chat.completions.create(model="gpt-4o", messages=prompt())
            with pstore.conversation("conv-b", tenant="t1"):
                # asyncio.to_thread copies the context into the worker thread.
                await asyncio.to_thread(sync_client.chat.completions.create, model="gpt-4o",
                                        messages=prompt())
            assert current_attribution().conversation_id == "conv-a"
        assert current_attribution().conversation_id is None
        pinned = instrument_openai(oa_async(api), pstore, "explicit", "ue")
        with pstore.conversation("conv-c", user_id="uc"):
            await pinned.chat.completions.create(model="gpt-4o", messages=prompt())
        await pinned.close()

    a = await events_of(pstore, "conv-a")
    assert len(a) == CALL_EVENTS and {e.user_id for e in a} == {"ua"}
    assert all(e.metadata["channel"] == "web" and e.metadata["app"] == "x" for e in a)
    b = await events_of(pstore, "conv-b")
    # The inner scope keeps the outer user and adds its metadata.
    assert len(b) == CALL_EVENTS and {e.user_id for e in b} == {"ua"}
    assert all(e.metadata["tenant"] == "t1" and e.metadata["channel"] == "web" for e in b)
    explicit = await events_of(pstore, "explicit")
    assert len(explicit) == CALL_EVENTS and {e.user_id for e in explicit} == {"ue"}
    assert await events_of(pstore, "conv-c") == []
    sync_client.close()


async def test_conversation_scope_is_per_task(pstore: EventStore) -> None:
    seen: dict[str, str | None] = {}

    async def worker(name: str) -> None:
        with pstore.conversation(name):
            await asyncio.sleep(0)  # let the other task run inside its own scope
            seen[name] = current_attribution().conversation_id

    await asyncio.gather(worker("t1"), worker("t2"))
    assert seen == {"t1": "t1", "t2": "t2"}
    # A bare thread starts with an empty context unless it is handed one.
    with pstore.conversation("outer"):
        ctx = contextvars.copy_context()
    got: list[str | None] = []
    thread = threading.Thread(target=lambda: got.append(ctx.run(
        lambda: current_attribution().conversation_id)))
    thread.start()
    thread.join(5)
    assert got == ["outer"]
    with pytest.raises(ValueError):
        pstore.conversation("")


# --- polars ---------------------------------------------------------------------------------------


async def test_to_polars(pstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/messages", Answer(body=claude_message()))
    async with an_async(api) as raw:
        client = instrument_anthropic(raw, pstore, "pl", "up")
        await client.messages.create(model="claude-test", max_tokens=10,
                                     messages=prompt())
    await pstore.track("user_feedback", {"rating": 5}, conversation_id="other")

    frame = await to_polars(pstore, conversation_id="pl")
    assert isinstance(frame, pl.DataFrame)
    assert frame["type"].to_list() == ["message_sent"] * 5 + [LLM_CALL, "cost_recorded"]
    assert frame["seq"].is_sorted()
    assert frame.schema["occurred_at"] == pl.Datetime("us", "UTC")
    assert frame.schema["recorded_at"] == pl.Datetime("us", "UTC")
    assert frame["recorded_at"][0].tzinfo is not None
    assert frame["recorded_at"][0].utcoffset() == UTC.utcoffset(None)
    assert set(frame["user_id"].to_list()) == {"up"}
    assert json.loads(frame["data"][3])["content"] == "Say hello"
    assert json.loads(frame["data"][5])["provider"] == "anthropic"
    cost = frame.filter(pl.col("type") == "cost_recorded").row(0, named=True)
    assert (cost["provider"], cost["model"]) == ("anthropic", CLAUDE)
    assert (cost["input_tokens"], cost["output_tokens"]) == (1250, 30)
    assert (cost["cache_read_tokens"], cost["cache_write_tokens"]) == (1000, 200)
    assert isinstance(frame.schema["total_cost"], pl.Decimal)
    assert cost["total_cost"] == CLAUDE_COST
    assert cost["input_cost"] + cost["output_cost"] == CLAUDE_COST
    assert cost["latency_ms"] > 0
    assert frame.filter(pl.col("type") == "message_sent")["total_cost"].null_count() == 5

    only_costs = await to_polars(pstore, type="cost_recorded")
    assert only_costs.height == 1
    everything = await to_polars(pstore)
    assert everything.height == CALL_EVENTS + 1
    empty = await to_polars(pstore, user_id="nobody")
    assert empty.height == 0 and empty.columns == frame.columns


async def test_to_polars_without_polars(pstore: EventStore,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "polars", None)  # what a missing package looks like
    with pytest.raises(MissingDependencyError, match=r"eventstore\[polars\]"):
        await to_polars(pstore)


def test_importing_eventstore_imports_no_sdk() -> None:
    code = ("import sys, eventstore, eventstore.integrations; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'openai', 'anthropic', 'polars', 'httpx2'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
