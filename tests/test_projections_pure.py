"""The pure projections, without a store: each one is checked against a direct computation
from the raw events (a plain loop and filter per question), written here independently of
the projection, over random streams that mix handled, unrelated and malformed events."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.events import RecordedEvent
from eventstore.projections import (
    ConversationCosts,
    GuardrailViolations,
    LatencyStats,
    MemoryTrims,
    Projection,
    PromptVersions,
    SnapshotError,
    StructProjection,
)

ALL: list[type[StructProjection[Any]]] = [
    ConversationCosts,
    GuardrailViolations,
    MemoryTrims,
    LatencyStats,
    PromptVersions,
]

CONVS = ["c1", "c2", "c3", None]
USERS = ["u1", "u2", None]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5")]
PROMPTS = [None, "support", "sales"]
VERSIONS: list[str | int | None] = [None, "v1", "v2", "v10", 3]
POLICIES = ["pii", "toxicity", "jailbreak"]
STRATEGIES = ["fifo", "summarize"]
# Local dates in -08:00 fall on the UTC day before: a projection bucketing by local date
# would show 2024-04-30, which no UTC day here is.
ZONES = [UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-8))]
START = datetime(2024, 5, 1, tzinfo=UTC)
DAYS = ["2024-04-30", "2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04", "2024-05-05"]

NOT_A_DICT = ["not", "a", "dict"]


@dataclass
class Draft:
    """An event before it gets its seq, with the fields the generator broke on purpose."""

    type: str
    data: Any
    conversation_id: str | None
    user_id: str | None
    metadata: dict[str, Any]
    occurred_at: datetime
    bad: frozenset[str]


@dataclass
class Ev:
    event: RecordedEvent
    bad: frozenset[str]


# --- strategies --------------------------------------------------------------------------

moments = st.builds(
    lambda minutes, tz: (START + timedelta(minutes=minutes)).astimezone(tz),
    st.integers(0, 4 * 24 * 60),
    st.sampled_from(ZONES),
)
money = st.integers(0, 12).flatmap(
    lambda places: st.decimals(
        min_value=0, max_value=100, places=places, allow_nan=False, allow_infinity=False
    )
)
latencies = st.one_of(st.integers(0, 10_000), st.floats(0, 10_000, allow_nan=False))
ratings = st.one_of(st.integers(1, 5), st.sampled_from([0.5, 2.5, 4.5]))


def corrupt(data: dict[str, Any], metadata: dict[str, Any], how: tuple[str, str, Any]) -> Any:
    """Apply one corruption: (label, field, value), value `...` meaning "delete the key"."""
    label, field, value = how
    if label == "data":
        return NOT_A_DICT
    target = metadata if field == "prompt_version" else data
    if value is ...:
        target.pop(field, None)
    else:
        target[field] = value
    return data


COST_CORRUPTIONS = [
    ("model", "model", ...),
    ("model", "model", 7),
    ("provider", "provider", None),
    ("input_tokens", "input_tokens", "12"),
    ("output_tokens", "output_tokens", 1.5),
    ("cache_read_tokens", "cache_read_tokens", ...),
    ("cache_write_tokens", "cache_write_tokens", True),
    ("total_cost", "total_cost", "abc"),
    ("total_cost", "total_cost", "NaN"),
    ("total_cost", "total_cost", "-Infinity"),
    ("total_cost", "total_cost", 0.5),
    ("total_cost", "total_cost", "1e40"),
    ("total_cost", "total_cost", ...),
    ("latency_ms", "latency_ms", "fast"),
    ("latency_ms", "latency_ms", -1),
    ("latency_ms", "latency_ms", float("nan")),
    ("latency_ms", "latency_ms", float("inf")),
    ("prompt_version", "prompt_version", [1]),
    ("data", "", None),
]


def sometimes(corruptions: list[tuple[str, str, Any]]) -> st.SearchStrategy[Any]:
    """A corruption in roughly one event of three."""
    return st.one_of(st.none(), st.none(), st.sampled_from(corruptions))


def prompt_metadata(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(PROMPTS))
    if name is None:
        return {}
    metadata: dict[str, Any] = {"prompt_name": name}
    version = draw(st.sampled_from(VERSIONS))
    if version is not None:
        metadata["prompt_version"] = version
    return metadata


@st.composite
def cost_drafts(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any], frozenset[str]]:
    provider, model = draw(st.sampled_from(MODELS))
    data: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "input_tokens": draw(st.integers(0, 10_000)),
        "output_tokens": draw(st.integers(0, 10_000)),
        "cache_read_tokens": draw(st.integers(0, 1_000)),
        "cache_write_tokens": draw(st.integers(0, 1_000)),
        "input_cost": "0",
        "output_cost": "0",
        "total_cost": str(draw(money)),
        "price_source": "test",
    }
    latency = draw(st.sampled_from(["absent", "none", "value"]))
    if latency == "none":
        data["latency_ms"] = None
    elif latency == "value":
        data["latency_ms"] = draw(latencies)
    metadata = prompt_metadata(draw)
    how = draw(sometimes(COST_CORRUPTIONS))
    if how is None or (how[0] == "prompt_version" and "prompt_name" not in metadata):
        return "cost_recorded", data, metadata, frozenset()
    return "cost_recorded", corrupt(data, metadata, how), metadata, frozenset({how[0]})


@st.composite
def violation_drafts(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any], frozenset[str]]:
    data: dict[str, Any] = {"policy": draw(st.sampled_from(POLICIES)), "reason": "r"}
    severity = draw(st.sampled_from(["absent", None, "low", "high"]))
    if severity != "absent":
        data["severity"] = severity
    how = draw(
        sometimes(
            [
                ("policy", "policy", ...),
                ("policy", "policy", 3),
                ("reason", "reason", None),
                ("severity", "severity", 2),
                ("data", "", None),
            ]
        )
    )
    if how is None:
        return "policy_violation", data, {}, frozenset()
    return "policy_violation", corrupt(data, {}, how), {}, frozenset({how[0]})


@st.composite
def trim_drafts(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any], frozenset[str]]:
    before = draw(st.integers(0, 50))
    data: dict[str, Any] = {
        "strategy": draw(st.sampled_from(STRATEGIES)),
        "messages_before": before,
        "messages_after": draw(st.integers(0, before)),
        "tokens_removed": draw(st.integers(0, 5_000)),
    }
    how = draw(
        sometimes(
            [
                ("messages_after", "messages_after", before + 1),
                ("tokens_removed", "tokens_removed", -1),
                ("strategy", "strategy", ...),
                ("messages_before", "messages_before", "20"),
                ("data", "", None),
            ]
        )
    )
    if how is None:
        return "memory_trimmed", data, {}, frozenset()
    return "memory_trimmed", corrupt(data, {}, how), {}, frozenset({how[0]})


@st.composite
def feedback_drafts(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any], frozenset[str]]:
    data: dict[str, Any] = {"rating": draw(ratings)}
    # Feedback mostly comes without prompt metadata and must be attributed.
    metadata = prompt_metadata(draw) if draw(st.booleans()) else {}
    how = draw(
        sometimes(
            [
                ("rating", "rating", ...),
                ("rating", "rating", "5"),
                ("rating", "rating", float("nan")),
                ("rating", "rating", True),
                ("prompt_version", "prompt_version", [1]),
                ("data", "", None),
            ]
        )
    )
    if how is None or (how[0] == "prompt_version" and "prompt_name" not in metadata):
        return "user_feedback", data, metadata, frozenset()
    return "user_feedback", corrupt(data, metadata, how), metadata, frozenset({how[0]})


unrelated_drafts: st.SearchStrategy[tuple[str, Any, dict[str, Any], frozenset[str]]]
unrelated_drafts = st.sampled_from(
    [
        ("message_sent", {"role": "user", "content": "hi"}, {}, frozenset()),
        ("conversation_created", {}, {}, frozenset()),
        # Unrelated types carry fields of handled ones: they must still be ignored.
        ("tool_called", {"total_cost": "5", "model": "gpt-4o", "rating": 1}, {}, frozenset()),
        ("message_sent", NOT_A_DICT, {"prompt_name": "support"}, frozenset()),
    ]
)


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    kind, data, metadata, bad = draw(
        st.one_of(
            cost_drafts(),
            violation_drafts(),
            trim_drafts(),
            feedback_drafts(),
            unrelated_drafts,
        )
    )
    return Draft(
        type=kind,
        data=data,
        conversation_id=draw(st.sampled_from(CONVS)),
        user_id=draw(st.sampled_from(USERS)),
        metadata=metadata,
        occurred_at=draw(moments),
        bad=bad,
    )


def record(items: list[Draft], first_seq: int = 1) -> list[Ev]:
    return [
        Ev(
            RecordedEvent(
                type=d.type,
                data=d.data,
                conversation_id=d.conversation_id,
                user_id=d.user_id,
                metadata=d.metadata,
                occurred_at=d.occurred_at,
                seq=first_seq + i,
                recorded_at=START + timedelta(seconds=first_seq + i),
            ),
            d.bad,
        )
        for i, d in enumerate(items)
    ]


streams = st.lists(drafts(), max_size=80).map(record)


def fed(cls: type[StructProjection[Any]], stream: list[Ev]) -> StructProjection[Any]:
    p = cls()
    for item in stream:
        p.apply_event(item.event)
    return p


def ev(
    type: str,
    data: Any,
    seq: int,
    conversation_id: str | None = "c1",
    user_id: str | None = "u1",
    metadata: dict[str, Any] | None = None,
    occurred_at: datetime = START,
) -> RecordedEvent:
    return RecordedEvent(
        type=type,
        data=data,
        conversation_id=conversation_id,
        user_id=user_id,
        metadata=metadata or {},
        occurred_at=occurred_at,
        seq=seq,
        recorded_at=START,
    )


def cost_data(total: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": model,
        "input_tokens": 100,
        "output_tokens": 10,
        "cache_read_tokens": 1,
        "cache_write_tokens": 2,
        "input_cost": "0",
        "output_cost": "0",
        "total_cost": total,
        "price_source": "test",
        **extra,
    }


# --- direct computations from raw events -------------------------------------------------


def of_type(stream: list[Ev], kind: str) -> list[Ev]:
    return [item for item in stream if item.event.type == kind]


def utc_date(e: RecordedEvent) -> str:
    return e.occurred_at.astimezone(UTC).date().isoformat()


def fsum_in_order(values: list[float]) -> float:
    # sum() of floats is compensated from Python 3.12: add in order, as a fold does.
    total = 0.0
    for v in values:
        total += v
    return total


def prompt_key(metadata: dict[str, Any]) -> tuple[str, str | None] | None:
    if "prompt_name" not in metadata:
        return None
    version = metadata.get("prompt_version")
    return metadata["prompt_name"], None if version is None else str(version)


COST_READS = {
    "data",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "total_cost",
}


def good_costs(stream: list[Ev]) -> list[RecordedEvent]:
    return [i.event for i in of_type(stream, "cost_recorded") if not i.bad & COST_READS]


def cost_matches(e: RecordedEvent, conv: Any, user: Any, model: Any, prov: Any, day: Any) -> bool:
    return (
        (conv is None or e.conversation_id == conv)
        and (user is None or e.user_id == user)
        and (model is None or e.data["model"] == model)
        and (prov is None or e.data["provider"] == prov)
        and (day is None or utc_date(e) == day)
    )


cost_filters = st.tuples(
    st.sampled_from(CONVS),
    st.sampled_from(USERS),
    st.sampled_from([None, *(m for _, m in MODELS), "unknown"]),
    st.sampled_from([None, "openai", "anthropic"]),
    st.sampled_from([None, *DAYS]),
)


# --- ConversationCosts -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(stream=streams, queries=st.lists(cost_filters, min_size=10, max_size=20))
def test_costs_match_direct_computation(stream: list[Ev], queries: list[tuple[Any, ...]]) -> None:
    costs = fed(ConversationCosts, stream)
    assert isinstance(costs, ConversationCosts)
    good = good_costs(stream)
    assert costs.skipped == len(of_type(stream, "cost_recorded")) - len(good)

    for conv, user, model, prov, day in [(None,) * 5, *queries]:
        chosen = [e for e in good if cost_matches(e, conv, user, model, prov, day)]
        expected = Decimal(0)
        for e in chosen:
            expected += Decimal(e.data["total_cost"])
        got = costs.total(conversation_id=conv, user_id=user, model=model, provider=prov, day=day)
        assert got == expected
        tokens = costs.tokens(conv, user, model, prov, day)
        assert tokens.calls == len(chosen) == costs.calls(conv, user, model, prov, day)
        assert tokens.input == sum(e.data["input_tokens"] for e in chosen)
        assert tokens.output == sum(e.data["output_tokens"] for e in chosen)
        assert tokens.cache_read == sum(e.data["cache_read_tokens"] for e in chosen)
        assert tokens.cache_write == sum(e.data["cache_write_tokens"] for e in chosen)

    dimensions: dict[str, Callable[[RecordedEvent], Any]] = {
        "conversation": lambda e: e.conversation_id,
        "user": lambda e: e.user_id,
        "model": lambda e: e.data["model"],
        "provider": lambda e: e.data["provider"],
        "day": utc_date,
    }
    for dimension, key in dimensions.items():
        expected_by: dict[Any, Decimal] = {}
        for e in good:
            expected_by[key(e)] = expected_by.get(key(e), Decimal(0)) + Decimal(
                e.data["total_cost"]
            )
        assert costs.by(dimension) == expected_by  # type: ignore[arg-type]
        assert None not in expected_by or next(iter(costs.by(dimension))) is None  # type: ignore[arg-type]

    per_conv = costs.by("conversation")
    ranked = sorted(
        ((c, t) for c, t in per_conv.items() if c is not None), key=lambda ct: (-ct[1], ct[0])
    )
    assert costs.top_conversations(2) == ranked[:2]
    assert costs.top_conversations(100) == ranked
    assert costs.top_conversations(0) == []


def test_costs_hand_computed() -> None:
    costs = ConversationCosts()
    costs.apply_event(ev("cost_recorded", cost_data("0.1"), 1))
    costs.apply_event(ev("cost_recorded", cost_data("0.2"), 2, conversation_id="c2"))
    costs.apply_event(ev("cost_recorded", cost_data("0.000000001", model="gpt-4o-mini"), 3))
    assert costs.total() == Decimal("0.300000001")
    assert costs.total(conversation_id="c1") == Decimal("0.100000001")
    assert costs.total(conversation_id="c1", model="gpt-4o") == Decimal("0.1")
    assert costs.total(conversation_id="c2", model="gpt-4o-mini") == Decimal(0)
    assert costs.tokens(conversation_id="c1").input == 200
    assert costs.tokens().cache_write == 6
    assert costs.top_conversations(5) == [("c2", Decimal("0.2")), ("c1", Decimal("0.100000001"))]


def test_costs_sum_exactly_whatever_the_ambient_decimal_context() -> None:
    costs = ConversationCosts()
    with decimal.localcontext(prec=6):
        costs.apply_event(ev("cost_recorded", cost_data("1000000"), 1))
        costs.apply_event(ev("cost_recorded", cost_data("0.0000000000000000000000000001"), 2))
    # 35 significant digits: the default 28-digit context would round this.
    assert costs.total() == Decimal("1000000.0000000000000000000000000001")
    assert str(costs.total()) == "1000000.0000000000000000000000000001"


def test_costs_bucket_days_by_utc_occurred_at() -> None:
    evening_new_york = datetime(2024, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    costs = ConversationCosts()
    costs.apply_event(ev("cost_recorded", cost_data("1"), 1, occurred_at=evening_new_york))
    costs.apply_event(ev("cost_recorded", cost_data("2"), 2, occurred_at=datetime(2024, 5, 1)))
    assert costs.by("day") == {"2024-05-01": Decimal(2), "2024-05-02": Decimal(1)}
    assert costs.total(day=date(2024, 5, 2)) == Decimal(1)
    assert costs.total(day=datetime(2024, 5, 2, 3, tzinfo=timezone(timedelta(hours=5)))) == 2


def test_costs_top_conversations_ties_are_broken_by_id() -> None:
    costs = ConversationCosts()
    for seq, conv in enumerate(["b", "a", "c"], start=1):
        costs.apply_event(ev("cost_recorded", cost_data("1.50"), seq, conversation_id=conv))
    costs.apply_event(ev("cost_recorded", cost_data("1.5"), 4, conversation_id=None))
    assert costs.top_conversations(2) == [("a", Decimal("1.5")), ("b", Decimal("1.5"))]
    assert costs.by("conversation")[None] == Decimal("1.5")


def test_costs_reject_an_unknown_dimension() -> None:
    with pytest.raises(ValueError, match="cannot group costs by 'tenant'"):
        ConversationCosts().by("tenant")  # type: ignore[arg-type]


# --- GuardrailViolations -----------------------------------------------------------------


VIOLATION_READS = {"data", "policy", "reason", "severity"}


@settings(max_examples=100, deadline=None)
@given(stream=streams, n=st.integers(0, 120))
def test_violations_match_direct_computation(stream: list[Ev], n: int) -> None:
    violations = fed(GuardrailViolations, stream)
    assert isinstance(violations, GuardrailViolations)
    handled = of_type(stream, "policy_violation")
    good = [i.event for i in handled if not i.bad & VIOLATION_READS]
    assert violations.skipped == len(handled) - len(good)

    for policy in [None, *POLICIES]:
        for user in USERS:
            for conv in CONVS:
                expected = [
                    e
                    for e in good
                    if (policy is None or e.data["policy"] == policy)
                    and (user is None or e.user_id == user)
                    and (conv is None or e.conversation_id == conv)
                ]
                assert violations.count(policy, user, conv) == len(expected)

    def tally(key: Callable[[RecordedEvent], Any]) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for e in good:
            counts[key(e)] = counts.get(key(e), 0) + 1
        return counts

    assert violations.by_policy() == tally(lambda e: e.data["policy"])
    assert violations.by_user() == tally(lambda e: e.user_id)
    assert violations.by_conversation() == tally(lambda e: e.conversation_id)

    newest_first = good[::-1][: min(n, 100)]
    assert [
        (v.seq, v.policy, v.reason, v.severity, v.user_id, v.conversation_id, v.occurred_at)
        for v in violations.recent(n)
    ] == [
        (
            e.seq,
            e.data["policy"],
            e.data["reason"],
            e.data.get("severity"),
            e.user_id,
            e.conversation_id,
            e.occurred_at,
        )
        for e in newest_first
    ]


def test_violations_keep_only_the_latest_hundred_in_full() -> None:
    violations = GuardrailViolations()
    for seq in range(1, 251):
        data = {"policy": "pii", "reason": f"r{seq}"}
        violations.apply_event(ev("policy_violation", data, seq))
    assert violations.count(policy="pii") == 250
    assert len(violations.state()["recent"]) == 100
    assert [v.seq for v in violations.recent(3)] == [250, 249, 248]
    assert [v.seq for v in violations.recent(1000)] == list(range(250, 150, -1))


# --- MemoryTrims ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(stream=streams)
def test_trims_match_direct_computation(stream: list[Ev]) -> None:
    trims = fed(MemoryTrims, stream)
    assert isinstance(trims, MemoryTrims)
    handled = of_type(stream, "memory_trimmed")
    good = [i.event for i in handled if not i.bad]
    assert trims.skipped == len(handled) - len(good)
    for conv in CONVS:
        chosen = [e for e in good if conv is None or e.conversation_id == conv]
        assert trims.count(conv) == len(chosen)
        assert trims.tokens_removed(conv) == sum(e.data["tokens_removed"] for e in chosen)
        assert trims.messages_removed(conv) == sum(
            e.data["messages_before"] - e.data["messages_after"] for e in chosen
        )
    by_strategy: dict[str, int] = {}
    for e in good:
        by_strategy[e.data["strategy"]] = by_strategy.get(e.data["strategy"], 0) + 1
    assert trims.by_strategy() == by_strategy


def test_trims_hand_computed() -> None:
    trims = MemoryTrims()
    trim = {"strategy": "fifo", "messages_before": 30, "messages_after": 12, "tokens_removed": 900}
    trims.apply_event(ev("memory_trimmed", trim, 1))
    trims.apply_event(ev("memory_trimmed", {**trim, "messages_after": 29}, 2, conversation_id="x"))
    trims.apply_event(ev("memory_trimmed", {**trim, "messages_after": 31}, 3))  # adds: bad
    assert (trims.count(), trims.count("c1"), trims.count("x"), trims.count("nope")) == (2, 1, 1, 0)
    assert trims.messages_removed() == 19
    assert trims.tokens_removed("c1") == 900
    assert trims.skipped == 1


# --- LatencyStats -----------------------------------------------------------------------


def nearest_rank_by_definition(values: list[float], p: int) -> float:
    """The smallest sample with at least p% of the samples at or below it."""
    ordered = sorted(values)
    n = len(ordered)
    return next(v for k, v in enumerate(ordered, start=1) if 100 * k >= p * n)


@settings(max_examples=100, deadline=None)
@given(stream=streams)
def test_latency_matches_direct_computation(stream: list[Ev]) -> None:
    stats = fed(LatencyStats, stream)
    assert isinstance(stats, LatencyStats)
    samples: list[tuple[str, tuple[str, str | None] | None, float]] = []
    skipped = 0
    for item in of_type(stream, "cost_recorded"):
        e = item.event
        if "data" in item.bad:
            skipped += 1
        elif e.data.get("latency_ms") is None:
            continue
        elif item.bad & {"model", "latency_ms", "prompt_version"}:
            skipped += 1
        else:
            samples.append((e.data["model"], prompt_key(e.metadata), e.data["latency_ms"]))
    assert stats.skipped == skipped

    for model in [None, *(m for _, m in MODELS)]:
        for prompt in PROMPTS:
            for version in [None, "v1", "v2", "v10", "3"]:
                chosen = [
                    float(latency)
                    for m, key, latency in samples
                    if (model is None or m == model)
                    and (prompt is None or (key is not None and key[0] == prompt))
                    and (version is None or (key is not None and key[1] == version))
                ]
                got = stats.percentiles(model=model, prompt=prompt, version=version)
                assert got["count"] == len(chosen)
                for p in (50, 95, 99):
                    expected = nearest_rank_by_definition(chosen, p) if chosen else None
                    assert got[f"p{p}"] == expected


def latency_event(seq: int, latency: float, model: str = "gpt-4o") -> RecordedEvent:
    return ev("cost_recorded", cost_data("0", model=model, latency_ms=latency), seq)


def test_latency_percentiles_of_one_to_a_hundred() -> None:
    stats = LatencyStats()
    # Shuffled arrival: the answer must not depend on order.
    for seq, value in enumerate([*range(100, 50, -1), *range(1, 51)], start=1):
        stats.apply_event(latency_event(seq, value))
    assert stats.percentiles() == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "count": 100}
    assert stats.percentiles(model="other") == {"p50": None, "p95": None, "p99": None, "count": 0}


def test_latency_percentiles_of_few_samples() -> None:
    stats = LatencyStats()
    for seq, value in enumerate([30.0, 10.0, 20.0], start=1):
        stats.apply_event(latency_event(seq, value, model="m"))
    stats.apply_event(latency_event(4, 7.5, model="n"))
    # ranks: ceil(0.50*3) = 2, ceil(0.95*3) = 3, ceil(0.99*3) = 3
    assert stats.percentiles(model="m") == {"p50": 20.0, "p95": 30.0, "p99": 30.0, "count": 3}
    assert stats.percentiles(model="n") == {"p50": 7.5, "p95": 7.5, "p99": 7.5, "count": 1}
    assert stats.models() == ["m", "n"]


# --- PromptVersions ---------------------------------------------------------------------


@dataclass
class Expected:
    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_cost: Decimal = Decimal(0)
    latencies: list[float] | None = None
    ratings: list[float] | None = None


PROMPT_COST_READS = {
    "data",
    "input_tokens",
    "output_tokens",
    "total_cost",
    "latency_ms",
    "prompt_version",
}


@settings(max_examples=100, deadline=None)
@given(stream=streams)
def test_prompt_versions_match_direct_computation(stream: list[Ev]) -> None:
    prompts = fed(PromptVersions, stream)
    assert isinstance(prompts, PromptVersions)
    expected: dict[tuple[str, str | None], Expected] = {}
    last_prompt: dict[str, tuple[str, str | None]] = {}
    skipped = unattributed = 0
    for item in stream:
        e = item.event
        if e.type == "cost_recorded":
            key = prompt_key(e.metadata)
            if key is None:
                continue
            if item.bad & PROMPT_COST_READS:
                skipped += 1
                continue
            row = expected.setdefault(key, Expected(latencies=[], ratings=[]))
            row.executions += 1
            row.input_tokens += e.data["input_tokens"]
            row.output_tokens += e.data["output_tokens"]
            row.total_cost += Decimal(e.data["total_cost"])
            if e.data.get("latency_ms") is not None:
                assert row.latencies is not None
                row.latencies.append(float(e.data["latency_ms"]))
            if e.conversation_id is not None:
                last_prompt[e.conversation_id] = key
        elif e.type == "user_feedback":
            if item.bad:
                skipped += 1
                continue
            key = prompt_key(e.metadata)
            if key is None and e.conversation_id is not None:
                key = last_prompt.get(e.conversation_id)
            if key is None:
                unattributed += 1
                continue
            row = expected.setdefault(key, Expected(latencies=[], ratings=[]))
            assert row.ratings is not None
            row.ratings.append(float(e.data["rating"]))
    assert prompts.skipped == skipped
    assert prompts.unattributed_feedback == unattributed

    for name in ["support", "sales", "never-used"]:
        rows = prompts.compare(name)
        assert {(r.prompt_name, r.prompt_version) for r in rows} == {
            key for key in expected if key[0] == name
        }
        for r in rows:
            want = expected[(name, r.prompt_version)]
            assert want.latencies is not None and want.ratings is not None
            assert prompts.stats(name, r.prompt_version) == r
            n = want.executions
            assert r.executions == n
            assert (r.input_tokens, r.output_tokens) == (want.input_tokens, want.output_tokens)
            assert r.avg_input_tokens == (want.input_tokens / n if n else None)
            assert r.avg_output_tokens == (want.output_tokens / n if n else None)
            assert r.total_cost == want.total_cost
            with decimal.localcontext(prec=28):
                assert r.avg_cost == (want.total_cost / n if n else None)
            lat = want.latencies
            assert r.avg_latency_ms == (fsum_in_order(lat) / len(lat) if lat else None)
            assert r.feedback_count == len(want.ratings)
            rat = want.ratings
            assert r.avg_rating == (fsum_in_order(rat) / len(rat) if rat else None)
    assert prompts.stats("never-used", "v1") is None


def test_prompt_versions_hand_computed() -> None:
    prompts = PromptVersions()
    v1 = {"prompt_name": "support", "prompt_version": "v1"}
    v2 = {"prompt_name": "support", "prompt_version": "v2"}
    v10 = {"prompt_name": "support", "prompt_version": "v10"}
    events = [
        ev("cost_recorded", cost_data("0.010", latency_ms=100), 1, "c1", metadata=v1),
        ev("cost_recorded", cost_data("0.020", latency_ms=300), 2, "c1", metadata=v1),
        ev("cost_recorded", cost_data("0.005"), 3, "c2", metadata=v2),
        ev("cost_recorded", cost_data("0.001"), 4, "c2"),  # no prompt: not about one
        ev("user_feedback", {"rating": 5}, 5, "c1"),  # -> v1, latest prompted call in c1
        ev("user_feedback", {"rating": 2}, 6, "c2"),  # -> v2, the unprompted call is ignored
        ev("user_feedback", {"rating": 4, "comment": "ok"}, 7, "c2", metadata=v1),  # explicit
        ev("user_feedback", {"rating": 1}, 8, "c3"),  # nothing to attribute it to
        ev("user_feedback", {"rating": 3}, 9, "c1", metadata=v10),  # rated, never executed
    ]
    for e in events:
        prompts.apply_event(e)
    rows = prompts.compare("support")
    assert [r.prompt_version for r in rows] == ["v1", "v2", "v10"]
    first = rows[0]
    assert (first.executions, first.total_cost, first.avg_cost) == (
        2,
        Decimal("0.030"),
        Decimal("0.015"),
    )
    assert (first.avg_input_tokens, first.avg_latency_ms) == (100.0, 200.0)
    assert (first.feedback_count, first.avg_rating) == (2, 4.5)
    assert (rows[1].avg_latency_ms, rows[1].avg_rating) == (None, 2.0)
    assert (rows[2].executions, rows[2].avg_cost, rows[2].avg_rating) == (0, None, 3.0)
    assert prompts.unattributed_feedback == 1
    assert prompts.prompts() == ["support"]


# --- the contract, for every projection -------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
@settings(max_examples=40, deadline=None)
@given(first=st.lists(drafts(), max_size=50), second=st.lists(drafts(), max_size=50))
def test_snapshot_restore_continues_like_an_uninterrupted_fold(
    cls: type[StructProjection[Any]], first: list[Draft], second: list[Draft]
) -> None:
    head = record(first)
    tail = record(second, first_seq=len(head) + 1)
    live = fed(cls, head)

    restored = cls()
    restored.restore(live.snapshot())
    assert restored == live
    assert restored.state() == live.state()
    assert restored.position == live.position == len(head)
    assert restored.snapshot() == live.snapshot()

    for item in tail:
        live.apply_event(item.event)
        restored.apply_event(item.event)
    assert restored == live == fed(cls, head + tail)


@pytest.mark.parametrize("cls", ALL)
@settings(max_examples=40, deadline=None)
@given(stream=streams, redelivered=st.lists(st.integers(0, 200)))
def test_apply_event_ignores_what_it_has_seen(
    cls: type[StructProjection[Any]], stream: list[Ev], redelivered: list[int]
) -> None:
    once = fed(cls, stream)
    twice = cls()
    for item in stream:
        twice.apply_event(item.event)
        twice.apply_event(item.event)  # at-least-once delivery
    for i in redelivered:
        if stream:
            twice.apply_event(stream[i % len(stream)].event)  # a late replay
    assert twice == once
    assert twice.position == once.position == len(stream)


@pytest.mark.parametrize("cls", ALL)
@settings(max_examples=20, deadline=None)
@given(stream=streams)
def test_reset_empties(cls: type[StructProjection[Any]], stream: list[Ev]) -> None:
    p = fed(cls, stream)
    p.reset()
    assert p.position == 0
    assert p.state() == cls().state()
    assert p == cls()
    for item in stream:
        p.apply_event(item.event)
    assert p == fed(cls, stream)


@settings(max_examples=40, deadline=None)
@given(stream=streams)
def test_projections_fed_together_equal_projections_fed_alone(stream: list[Ev]) -> None:
    together = [cls() for cls in ALL]
    for item in stream:
        for p in together:
            p.apply_event(item.event)
    assert together == [fed(cls, stream) for cls in ALL]


@pytest.mark.parametrize("cls", ALL)
def test_apply_ignores_types_it_does_not_handle(cls: type[StructProjection[Any]]) -> None:
    p = cls()
    p.apply(ev("message_sent", {"total_cost": "1", "model": "m", "policy": "x"}, 1))
    assert p == cls()


def plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str | None) and plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | Decimal | datetime)


@pytest.mark.parametrize("cls", ALL)
@settings(max_examples=10, deadline=None)
@given(stream=streams)
def test_state_is_plain_data(cls: type[StructProjection[Any]], stream: list[Ev]) -> None:
    state = fed(cls, stream).state()
    assert plain(state)
    assert state["skipped"] == fed(cls, stream).skipped


@pytest.mark.parametrize("cls", ALL)
def test_restore_refuses_foreign_or_corrupt_snapshots(cls: type[StructProjection[Any]]) -> None:
    other = next(c for c in ALL if c is not cls)
    with pytest.raises(SnapshotError, match="rebuild"):
        cls().restore(other().snapshot())
    with pytest.raises(SnapshotError, match="rebuild"):
        cls().restore(b"\x00garbage")

    class Bumped(cls):  # type: ignore[valid-type, misc]
        version = cls.version + 1

    with pytest.raises(SnapshotError, match=f"version {cls.version}"):
        Bumped().restore(cls().snapshot())


def test_snapshot_round_trips_decimals_and_datetimes_exactly() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    costs = ConversationCosts()
    costs.apply_event(ev("cost_recorded", cost_data("0.000000000000000000000000000000001"), 1))
    violations = GuardrailViolations()
    violations.apply_event(
        ev("policy_violation", {"policy": "pii", "reason": "x"}, 1, occurred_at=moment)
    )
    for p in (costs, violations):
        q = type(p)()
        q.restore(p.snapshot())
        assert q == p
    restored = GuardrailViolations()
    restored.restore(violations.snapshot())
    assert restored.recent(1)[0].occurred_at == moment
    restored_costs = ConversationCosts()
    restored_costs.restore(costs.snapshot())
    assert str(restored_costs.total()) == "1E-33"


def test_projection_is_the_abstract_contract() -> None:
    with pytest.raises(TypeError):
        Projection()  # type: ignore[abstract]
    names = {cls.name for cls in ALL}
    assert len(names) == len(ALL)
    assert all(cls.version >= 1 and cls.types for cls in ALL)
