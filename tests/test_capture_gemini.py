"""google-genai through a local fake Gemini API: generate_content, its stream and the aio
variants are recorded with the wire request, the response and genai-prices' cost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anyio
import pytest
from genai_prices import calc_price, extract_usage
from google import genai
from google.genai import types

from eventstore import EventStore
from eventstore.calls import LLM_CALL
from eventstore.integrations import instrument_gemini

from .fake_llm_api import Answer, FakeAPI

# google-genai's own aiohttp session class warns on import under newer aiohttp.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

MODEL = "gemini-2.5-flash"
PATH = f"/v1beta/models/{MODEL}:generateContent"
STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent"


def body(text: str = "Bonjour", *, prompt: int = 1200, out: int = 40,
         cached: int = 200, thoughts: int = 25) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": out,
                          "cachedContentTokenCount": cached, "thoughtsTokenCount": thoughts,
                          "totalTokenCount": prompt + out + thoughts},
        "modelVersion": MODEL, "responseId": "resp-1",
    }


def chunks() -> list[tuple[str | None, str]]:
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Bon"}]},
                             "index": 0}],
             "usageMetadata": {"promptTokenCount": 1200, "totalTokenCount": 1200},
             "modelVersion": MODEL, "responseId": "resp-s"}
    last = body("jour")
    last["responseId"] = "resp-s"
    return [(None, json.dumps(first)), (None, json.dumps(last))]


def client(api: FakeAPI) -> genai.Client:
    return genai.Client(api_key="test-key", http_options=types.HttpOptions(
        base_url=api.url, api_version="v1beta"))


@pytest.fixture
async def mstore() -> AsyncIterator[EventStore]:
    async with EventStore.open("memory://") as store:
        yield store


def expected(response: dict[str, Any], at: Any) -> Decimal:
    usage = extract_usage(response, provider_id="google")
    price: Decimal = calc_price(usage.usage, model_ref=MODEL, provider_id="google",
                                genai_request_timestamp=at).total_price
    return price


async def test_generate_content_sync_and_async(mstore: EventStore, api: FakeAPI) -> None:
    api.answer(PATH, Answer(body=body()))
    gemini = instrument_gemini(client(api), mstore, conversation_id="g1", user_id="u1")
    config = types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.3,
                                         max_output_tokens=100)
    with anyio.fail_after(20):
        result = await asyncio.to_thread(gemini.models.generate_content, model=MODEL,
                                         contents="Say bonjour", config=config)
        assert result.text == "Bonjour"
        again = await gemini.aio.models.generate_content(model=MODEL, contents="Again",
                                                         config=config)
        assert again.text == "Bonjour"
    calls = await mstore.calls(conversation_id="g1")
    assert len(calls) == 2
    for call, sent in zip(calls, api.bodies(PATH), strict=True):
        assert {k: v for k, v in call.request.items() if k != "model"} == sent
        assert call.request["model"] == MODEL
        assert call.api == "gemini" and call.provider == "gcp.gemini"
        assert call.response == body()
        assert call.user_id == "u1"
        (cost,) = [e async for e in mstore.read(type="cost_recorded")
                   if e.data["call_id"] == call.id]
        assert Decimal(cost.data["total_cost"]) == expected(body(), call.occurred_at)
    system = [e async for e in mstore.read(type="message_sent")
              if e.data.get("role") == "system"]
    assert len(system) == 1  # the system instruction is stored once, then referenced
    assert calls[0].request["generationConfig"]["temperature"] == 0.3


async def test_generate_content_stream_sync_and_async(mstore: EventStore,
                                                      api: FakeAPI) -> None:
    api.answer(STREAM_PATH, Answer(events=chunks()))
    gemini = instrument_gemini(client(api), mstore, conversation_id="g2")

    def stream_sync() -> str:
        return "".join(c.text or "" for c in gemini.models.generate_content_stream(
            model=MODEL, contents="Say bonjour"))

    with anyio.fail_after(20):
        assert await asyncio.to_thread(stream_sync) == "Bonjour"
        texts = [c.text async for c in await gemini.aio.models.generate_content_stream(
            model=MODEL, contents="Say bonjour")]
        assert "".join(t or "" for t in texts) == "Bonjour"
    events = [e async for e in mstore.read(type=LLM_CALL)]
    assert len(events) == 2
    for event in events:
        data = event.data
        assert data["stream"] is True and data["priced"] is True
        assert data["time_to_first_token_ms"] is not None
        assert data["response"]["candidates"][0]["content"]["parts"] == [{"text": "Bonjour"}]
        assert data["input_tokens"] == 1200 and data["usage"]["output_reasoning_tokens"] == 25


async def test_error_is_recorded_with_its_status(mstore: EventStore, api: FakeAPI) -> None:
    api.answer(PATH, Answer(status=400, body={"error": {
        "code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}))
    gemini = instrument_gemini(client(api), mstore, conversation_id="g3")
    with anyio.fail_after(20), pytest.raises(genai.errors.ClientError):
        await gemini.aio.models.generate_content(model=MODEL, contents="x")
    (event,) = [e async for e in mstore.read(type=LLM_CALL)]
    assert event.data["error"]["status_code"] == 400
    assert event.data["priced"] is False


async def test_uninstrumented_gemini_client_is_not_recorded(mstore: EventStore,
                                                            api: FakeAPI) -> None:
    api.answer(PATH, Answer(body=body()))
    instrument_gemini(client(api), mstore)
    with anyio.fail_after(20):
        await client(api).aio.models.generate_content(model=MODEL, contents="x")
    assert await mstore.count_events() == 0
