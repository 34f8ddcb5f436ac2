"""Budgets on the costs page: each budget's state in its current window.

Which budgets: those recorded in the log (`budget_defined`, written by every store opened
with `budgets=`), from the viewer's index. Which scopes: the whole budget for per="total";
otherwise the scopes with a warning or exceeded alert in the current window (the watcher
alerts once per threshold crossed, so these are the ones near or over it), also from the
index. What a row costs: one question to the cost rollup (spent and unpriced calls of that
scope and window), asked only for the rows of the page shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ...backends import CostTotalsReader
from ...budgets import Budget, window_of
from ...errors import EventStoreError
from ...rollup import CostFilters
from ...store import EventStore
from .index import BudgetAlert, ViewerIndex


@dataclass(frozen=True)
class BudgetRow:
    budget: Budget
    scope: str
    window: str
    alert: BudgetAlert | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.budget.label, self.scope)


def budget_rows(index: ViewerIndex, now: datetime) -> tuple[list[BudgetRow], int]:
    """Every (budget, scope) row to show, by budget name then scope, and how many
    recorded definitions were not budgets (skipped)."""
    rows: list[BudgetRow] = []
    malformed = 0
    for definition in index.budget_definitions():
        try:
            budget = Budget.from_definition(definition)
        except EventStoreError:
            malformed += 1
            continue
        window = window_of(budget.window, now).label
        alerts = index.budget_alerts(budget.label, window)
        if budget.per == "total":
            rows.append(BudgetRow(budget, "", window, alerts.get("")))
        else:
            rows.extend(BudgetRow(budget, scope, window, alerts[scope])
                        for scope in sorted(alerts))
    return rows, malformed


async def _spent(store: EventStore, budget: Budget, scope: str,
                 now: datetime) -> tuple[Decimal, int]:
    window = window_of(budget.window, now)
    filters: dict[str, Any] = budget.filters(scope)
    backend = store.backend
    if isinstance(backend, CostTotalsReader):  # the rollup: O(buckets), not O(log)
        totals = await backend.cost_totals(CostFilters(
            after=window.start, before=window.last_moment, **filters))
        return totals.cost, totals.unpriced_calls
    metrics = await store.metrics(after=window.start, before=window.last_moment, **filters)
    return metrics.total_cost, metrics.unpriced_calls


async def budget_json(store: EventStore, row: BudgetRow, now: datetime) -> dict[str, Any]:
    """One row as the page and the API show it: spent now, and the state it is in."""
    budget = row.budget
    spent, unpriced = await _spent(store, budget, row.scope, now)
    if spent >= budget.limit:
        state = "exceeded"
    else:
        reached = [t for t in budget.thresholds if spent >= t.amount]
        state = f"warning ({reached[-1].fraction:.0%})" if reached else "ok"
    return {
        "budget": budget.label, "per": budget.per, "window": row.window,
        "scope": row.scope or None, "limit": budget.limit, "spent": spent,
        "remaining": max(budget.limit - spent, Decimal(0)), "unpriced_calls": unpriced,
        "warn_at": list(budget.warn_at), "state": state,
        "alert": {"type": row.alert.kind, "threshold": row.alert.threshold,
                  "seq": row.alert.seq, "spent": row.alert.spent}
        if row.alert is not None else None,
    }
