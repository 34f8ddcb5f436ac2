"""LiteLLM's callbacks through EventStoreLogger: sync, async and streaming calls to a
local fake OpenAI-compatible API, and failures, recorded through record_llm_call."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anyio
import pytest

from eventstore import EventStore
from eventstore.calls import LLM_CALL

from .fake_llm_api import Answer, FakeAPI, sse
from .test_capture_sdk import chat_body, chat_chunks, expected_cost

# LiteLLM fetches its own price map from the network unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def mstore() -> AsyncIterator[EventStore]:
    from eventstore.integrations.litellm import EventStoreLogger

    async with EventStore.open("memory://") as store:
        logger = EventStoreLogger(store, metadata={"app": "ll"})
        litellm.callbacks = [logger]
        try:
            yield store
        finally:
            # LiteLLM copies `callbacks` into its own handler lists on first use.
            for name in ("callbacks", "success_callback", "failure_callback",
                         "_async_success_callback", "_async_failure_callback"):
                setattr(litellm, name, [])


def options(api: FakeAPI) -> dict[str, Any]:
    return {"api_base": f"{api.url}/v1", "api_key": "sk-test", "num_retries": 0}


async def calls(store: EventStore, n: int) -> list[Any]:
    async def count() -> int:
        return await store.count_events(type=LLM_CALL)

    with anyio.fail_after(20):
        while await count() < n:  # noqa: ASYNC110 - LiteLLM logs on its own thread
            await asyncio.sleep(0.01)
    return await store.calls()


async def test_sync_completion(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_body()))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with anyio.fail_after(20):
        await asyncio.to_thread(
            litellm.completion, model="openai/gpt-4o", messages=messages, temperature=0.2,
            metadata={"conversation_id": "l1", "user_id": "u1"}, **options(api))
    (call,) = await calls(mstore, 1)
    assert call.request == api.bodies("/v1/chat/completions")[-1]
    assert (call.conversation_id, call.user_id, call.provider) == ("l1", "u1", "openai")
    assert call.event.metadata["app"] == "ll"
    assert call.latency_ms is not None and call.latency_ms > 0
    (cost,) = [e async for e in mstore.read(type="cost_recorded")]
    assert Decimal(cost.data["total_cost"]) == expected_cost("openai", "chat", chat_body(),
                                                             call.occurred_at)


async def test_async_stream_and_scope(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(events=sse(chat_chunks())))
    with anyio.fail_after(20):
        async with mstore.conversation("l2", user_id="u2"):
            stream = await litellm.acompletion(
                model="openai/gpt-4o", messages=[{"role": "user", "content": "Hi"}],
                stream=True, stream_options={"include_usage": True}, **options(api))
            text = "".join([c.choices[0].delta.content or "" async for c in stream
                            if c.choices])
    assert text == "Hello"
    (call,) = await calls(mstore, 1)
    assert (call.conversation_id, call.user_id) == ("l2", "u2")
    assert call.event.data["stream"] is True
    assert call.response is not None
    assert call.response["choices"][0]["message"]["content"] == "Hello"
    assert call.event.data["priced"] is True
    assert call.time_to_first_token_ms is not None


async def test_failure_is_recorded(mstore: EventStore, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(status=400, body={"error": {
        "message": "bad", "type": "invalid_request_error", "code": "bad"}}))
    with anyio.fail_after(20), pytest.raises(litellm.exceptions.BadRequestError):
        await litellm.acompletion(model="openai/gpt-4o",
                                  messages=[{"role": "user", "content": "Hi"}],
                                  metadata={"conversation_id": "l3"}, **options(api))
    (call,) = await calls(mstore, 1)
    assert call.error is not None and call.error["status_code"] == 400
    assert call.conversation_id == "l3"
