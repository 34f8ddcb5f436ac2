"""The log as a polars DataFrame (`await to_polars(store, ...)`), for analysis in notebooks.

One row per event, in seq order. `data` and `metadata` are JSON strings: events of
different types have different keys (and the same key may hold different types), which a
struct column cannot hold without nulls everywhere or a failed cast;
`pl.col("data").str.json_decode()` turns them into structs for one type at a time. The
fields of `cost_recorded` events are flattened into columns (null on other rows), money
as a polars Decimal with the scale of the longest amount, so no digit is rounded away.
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
) -> pl.DataFrame:
    """Every event matching the filters (those of `list_events`), walking all pages."""
    _polars()  # before reading the whole log, not after
    events: list[RecordedEvent] = []
    cursor: str | None = None
    while True:
        page = await store.list_events(conversation_id=conversation_id, user_id=user_id,
                                       type=type, after=after, before=before,
                                       limit=MAX_LIMIT, cursor=cursor)
        events.extend(page.events)
        if page.next_cursor is None:
            return events_frame(events)
        cursor = page.next_cursor


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


def _money(value: Any) -> Decimal | None:
    return Decimal(value) if isinstance(value, str) else None


def events_frame(events: Iterable[RecordedEvent]) -> pl.DataFrame:
    """The DataFrame of `events` (see the module docstring for its columns)."""
    plm = _polars()
    columns: dict[str, list[Any]] = {name: [] for name in (
        "seq", "id", "type", "conversation_id", "user_id", "occurred_at", "recorded_at",
        "data", "metadata", "provider", "model", *_COST_INTS, *_COST_MONEY, "latency_ms",
        "price_source",
    )}
    for event in events:
        cost = event.data if event.type == COST_RECORDED else {}
        row = {
            "seq": event.seq, "id": event.id, "type": event.type,
            "conversation_id": event.conversation_id, "user_id": event.user_id,
            "occurred_at": event.occurred_at, "recorded_at": event.recorded_at,
            "data": _encoder.encode(event.data).decode(),
            "metadata": _encoder.encode(event.metadata).decode(),
            "provider": cost.get("provider"), "model": cost.get("model"),
            "latency_ms": cost.get("latency_ms"), "price_source": cost.get("price_source"),
        }
        row.update((name, cost.get(name)) for name in _COST_INTS)
        row.update((name, _money(cost.get(name))) for name in _COST_MONEY)
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
    }
    frame: pl.DataFrame = plm.DataFrame(columns, schema=schema)
    return frame
