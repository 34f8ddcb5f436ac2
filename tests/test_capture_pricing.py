"""record_llm_call prices a call exactly as genai-prices does for the same response body,
price context and date, to the last digit; unknown prices are recorded unpriced with all
their usage; record_cost(cost=...) records a provider-reported cost; metrics()."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import calc_price, extract_usage

from eventstore import EventStore, EventStoreError, UnknownModelError
from eventstore.calls import nearest_rank
from eventstore.errors import InvalidCallError

WHEN = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def chat(model: str, prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0,
         tier: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": reasoning}}}
    if tier is not None:
        body["service_tier"] = tier
    return body


def responses(model: str, inp: int, out: int, *, cached: int = 0, reasoning: int = 0,
              tier: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
        "model": model, "output": [{"type": "message", "role": "assistant", "id": "m",
                                    "content": [{"type": "output_text", "text": "ok"}]}],
        "usage": {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
                  "output_tokens": out,
                  "output_tokens_details": {"reasoning_tokens": reasoning},
                  "total_tokens": inp + out}}
    if tier is not None:
        body["service_tier"] = tier
    return body


def claude(model: str, inp: int, out: int, *, read: int = 0, write_5m: int = 0,
           write_1h: int = 0, searches: int = 0, tier: str | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m,
                           "ephemeral_1h_input_tokens": write_1h}}
    if searches:
        usage["server_tool_use"] = {"web_search_requests": searches}
    if tier is not None:
        usage["service_tier"] = tier
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": usage}


def gemini(model: str, prompt: int, out: int, *, cached: int = 0,
           thoughts: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": out,
                             "totalTokenCount": prompt + out + thoughts}
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return {"modelVersion": model, "responseId": "r1", "usageMetadata": usage,
            "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                            "finishReason": "STOP", "index": 0}]}


CHAT_REQ = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE_REQ = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
GEMINI_REQ = {"model": "m", "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}

# (name, provider, genai-prices flavour, request, response, price context genai-prices
# is given). The first six are the rows of issue 16's table.
CASES: list[tuple[str, str, str, dict[str, Any], dict[str, Any], dict[str, str] | None]] = [
    ("gpt-5 chat flex", "openai", "chat", {**CHAT_REQ, "service_tier": "flex"},
     chat("gpt-5-2025-08-07", 1200, 400, cached=0, tier="flex"), {"service_tier": "flex"}),
    ("gpt-4o priority", "openai", "chat", {**CHAT_REQ, "service_tier": "priority"},
     chat("gpt-4o-2024-08-06", 600, 72, tier="priority"), {"service_tier": "priority"}),
    ("responses flex", "openai", "responses", {"model": "gpt-5", "input": "hi",
                                               "service_tier": "flex"},
     responses("gpt-5", 2000, 250, reasoning=100, tier="flex"), {"service_tier": "flex"}),
    ("claude long context", "anthropic", "default", CLAUDE_REQ,
     claude("claude-sonnet-4-5-20250929", 250_000, 100), None),
    ("anthropic 1h cache write", "anthropic", "default", CLAUDE_REQ,
     claude("claude-sonnet-4-5-20250929", 1000, 100, write_1h=3000), None),
    ("anthropic 3 web searches", "anthropic", "default", CLAUDE_REQ,
     claude("claude-sonnet-4-5-20250929", 1000, 69, searches=3), None),
    ("openai cache read", "openai", "chat", CHAT_REQ,
     chat("gpt-4o", 5000, 200, cached=4096), None),
    ("anthropic 5m cache write", "anthropic", "default", CLAUDE_REQ,
     claude("claude-sonnet-4-5", 100, 50, write_5m=2000), None),
    ("anthropic cache read", "anthropic", "default", CLAUDE_REQ,
     claude("claude-opus-4-6", 100, 50, read=8000), None),
    ("anthropic 5m and 1h writes", "anthropic", "default", CLAUDE_REQ,
     claude("claude-sonnet-4-5", 10, 5, read=100, write_5m=700, write_1h=300), None),
    ("gpt-5 reasoning tokens", "openai", "chat", CHAT_REQ,
     chat("gpt-5", 300, 2400, reasoning=2000), None),
    ("o3 responses reasoning", "openai", "responses", {"model": "o3", "input": "hi"},
     responses("o3", 800, 1500, cached=200, reasoning=1200), None),
    ("gpt-4o batch", "openai", "chat", CHAT_REQ, chat("gpt-4o", 1000, 500),
     {"processing": "batch"}),
    ("claude batch", "anthropic", "default", CLAUDE_REQ,
     claude("claude-sonnet-4-5", 1000, 500, tier="batch"), {"processing": "batch"}),
    ("gpt-5 priority responses", "openai", "responses",
     {"model": "gpt-5", "input": "hi", "service_tier": "priority"},
     responses("gpt-5", 1000, 100, cached=500, tier="priority"), {"service_tier": "priority"}),
    ("gpt-5 flex cached", "openai", "chat", CHAT_REQ,
     chat("gpt-5", 10_000, 100, cached=8000, tier="flex"), {"service_tier": "flex"}),
    ("claude long context with cache", "anthropic", "default", CLAUDE_REQ,
     claude("claude-sonnet-4-5", 150_000, 2000, read=60_000, write_5m=1000), None),
    ("gemini 2.5 pro long context", "google", "default", GEMINI_REQ,
     gemini("gemini-2.5-pro", 300_000, 1000, thoughts=500), None),
    ("gemini flash cached", "google", "default", GEMINI_REQ,
     gemini("gemini-2.5-flash", 20_000, 300, cached=15_000), None),
    ("gpt-4o-mini plain", "openai", "chat", CHAT_REQ, chat("gpt-4o-mini", 123, 45), None),
]


@pytest.fixture
async def mstore() -> AsyncIterator[EventStore]:
    async with EventStore.open("memory://") as store:
        yield store


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_recorded_cost_equals_genai_prices(mstore: EventStore, case: Any) -> None:
    _name, provider, flavor, request, response, context = case
    price_context = {"processing": "batch"} if context == {"processing": "batch"} \
        and provider == "openai" else None
    event = await mstore.record_llm_call(provider=provider, model=request["model"],
                                  request=request, response=response, latency_ms=10.0,
                                  occurred_at=WHEN, conversation_id="c",
                                  price_context=price_context)
    extracted = extract_usage(response, provider_id=provider, api_flavor=flavor)
    expected = calc_price(extracted.usage, model_ref=extracted.model.id,  # type: ignore[union-attr]
                          provider_id=provider, genai_request_timestamp=WHEN,
                          price_context=context)
    costs = [e async for e in mstore.read(type="cost_recorded")]
    assert len(costs) == 1
    data = costs[0].data
    assert data["call_id"] == event.id
    assert data["total_cost"] == format(expected.total_price, "f")
    assert data["input_cost"] == format(expected.input_price, "f")
    assert data["output_cost"] == format(expected.output_price, "f")
    assert Decimal(data["total_cost"]) == expected.total_price
    assert data["input_tokens"] == extracted.usage.input_tokens
    assert data["output_tokens"] == extracted.usage.output_tokens
    assert event.data["priced"] is True
    assert event.data["usage"]["input_tokens"] == extracted.usage.input_tokens
    assert genai_prices.__version__ in data["price_source"]


async def test_issue_rows_differ_from_flat_pricing(mstore: EventStore) -> None:
    """The tier and context really change the price (the old flat reading was wrong)."""
    flex = chat("gpt-5", 1200, 400, tier="flex")
    await mstore.record_llm_call(provider="openai", model="gpt-5", request=CHAT_REQ,
                          response=flex, latency_ms=1, occurred_at=WHEN)
    plain = calc_price(extract_usage(flex, provider_id="openai", api_flavor="chat").usage,
                       model_ref="gpt-5", provider_id="openai", genai_request_timestamp=WHEN)
    (cost,) = [e async for e in mstore.read(type="cost_recorded")]
    assert Decimal(cost.data["total_cost"]) * 2 == plain.total_price
    assert "service_tier=flex" in cost.data["price_source"]


async def test_web_search_fees_are_in_the_total(mstore: EventStore) -> None:
    body = claude("claude-sonnet-4-5", 1000, 69, searches=3)
    await mstore.record_llm_call(provider="anthropic", model="claude-sonnet-4-5",
                          request=CLAUDE_REQ, response=body, latency_ms=1, occurred_at=WHEN)
    (cost,) = [e async for e in mstore.read(type="cost_recorded")]
    assert Decimal(cost.data["other_cost"]) == Decimal("0.03")
    assert Decimal(cost.data["total_cost"]) == (Decimal(cost.data["input_cost"])
                                                + Decimal(cost.data["output_cost"])
                                                + Decimal("0.03"))


async def test_price_on_the_calls_date(mstore: EventStore) -> None:
    body = chat("gpt-4o", 1000, 1000)
    old = datetime(2024, 6, 1, tzinfo=UTC)
    await mstore.record_llm_call(provider="openai", model="gpt-4o", request=CHAT_REQ,
                          response=body, latency_ms=1, occurred_at=old)
    usage = extract_usage(body, provider_id="openai", api_flavor="chat").usage
    (cost,) = [e async for e in mstore.read(type="cost_recorded")]
    assert Decimal(cost.data["total_cost"]) == calc_price(
        usage, model_ref="gpt-4o", provider_id="openai", genai_request_timestamp=old
    ).total_price
    assert cost.occurred_at == old


async def test_unknown_model_is_unpriced_with_all_usage(mstore: EventStore) -> None:
    body = chat("ft:gpt-4o:acme:custom:1", 900, 100, cached=100, reasoning=7)
    event = await mstore.record_llm_call(provider="openai", model="ft:gpt-4o:acme:custom:1",
                                  request=CHAT_REQ, response=body, latency_ms=42.0,
                                  conversation_id="c", user_id="u")
    assert event.data["priced"] is False
    assert "ft:gpt-4o" in event.data["unpriced_reason"]
    assert (event.data["input_tokens"], event.data["output_tokens"],
            event.data["cache_read_tokens"]) == (900, 100, 100)
    assert event.data["usage"]["output_reasoning_tokens"] == 7
    assert event.data["latency_ms"] == 42.0
    assert await mstore.count_events(type="cost_recorded") == 0
    metrics = await mstore.metrics()
    assert (metrics.calls, metrics.unpriced_calls, metrics.total_cost) == (1, 1, Decimal(0))
    assert (metrics.input_tokens, metrics.output_tokens) == (900, 100)
    assert await mstore.sum_cost() == Decimal(0)


async def test_self_hosted_provider_is_read_by_the_shape_of_its_api(mstore: EventStore) -> None:
    event = await mstore.record_llm_call(provider="vllm", model="llama-3-8b",
                                  request=CHAT_REQ, response=chat("llama-3-8b", 50, 5),
                                  latency_ms=3.0)
    assert event.data["priced"] is False
    assert (event.data["input_tokens"], event.data["output_tokens"]) == (50, 5)


async def test_record_cost_stays_strict_and_takes_a_provider_cost(mstore: EventStore) -> None:
    with pytest.raises(UnknownModelError):
        await mstore.record_cost(provider="acme", model="secret", input_tokens=1,
                                 output_tokens=1)
    assert await mstore.count_events() == 0
    rec = await mstore.record_cost(provider="acme", model="secret", input_tokens=10,
                                   output_tokens=2, cost=Decimal("0.0123"),
                                   conversation_id="c")
    assert rec.data["price_source"] == "provider"
    assert rec.data["total_cost"] == "0.0123"
    assert await mstore.sum_cost(conversation_id="c") == Decimal("0.0123")
    with pytest.raises(InvalidCallError):
        await mstore.record_cost(provider="acme", model="secret", input_tokens=1,
                                 output_tokens=1, cost=0.5)  # type: ignore[arg-type]


async def test_bad_calls_are_refused_and_write_nothing(mstore: EventStore) -> None:
    bad: list[dict[str, Any]] = [
        {"provider": "", "model": "m", "request": {}, "response": None},
        {"provider": "openai", "model": "m", "request": "hi", "response": None},
        {"provider": "openai", "model": "m", "request": {}, "response": ["x"]},
        {"provider": "openai", "model": "m", "request": {}, "response": None,
         "error": {"message": "no type"}},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidCallError):
            await mstore.record_llm_call(latency_ms=1.0, **kwargs)
    with pytest.raises(InvalidCallError):
        await mstore.record_llm_call(provider="openai", model="m", request={},
                              response=None, latency_ms=float("nan"))
    assert await mstore.count_events() == 0


async def test_metrics_filters_and_percentiles(mstore: EventStore) -> None:
    latencies = [float(v) for v in range(1, 21)]
    for i, latency in enumerate(latencies):
        await mstore.record_llm_call(provider="openai", model="gpt-4o", request=CHAT_REQ,
            response=chat("gpt-4o", 100, 10), latency_ms=latency,
            conversation_id=f"c{i % 2}", user_id="u",
            metadata={"tags": ["prod"] if i < 10 else ["dev"]},
            occurred_at=WHEN - timedelta(days=i))
    await mstore.record_llm_call(provider="anthropic", model="claude-sonnet-4-5",
                          request=CLAUDE_REQ, response=None, latency_ms=500.0,
                          error={"type": "overloaded_error", "message": "busy",
                                 "status_code": 529}, occurred_at=WHEN)
    every = await mstore.metrics()
    assert (every.calls, every.errors, every.unpriced_calls) == (21, 1, 0)
    openai_only = await mstore.metrics(provider="openai")
    assert openai_only.calls == 20
    assert openai_only.p50_latency_ms == nearest_rank(latencies, 50) == 10.0
    assert openai_only.p95_latency_ms == 19.0
    assert openai_only.avg_latency_ms == sum(latencies) / 20
    one = calc_price(extract_usage(chat("gpt-4o", 100, 10), provider_id="openai",
                                   api_flavor="chat").usage,
                     model_ref="gpt-4o", provider_id="openai",
                     genai_request_timestamp=WHEN).total_price
    assert openai_only.total_cost == one * 20
    week = await mstore.metrics(provider="openai", after=WHEN - timedelta(days=6))
    assert week.calls == 7
    assert (await mstore.metrics(tag="prod")).calls == 10
    assert (await mstore.metrics(conversation_id="c1")).calls == 10
    assert (await mstore.metrics(model="claude-sonnet-4-5")).errors == 1
    assert nearest_rank([], 50) is None


async def test_costs_command_counts_unpriced_calls_beside_the_totals(tmp_path: Any) -> None:
    from .test_cli import json_lines, ok, run_all, table_rows

    url = f"sqlite:///{tmp_path / 'costs.db'}"
    async with EventStore.open(url) as store:
        await store.record_llm_call(provider="openai", model="gpt-4o", request=CHAT_REQ,
                                    response=chat("gpt-4o", 1000, 100), latency_ms=5.0,
                                    user_id="u1", occurred_at=WHEN)
        await store.record_llm_call(provider="openai", model="my-finetune", request=CHAT_REQ,
                                    response=chat("my-finetune", 500, 50), latency_ms=5.0,
                                    user_id="u1", occurred_at=WHEN)
        await store.record_llm_call(provider="vllm", model="llama", request=CHAT_REQ,
                                    response=chat("llama", 10, 1), latency_ms=1.0,
                                    user_id="u2", occurred_at=WHEN - timedelta(days=40))
        total = await store.sum_cost()
    table, doc, recent = (ok(r) for r in run_all(
        ["costs"], ["costs", "--json"], ["costs", "--after", "2026-11-01", "--json"],
        url=url))
    rows = table_rows(table)
    assert rows[0][-1] == "unpriced calls"
    assert rows[-1] == ["total", "1", "1000", "100", f"${total}", "2"]
    assert [r[0] for r in rows[1:-1]] == ["u1", "u2"]
    assert json_lines(doc)[0]["unpriced_calls"] == 2
    assert Decimal(json_lines(doc)[0]["total_cost"]) == total
    # --after bounds the calls' own time: the backdated call is not in it.
    assert json_lines(recent)[0]["unpriced_calls"] == 1


async def test_a_batch_of_calls_is_recorded_like_the_calls_one_by_one() -> None:
    """record_llm_calls: the same events as one record_llm_call each, in one append."""
    def conversation(turns: int) -> list[dict[str, Any]]:
        calls, messages = [], [{"role": "system", "content": "be brief"}]
        for turn in range(turns):
            messages = [*messages, {"role": "user", "content": f"question {turn}"}]
            calls.append({"provider": "openai", "model": "gpt-4o-mini",
                          "request": {"model": "gpt-4o-mini", "messages": messages},
                          "response": chat("gpt-4o-mini", 100 + turn, 20),
                          "latency_ms": 5.0, "occurred_at": WHEN, "conversation_id": "c1",
                          "user_id": "u1"})
            messages = [*messages, {"role": "assistant", "content": "ok"}]
        return calls

    async with EventStore.open("memory://") as one, EventStore.open("memory://") as many:
        singles = [await one.record_llm_call(**call) for call in conversation(3)]
        batch = await many.record_llm_calls(conversation(3))
        assert [e.type for e in batch] == ["llm_call"] * 3
        # each later call of the batch extends the list of the call before it
        for earlier, call, single in zip(batch, batch[1:], singles[1:], strict=False):
            assert call.data["messages"]["messages"]["after"] == earlier.id
            assert call.data["messages"]["messages"]["add"] == \
                single.data["messages"]["messages"]["add"]
        for store in (one, many):
            kinds = [e.type async for e in store.read()]
            # call 1: system, question, reply; call 2: the assistant turn, question,
            # reply; call 3: the question and the reply (that assistant turn is stored)
            assert kinds.count("message_sent") == 3 + 3 + 2
            assert kinds.count("cost_recorded") == 3
        shape = [(e.type, e.data.get("role"), e.data.get("content"), e.data.get("total_cost"))
                 async for e in one.read()]
        assert shape == [(e.type, e.data.get("role"), e.data.get("content"),
                          e.data.get("total_cost")) async for e in many.read()]
        assert await many.sum_cost(user_id="u1") == await one.sum_cost(user_id="u1")
        # a later single call in the conversation references what the batch stored
        later = conversation(4)[-1]
        await many.record_llm_call(**later)
        await one.record_llm_call(**later)
        assert await many.count_events(type="message_sent") == \
            await one.count_events(type="message_sent")


async def test_a_batch_with_a_bad_call_writes_nothing(mstore: EventStore) -> None:
    good = {"provider": "openai", "model": "gpt-4o-mini", "request": CHAT_REQ,
            "response": chat("gpt-4o-mini", 10, 2), "latency_ms": 1.0,
            "conversation_id": "c"}
    with pytest.raises(InvalidCallError):
        await mstore.record_llm_calls([good, {**good, "provider": ""}])
    with pytest.raises(InvalidCallError, match="call 1"):
        await mstore.record_llm_calls([good, {**good, "no_such_argument": 1}])
    with pytest.raises(InvalidCallError):
        await mstore.record_llm_calls(good)  # type: ignore[arg-type]
    assert await mstore.count_events() == 0
    assert await mstore.record_llm_calls([]) == []
    (recorded,) = await mstore.record_llm_calls([good])
    assert recorded.type == "llm_call"
    assert await mstore.count_events(type="cost_recorded") == 1


async def test_a_batch_whose_append_fails_leaves_the_conversation_as_it_was() -> None:
    refuse = {"on": False}

    def hook(event: Any) -> Any:
        if refuse["on"] and event.type == "llm_call":
            raise ValueError("refused")
        return event

    async with EventStore.open("memory://", redact=[hook]) as store:
        call = {"provider": "openai", "model": "gpt-4o-mini", "request": CHAT_REQ,
                "response": chat("gpt-4o-mini", 10, 2), "latency_ms": 1.0,
                "conversation_id": "c"}
        refuse["on"] = True
        with pytest.raises(EventStoreError):
            await store.record_llm_calls([call, call])
        assert await store.count_events() == 0
        refuse["on"] = False
        await store.record_llm_calls([call])
        # the messages the failed batch would have stored are stored now, once
        stored = await store.count_events(type="message_sent")
        assert stored >= 1
        await store.record_llm_call(**call)
        assert await store.count_events(type="message_sent") == stored + 1  # the reply only
