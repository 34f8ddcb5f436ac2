"""Every call path of the real OpenAI and Anthropic SDKs, talking to a local fake API, is
recorded through record_llm_call: the exact request (rebuilt from stored messages), the
response, usage, exact cost, attempts, errors, time to first token; tool loops store
each message once; cancelled and failing streams still record what they reported."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anthropic
import anyio
import openai
import pydantic
import pytest
from genai_prices import calc_price, extract_usage

from eventstore import EventStore, RecordedEvent
from eventstore.calls import LLM_CALL
from eventstore.integrations import instrument_anthropic, instrument_openai, stats

from .fake_llm_api import Answer, FakeAPI, sse

GPT = "gpt-4o-2024-08-06"
CLAUDE = "claude-sonnet-4-5-20250929"


# --- bodies the fake API answers with --------------------------------------------------------


def chat_body(text: str | None = "Hello there!", *, tool_calls: list[dict[str, Any]] | None = None,
              finish: str = "stop", prompt: int = 1200, cached: int = 200) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
        "model": GPT, "system_fingerprint": "fp_1", "service_tier": "default",
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                     "message": message}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": 300,
                  "total_tokens": prompt + 300,
                  "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }


def chat_chunks() -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                "model": GPT, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                           "finish_reason": finish}]}

    return [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
            chunk({"content": "lo"}), chunk({}, "stop"),
            {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
             "model": GPT, "choices": [],
             "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                       "prompt_tokens_details": {"cached_tokens": 200}}}]


def responses_body(output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
        "model": GPT, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "error": None, "incomplete_details": None,
        "output": output if output is not None else [
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "{\"city\": \"Paris\"}",
                          "annotations": []}]}],
        "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40},
                  "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5},
                  "total_tokens": 120},
    }


def claude_body(content: list[dict[str, Any]] | None = None,
                stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
        "content": content if content is not None else [{"type": "text", "text": "Bonjour"}],
        "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": 50, "cache_read_input_tokens": 1000,
                  "cache_creation_input_tokens": 200, "output_tokens": 30,
                  "cache_creation": {"ephemeral_5m_input_tokens": 200,
                                     "ephemeral_1h_input_tokens": 0}},
    }


def claude_events(*, finish: bool = True) -> list[dict[str, Any]]:
    start = claude_body([])
    start["stop_reason"] = None
    start["usage"] = {**start["usage"], "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Bon"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "jour"}},
        {"type": "content_block_stop", "index": 0}]
    if finish:
        events += [{"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                       "stop_sequence": None},
                    "usage": {"output_tokens": 30}},
                   {"type": "message_stop"}]
    return events


PROMPT: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def oa(api: FakeAPI, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=f"{api.url}/v1",
                         **{"max_retries": 0, **options})


def oa_async(api: FakeAPI, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=f"{api.url}/v1",
                              **{"max_retries": 0, **options})


def an(api: FakeAPI, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=api.url,
                               **{"max_retries": 0, **options})


def an_async(api: FakeAPI, **options: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=api.url,
                                    **{"max_retries": 0, **options})


@pytest.fixture
async def mstore() -> AsyncIterator[EventStore]:
    async with EventStore.open("memory://") as store:
        yield store


async def calls_of(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read(type=LLM_CALL)]


def expected_cost(provider: str, flavor: str, body: dict[str, Any], at: Any) -> Decimal:
    usage = extract_usage(body, provider_id=provider, api_flavor=flavor)
    total: Decimal = calc_price(usage.usage, model_ref=usage.model.id,  # type: ignore[union-attr]
                                provider_id=provider, genai_request_timestamp=at).total_price
    return total


async def only_call(store: EventStore, api: FakeAPI, path: str) -> tuple[RecordedEvent, Any]:
    """The one recorded call, whose rebuilt request must be the body the server got."""
    (event,) = await calls_of(store)
    (call,) = await store.calls()
    sent = api.bodies(path)[-1]
    assert call.request == sent
    return event, call


async def cost_of(store: EventStore, call_id: str) -> Decimal:
    (cost,) = [e async for e in store.read(type="cost_recorded")
               if e.data["call_id"] == call_id]
    return Decimal(cost.data["total_cost"])


# --- OpenAI call paths ---------------------------------------------------------------------


TOOLS = [{"type": "function", "function": {
    "name": "weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


async def test_chat_create_records_the_whole_call(mstore: EventStore, api: FakeAPI) -> None:
    body = chat_body()
    api.answer("/v1/chat/completions", Answer(body=body))
    client = instrument_openai(oa(api), mstore, conversation_id="c1", user_id="u1")
    with anyio.fail_after(10):
        result = await asyncio.to_thread(
            client.chat.completions.create, model="gpt-4o", messages=PROMPT,
            temperature=0.2, max_tokens=64, tools=TOOLS, service_tier="auto")
    assert result.to_dict() == body
    event, call = await only_call(mstore, api, "/v1/chat/completions")
    assert call.request["temperature"] == 0.2 and call.request["tools"] == TOOLS
    assert call.response == body
    assert event.data["api"] == "chat" and event.data["model"] == GPT
    assert event.data["attempts"] == 1
    assert event.data["latency_ms"] > 0
    assert await cost_of(mstore, event.id) == expected_cost("openai", "chat", body,
                                                             event.occurred_at)
    every = [e async for e in mstore.read()]
    assert {(e.conversation_id, e.user_id) for e in every} == {("c1", "u1")}
    roles = [(e.data["role"], e.data["content"]) for e in every if e.type == "message_sent"]
    assert roles == [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello there!")]


async def test_async_chat_stream_with_usage_and_ttft(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(events=sse(chat_chunks())))
    client = instrument_openai(oa_async(api), mstore, conversation_id="c1")
    with anyio.fail_after(10):
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=PROMPT, stream=True,
            stream_options={"include_usage": True})
        texts = [c.choices[0].delta.content async for c in stream if c.choices]
    assert texts == ["", "Hel", "lo", None]
    event, call = await only_call(mstore, api, "/v1/chat/completions")
    assert call.response["choices"][0]["message"]["content"] == "Hello"
    assert event.data["stream"] is True
    assert 0 < event.data["time_to_first_token_ms"] <= event.data["latency_ms"]
    assert event.data["priced"] is True
    assert (event.data["input_tokens"], event.data["output_tokens"]) == (1200, 300)


async def test_chat_parse_and_stream_helpers(mstore: EventStore, api: FakeAPI) -> None:
    class City(pydantic.BaseModel):
        city: str

    api.answer("/v1/chat/completions", Answer(body=chat_body('{"city": "Paris"}')))
    client = instrument_openai(oa(api), mstore, conversation_id="c1")
    # The helpers moved out of `beta` in openai 1.9x; the oldest supported SDK has them there.
    helpers = client.chat.completions if hasattr(client.chat.completions, "parse") \
        else client.beta.chat.completions
    with anyio.fail_after(10):
        parsed = await asyncio.to_thread(helpers.parse, model="gpt-4o",
                                         messages=PROMPT, response_format=City)
    assert parsed.choices[0].message.parsed == City(city="Paris")
    _event, call = await only_call(mstore, api, "/v1/chat/completions")
    assert call.request["response_format"]["type"] == "json_schema"

    api.answer("/v1/chat/completions", Answer(events=sse(chat_chunks())))

    def use_stream_helper() -> str:
        with helpers.stream(model="gpt-4o", messages=PROMPT) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion().choices[0].message.content or ""

    with anyio.fail_after(10):
        assert await asyncio.to_thread(use_stream_helper) == "Hello"
    calls = await mstore.calls()
    assert len(calls) == 2
    assert calls[1].request == api.bodies("/v1/chat/completions")[-1]
    assert calls[1].request["stream"] is True
    assert calls[1].event.data["priced"] is True


async def test_raw_streaming_and_with_options_paths(mstore: EventStore, api: FakeAPI,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    body = chat_body()
    api.answer("/v1/chat/completions", Answer(body=body))
    api.answer("/v1/responses", Answer(body=responses_body()))
    client = instrument_openai(oa_async(api), mstore, conversation_id="c1")
    with anyio.fail_after(10):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=PROMPT)
        assert raw.parse().to_dict() == body
        assert raw.headers["x-request-id"]
        async with client.chat.completions.with_streaming_response.create(
                model="gpt-4o", messages=PROMPT) as streamed:
            assert (await streamed.parse()).to_dict() == body
        copied = client.with_options(timeout=30)
        await copied.chat.completions.create(model="gpt-4o", messages=PROMPT)
        await client.responses.with_raw_response.create(model="gpt-4o", input="hi")
    calls = await mstore.calls()
    assert [c.api for c in calls] == ["chat", "chat", "chat", "responses"]
    assert calls[3].response == responses_body()
    for call in calls[:3]:
        assert call.response == body
        assert call.event.data["priced"] is True


async def test_responses_create_stream_and_parse(mstore: EventStore, api: FakeAPI) -> None:
    class City(pydantic.BaseModel):
        city: str

    body = responses_body()
    api.answer("/v1/responses", Answer(body=body))
    client = instrument_openai(oa(api), mstore, conversation_id="c1")
    with anyio.fail_after(10):
        await asyncio.to_thread(client.responses.create, model="gpt-4o", input="Hi",
                                instructions="Be brief.", max_output_tokens=50)
        parsed = await asyncio.to_thread(client.responses.parse, model="gpt-4o",
                                         input="Where?", text_format=City)
    assert parsed.output_parsed == City(city="Paris")
    stream_events = [
        {"type": "response.created", "sequence_number": 0,
         "response": {**body, "status": "in_progress", "output": [], "usage": None}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
         "item": {"type": "message", "id": "msg_1", "status": "in_progress",
                  "role": "assistant", "content": []}},
        {"type": "response.content_part.added", "sequence_number": 1, "item_id": "msg_1",
         "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
         "output_index": 0, "content_index": 0, "delta": "Paris", "logprobs": []},
        {"type": "response.completed", "sequence_number": 2, "response": body}]
    api.answer("/v1/responses", Answer(events=sse(stream_events, named=True, done=False)))

    def stream_it() -> None:
        with client.responses.stream(model="gpt-4o", input="Again") as stream:
            for _ in stream:
                pass

    with anyio.fail_after(10):
        await asyncio.to_thread(stream_it)
    calls = await mstore.calls()
    sent = api.bodies("/v1/responses")
    assert [c.request for c in calls] == sent
    assert calls[0].request["instructions"] == "Be brief."
    assert calls[2].event.data["stream"] is True
    assert calls[2].event.data["time_to_first_token_ms"] is not None
    for call in calls:
        assert await cost_of(mstore, call.id) == expected_cost(
            "openai", "responses", body, call.occurred_at)


async def test_legacy_completions_are_refused_with_a_warning(
        mstore: EventStore, api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    api.answer("/v1/completions", Answer(body={
        "id": "c", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": "x", "index": 0, "finish_reason": "stop", "logprobs": None}]}))
    client = instrument_openai(oa(api), mstore)
    before = stats.snapshot()["refused"]
    with caplog.at_level(logging.WARNING, logger="eventstore.integrations"), \
            anyio.fail_after(10):
        await asyncio.to_thread(client.completions.create, model="gpt-3.5-turbo-instruct",
                                prompt="x")
    assert stats.snapshot()["refused"] == before + 1
    assert await mstore.count_events() == 0
    assert any("/v1/completions" in r.getMessage() for r in caplog.records) or \
        before > 0  # warned once per process


# --- tool loops: every message once, none lost ------------------------------------------------


async def test_chat_tool_loop_stores_each_message_once(mstore: EventStore,
                                                       api: FakeAPI) -> None:
    call_1 = [{"id": "call_1", "type": "function",
               "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]
    call_2 = [{"id": "call_2", "type": "function",
               "function": {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}}]
    api.answer("/v1/chat/completions",
               Answer(body=chat_body(None, tool_calls=call_1, finish="tool_calls")),
               Answer(body=chat_body(None, tool_calls=call_2, finish="tool_calls")),
               Answer(body=chat_body("Sunny in both.")))
    client = instrument_openai(oa_async(api), mstore, conversation_id="loop")
    messages: list[Any] = list(PROMPT)
    with anyio.fail_after(10):
        for turn in range(3):
            result = await client.chat.completions.create(model="gpt-4o", messages=messages,
                                                          tools=TOOLS)
            reply = result.choices[0].message
            if turn < 2:
                messages = [*messages, reply,  # the SDK object, as apps append it
                            {"role": "tool", "tool_call_id": reply.tool_calls[0].id,
                             "content": f"sunny {turn}"}]
    calls = await mstore.calls(conversation_id="loop")
    assert [c.request for c in calls] == api.bodies("/v1/chat/completions")
    stored = [e async for e in mstore.read(type="message_sent")
              if e.data.get("source") != "response"]
    digests = [e.data["hash"] for e in stored]
    assert len(digests) == len(set(digests)) == len(calls[-1].request["messages"]) == 6
    assert [e.data["role"] for e in stored] == ["system", "user", "assistant", "tool",
                                                "assistant", "tool"]
    tool_results = [e for e in stored if e.data["role"] == "tool"]
    assert [e.data["content"] for e in tool_results] == ["sunny 0", "sunny 1"]
    replies = [e async for e in mstore.read(type="message_sent")
               if e.data.get("source") == "response"]
    assert [r.data["tool_calls"] for r in replies[:2]] == [
        [{"id": "call_1", "name": "weather", "arguments": "{\"city\": \"Paris\"}"}],
        [{"id": "call_2", "name": "weather", "arguments": "{\"city\": \"Rome\"}"}]]


async def test_responses_tool_loop(mstore: EventStore, api: FakeAPI) -> None:
    def function_call(n: int) -> dict[str, Any]:
        return {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}",
                "name": "weather", "arguments": json.dumps({"city": f"city {n}"}),
                "status": "completed"}

    api.answer("/v1/responses", Answer(body=responses_body([function_call(1)])),
               Answer(body=responses_body([function_call(2)])), Answer(body=responses_body()))
    client = instrument_openai(oa(api), mstore, conversation_id="loop")
    items: list[Any] = [{"role": "user", "content": "Weather?"}]
    with anyio.fail_after(10):
        for _ in range(3):
            result = await asyncio.to_thread(client.responses.create, model="gpt-4o",
                                             input=items, instructions="Use tools.")
            calls_out = [o for o in result.output if o.type == "function_call"]
            for out in calls_out:
                items = [*items, out.model_dump(exclude_none=True),
                         {"type": "function_call_output", "call_id": out.call_id,
                          "output": f"sunny at {out.call_id}"}]
    calls = await mstore.calls(conversation_id="loop")
    assert [c.request for c in calls] == api.bodies("/v1/responses")
    stored = [e async for e in mstore.read(type="message_sent")
              if e.data.get("source") != "response"]
    kinds = [e.data["role"] for e in stored]
    assert kinds == ["system", "user", "function_call", "function_call_output",
                     "function_call", "function_call_output"]
    assert len({e.data["hash"] for e in stored}) == 6
    outputs = [e.data["content"] for e in stored if e.data["role"] == "function_call_output"]
    assert outputs == ["sunny at call_1", "sunny at call_2"]


async def test_anthropic_tool_loop(mstore: EventStore, api: FakeAPI) -> None:
    def tool_use(n: int) -> dict[str, Any]:
        return {"type": "tool_use", "id": f"toolu_{n}", "name": "weather",
                "input": {"city": f"city {n}"}}

    api.answer("/v1/messages", Answer(body=claude_body([tool_use(1)], stop="tool_use")),
               Answer(body=claude_body([{"type": "text", "text": "Checking."}, tool_use(2)],
                                       stop="tool_use")),
               Answer(body=claude_body()))
    client = instrument_anthropic(an_async(api), mstore, conversation_id="loop", user_id="u")
    messages: list[Any] = [{"role": "user", "content": "Weather?"}]
    tools = [{"name": "weather", "description": "w", "input_schema": {"type": "object"}}]
    with anyio.fail_after(10):
        for _ in range(3):
            result = await client.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                                                  system="Use tools.", messages=messages,
                                                  tools=tools)
            uses = [b for b in result.content if b.type == "tool_use"]
            if uses:
                messages = [*messages,
                            {"role": "assistant", "content": [b.model_dump()
                                                              for b in result.content]},
                            {"role": "user", "content": [
                                {"type": "tool_result", "tool_use_id": u.id,
                                 "content": f"sunny {u.id}"} for u in uses]}]
    calls = await mstore.calls(conversation_id="loop")
    assert [c.request for c in calls] == api.bodies("/v1/messages")
    stored = [e async for e in mstore.read(type="message_sent")
              if e.data.get("source") != "response"]
    assert [e.data["role"] for e in stored] == ["system", "user", "assistant", "user",
                                                "assistant", "user"]
    assert [e.data["content"] for e in stored if e.data["role"] == "user"] == [
        "Weather?", "sunny toolu_1", "sunny toolu_2"]
    replies = [e async for e in mstore.read(type="message_sent")
               if e.data.get("source") == "response"]
    assert replies[1].data["tool_calls"] == [
        {"id": "toolu_2", "name": "weather", "arguments": {"city": "city 2"}}]
    assert all(e.user_id == "u" for e in stored)


# --- Anthropic call paths ----------------------------------------------------------------------


async def test_anthropic_create_stream_and_helpers(mstore: EventStore, api: FakeAPI) -> None:
    body = claude_body()
    api.answer("/v1/messages", Answer(body=body))
    client = instrument_anthropic(an(api), mstore, conversation_id="c1")
    kwargs: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 64,
                              "messages": [{"role": "user", "content": "Hi"}]}
    with anyio.fail_after(10):
        await asyncio.to_thread(client.messages.create, **kwargs)
        raw = await asyncio.to_thread(client.messages.with_raw_response.create, **kwargs)
        assert raw.parse().id == "msg_1"
        await asyncio.to_thread(client.beta.messages.create, **kwargs)
        await asyncio.to_thread(client.with_options(timeout=20).messages.create, **kwargs)
    api.answer("/v1/messages", Answer(events=sse(claude_events(), named=True, done=False)))

    def stream_helper() -> str:
        with client.messages.stream(**kwargs) as stream:
            return "".join(stream.text_stream)

    def stream_true() -> int:
        return sum(1 for _ in client.messages.create(**kwargs, stream=True))

    with anyio.fail_after(10):
        assert await asyncio.to_thread(stream_helper) == "Bonjour"
        # the SDK passes every event on but its keep-alive pings
        assert await asyncio.to_thread(stream_true) == len(claude_events()) - 1
    calls = await mstore.calls()
    assert [c.request for c in calls] == api.bodies("/v1/messages")
    assert len(calls) == 6
    for call in calls:
        assert call.event.data["priced"] is True
        assert await cost_of(mstore, call.id) == expected_cost(
            "anthropic", "default", body, call.occurred_at)
        if call.event.data["stream"]:
            assert call.response["content"] == [{"type": "text", "text": "Bonjour"}]
            assert call.time_to_first_token_ms is not None


async def test_anthropic_async_stream_helper(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/messages", Answer(events=sse(claude_events(), named=True, done=False)))
    client = instrument_anthropic(an_async(api), mstore, conversation_id="c1")
    with anyio.fail_after(10):
        async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                          messages=[{"role": "user", "content": "Hi"}]) as s:
            final = await s.get_final_message()
    assert final.content[0].text == "Bonjour"  # type: ignore[union-attr]
    event, _call = await only_call(mstore, api, "/v1/messages")
    assert event.data["output_tokens"] == 30


async def test_stream_cut_after_message_start_records_input_usage(
        mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/messages", Answer(events=sse(claude_events(finish=False), named=True,
                                                 done=False)))
    client = instrument_anthropic(an_async(api), mstore, conversation_id="c1")
    with anyio.fail_after(10):
        stream = await client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                              messages=[{"role": "user", "content": "Hi"}],
                                              stream=True)
        async for event in stream:
            if event.type == "content_block_delta":
                break
        await stream.close()
    (event,) = await calls_of(mstore)
    assert event.data["incomplete"] is True
    assert event.data["input_tokens"] == 1250  # 50 + 1000 read + 200 written
    assert event.data["priced"] is True
    assert event.data["response"]["content"] == [{"type": "text", "text": "Bon"}]


async def test_cancelled_stream_task_is_recorded(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/messages", Answer(events=sse(claude_events(finish=False), named=True,
                                                 done=False)))
    client = instrument_anthropic(an_async(api), mstore, conversation_id="c1")
    started = asyncio.Event()

    async def consume() -> None:
        stream = await client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                              messages=[{"role": "user", "content": "Hi"}],
                                              stream=True)
        async with stream:
            async for _ in stream:
                started.set()
                await asyncio.Event().wait()  # blocks until cancelled

    with anyio.fail_after(10):
        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while await mstore.count_events(type=LLM_CALL) == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    (event,) = await calls_of(mstore)
    assert event.data["incomplete"] is True
    assert event.data["input_tokens"] == 1250


async def test_error_mid_stream_is_recorded(mstore: EventStore, api: FakeAPI) -> None:
    events = [*sse(claude_events(finish=False), named=True, done=False),
              ("error", json.dumps({"type": "error", "error": {
                  "type": "overloaded_error", "message": "Overloaded"}}))]
    api.answer("/v1/messages", Answer(events=events))
    client = instrument_anthropic(an(api), mstore, conversation_id="c1")

    def run() -> None:
        for _ in client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                        messages=[{"role": "user", "content": "Hi"}],
                                        stream=True):
            pass

    with anyio.fail_after(10), pytest.raises(anthropic.APIStatusError):
        await asyncio.to_thread(run)
    (event,) = await calls_of(mstore)
    assert event.data["error"]["provider_type"] == "overloaded_error"
    assert event.data["input_tokens"] == 1250 and event.data["priced"] is True


# --- errors and retries ------------------------------------------------------------------------


async def test_retries_are_counted_and_errors_carry_status_and_request_id(
        mstore: EventStore, api: FakeAPI) -> None:
    overloaded = Answer(status=529, body={"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}},
        headers={"retry-after-ms": "1"})
    api.answer("/v1/messages", overloaded, overloaded, Answer(body=claude_body()))
    client = instrument_anthropic(an_async(api, max_retries=2), mstore, conversation_id="c1")
    kwargs: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 64,
                              "messages": [{"role": "user", "content": "Hi"}]}
    with anyio.fail_after(20):
        await client.messages.create(**kwargs)
    (ok,) = await calls_of(mstore)
    assert (ok.data["attempts"], ok.data["retries"]) == (3, 2)
    assert "error" not in ok.data

    api.answer("/v1/messages", overloaded)
    with anyio.fail_after(20), pytest.raises(anthropic.APIStatusError):
        await client.messages.create(**kwargs)
    failed = (await calls_of(mstore))[-1]
    error = failed.data["error"]
    assert error["status_code"] == 529
    assert error["provider_type"] == "overloaded_error"
    assert error["request_id"].startswith("req_")
    assert failed.data["attempts"] == 3
    assert failed.data["priced"] is False
    (replayed,) = [c for c in await mstore.calls() if c.id == failed.id]
    assert replayed.request == api.bodies("/v1/messages")[-1]


async def test_openai_error_is_recorded_and_raised(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(status=400, body={"error": {
        "message": "bad model", "type": "invalid_request_error", "code": "model_not_found"}}))
    client = instrument_openai(oa(api), mstore, conversation_id="c1", user_id="u1")
    with anyio.fail_after(10), pytest.raises(openai.BadRequestError):
        await asyncio.to_thread(client.chat.completions.create, model="gpt-x", messages=PROMPT)
    (event,) = await calls_of(mstore)
    assert event.data["error"]["status_code"] == 400
    assert event.data["error"]["code"] == "model_not_found"
    assert event.data["error"]["type"] == "BadRequestError"
    assert (event.conversation_id, event.user_id) == ("c1", "u1")


# --- storage grows linearly --------------------------------------------------------------------


async def test_fifty_turns_store_linearly(tmp_path: Any, api: FakeAPI) -> None:
    async with EventStore.open(f"sqlite:///{tmp_path / 'c.db'}") as store:
        api.answer("/v1/chat/completions", Answer(body=chat_body("x" * 200)))
        client = instrument_openai(oa_async(api), store, conversation_id="long")
        messages: list[Any] = [{"role": "system", "content": "S" * 2000}]
        sizes: list[int] = []
        with anyio.fail_after(60):
            for turn in range(50):
                messages.append({"role": "user", "content": f"question {turn} " + "q" * 200})
                before = await store.head()
                result = await client.chat.completions.create(model="gpt-4o",
                                                              messages=messages)
                messages.append({"role": "assistant",
                                 "content": result.choices[0].message.content})
                added = [e async for e in store.read(from_seq=before + 1)]
                sizes.append(sum(len(json.dumps(e.data)) for e in added))
        calls = await store.calls(conversation_id="long")
        assert [c.request for c in calls] == api.bodies("/v1/chat/completions")
    # Each call stores its new messages, the two digests it adds to the previous call's
    # list, and the response: the 50th about what the 2nd did, never the whole
    # conversation again.
    assert sizes[49] <= sizes[1] * 1.05
    whole = sum(len(json.dumps(m)) for m in messages)
    assert sizes[49] < whole / 3


# --- coexistence with OpenTelemetry's openai-v2 instrumentation ---------------------------------


@pytest.mark.parametrize("otel_first", [True, False], ids=["otel-first", "eventstore-first"])
async def test_coexists_with_opentelemetry_openai_v2(mstore: EventStore, api: FakeAPI,
                                                     otel_first: bool) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    api.answer("/v1/chat/completions", Answer(body=chat_body()))
    client = oa_async(api)
    try:
        if otel_first:
            instrumentor.instrument(tracer_provider=provider)
            instrument_openai(client, mstore, conversation_id="c1")
        else:
            instrument_openai(client, mstore, conversation_id="c1")
            instrumentor.instrument(tracer_provider=provider)
        with anyio.fail_after(10):
            await client.chat.completions.create(model="gpt-4o", messages=PROMPT)
    finally:
        instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    assert spans[0].attributes is not None
    assert spans[0].attributes.get("gen_ai.request.model") == "gpt-4o"
    await only_call(mstore, api, "/v1/chat/completions")


# --- options -------------------------------------------------------------------------------


async def test_record_messages_off_keeps_usage_and_cost_only(mstore: EventStore,
                                                             api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_body("secret reply")))
    client = instrument_openai(oa_async(api), mstore, conversation_id="c1",
                               record_messages=False)
    with anyio.fail_after(10):
        await client.chat.completions.create(model="gpt-4o", messages=PROMPT, temperature=0)
    every = [e async for e in mstore.read()]
    assert [e.type for e in every] == [LLM_CALL, "cost_recorded"]
    text = json.dumps([e.data for e in every])
    assert "secret reply" not in text and "Be brief." not in text
    assert every[0].data["request"]["temperature"] == 0
    assert every[0].data["messages_recorded"] is False


async def test_uninstrumented_clients_pass_through(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_body()))
    instrument_openai(oa_async(api), mstore)
    plain = oa_async(api)
    with anyio.fail_after(10):
        await plain.chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert await mstore.count_events() == 0


async def test_a_closed_store_never_fails_the_call(api: FakeAPI) -> None:
    store = EventStore.open("memory://")
    await store.start()
    await store.close()
    api.answer("/v1/chat/completions", Answer(body=chat_body()))
    client = instrument_openai(oa_async(api), store)
    before = stats.snapshot()["failures"]
    with anyio.fail_after(10):
        result = await client.chat.completions.create(model="gpt-4o",
                                                      messages=copy.deepcopy(PROMPT))
    assert result.id == "chatcmpl-1"
    assert stats.snapshot()["failures"] == before + 1
