"""The budget watcher: a durable subscription over cost events that appends each alert once.

For every `cost_recorded` event it reads, for each budget and scope the call belongs to,
the scope's spent in the call's window from the cost rollup (derived in the commit
transaction, so it already holds this call and every call committed before it, in any
process), and appends an alert for each threshold reached. Exactly once comes from the
alert's deterministic id, not from this process's memory:

- a crash between a cost's commit and its alert: the subscription's checkpoint is behind
  the cost, so the next start replays it (at least once) and the alert is appended then;
- a replay, a restart, or another process seeing the same crossing: the append finds the
  id already stored. Its content differs (another `spent`, another observer), so the
  append raises DuplicateEventError: someone already recorded this alert, nothing to do.

Signals go out in the process whose append wrote the alert.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from .. import signals
from ..errors import BudgetExceededError, DuplicateEventError, InvalidBudgetError
from ..events import COST_RECORDED, RecordedEvent
from ..pricing.money import ZERO, cost_or_none
from .alerts import alert_event, definition_event
from .budget import EXCEEDED, Budget, BudgetStatus, Threshold, Window, window_of

if TYPE_CHECKING:
    from ..store import EventStore
    from ..subscriptions import Subscription

__all__ = ["BudgetWatcher", "check_budgets"]

log = logging.getLogger("eventstore.budgets")

COST_TYPES: Final = frozenset({COST_RECORDED})
_REMEMBERED: Final = 100_000  # alert ids this store knows are stored (a bounded memo)
_TOTAL: Final = window_of("total", datetime(2000, 1, 1, tzinfo=UTC))


def _checked(budgets: Sequence[Budget]) -> tuple[Budget, ...]:
    if isinstance(budgets, Budget) or not all(isinstance(b, Budget) for b in budgets):
        raise InvalidBudgetError("budgets= takes a list of Budget(...)")
    names = [b.label for b in budgets]
    if len(set(names)) != len(names):
        raise InvalidBudgetError(
            f"two budgets share a name ({sorted(n for n in names if names.count(n) > 1)}); "
            "give each its own name=")
    return tuple(budgets)


async def spent_in(store: EventStore, budget: Budget, scope: str,
                   window: Window) -> Decimal:
    """The priced cost of one scope in one window, from the cost rollup."""
    filters = budget.filters(scope)
    if "tag" in filters:
        metrics = await store.metrics(tag=filters["tag"], after=window.start,
                                      before=window.last_moment)
        return metrics.total_cost
    return await store.sum_cost(after=window.start, before=window.last_moment, **filters)


@dataclass(slots=True)
class _Spend:
    """Bounds on one scope's spent in one window, kept current from the cost events the
    subscription delivers (every one, in seq order) after a read of the rollup, so the
    rollup is asked again only when a threshold falls between them. `low` never counts a
    cost twice (a sure crossing); `high` never misses one (a sure non-crossing)."""

    low: Decimal
    high: Decimal
    low_from: int
    high_from: int
    last: int  # the highest seq folded in: a redelivered event is not counted again
    # the thresholds not yet alerted, lowest amount first (amount, order, budget, threshold)
    pending: list[tuple[Decimal, int, Budget, Threshold]]

    def fold(self, seq: int, cost: Decimal) -> None:
        if seq <= self.last:
            return
        self.last = seq
        if seq > self.low_from:
            self.low += cost
        if seq > self.high_from:
            self.high += cost


class BudgetWatcher:
    """The budgets of one store: their alerts (a durable subscription) and their status."""

    def __init__(self, store: EventStore, budgets: Sequence[Budget]) -> None:
        self._store = store
        self.budgets = _checked(budgets)
        # Which store wrote an alert: makes every writer's content its own (see module doc).
        self.observer = uuid.uuid4().hex
        self.subscription: Subscription | None = None
        # the alerts (budget, scope, window, threshold) known to be in the log
        self._known: dict[tuple[str, str, str, str], None] = {}
        self._spend: dict[tuple[str, str, str], _Spend] = {}
        # budgets of one per and window share each scope's spent figure
        self._groups: dict[tuple[str, str], list[Budget]] = {}
        for budget in self.budgets:
            self._groups.setdefault((budget.per, budget.window), []).append(budget)
        # one representative budget per `per` (its scopes), and the groups of each window
        # kind: a cost event computes its scopes and windows once, not once per group
        self._pers: dict[str, Budget] = {}
        self._kinds: dict[str, list[tuple[str, list[Budget]]]] = {}
        for (per, kind), group in self._groups.items():
            self._pers.setdefault(per, group[0])
            self._kinds.setdefault(kind, []).append((per, group))
        self._windows: dict[tuple[str, int, int, int], Window] = {}
        # True while every cost event since seq 0 has been folded into `_spend` (the
        # subscription started at the beginning of the log and no entry was dropped): a
        # scope and window never seen then has spent exactly 0, with no rollup read.
        self._from_zero = False

    @property
    def subscription_name(self) -> str:
        """One durable checkpoint per set of budgets: a store opened with other budgets
        replays the log for them instead of inheriting a position they never saw."""
        digests = "".join(sorted(b.digest() for b in self.budgets))
        return "budgets:" + hashlib.sha256(digests.encode()).hexdigest()[:16]

    async def start(self) -> None:
        if not self.budgets:
            return
        for budget in self.budgets:
            try:
                await self._store.append(definition_event(budget))
            except DuplicateEventError:
                pass  # another store recorded this definition first (at its own time)
        self.subscription = await self._store.subscribe(
            self.on_cost, name=self.subscription_name, types=COST_TYPES)
        # subscribe() loads the checkpoint and launches the task without yielding, so no
        # cost has been handled yet: position 0 means this store folds the whole log.
        self._from_zero = self.subscription.position == 0

    def on_cost(self, event: RecordedEvent) -> Awaitable[None] | None:
        """The subscription's handler: the alerts a cost event brings, appended once.
        Its work grows with the (per, window) groups and the thresholds it crosses, not
        with the number of budgets: each group keeps one spent figure per scope.

        Most costs only move known figures below every pending threshold: that is done
        here, synchronously, and nothing is returned, so the subscription calls no
        coroutine (no timer, no cancel scope) for them. A cost that needs the rollup or
        reaches a threshold returns the coroutine that settles it (folds are idempotent
        per seq, so what was folded here is not counted again there)."""
        cost = cost_or_none(event.data.get("total_cost")) or ZERO
        scopes = {per: budget.scopes_of(event) for per, budget in self._pers.items()}
        for kind, groups in self._kinds.items():
            window = self._window(kind, event.occurred_at)
            for per, budgets in groups:
                for scope in scopes[per]:
                    spend = self._spend.get((per, scope, window.label))
                    if spend is None:
                        if not self._from_zero:
                            return self._settle(event, cost, scopes)
                        spend = self._new(budgets, scope, window, ZERO, 0, 0, 0)
                    spend.fold(event.seq, cost)
                    if spend.pending and spend.pending[0][0] <= spend.high:
                        return self._settle(event, cost, scopes)
        return None

    async def _settle(self, event: RecordedEvent, cost: Decimal,
                      scopes: dict[str, tuple[str, ...]]) -> None:
        crossings: list[tuple[Budget, str, Window, Threshold, Decimal]] = []
        reached: list[tuple[_Spend, int]] = []
        for kind, groups in self._kinds.items():
            window = self._window(kind, event.occurred_at)
            for per, budgets in groups:
                for scope in scopes[per]:
                    crossed = await self._crossed(budgets, scope, window, event, cost,
                                                  crossings)
                    if crossed is not None:
                        reached.append(crossed)
        if len(crossings) == 1:
            await self._alert(*crossings[0], event)
        elif crossings:
            # concurrently, so the store's group commit writes them in one transaction
            await asyncio.gather(*(self._alert(*c, event) for c in crossings))
        # only once they are in the log: a failed append leaves them pending for the retry
        for spend, count in reached:
            del spend.pending[:count]

    def _window(self, kind: str, moment: datetime) -> Window:
        if kind == "total":
            return _TOTAL
        utc = moment.astimezone(UTC)
        key = (kind, utc.year, utc.month, utc.day if kind == "day" else 1)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) > 1_000:
                self._windows.clear()
            window = self._windows[key] = window_of(kind, utc)
        return window

    async def _crossed(self, budgets: list[Budget], scope: str, window: Window,
                       event: RecordedEvent, cost: Decimal,
                       crossings: list[tuple[Budget, str, Window, Threshold, Decimal]]
                       ) -> tuple[_Spend, int] | None:
        """Fold the cost into the scope's spent and collect the thresholds it surely
        reached: the first `count` of the spend's `pending` (returned as (spend, count))."""
        key = (budgets[0].per, scope, window.label)
        spend = self._spend.get(key)
        if spend is None:
            if self._from_zero:
                spend = self._new(budgets, scope, window, ZERO, 0, 0, 0)
                spend.fold(event.seq, cost)
            else:
                spend = await self._read(budgets, scope, window)
        else:
            spend.fold(event.seq, cost)
        read_again = False
        count = 0
        first = len(crossings)
        while count < len(spend.pending) and spend.pending[count][0] <= spend.high:
            amount, _, budget, threshold = spend.pending[count]
            if amount > spend.low:
                if read_again:
                    break  # still not a sure crossing: a later cost decides it
                # the bounds straddle it: ask the rollup again (exact, committed)
                spend = await self._read(budgets, scope, window)
                read_again = True
                count = 0
                del crossings[first:]  # the new figure's pending holds them again
                continue
            crossings.append((budget, scope, window, threshold, spend.low))
            count += 1
        return (spend, count) if count else None

    async def _read(self, budgets: list[Budget], scope: str, window: Window) -> _Spend:
        """The scope's spent from the rollup, with the heads read around it: costs with a
        seq above the later head are surely not in it, above the earlier head maybe."""
        before = await self._store.head()
        spent = await spent_in(self._store, budgets[0], scope, window)
        after = await self._store.head()
        return self._new(budgets, scope, window, spent, after, before, before)

    def _new(self, budgets: list[Budget], scope: str, window: Window, spent: Decimal,
             low_from: int, high_from: int, last: int) -> _Spend:
        pending = sorted(
            (t.amount, i, b, t) for i, (b, t) in enumerate(
                (b, t) for b in budgets for t in b.thresholds)
            if (b.label, scope, window.label, t.label) not in self._known)
        spend = _Spend(low=spent, high=spent, low_from=low_from, high_from=high_from,
                       last=last, pending=pending)
        self._spend[(budgets[0].per, scope, window.label)] = spend
        if len(self._spend) > _REMEMBERED:
            del self._spend[next(iter(self._spend))]
            self._from_zero = False  # a dropped scope's figure must be read again
        return spend

    async def _alert(self, budget: Budget, scope: str, window: Window, threshold: Threshold,
                     spent: Decimal, cost: RecordedEvent) -> None:
        event = alert_event(budget, scope, window, threshold, spent, cost, self.observer)
        known = (budget.label, scope, window.label, threshold.label)
        try:
            recorded = await self._store.append(event)
        except DuplicateEventError:
            self._remember(known)  # someone else recorded it: not news here
            return
        if known in self._known:
            return  # our own earlier append, replayed: its signal went out then
        self._remember(known)
        signal = signals.budget_exceeded if threshold.kind == EXCEEDED \
            else signals.budget_warning
        self._store.dispatcher.send(signal, self._store, budget=budget, scope=scope,
                                    window=window, spent=spent, limit=budget.limit,
                                    event=recorded)

    def _remember(self, alert: tuple[str, str, str, str]) -> None:
        self._known[alert] = None
        if len(self._known) > _REMEMBERED:
            del self._known[next(iter(self._known))]

    # --- questions ---------------------------------------------------------------------

    def matching(self, *, user_id: str | None, conversation_id: str | None,
                 tags: Sequence[str]) -> list[tuple[Budget, str]]:
        """The (budget, scope) pairs a call with these ids and tags falls under."""
        if isinstance(tags, str):
            raise InvalidBudgetError(f"tags= takes a list of tags, not the string {tags!r}")
        found: list[tuple[Budget, str]] = []
        for budget in self.budgets:
            if budget.per == "total":
                found.append((budget, ""))
            elif budget.per == "user" and user_id:
                found.append((budget, user_id))
            elif budget.per == "conversation" and conversation_id:
                found.append((budget, conversation_id))
            elif budget.per == "tag":
                found.extend((budget, tag) for tag in sorted(set(tags)) if tag)
        return found

    async def status(self, *, user_id: str | None = None, conversation_id: str | None = None,
                     tags: Sequence[str] = (), at: datetime) -> list[BudgetStatus]:
        statuses = []
        for budget, scope in self.matching(user_id=user_id, conversation_id=conversation_id,
                                           tags=tags):
            window = window_of(budget.window, at)
            metrics = await self._store.metrics(after=window.start, before=window.last_moment,
                                                **budget.filters(scope))
            spent = metrics.total_cost
            statuses.append(BudgetStatus(
                budget=budget, scope=scope, window=window, spent=spent, limit=budget.limit,
                remaining=max(budget.limit - spent, Decimal(0)),
                unpriced_calls=metrics.unpriced_calls))
        return statuses


def check_budgets(statuses: Sequence[BudgetStatus]) -> None:
    """Raise BudgetExceededError if any of these budgets is exhausted."""
    exhausted = tuple(s for s in statuses if s.exhausted)
    if exhausted:
        names = ", ".join(f"{s.budget.label} for {s.budget.per} {s.scope!r} in "
                          f"{s.window.label} (spent {s.spent} of {s.limit})"
                          if s.scope else f"{s.budget.label} in {s.window.label} "
                          f"(spent {s.spent} of {s.limit})" for s in exhausted)
        raise BudgetExceededError(f"budget exhausted: {names}", exhausted)

