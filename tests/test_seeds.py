"""The seed systems' rows, through the public API, on every backend: traces and run
summaries, tags, the prompt registry, feedback on calls, store-wide metadata."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from eventstore import Event, EventStore, EventStoreError, ModelPrice, RecordedEvent
from eventstore.errors import InvalidEventError, PromptConflictError, PromptNotFoundError
from eventstore.pricing import PriceTable
from eventstore.projections import LatencyStats, PromptVersions, RunSummaries
from eventstore.scope import current_attribution

from .conftest import StoreFactory


class FixedPricing:
    def price_for(self, provider: str, model: str) -> ModelPrice:
        return ModelPrice(input=Decimal("0.001"), output=Decimal("0.002"))


async def cost(store: EventStore, tokens: int = 100, latency: float = 10.0,
               **kwargs: Any) -> RecordedEvent:
    return await store.record_cost(provider="openai", model="gpt-x", input_tokens=tokens,
                                   output_tokens=tokens // 2, latency_ms=latency,
                                   pricing=FixedPricing(), **kwargs)


# --- traces and run summaries ----------------------------------------------------------


async def test_calls_in_a_trace_know_their_trace_and_parent_step(store: EventStore) -> None:
    with store.trace("run-1", agent="planner", tags=["nightly"]) as run:
        top = await cost(store)
        with run.step("search") as search:
            inner = await cost(store)
            with search.step("rank"):
                deepest = await cost(store)
        run.set_metadata(phase="answer")
        run.add_tag("v2")
        last = await cost(store)
    outside = await cost(store)
    assert top.metadata["trace_id"] == "run-1" and top.metadata["parent_step_id"] == "run-1"
    assert top.metadata["agent"] == "planner" and top.metadata["tags"] == ["nightly"]
    assert inner.metadata["trace_id"] == "run-1"
    assert inner.metadata["step_name"] == "search"
    assert inner.metadata["parent_step_id"] == search.step_id != "run-1"
    assert deepest.metadata["step_name"] == "rank"
    assert deepest.metadata["parent_step_id"] not in ("run-1", search.step_id)
    assert last.metadata["phase"] == "answer" and last.metadata["tags"] == ["nightly", "v2"]
    assert "trace_id" not in outside.metadata and current_attribution().scopes == ()
    stored = (await store.list_events(type="cost_recorded")).events
    assert [e.metadata.get("trace_id") for e in stored] == ["run-1"] * 4 + [None]


async def test_run_summaries_per_trace(store: EventStore) -> None:
    with store.trace("ok-run"):
        await cost(store, tokens=100, latency=10)
        await cost(store, tokens=300, latency=30.5)
    with store.trace("bad-run"):
        await cost(store, tokens=50, latency=5)
        # a failed call as the integrations record it
        await store.track("llm_error", {"message": "overloaded", "latency_ms": 7.0},
                          metadata=dict(current_attribution().metadata))
    # a call recorded by record_llm_call: an llm_call event, its cost record pointing at it
    call = await store.track("llm_call", {"input_tokens": 20, "output_tokens": 10,
                                          "latency_ms": 4.0, "error": None},
                             metadata={"trace_id": "llm-run"})
    await cost(store, tokens=20, latency=4.0, metadata={"trace_id": "llm-run",
                                                        "unused": call.id})
    runs = await store.rebuild(RunSummaries())
    ok = runs.get("ok-run")
    assert ok is not None and ok.status == "succeeded" and ok.steps == 2
    assert (ok.input_tokens, ok.output_tokens) == (400, 200)
    assert ok.cost == Decimal("0.800") and ok.latency_ms == 40.5
    bad = runs.get("bad-run")
    assert bad is not None and bad.status == "failed" and bad.steps == 2
    assert bad.latency_ms == 12.0
    llm = runs.get("llm-run")
    assert llm is not None and llm.steps == 2 and llm.status == "succeeded"
    assert runs.get("never") is None
    assert [r.trace_id for r in runs.runs()] == ["bad-run", "llm-run", "ok-run"]
    live = RunSummaries()
    sub = await store.project(live)
    try:
        with store.trace("ok-run"):
            await cost(store, tokens=10, latency=1)

        async def until() -> None:
            while (r := live.get("ok-run")) is None or r.steps < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

        await asyncio.wait_for(until(), 10)
    finally:
        await sub.stop()


async def test_a_failed_llm_call_fails_its_run(store: EventStore) -> None:
    await store.track("llm_call", {"input_tokens": 5, "output_tokens": 0, "latency_ms": 3.0,
                                   "error": {"type": "APIError", "message": "boom"}},
                      metadata={"trace_id": "t"})
    await store.track("cost_recorded", {
        "provider": "p", "model": "m", "input_tokens": 5, "output_tokens": 0,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "input_cost": "0.01",
        "output_cost": "0", "total_cost": "0.01", "price_source": "x", "call_id": "abc",
        "latency_ms": 3.0}, metadata={"trace_id": "t"})
    summary = (await store.rebuild(RunSummaries())).get("t")
    assert summary is not None
    assert (summary.status, summary.steps, summary.cost) == ("failed", 1, Decimal("0.01"))
    assert summary.latency_ms == 3.0  # the cost record of a call adds no latency of its own


async def test_a_trace_needs_an_id(store: EventStore) -> None:
    with pytest.raises(ValueError, match="trace_id"):
        store.trace("")
    with pytest.raises(ValueError, match="tags"):
        store.trace("t", tags="not-a-list")  # type: ignore[arg-type]


# --- tags ------------------------------------------------------------------------------


async def test_tags_from_scopes_add_up_and_filter_costs(store: EventStore) -> None:
    with store.conversation("c1", user_id="u1", tags=["beta"]):
        a = await cost(store, tokens=100)
        with store.trace("r", tags=["agent"]):
            b = await cost(store, tokens=200, metadata={"tags": ["manual", "beta"]})
    c = await cost(store, tokens=300, metadata={"tags": ["manual"]})
    assert a.metadata["tags"] == ["beta"] and a.conversation_id == "c1" and a.user_id == "u1"
    assert b.metadata["tags"] == ["beta", "agent", "manual"]
    assert c.metadata["tags"] == ["manual"] and c.conversation_id is None
    assert await store.sum_cost(tag="beta") == Decimal("0.600")  # a 0.2 + b 0.4
    assert await store.sum_cost(tag="manual") == Decimal("1.000")  # b 0.4 + c 0.6
    assert await store.sum_cost(tag="manual", user_id="u1") == Decimal("0.400")
    assert await store.sum_cost(tag="nothing") == Decimal("0")
    assert [e.id for e in await store.get_cost_records(tag="agent")] == [b.id]


# --- store-wide metadata ---------------------------------------------------------------


async def test_store_metadata_goes_on_every_event(open_store: StoreFactory) -> None:
    async with open_store(metadata={"service": "api", "tags": ["prod"]}) as store:
        plain = await store.append(Event(type="x"))
        own = await store.append(Event(type="x", metadata={"service": "worker",
                                                           "tags": ["batch"]}))
        again = await store.append(Event(type="x", id=plain.id,
                                         occurred_at=plain.occurred_at))
        priced = await cost(store)
    assert plain.metadata == {"service": "api", "tags": ["prod"]}
    assert own.metadata == {"service": "worker", "tags": ["prod", "batch"]}
    assert again.seq == plain.seq  # an idempotent retry still matches
    assert priced.metadata["service"] == "api"
    async with open_store() as other:
        stored = [e.metadata async for e in other.read()]
        assert stored[0] == {"service": "api", "tags": ["prod"]}
        assert (await other.append(Event(type="y"))).metadata == {}
    async with open_store() as later:
        later.set_metadata(region="eu", tags=["late"])
        tagged = await later.append(Event(type="z", metadata={"tags": ["own"]}))
        assert tagged.metadata == {"region": "eu", "tags": ["late", "own"]}
        with pytest.raises(EventStoreError, match="tags"):
            later.set_metadata(tags="oops")
    with pytest.raises(EventStoreError, match="metadata"):
        EventStore.open("memory://", metadata=["not", "a", "dict"])
    with pytest.raises(EventStoreError, match="tags"):
        EventStore.open("memory://", metadata={"tags": [1]})


# --- prompts ---------------------------------------------------------------------------


async def test_prompt_registry(store: EventStore) -> None:
    v1 = await store.register_prompt("greet", "v1", user="Hi {name}", system="Be brief")
    assert (v1.name, v1.version, v1.system, v1.user) == ("greet", "v1", "Be brief", "Hi {name}")
    assert (await store.prompt("greet")).version == "v1"  # the only one
    await store.register_prompt("greet", "v2", user="Hello {name}!", metadata={"ab": "B"})
    assert (await store.prompt("greet")).version == "v2"  # latest, as none is active
    await store.activate_prompt("greet", "v1")
    assert (await store.prompt("greet")) == v1
    assert (await store.prompt("greet", "v2")).metadata == {"ab": "B"}
    assert v1.render(name="Ada") == ("Be brief", "Hi Ada")
    # registering the same again changes nothing; other content under a version is refused
    assert await store.register_prompt("greet", "v1", user="Hi {name}", system="Be brief") == v1
    with pytest.raises(PromptConflictError, match="never change"):
        await store.register_prompt("greet", "v1", user="Changed")
    for call in (store.prompt("nope"), store.prompt("greet", "v9"),
                 store.activate_prompt("greet", "v9"), store.activate_prompt("nope", "v1")):
        with pytest.raises(PromptNotFoundError):
            await call
    assert issubclass(PromptNotFoundError, EventStoreError)
    with pytest.raises(InvalidEventError):
        await store.register_prompt("", "v1", user="x")
    with pytest.raises(InvalidEventError):
        await store.register_prompt("p", "v1", user="")
    types = [e.type async for e in store.read()]
    assert types == ["prompt_registered", "prompt_registered", "prompt_activated"]


async def test_calls_under_a_prompt_scope_feed_prompt_versions(store: EventStore) -> None:
    await store.register_prompt("greet", "v1", user="Hi")
    await store.register_prompt("greet", "v2", user="Hello")
    with store.conversation("c1", user_id="u1"):
        with (await store.prompt("greet", "v1")).scope():
            first = await cost(store, tokens=100)
        with (await store.prompt("greet", "v2")).scope():
            await cost(store, tokens=300)
        await cost(store, tokens=10)  # an unprompted side call
    assert first.metadata["prompt_name"] == "greet"
    # rated by call id: v1's call, although v2's came later in the conversation
    await store.feedback(5, call_id=first.id, conversation_id="c1")
    await store.feedback(1, conversation_id="c1")  # no call: the last prompted one (v2)
    versions = await store.rebuild(PromptVersions())
    v1, v2 = versions.compare("greet")
    assert (v1.prompt_version, v1.executions, v1.avg_rating) == ("v1", 1, 5.0)
    assert (v2.prompt_version, v2.executions, v2.avg_rating) == ("v2", 1, 1.0)


def _chat(model: str, text: str = "Hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _reply(model: str) -> dict[str, Any]:
    return {"id": "r", "model": model, "usage": {"prompt_tokens": 12, "completion_tokens": 3},
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello"}}]}


async def test_every_model_call_is_an_execution_and_a_latency_sample(
        open_store: StoreFactory) -> None:
    prices = PriceTable({("openai", "gpt-4o"): ModelPrice.per_million(input="2.5", output="10")})
    async with open_store(pricing=prices) as store:
        await store.register_prompt("greet", "v1", user="Hi")
        with store.conversation("c1", user_id="u1"):
            with (await store.prompt("greet", "v1")).scope():
                priced = await store.record_llm_call(
                    provider="openai", model="gpt-4o", request=_chat("gpt-4o"),
                    response=_reply("gpt-4o"), latency_ms=400.0)
                # No price is known for this one, and the next one failed: neither writes
                # a cost record, and both are still calls of the prompt that took time.
                await store.record_llm_call(
                    provider="openai", model="mystery-1", request=_chat("mystery-1", "Yo"),
                    response=_reply("mystery-1"), latency_ms=100.0)
                await store.record_llm_call(
                    provider="openai", model="gpt-4o", request=_chat("gpt-4o", "Hey"),
                    response=None, latency_ms=50.0,
                    error={"type": "rate_limit", "message": "slow down", "status_code": 429})
            await cost(store, latency=7.0)  # record_cost of its own, unprompted
        await store.feedback(4, call_id=priced.id, conversation_id="c1")
        assert await store.count_events(type="cost_recorded") == 2
        versions = await store.rebuild(PromptVersions())
        latency = await store.rebuild(LatencyStats())
    (v1,) = versions.compare("greet")
    assert (v1.executions, v1.input_tokens, v1.output_tokens) == (3, 24, 6)
    # Only the priced call's cost, counted once: 12 * 2.5 + 3 * 10 per million.
    assert v1.total_cost == Decimal("0.00006")
    assert v1.avg_latency_ms == pytest.approx((400 + 100 + 50) / 3)
    assert (v1.feedback_count, v1.avg_rating) == (1, 4.0)
    assert latency.samples(prompt="greet") == [50.0, 100.0, 400.0]
    assert latency.samples() == [7.0, 50.0, 100.0, 400.0]
    assert latency.models() == ["gpt-4o", "gpt-x", "mystery-1"]


# --- feedback --------------------------------------------------------------------------


async def test_feedback_names_the_call_it_rates(store: EventStore) -> None:
    call = await cost(store, conversation_id="c1", user_id="u1")
    rec = await store.feedback(4, "useful", call_id=call.id, conversation_id="c1",
                               user_id="u1")
    assert rec.type == "user_feedback"
    assert rec.data == {"rating": 4, "comment": "useful", "call_id": call.id}
    assert (rec.conversation_id, rec.user_id) == ("c1", "u1")
    comment_only = await store.feedback(comment="too long")
    assert comment_only.data == {"rating": None, "comment": "too long", "call_id": None}
    for bad in ({"rating": "5"}, {"rating": True}, {"rating": float("nan")}, {},
                {"rating": 1, "call_id": 7}, {"comment": 3}):
        with pytest.raises(InvalidEventError):
            await store.feedback(**bad)
    assert await store.count_events(type="user_feedback") == 2


async def test_a_conversation_scope_rates_its_last_call(store: EventStore) -> None:
    async with store.conversation("chat", user_id="u9") as chat:
        await cost(store)
        second = await cost(store)
        up = await chat.thumbs_up()
        down = await chat.thumbs_down("wrong answer")
        said = await chat.feedback("please cite sources")
    for rec in (up, down, said):
        assert rec.data["call_id"] == second.id
        assert (rec.conversation_id, rec.user_id) == ("chat", "u9")
    assert (up.data["rating"], down.data["rating"], said.data["rating"]) == (1, 0, None)
    assert down.data["comment"] == "wrong answer"
    # a new scope object on the same conversation finds the last call in the log
    later = store.conversation("chat")
    rec = await later.thumbs_up()
    assert rec.data["call_id"] == second.id
    empty = await store.conversation("no-calls").thumbs_down()
    assert empty.data["call_id"] is None


# --- AiCore's filters in to_polars ---------------------------------------------------------


async def test_to_polars_filters_by_provider_tokens_latency_and_identifiers(
    store: EventStore,
) -> None:
    pytest.importorskip("polars")
    from eventstore.integrations.polars import to_polars

    with store.conversation("c1", agent_id="planner", session_id="s1", workspace_id="w1"):
        small = await cost(store, tokens=100, latency=50, metadata={"operation": "chat"})
        big = await cost(store, tokens=2000, latency=900, metadata={"action_id": "a7"})
    other = await store.record_cost(provider="anthropic", model="claude-x", input_tokens=10,
                                    output_tokens=5, latency_ms=20, pricing=FixedPricing(),
                                    metadata={"agent_id": "critic"})
    await store.track("llm_call", {"provider": "openai", "model": "gpt-x",
                                   "input_tokens": 40, "output_tokens": 2,
                                   "latency_ms": 120.0}, metadata={"agent_id": "planner"})
    await store.append(Event(type="note", metadata={"agent_id": "planner"}))

    async def ids(**filters: Any) -> list[str]:
        return list((await to_polars(store, **filters))["id"])

    assert await ids(provider="anthropic") == [other.id]
    assert await ids(type="cost_recorded", agent_id="planner") == [small.id, big.id]
    assert await ids(type="cost_recorded", min_tokens=1000) == [big.id]
    assert await ids(type="cost_recorded", max_latency_ms=50) == [small.id, other.id]
    assert len(await ids(agent_id="planner")) == 4  # the llm_call and the note too
    assert len(await ids(agent_id="planner", min_latency_ms=100)) == 2  # big, llm_call
    assert await ids(action_id="a7") == [big.id]
    frame = await to_polars(store, session_id="s1")
    assert list(frame["workspace_id"]) == ["w1", "w1"]
    assert list(frame["operation"]) == ["chat", None]
    calls = await to_polars(store, type="llm_call")
    assert (calls["provider"][0], calls["input_tokens"][0], calls["latency_ms"][0]) == (
        "openai", 40, 120.0)
    with pytest.raises(TypeError, match="unknown filter"):
        await to_polars(store, colour="red")
    with pytest.raises(EventStoreError):
        await to_polars(store, min_tokens="many")


# --- record_llm_call inside the scopes -----------------------------------------------------


def chat_call(content: str = "hi") -> dict[str, Any]:
    return {
        "provider": "openai", "model": "gpt-4o", "latency_ms": 120.0,
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]},
        "response": {"id": f"r-{content}", "object": "chat.completion", "model": "gpt-4o",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "hello"}}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                               "total_tokens": 15}},
    }


async def test_record_llm_call_in_a_trace_and_a_rated_conversation(store: EventStore) -> None:
    async with store.conversation("c1", user_id="u1", tags=["beta"]) as chat:
        with store.trace("agent-run") as run, run.step("plan"):
            first = await store.record_llm_call(**chat_call("plan it"))
        assert first.metadata["trace_id"] == "agent-run"
        assert first.metadata["step_name"] == "plan" and first.metadata["tags"] == ["beta"]
        assert (first.conversation_id, first.user_id) == ("c1", "u1")
        with store.trace("agent-run"):
            try:
                raise RuntimeError("upstream overloaded")
            except RuntimeError as exc:
                failed = await store.record_llm_call(**{**chat_call("again"),
                                                        "response": None}, error=exc)
        up = await chat.thumbs_down()
    assert up.data["call_id"] == failed.id
    summary = (await store.rebuild(RunSummaries())).get("agent-run")
    assert summary is not None and summary.status == "failed" and summary.steps == 2
    assert summary.input_tokens == 10 and summary.latency_ms == 240.0
    assert summary.cost > 0  # the priced first call


async def test_a_failed_call_keeps_its_redacted_traceback(open_store: StoreFactory) -> None:
    from eventstore import PIIRedactor

    def fails_with_a_secret() -> None:
        raise ValueError("bad key sk-proj-abcdefghijklmnopqrstuvwx1234 for alice@example.org")

    async with open_store(redact=[PIIRedactor()]) as store:
        try:
            fails_with_a_secret()
        except ValueError as exc:
            call = await store.record_llm_call(**{**chat_call(), "response": None}, error=exc)
        stored = (await store.list_events(type="llm_call")).events[0]
    text = stored.data["error"]["traceback"]
    assert stored.id == call.id
    assert "fails_with_a_secret" in text and "ValueError" in text  # the stack is there
    assert "sk-proj-abcdefghijklmnopqrstuvwx1234" not in text
    assert "alice@example.org" not in text
