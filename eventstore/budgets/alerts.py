"""Budget alert events: their types, their deterministic ids, and how one is built.

An alert's id is a UUIDv5 over (budget name, per, scope, window, threshold): every process
that sees a crossing builds the same id, so the log's idempotent append keeps exactly one
alert per budget, scope, window and threshold, whoever sees it first and however often a
crash makes a subscription replay.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any, Final

from ..events import Event, RecordedEvent
from .budget import EXCEEDED, Budget, Threshold, Window

__all__ = ["ALERT_TYPES", "BUDGET_DEFINED", "BUDGET_EXCEEDED", "BUDGET_REFUSED",
           "BUDGET_WARNING", "alert_event", "alert_id", "definition_event"]

BUDGET_EXCEEDED: Final = "budget_exceeded"
BUDGET_WARNING: Final = "budget_warning"
BUDGET_REFUSED: Final = "budget_refused"  # a call refused by enforce_budgets=True
BUDGET_DEFINED: Final = "budget_defined"  # a store was opened with this budget
ALERT_TYPES: Final = frozenset({BUDGET_EXCEEDED, BUDGET_WARNING, BUDGET_REFUSED})

# Ours, fixed forever: changing it would let every alert fire once more.
NAMESPACE: Final = uuid.UUID("6f1d5c1e-2b0a-5c52-9a57-0e5b4d1e7a18")


def alert_id(budget: Budget, scope: str, window: Window, threshold: Threshold) -> str:
    key = json.dumps(["alert", budget.label, budget.per, scope, window.label, threshold.label])
    return str(uuid.uuid5(NAMESPACE, key))


def alert_event(budget: Budget, scope: str, window: Window, threshold: Threshold,
                spent: Decimal, cost_event: RecordedEvent, observer: str) -> Event:
    """The alert for a crossing seen at `cost_event`. `observer` names the store that
    wrote it: two stores never write identical content for one id, so the second one's
    append raises DuplicateEventError, which is how it knows the alert is not news."""
    data: dict[str, Any] = {
        "budget": budget.label, "per": budget.per, "scope": scope,
        "window": window.label, "window_kind": window.kind,
        "window_start": window.start.isoformat() if window.start else None,
        "window_end": window.end.isoformat() if window.end else None,
        "threshold": threshold.label, "fraction": threshold.fraction,
        "threshold_amount": str(threshold.amount),
        "spent": str(spent), "limit": str(budget.limit),
        "cost_event_id": cost_event.id, "cost_event_seq": cost_event.seq,
        "observer": observer,
    }
    return Event(
        type=BUDGET_EXCEEDED if threshold.kind == EXCEEDED else BUDGET_WARNING,
        id=alert_id(budget, scope, window, threshold), data=data,
        user_id=scope if budget.per == "user" else None,
        conversation_id=scope if budget.per == "conversation" else None,
        metadata={"tags": [scope]} if budget.per == "tag" else {},
        occurred_at=cost_event.occurred_at,
    )


def definition_event(budget: Budget) -> Event:
    """The `budget_defined` event of a budget: one per distinct definition (its id is
    derived from it), so `eventstore budgets` knows the budgets stores were opened with."""
    key = json.dumps(["definition", budget.label, budget.digest()])
    return Event(type=BUDGET_DEFINED, id=str(uuid.uuid5(NAMESPACE, key)),
                 data=budget.definition())
