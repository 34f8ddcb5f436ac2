"""The projection contract, and the machinery the built-in projections share.

A projection folds the log into an in-memory answer. It must be a pure function of the
events it was given, in seq order: the store rebuilds it from seq 0 whenever its snapshot
is missing or of another `version`, so the live projection and a rebuilt one have to agree
exactly. Hence apply() does no I/O, reads no clock and draws no randomness, and sums Decimals
in a fixed context (never the caller's ambient one).

A projection never stops the log from replaying: an event of a handled type whose data is
malformed (a field the projection reads is missing or of the wrong type) is skipped and
counted in `skipped`, which is part of the state, so the skip is visible and reproducible.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from ..errors import SnapshotError
from ..events import RecordedEvent
from ..pricing.money import ZERO, add_money, parse_money

__all__ = [
    "MALFORMED",
    "ZERO",
    "Projection",
    "RowIndex",
    "SnapshotError",
    "State",
    "StructProjection",
    "add_money",
    "as_day",
    "parse_latency",
    "parse_money",
    "prompt_of",
    "utc_day",
]

# What reading a malformed payload can raise: a missing key (KeyError), `data` or a field of
# the wrong type (TypeError, AttributeError), a bad number (ValueError, decimal errors are
# ArithmeticError). Anything else is a bug in the projection and must surface.
MALFORMED: tuple[type[Exception], ...] = (
    KeyError,
    TypeError,
    ValueError,
    ArithmeticError,
    AttributeError,
)


def parse_latency(value: Any) -> float:
    """A latency in milliseconds: a non-negative finite int or float."""
    kind = type(value)
    if kind is int:
        value = float(value)
    elif kind is not float:  # bool is refused here too: True ms means nothing
        raise TypeError(f"latency_ms must be a number, not {kind.__name__}")
    if not 0.0 <= value < float("inf"):  # also false for NaN
        raise ValueError(f"latency_ms {value!r} is not a finite, non-negative number")
    result: float = value
    return result


_NO_PROMPT: tuple[None, None] = (None, None)


def prompt_of(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(prompt_name, prompt_version) from event metadata; (None, None) when unnamed.

    A version without a name identifies nothing, so it is ignored. An int version is
    accepted as its decimal string, since "3" is what anyone passing 3 meant.
    """
    name = metadata.get("prompt_name")
    if name is None:
        return _NO_PROMPT
    if type(name) is not str:
        raise TypeError("metadata prompt_name must be a string")
    version = metadata.get("prompt_version")
    if version is None or type(version) is str:
        return name, version
    if type(version) is int:
        return name, str(version)
    raise TypeError("metadata prompt_version must be a string")


# Distinct days are few (hundreds a year) while events are many: formatting a date costs
# ~0.4 us, a dict hit on its ordinal a tenth of that.
_DAYS: dict[int, str] = {}


def utc_day(moment: datetime) -> str:
    """The UTC calendar day of a moment, as "YYYY-MM-DD"; a naive datetime is taken as UTC."""
    tz = moment.tzinfo
    if tz is not UTC and tz is not None:
        moment = moment.astimezone(UTC)
    ordinal = moment.toordinal()
    day = _DAYS.get(ordinal)
    if day is None:
        day = _DAYS[ordinal] = date.fromordinal(ordinal).isoformat()
    return day


def as_day(day: str | date | None) -> str | None:
    """A day filter as the "YYYY-MM-DD" key projections bucket by."""
    if day is None or isinstance(day, str):
        return day
    if isinstance(day, datetime):
        return utc_day(day)
    return day.isoformat()


# --- the contract ------------------------------------------------------------------------


class Projection(abc.ABC):
    """A pure fold of the log. The store drives it; see the module docstring."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str] | None] = None
    position: int

    def __init__(self) -> None:
        self.position = 0
        self.reset()

    @abc.abstractmethod
    def apply(self, event: RecordedEvent) -> None:
        """Fold one event into the in-memory state (pure, synchronous, never raises on data)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything: empty state, position 0."""

    @abc.abstractmethod
    def state(self) -> Any:
        """The whole state as plain, comparable values (equal for equal event histories)."""

    @abc.abstractmethod
    def snapshot(self) -> bytes:
        """The state and position, encoded; restore() is its inverse."""

    @abc.abstractmethod
    def restore(self, blob: bytes) -> None:
        """Load a snapshot() blob (raises SnapshotError if it is corrupt or foreign)."""

    def apply_event(self, event: RecordedEvent) -> None:
        """apply() an event once: delivery is at least once, so anything at or before
        `position` has been seen already."""
        seq = event.seq
        if seq <= self.position:
            return
        types = self.types
        if types is None or event.type in types:
            self.apply(event)
        self.position = seq

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Projection)
        return bool(self.state() == other.state())

    __hash__ = None  # type: ignore[assignment]  # mutable: equal now, unequal later

    def __repr__(self) -> str:
        return f"{type(self).__name__}(position={self.position})"


# --- the shared implementation -----------------------------------------------------------


class State(msgspec.Struct, kw_only=True):
    """Base of a projection's state: everything a snapshot must carry, nothing derived."""

    skipped: int = 0


S = TypeVar("S", bound=State)
R = TypeVar("R")


class _Snapshot(msgspec.Struct, array_like=True):
    name: str
    version: int
    position: int
    state: msgspec.Raw


_ENCODER = msgspec.msgpack.Encoder()  # Decimals as strings: exact; datetimes as timestamps
_PLAIN_TYPES = (Decimal, datetime, date)


class StructProjection(Projection, Generic[S]):
    """A projection whose state is one msgspec Struct, so state(), snapshot() and restore()
    come for free. A subclass writes `_empty()`, `apply()` and its queries; if it keeps
    lookups derived from the state (never serialised), it rebuilds them in `_index()`.
    """

    _state: S

    @abc.abstractmethod
    def _empty(self) -> S:
        """A new, empty state."""

    def _index(self) -> None:
        """Rebuild derived lookups from `self._state` (after reset and restore)."""

    @property
    def skipped(self) -> int:
        """How many events of a handled type were skipped as malformed."""
        return self._state.skipped

    def reset(self) -> None:
        self._state = self._empty()
        self.position = 0
        self._index()

    def state(self) -> Any:
        return msgspec.to_builtins(self._state, builtin_types=_PLAIN_TYPES)

    def snapshot(self) -> bytes:
        state = msgspec.Raw(_ENCODER.encode(self._state))
        return _ENCODER.encode(_Snapshot(self.name, self.version, self.position, state))

    def restore(self, blob: bytes) -> None:
        try:
            snap = msgspec.msgpack.decode(blob, type=_Snapshot)
        except msgspec.DecodeError as exc:
            raise SnapshotError(
                f"snapshot of {self.name!r} is corrupt ({exc}); rebuild the projection from the log"
            ) from exc
        if snap.name != self.name or snap.version != self.version:
            raise SnapshotError(
                f"snapshot is of projection {snap.name!r} version {snap.version}, not "
                f"{self.name!r} version {self.version}; rebuild the projection from the log"
            )
        try:
            state = msgspec.msgpack.decode(snap.state, type=type(self._state))
        except msgspec.DecodeError as exc:
            raise SnapshotError(
                f"snapshot state of {self.name!r} does not decode ({exc}); "
                "rebuild the projection from the log"
            ) from exc
        self._state = state
        self.position = snap.position
        self._index()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(position={self.position}, skipped={self.skipped})"


class RowIndex(Generic[R]):
    """Aggregate rows found by their full key and by each key field.

    The rows are the state's list (serialised, append-only); this index is derived and
    rebuilt on restore. apply() pays one dict hit per event, and one insert per new row.
    The per-field lists that let a filtered query start from its smallest candidate list
    are only brought up to date when a query needs them, so a burst of new rows (a new
    conversation per call, say) costs apply() nothing extra.
    """

    def __init__(self, fields: Sequence[str], rows: list[R]) -> None:
        self.fields = tuple(fields)
        self.rows = rows
        self.by_key: dict[tuple[Any, ...], R] = {
            tuple(getattr(row, f) for f in self.fields): row for row in rows
        }
        self._by_field: dict[str, dict[Any, list[R]]] = {f: {} for f in self.fields}
        self._indexed = 0  # rows[:_indexed] are in _by_field

    def insert(self, key: tuple[Any, ...], row: R) -> None:
        self.rows.append(row)
        self.by_key[key] = row

    def by_field(self, field: str) -> dict[Any, list[R]]:
        """Rows grouped by the value of one key field (groups in first-seen order)."""
        rows = self.rows
        if self._indexed < len(rows):
            fields = [(f, self._by_field[f]) for f in self.fields]
            for row in rows[self._indexed :]:
                for f, groups in fields:
                    value = getattr(row, f)
                    group = groups.get(value)
                    if group is None:
                        groups[value] = [row]
                    else:
                        group.append(row)
            self._indexed = len(rows)
        return self._by_field[field]

    def select(self, filters: Mapping[str, Any]) -> Sequence[R]:
        """The rows matching every non-None filter (None means "any")."""
        active = [(f, v) for f, v in filters.items() if v is not None]
        if not active:
            return self.rows
        candidates = min((self.by_field(f).get(v, []) for f, v in active), key=len)
        if len(active) == 1:
            return candidates
        return [r for r in candidates if all(getattr(r, f) == v for f, v in active)]

    def values(self, field: str) -> list[Any]:
        """The distinct values of a key field, None first, then sorted."""
        return sorted(self.by_field(field), key=_none_first)


def _none_first(value: Any) -> tuple[bool, Any]:
    return (value is not None, value if value is not None else "")
