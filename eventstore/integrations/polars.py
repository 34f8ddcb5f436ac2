"""The log as a polars DataFrame (`await to_polars(store, ...)`), for analysis in notebooks.

One row per event, in seq order. `data` and `metadata` are JSON strings: events of
different types have different keys (and the same key may hold different types), which a
struct column cannot hold without nulls everywhere or a failed cast;
`pl.col("data").str.json_decode()` turns them into structs for one type at a time. The
fields of `cost_recorded` events are flattened into columns (null on other rows), money
as a polars Decimal with the scale of the longest amount, so no digit is rounded away;
`llm_call` events fill provider, model, tokens and latency too. The identifiers of
agent frameworks (AiCore's agent, action, session and workspace ids, `operation`,
`trace_id`) are columns read from the metadata, and filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ..errors import EventStoreError, MissingDependencyError
from ..events import COST_RECORDED
from ..query import MAX_LIMIT

if TYPE_CHECKING:
    import polars as pl

    from ..events import RecordedEvent
    from ..store import EventStore

__all__ = ["MissingDependencyError", "events_frame", "to_polars"]

_DECIMAL_PRECISION: Final = 38  # the widest Decimal polars stores
_COST_INTS: Final = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
_COST_MONEY: Final = ("input_cost", "output_cost", "total_cost")
_encoder = msgspec.json.Encoder(decimal_format="string")
# metadata keys that are columns of their own (and filters of to_polars)
IDENTIFIERS: Final = ("agent_id", "action_id", "session_id", "workspace_id", "operation",
                      "trace_id")
_CALL: Final = "llm_call"



def _polars() -> Any:
    try:
        import polars
    except ImportError as exc:
        raise MissingDependencyError(
            "to_polars() needs polars, which is optional: pip install 'eventstore[polars]'"
        ) from exc
    return polars


async def to_polars(
    store: EventStore,
    *,
    conversation_id: str | None = None,
    user_id: str | None = None,
    type: str | Iterable[str] | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
    provider: str | None = None,
    model: str | None = None,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    min_latency_ms: float | None = None,
    max_latency_ms: float | None = None,
    **identifiers: str,
) -> pl.DataFrame:
    """Every event matching the filters, walking all pages: those of `list_events`, and
    provider / model, total tokens (input + output) and latency bounds (inclusive; rows
    without tokens or latency fail a bound on them), and `agent_id=`, `action_id=`,
    `session_id=`, `workspace_id=`, `operation=`, `trace_id=` (metadata values)."""
    _polars()  # before reading the whole log, not after
    unknown = set(identifiers) - set(IDENTIFIERS)
    if unknown:
        raise TypeError(f"to_polars() got unknown filter(s) {', '.join(sorted(unknown))}; "
                        f"metadata filters: {', '.join(IDENTIFIERS)}")
    wanted = {"provider": provider, "model": model}
    bounds = ((min_tokens, max_tokens), (min_latency_ms, max_latency_ms))
    for low, high in bounds:
        for value in (low, high):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)):
                raise EventStoreError(f"token and latency bounds must be numbers, not {value!r}")

    def keep(event: RecordedEvent) -> bool:
        fields = _call_fields(event)
        if any(v is not None and fields.get(k) != v for k, v in wanted.items()):
            return False
        if any(event.metadata.get(k) != v for k, v in identifiers.items()):
            return False
        tokens = fields.get("input_tokens"), fields.get("output_tokens")
        total = (sum(t for t in tokens if isinstance(t, int))
                 if any(isinstance(t, int) for t in tokens) else None)
        for value, (low, high) in zip((total, fields.get("latency_ms")), bounds, strict=True):
            if low is None and high is None:
                continue
            if not isinstance(value, int | float):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return True

    events: list[RecordedEvent] = []
    cursor: str | None = None
    while True:
        page = await store.list_events(conversation_id=conversation_id, user_id=user_id,
                                       type=type, after=after, before=before,
                                       limit=MAX_LIMIT, cursor=cursor)
        events.extend(e for e in page.events if keep(e))
        if page.next_cursor is None:
            return events_frame(events)
        cursor = page.next_cursor


def _call_fields(event: RecordedEvent) -> dict[str, Any]:
    """The call fields of a cost record or an llm_call event ({} for other events)."""
    return event.data if event.type in (COST_RECORDED, _CALL) else {}


def _money_dtype(plm: Any, values: list[Decimal | None]) -> Any:
    scale = 0
    digits = 0
    for value in values:
        if value is None:
            continue
        _, value_digits, exponent = value.as_tuple()
        if isinstance(exponent, int):
            scale = max(scale, -exponent)
            digits = max(digits, len(value_digits) + exponent)
    if digits + scale > _DECIMAL_PRECISION:
        raise EventStoreError(
            f"cost amounts need {digits} integer and {scale} fraction digits, more than the "
            f"{_DECIMAL_PRECISION} a polars Decimal holds; read the total_cost strings from "
            "the data column instead"
        )
    return plm.Decimal(_DECIMAL_PRECISION, scale)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _money(value: Any) -> Decimal | None:
    return Decimal(value) if isinstance(value, str) else None


def events_frame(events: Iterable[RecordedEvent]) -> pl.DataFrame:
    """The DataFrame of `events` (see the module docstring for its columns)."""
    plm = _polars()
    columns: dict[str, list[Any]] = {name: [] for name in (
        "seq", "id", "type", "conversation_id", "user_id", "occurred_at", "recorded_at",
        "data", "metadata", "provider", "model", *_COST_INTS, *_COST_MONEY, "latency_ms",
        "price_source", *IDENTIFIERS,
    )}
    for event in events:
        cost = _call_fields(event)
        row = {
            "seq": event.seq, "id": event.id, "type": event.type,
            "conversation_id": event.conversation_id, "user_id": event.user_id,
            "occurred_at": event.occurred_at, "recorded_at": event.recorded_at,
            "data": _encoder.encode(event.data).decode(),
            "metadata": _encoder.encode(event.metadata).decode(),
            "provider": cost.get("provider"), "model": cost.get("model"),
            "latency_ms": cost.get("latency_ms"), "price_source": cost.get("price_source"),
        }
        row.update((name, _int(cost.get(name))) for name in _COST_INTS)
        row.update((name, _money(cost.get(name))) for name in _COST_MONEY)
        row.update((name, _text(event.metadata.get(name))) for name in IDENTIFIERS)
        latency = cost.get("latency_ms")
        row["latency_ms"] = latency if isinstance(latency, int | float) \
            and not isinstance(latency, bool) else None
        for name in ("provider", "model", "price_source"):
            row[name] = _text(row[name])
        for name, values in columns.items():
            values.append(row[name])
    money = _money_dtype(plm, [v for name in _COST_MONEY for v in columns[name]])
    utc = plm.Datetime("us", "UTC")
    schema = {
        "seq": plm.Int64, "id": plm.String, "type": plm.String, "conversation_id": plm.String,
        "user_id": plm.String, "occurred_at": utc, "recorded_at": utc, "data": plm.String,
        "metadata": plm.String, "provider": plm.String, "model": plm.String,
        **dict.fromkeys(_COST_INTS, plm.Int64), **dict.fromkeys(_COST_MONEY, money),
        "latency_ms": plm.Float64, "price_source": plm.String,
        **dict.fromkeys(IDENTIFIERS, plm.String),
    }
    frame: pl.DataFrame = plm.DataFrame(columns, schema=schema)
    return frame
