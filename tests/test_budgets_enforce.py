"""enforce_budgets=True (issue 18): an instrumented client refuses a call before it is
sent when a budget it falls under is exhausted, and the refusal is recorded."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import anyio
import pytest

from eventstore import Budget, BudgetExceededError, EventStoreError
from eventstore.budgets import BUDGET_REFUSED
from eventstore.integrations import instrument_anthropic, instrument_openai

from .conftest import StoreFactory
from .fake_llm_api import Answer, FakeAPI
from .test_integrations import (
    PRICES,
    an_async,
    chat_completion,
    claude_message,
    oa_async,
    oa_sync,
    prompt,
)

DAILY = Budget(limit=Decimal("0.01"), per="user", window="day", name="daily")
TAGGED = Budget(limit=Decimal("0.01"), per="tag", window="total", name="by-tag")


async def test_a_call_over_budget_is_refused_before_it_is_sent_and_recorded(
        open_store: StoreFactory, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_completion()))
    async with open_store(pricing=PRICES, budgets=[DAILY]) as store, oa_async(api) as raw:
        client = instrument_openai(raw, store, "c1", "u1", enforce_budgets=True)
        with anyio.fail_after(30):
            await client.chat.completions.create(model="gpt-4o", messages=prompt())
            assert len(api.requests) == 1  # under budget: sent (and it costs ~0.006)
            await client.chat.completions.create(model="gpt-4o", messages=prompt())
            assert await store.sum_cost(user_id="u1") > DAILY.limit
            with pytest.raises(BudgetExceededError, match="daily"):
                await client.chat.completions.create(model="gpt-4o", messages=prompt())
        assert len(api.requests) == 2  # the third never left
        (refused,) = (await store.list_events(type=BUDGET_REFUSED)).events
        assert (refused.user_id, refused.conversation_id) == ("u1", "c1")
        assert refused.data["provider"] == "openai" and refused.data["model"] == "gpt-4o"
        (why,) = refused.data["budgets"]
        assert (why["budget"], why["scope"]) == ("daily", "u1")
        assert Decimal(why["spent"]) == await store.sum_cost(user_id="u1")
        # another user of the same store is not refused; without enforce_budgets nothing is
        other = instrument_openai(oa_async(api), store, "c2", "u2", enforce_budgets=True)
        await other.chat.completions.create(model="gpt-4o", messages=prompt())
        plain = instrument_openai(oa_async(api), store, "c1", "u1")
        await plain.chat.completions.create(model="gpt-4o", messages=prompt())
        assert len(api.requests) == 4


async def test_sync_clients_and_tag_budgets_are_enforced_too(
        open_store: StoreFactory, api: FakeAPI) -> None:
    api.answer("/v1/chat/completions", Answer(body=chat_completion()))
    api.answer("/v1/messages", Answer(body=claude_message()))
    async with open_store(pricing=PRICES, budgets=[TAGGED]) as store:
        await store.record_cost(provider="test", model="m", input_tokens=1, output_tokens=1,
                                cost=Decimal("0.02"), metadata={"tags": ["beta"]})
        client = instrument_openai(oa_sync(api), store, metadata={"tags": ["beta"]},
                                   enforce_budgets=True)
        with pytest.raises(BudgetExceededError, match="by-tag"):
            await asyncio.to_thread(client.chat.completions.create, model="gpt-4o",
                                    messages=prompt())
        with pytest.raises(EventStoreError, match="event-loop thread"):
            client.chat.completions.create(model="gpt-4o", messages=prompt())
        claude = instrument_anthropic(an_async(api), store, metadata={"tags": ["beta"]},
                                      enforce_budgets=True)
        with pytest.raises(BudgetExceededError):
            await claude.messages.create(model="claude-sonnet-4-5", max_tokens=10,
                                         messages=prompt())
        assert api.requests == []
        assert await store.count_events(type=BUDGET_REFUSED) == 2
        client.close()

