"""The cost rollup: what each model call contributes to cost questions, and the sums.

Cost questions (`sum_cost`, `metrics`, costs by day, budgets) must not cost O(events in
the log). Every backend keeps, in the same transaction as the events, two derived tables:

- *buckets*: per UTC day of the call's `occurred_at` x user x conversation x provider x
  model x tag, the call counts, token sums by kind, latency sum and the exact cost sum.
  A call with tags counts once in the bucket of tag "" (the untagged total, which every
  question without `tag=` reads, so a call with several tags is never counted twice) and
  once more in the bucket of each of its distinct tags.
- *calls*: one row per call with its occurred_at, for the part of a time window that
  does not cover a whole day (at most two partial days per question).

So a question reads the buckets of the whole days it covers plus the calls of at most
two partial days: O(matching buckets), whatever the size of the log. Both tables are
derived: `replay(events)` rebuilds them from the log, and tests check that they agree.

Which events count, and how (the same rules as `metrics()`, eventstore.calls.metrics):
- an `llm_call` event (record_llm_call, the integrations) is one call: an error when its
  data has a truthy `error`, its `latency_ms`; when `priced` is true its tokens and cost
  come from its `cost_recorded` (linked by `call_id`), otherwise it is *unpriced* (unless
  it failed with no usage) and brings its own token counts;
- a `cost_recorded` event brings its exact `total_cost` (a decimal string) and tokens;
  one made by `record_cost` by hand (no `call_id`) is also the call itself, with its
  `latency_ms`. A cost_recorded whose cost is missing or malformed counts for nothing.
Provider and model are data keys (a missing model counts as ""); token counts are the
data keys `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_write_tokens`;
tags are `metadata["tags"]`, a list of strings. Changing these rules is a schema change:
existing rollups are then rebuilt from the log by a migration.

Use it through a backend that is a `CostTotalsReader`:

    if isinstance(store.backend, CostTotalsReader):
        totals = await store.backend.cost_totals(CostFilters(user_id="u1", after=t0))
        totals.cost, totals.calls, totals.unpriced_calls, totals.avg_latency_ms
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import msgspec

from .clock import to_micros
from .errors import InvalidQueryError
from .events import COST_RECORDED, RecordedEvent
from .pricing.money import ZERO, add_money, cost_or_none, parse_money

CALL_TYPES: Final = frozenset({"cost_recorded", "llm_call"})
TOKEN_KINDS: Final = ("input_tokens", "output_tokens", "cache_read_tokens",
                      "cache_write_tokens")
DAY_MICROS: Final = 86_400_000_000
ANY_TAG: Final = ""  # the bucket tag of "every call, tagged or not"
_MAX_INT = 2**62  # token counts beyond this are garbage: keep SQL integer sums exact


class CallFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What one event contributes to the rollup (an llm_call and the cost_recorded of
    the same call contribute parts of one call)."""

    seq: int
    occurred_at: int  # microseconds since the epoch, UTC
    user_id: str | None
    conversation_id: str | None
    provider: str
    model: str
    tags: tuple[str, ...]
    calls: int  # 1 if this event is the call itself
    error: bool
    unpriced: bool
    cost: Decimal | None  # the cost it brings (None: none)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_us: int | None = None  # latency in integer microseconds, so sums are exact

    @property
    def day(self) -> int:
        return self.occurred_at // DAY_MICROS

    def bucket_tags(self) -> tuple[str, ...]:
        """The tags of the buckets this call adds to: "" and each of its own."""
        return (ANY_TAG, *self.tags)


def _count(value: Any) -> int:
    if type(value) is int and 0 <= value < _MAX_INT:
        return value
    return 0


def _text(value: Any) -> str | None:
    # What every backend can hold in an indexed text column (see codec.validate).
    if isinstance(value, str) and len(value) <= 200 and "\x00" not in value:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return value
    return None


def _tags(metadata: dict[str, Any]) -> tuple[str, ...]:
    raw = metadata.get("tags")
    if not isinstance(raw, list):
        return ()
    return tuple(sorted({t for t in raw if t and _text(t) is not None}))


def _latency_us(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value) and abs(value) < 1e12:
        return round(value * 1000)
    return None


def call_facts(event: RecordedEvent) -> CallFacts | None:
    """What an event contributes to cost questions, or None if nothing."""
    if event.type not in CALL_TYPES:
        return None
    data = event.data
    provider = _text(data.get("provider"))
    raw_model = data.get("model")
    model = "" if raw_model is None else _text(raw_model)
    if provider is None or model is None:
        return None
    tokens = True
    latency: int | None = None
    if event.type == COST_RECORDED:
        cost = cost_or_none(data.get("total_cost"))
        if cost is None:
            return None
        itself = data.get("call_id") is None  # record_cost by hand: the call itself
        calls, error, unpriced = int(itself), False, False
        if itself:
            latency = _latency_us(data.get("latency_ms"))
    else:
        cost = None
        calls, error = 1, bool(data.get("error"))
        latency = _latency_us(data.get("latency_ms"))
        priced = bool(data.get("priced"))
        unpriced = not priced and bool(data.get("usage") or not error)
        tokens = not priced  # a priced call's tokens come with its cost_recorded
    return CallFacts(
        seq=event.seq,
        occurred_at=to_micros(event.occurred_at),
        user_id=event.user_id,
        conversation_id=event.conversation_id,
        provider=provider,
        model=model,
        tags=_tags(event.metadata),
        calls=calls,
        error=error,
        unpriced=unpriced,
        cost=cost,
        input_tokens=_count(data.get("input_tokens")) if tokens else 0,
        output_tokens=_count(data.get("output_tokens")) if tokens else 0,
        cache_read_tokens=_count(data.get("cache_read_tokens")) if tokens else 0,
        cache_write_tokens=_count(data.get("cache_write_tokens")) if tokens else 0,
        latency_us=latency,
    )


class CostTotals(msgspec.Struct, kw_only=True):
    """Sums over the model calls matching a question.

    `cost` sums the priced calls only (`priced_calls` of them); `unpriced_calls` says
    how many were left out. `latency_calls` is how many calls carried a latency (the
    divisor of the average). Percentiles are not sums: metrics() reads those from the
    calls themselves.
    """

    calls: int = 0
    errors: int = 0
    priced_calls: int = 0
    unpriced_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_calls: int = 0
    latency_us: int = 0
    cost: Decimal = ZERO

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_us / 1000 / self.latency_calls if self.latency_calls else None

    def add_call(self, facts: CallFacts) -> None:
        self.calls += facts.calls
        self.errors += facts.error
        self.unpriced_calls += facts.unpriced
        if facts.cost is not None:
            self.priced_calls += 1
            self.cost = add_money(self.cost, facts.cost)
        self.input_tokens += facts.input_tokens
        self.output_tokens += facts.output_tokens
        self.cache_read_tokens += facts.cache_read_tokens
        self.cache_write_tokens += facts.cache_write_tokens
        if facts.latency_us is not None:
            self.latency_calls += 1
            self.latency_us += facts.latency_us

    def add(self, other: CostTotals) -> None:
        for name in _INT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost = add_money(self.cost, other.cost)

    def as_row(self) -> tuple[Any, ...]:
        """The integer columns in `INT_COLUMNS` order, then the cost as decimal text."""
        return (*(getattr(self, name) for name in _INT_FIELDS), str(self.cost))

    @classmethod
    def from_row(cls, row: Iterable[Any]) -> CostTotals:
        *ints, cost = row
        totals = cls(cost=parse_money(str(cost)) if cost is not None else ZERO)
        for name, value in zip(_INT_FIELDS, ints, strict=True):
            setattr(totals, name, int(value or 0))
        return totals


_INT_FIELDS: Final = ("calls", "errors", "priced_calls", "unpriced_calls", *TOKEN_KINDS,
                      "latency_calls", "latency_us")
INT_COLUMNS: Final = _INT_FIELDS
KEY_COLUMNS: Final = ("day", "user_id", "conversation_id", "provider", "model", "tag")

BucketKey = tuple[int, str | None, str | None, str, str, str]


def bucket_keys(facts: CallFacts) -> Iterator[BucketKey]:
    for tag in facts.bucket_tags():
        yield (facts.day, facts.user_id, facts.conversation_id, facts.provider, facts.model,
               tag)


def encode_key(key: BucketKey) -> bytes:
    """A bucket's primary key (NULL user or conversation ids stay distinct from "")."""
    return msgspec.msgpack.encode(key)


def group_buckets(calls: Iterable[CallFacts]) -> dict[BucketKey, CostTotals]:
    """The bucket deltas of some calls."""
    buckets: dict[BucketKey, CostTotals] = {}
    for facts in calls:
        for key in bucket_keys(facts):
            totals = buckets.get(key)
            if totals is None:
                totals = buckets[key] = CostTotals()
            totals.add_call(facts)
    return buckets


class CostFilters(msgspec.Struct, frozen=True, kw_only=True):
    """A cost question's filters (AND); `after` / `before` are inclusive bounds on the
    calls' occurred_at."""

    conversation_id: str | None = None
    user_id: str | None = None
    provider: str | None = None
    model: str | None = None
    tag: str | None = None
    after: datetime | None = None
    before: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("conversation_id", "user_id", "provider", "model", "tag"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidQueryError(f"{name}= must be a string or None, got "
                                        f"{type(value).__name__}")
        if self.tag == ANY_TAG:
            raise InvalidQueryError("tag= must be a non-empty string or None")
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.utcoffset()
                                      is None):
                raise InvalidQueryError(f"{name}= must be a timezone-aware datetime")

    @property
    def bucket_tag(self) -> str:
        return self.tag if self.tag is not None else ANY_TAG

    def matches(self, facts: CallFacts) -> bool:
        """Whether a call answers this question (the reference the tables must equal)."""
        if self.user_id is not None and facts.user_id != self.user_id:
            return False
        if self.conversation_id is not None and facts.conversation_id != self.conversation_id:
            return False
        if self.provider is not None and facts.provider != self.provider:
            return False
        if self.model is not None and facts.model != self.model:
            return False
        if self.tag is not None and self.tag not in facts.tags:
            return False
        low, high = self.bounds()
        return low <= facts.occurred_at <= high

    def bounds(self) -> tuple[int, int]:
        """The inclusive occurred_at range in microseconds (open ends made finite)."""
        low = to_micros(self.after) if self.after is not None else -(2**62)
        high = to_micros(self.before) if self.before is not None else 2**62
        return low, high

    def split(self) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
        """The whole days the window covers, as an inclusive day range (None if none),
        and the inclusive microsecond ranges of the partial days left over."""
        low, high = self.bounds()
        if low > high:
            return None, []
        first = -(-low // DAY_MICROS)  # the first day starting at or after low
        last = (high + 1) // DAY_MICROS - 1  # the last day ending at or before high
        if first > last:
            return None, [(low, high)]
        edges = []
        if low < first * DAY_MICROS:
            edges.append((low, first * DAY_MICROS - 1))
        if high > (last + 1) * DAY_MICROS - 1:
            edges.append(((last + 1) * DAY_MICROS, high))
        return (first, last), edges

    def key_clauses(self) -> list[tuple[str, Any]]:
        """(column, value) equalities on bucket and call rows, tag excluded."""
        return [(name, getattr(self, name))
                for name in ("user_id", "conversation_id", "provider", "model")
                if getattr(self, name) is not None]


def replay(events: Iterable[RecordedEvent], filters: CostFilters) -> CostTotals:
    """The answer computed from the events themselves (the rollup must equal it)."""
    totals = CostTotals()
    for event in events:
        facts = call_facts(event)
        if facts is not None and filters.matches(facts):
            totals.add_call(facts)
    return totals
