"""What a budget is: a limit on the cost recorded per scope (a user, a conversation, a tag,
or everything) in a window of the calls' time (a UTC day, a UTC month, or all time).

A budget is checked against the cost rollup, never against a running total of its own: the
rollup is derived from the log in the commit transaction, so every process on one database
sees the same spent figure for a scope and window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from ..errors import InvalidBudgetError
from ..events import RecordedEvent

__all__ = ["PERS", "WINDOWS", "Budget", "BudgetStatus", "Threshold", "Window", "window_of"]

Per = Literal["user", "conversation", "tag", "total"]
WindowKind = Literal["day", "month", "total"]
PERS: Final = ("user", "conversation", "tag", "total")
WINDOWS: Final = ("day", "month", "total")
EXCEEDED: Final = "exceeded"
WARNING: Final = "warning"


def _money(value: Any) -> Decimal:
    # A float limit would carry binary noise into every comparison: take exact amounts only.
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidBudgetError(
            f"a budget limit must be a Decimal, an int or a decimal string (not {value!r}); "
            "write Decimal('5') rather than 5.0 so the comparison with costs is exact")
    try:
        amount = Decimal(value) if isinstance(value, int | str) else value
    except InvalidOperation:
        raise InvalidBudgetError(f"a budget limit must be a decimal amount, not {value!r}") \
            from None
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise InvalidBudgetError(f"a budget limit must be a positive amount, not {value!r}")
    return amount


def _fractions(warn_at: Any) -> tuple[float, ...]:
    if isinstance(warn_at, int | float | str | Decimal):
        raise InvalidBudgetError(
            f"warn_at takes a tuple of fractions of the limit, e.g. (0.5, 0.8), not {warn_at!r}")
    try:
        values = tuple(warn_at)
    except TypeError:
        raise InvalidBudgetError(f"warn_at must be a tuple of fractions, not {warn_at!r}") \
            from None
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal) \
                or not 0 < value < 1:
            raise InvalidBudgetError(
                f"each warn_at fraction must be a number strictly between 0 and 1 (the share "
                f"of the limit that raises a warning), not {value!r}")
    return tuple(sorted({float(v) for v in values}))


@dataclass(frozen=True, slots=True)
class Threshold:
    """One amount a budget alerts at: a warning fraction, or the limit itself."""

    kind: str  # "warning" or "exceeded"
    fraction: float  # 1.0 for the limit
    amount: Decimal

    @property
    def label(self) -> str:
        return EXCEEDED if self.kind == EXCEEDED else f"warn_at={self.fraction!r}"


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a budget: a UTC day, a UTC month or all time (no bounds)."""

    kind: str
    label: str  # "2026-12-02", "2026-12" or "total"
    start: datetime | None  # inclusive
    end: datetime | None  # exclusive

    @property
    def last_moment(self) -> datetime | None:
        # cost questions take inclusive bounds; datetimes have microsecond resolution
        return None if self.end is None else self.end - timedelta(microseconds=1)


def window_of(kind: str, moment: datetime) -> Window:
    """The window of kind `kind` that holds `moment` (a timezone-aware datetime)."""
    if kind == "total":
        return Window("total", "total", None, None)
    if moment.tzinfo is None:
        raise InvalidBudgetError("a budget window needs a timezone-aware time (UTC)")
    moment = moment.astimezone(UTC)
    if kind == "day":
        start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        return Window("day", start.strftime("%Y-%m-%d"), start, start + timedelta(days=1))
    if kind == "month":
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        return Window("month", start.strftime("%Y-%m"), start, end)
    raise InvalidBudgetError(f"a budget window is one of {', '.join(WINDOWS)}, not {kind!r}")


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit on recorded cost: `limit` (a Decimal, in the currency of your prices) per
    `per` ("user", "conversation", "tag" or "total") in each `window` ("day" and "month"
    are UTC calendar windows of the calls' occurred_at; "total" is all time).

    `warn_at` lists fractions of the limit (each in (0, 1)) that raise one
    `budget_warning` each; reaching the limit raises one `budget_exceeded`. `name`
    identifies the budget in alerts (default: derived from its definition); two budgets
    of one store need different names.
    """

    limit: Decimal
    per: str
    window: str
    warn_at: tuple[float, ...] = ()
    name: str | None = None
    thresholds: tuple[Threshold, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limit = _money(self.limit)
        if self.per not in PERS:
            raise InvalidBudgetError(
                f"a budget's per= is one of {', '.join(PERS)}, not {self.per!r}")
        if self.window not in WINDOWS:
            raise InvalidBudgetError(
                f"a budget's window= is one of {', '.join(WINDOWS)}, not {self.window!r}")
        fractions = _fractions(self.warn_at)
        name = self.name
        if name is None:
            name = f"{self.per}/{self.window}/{limit}"
        elif not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidBudgetError(
                f"a budget name must be a non-empty string of at most 200 characters, not "
                f"{name!r}")
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "warn_at", fractions)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "thresholds", (
            *(Threshold(WARNING, f, limit * Decimal(repr(f))) for f in fractions),
            Threshold(EXCEEDED, 1.0, limit),
        ))

    @property
    def label(self) -> str:
        """The budget's name (always set once the budget is built)."""
        return self.name or ""

    def definition(self) -> dict[str, Any]:
        """The budget as plain data (what a `budget_defined` event records)."""
        return {"name": self.label, "limit": str(self.limit), "per": self.per,
                "window": self.window, "warn_at": list(self.warn_at)}

    @classmethod
    def from_definition(cls, data: dict[str, Any]) -> Budget:
        """The budget a `definition()` describes (InvalidBudgetError if it is not one)."""
        try:
            return cls(limit=Decimal(str(data["limit"])), per=data["per"],
                       window=data["window"], warn_at=tuple(data.get("warn_at") or ()),
                       name=data.get("name"))
        except (KeyError, TypeError, InvalidOperation) as exc:
            raise InvalidBudgetError(f"not a budget definition: {data!r} ({exc})") from None

    def digest(self) -> str:
        """A short digest of the definition: it changes when the budget does."""
        text = repr(sorted(self.definition().items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def scopes_of(self, event: RecordedEvent) -> tuple[str, ...]:
        """The scopes of this budget that a model call belongs to ("" for per="total")."""
        if self.per == "user":
            return (event.user_id,) if event.user_id else ()
        if self.per == "conversation":
            return (event.conversation_id,) if event.conversation_id else ()
        if self.per == "tag":
            tags = event.metadata.get("tags")
            if not isinstance(tags, list):
                return ()
            return tuple(sorted({t for t in tags if isinstance(t, str) and t}))
        return ("",)

    def filters(self, scope: str) -> dict[str, str]:
        """The cost-question filters of one scope of this budget."""
        if self.per == "total":
            return {}
        key = {"user": "user_id", "conversation": "conversation_id", "tag": "tag"}[self.per]
        return {key: scope}


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where one budget stands for one scope and window. `unpriced_calls` counts the calls
    in the window that have no known price: they are not in `spent` (never counted as $0
    silently), so a budget with unpriced calls may be spent more than it shows."""

    budget: Budget
    scope: str
    window: Window
    spent: Decimal
    limit: Decimal
    remaining: Decimal
    unpriced_calls: int = 0

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limit
