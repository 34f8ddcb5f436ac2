"""Validated read filters, shared by list_events, count_events, sum_cost and subscriptions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from .clock import to_micros
from .errors import InvalidQueryError
from .events import Event

MAX_LIMIT = 10_000


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """Filters that combine with AND; `after` / `before` are inclusive bounds on recorded_at."""

    conversation_id: str | None = None
    user_id: str | None = None
    types: frozenset[str] | None = None
    after: datetime | None = None
    before: datetime | None = None

    def matches(self, event: Event, recorded_at: datetime | None = None) -> bool:
        if self.conversation_id is not None and event.conversation_id != self.conversation_id:
            return False
        if self.user_id is not None and event.user_id != self.user_id:
            return False
        if self.types is not None and event.type not in self.types:
            return False
        if recorded_at is not None:
            if self.after is not None and recorded_at < self.after:
                return False
            if self.before is not None and recorded_at > self.before:
                return False
        return True

    def fingerprint(self) -> bytes:
        """A canonical encoding: a cursor made under one Query is refused under another."""
        return msgspec.msgpack.encode(
            [
                self.conversation_id,
                self.user_id,
                sorted(self.types) if self.types is not None else None,
                to_micros(self.after) if self.after is not None else None,
                to_micros(self.before) if self.before is not None else None,
            ]
        )

    @property
    def after_micros(self) -> int | None:
        return to_micros(self.after) if self.after is not None else None

    @property
    def before_micros(self) -> int | None:
        return to_micros(self.before) if self.before is not None else None


def _text(name: str, value: str) -> str:
    # A lone surrogate cannot be stored or sent to any backend: refuse it here, once.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidQueryError(f"{name}= is not valid Unicode text ({exc.reason})") from None
    return value


def _optional_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _text(name, value)
    raise InvalidQueryError(f"{name}= must be a string or None, got {type(value).__name__}")


def _types(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((_text("type", value),))
    if isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        items = list(value)
        if not items:
            raise InvalidQueryError("type= is an empty collection; pass None to match every type")
        if not all(isinstance(n, str) for n in items):
            raise InvalidQueryError("type= takes an event type name or a set of names (strings)")
        return frozenset(_text("type", n) for n in items)
    raise InvalidQueryError(
        f"type= takes an event type name or a set of names, got {type(value).__name__}"
    )


def check_time(name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidQueryError(f"{name}= must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidQueryError(
            f"{name}= is a naive datetime; pass a timezone-aware one, e.g. "
            "datetime(2026, 1, 1, tzinfo=UTC)"
        )
    return value


def build_query(
    *,
    conversation_id: Any = None,
    user_id: Any = None,
    type: Any = None,
    after: Any = None,
    before: Any = None,
) -> Query:
    return Query(
        conversation_id=_optional_str("conversation_id", conversation_id),
        user_id=_optional_str("user_id", user_id),
        types=_types(type),
        after=check_time("after", after),
        before=check_time("before", before),
    )


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQueryError(f"limit= must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


MAX_SEQ = 2**63 - 1  # a 64-bit signed integer column, on every backend


def check_seq(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise InvalidQueryError(
            f"{name}= must be an integer seq from 0 to {MAX_SEQ}, got {value!r}")
    return value
