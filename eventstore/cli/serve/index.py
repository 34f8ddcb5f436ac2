"""What the viewer's listings read instead of the log: one row per conversation and the
cost rollups, kept as a projection (rebuilt once at start, then live).

Listing conversations straight from the log would mean scanning every event per request
(a conversation's message count, cost and last time are spread across the whole log); a
fold keeps one small row per conversation, so a page costs only its rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from ...budgets import BUDGET_DEFINED, BUDGET_EXCEEDED, BUDGET_WARNING
from ...events import (
    CONVERSATION_CREATED,
    COST_RECORDED,
    MESSAGE_SENT,
    POLICY_VIOLATION,
    RecordedEvent,
)
from ...projections.base import MALFORMED, ZERO, State, StructProjection, add_money, parse_money
from ...projections.base import utc_day as _utc_day

ALERTS = frozenset({POLICY_VIOLATION, BUDGET_EXCEEDED, BUDGET_WARNING})
BUDGET_EVENTS = frozenset({BUDGET_DEFINED, BUDGET_EXCEEDED, BUDGET_WARNING})
BUDGET_LAST_WORD = "exceeded"  # the threshold label of a budget_exceeded alert
# Model calls: record_cost's events and record_llm_call's. record_llm_call writes an
# `llm_call` and, when it has a price, a `cost_recorded` too (with the call's id): each call
# counts once, priced through its cost_recorded, or as an unpriced llm_call (never $0).
LLM_CALL = "llm_call"
CALL_TYPES = frozenset({COST_RECORDED, LLM_CALL})


def counted_call(event: RecordedEvent) -> bool:
    """Whether the event is the one that counts a model call in the cost rollups."""
    data = event.data
    if not isinstance(data.get("model"), str):
        return False
    if event.type == COST_RECORDED:
        return True
    return event.type == LLM_CALL and not data.get("priced")


def call_usage(data: dict[str, Any]) -> dict[str, Any]:
    """Where a call's token counts are: a `usage` dict (llm_call) or the data itself."""
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else data


class ConversationRow(msgspec.Struct, kw_only=True):
    id: str
    user_id: str | None = None
    title: str | None = None
    first_at: datetime
    last_at: datetime
    first_seq: int
    last_seq: int
    events: int = 0
    messages: int = 0
    calls: int = 0
    unpriced_calls: int = 0
    cost: Decimal = ZERO
    violations: int = 0
    tags: list[str] = msgspec.field(default_factory=list)


class CostRollup(msgspec.Struct, kw_only=True):
    key: str | None
    calls: int = 0
    unpriced_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = ZERO


class BudgetAlert(msgspec.Struct, kw_only=True):
    """The latest alert of one budget, scope and window: how far it got, and where."""

    threshold: str  # "warn_at=0.8" or "exceeded"
    kind: str  # the alert's event type
    seq: int
    spent: str | None = None


class IndexState(State, kw_only=True):
    # Ordered by last activity, oldest first: a conversation moves to the end when it
    # sees an event, so iterating backwards is "newest first" without sorting.
    conversations: dict[str, ConversationRow] = msgspec.field(default_factory=dict)
    by_day: dict[str, CostRollup] = msgspec.field(default_factory=dict)
    by_model: dict[str, CostRollup] = msgspec.field(default_factory=dict)
    by_user: dict[str, CostRollup] = msgspec.field(default_factory=dict)
    by_tag: dict[str, CostRollup] = msgspec.field(default_factory=dict)
    total: CostRollup = msgspec.field(default_factory=lambda: CostRollup(key=None))
    alerts: int = 0
    # budget name -> its latest `budget_defined` data (what stores were opened with)
    budgets: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    # budget name -> window label -> scope -> its latest alert
    budget_alerts: dict[str, dict[str, dict[str, BudgetAlert]]] = msgspec.field(
        default_factory=dict)


def _tags(event: RecordedEvent) -> list[str]:
    tags = event.metadata.get("tags") if isinstance(event.metadata, dict) else None
    if isinstance(tags, list):
        return [t for t in tags if isinstance(t, str)]
    return []


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    return value if type(value) is int else 0


def _rollup(table: dict[str, CostRollup], key: str) -> CostRollup:
    row = table.get(key)
    if row is None:
        row = table[key] = CostRollup(key=key)
    return row


class ViewerIndex(StructProjection[IndexState]):
    """Conversations (newest first) and cost rollups by day, model, user and tag."""

    name = "viewer_index"
    types = None  # every event touches its conversation's row

    def _empty(self) -> IndexState:
        return IndexState()

    def apply(self, event: RecordedEvent) -> None:
        state = self._state
        data = event.data if isinstance(event.data, dict) else {}
        tags = _tags(event)
        cost: Decimal | None = None
        is_call = event.type in CALL_TYPES and counted_call(event)
        if is_call and event.type == COST_RECORDED and data.get("total_cost") is not None:
            try:
                cost = parse_money(data["total_cost"])
            except MALFORMED:
                state.skipped += 1  # and the call counts as unpriced
        if event.type in ALERTS:
            state.alerts += 1
        if event.type in BUDGET_EVENTS:
            self._budget_event(event, data)
        cid = event.conversation_id
        if cid is not None:
            row = state.conversations.pop(cid, None)
            if row is None:
                row = ConversationRow(id=cid, first_at=event.recorded_at,
                                      last_at=event.recorded_at, first_seq=event.seq,
                                      last_seq=event.seq)
            state.conversations[cid] = row
            row.last_at, row.last_seq = event.recorded_at, event.seq
            row.events += 1
            if event.user_id is not None:
                row.user_id = event.user_id
            for tag in tags:
                if tag not in row.tags:
                    row.tags.append(tag)
            if event.type == MESSAGE_SENT:
                row.messages += 1
            elif event.type == POLICY_VIOLATION:
                row.violations += 1
            elif event.type == CONVERSATION_CREATED and isinstance(data.get("title"), str):
                row.title = data["title"]
            if is_call:
                row.calls += 1
                if cost is None:
                    row.unpriced_calls += 1
                else:
                    row.cost = add_money(row.cost, cost)
        if is_call:
            rollups = [state.total, _rollup(state.by_day, _utc_day(event.occurred_at)),
                       _rollup(state.by_model, data["model"]),
                       _rollup(state.by_user, event.user_id or "(none)")]
            rollups += [_rollup(state.by_tag, tag) for tag in tags]
            usage = call_usage(data)
            for rollup in rollups:
                rollup.calls += 1
                rollup.input_tokens += _int(usage, "input_tokens")
                rollup.output_tokens += _int(usage, "output_tokens")
                if cost is None:
                    rollup.unpriced_calls += 1
                else:
                    rollup.cost = add_money(rollup.cost, cost)

    def _budget_event(self, event: RecordedEvent, data: dict[str, Any]) -> None:
        name = data.get("name") if event.type == BUDGET_DEFINED else data.get("budget")
        if not isinstance(name, str):
            self._state.skipped += 1
            return
        if event.type == BUDGET_DEFINED:
            self._state.budgets[name] = data
            return
        window, scope, threshold = data.get("window"), data.get("scope"), data.get("threshold")
        if not (isinstance(window, str) and isinstance(scope, str)
                and isinstance(threshold, str)):
            self._state.skipped += 1
            return
        scopes = self._state.budget_alerts.setdefault(name, {}).setdefault(window, {})
        known = scopes.get(scope)
        # Alerts of one scope come lowest threshold first; "exceeded" is the last word.
        if known is None or known.threshold != BUDGET_LAST_WORD:
            spent = data.get("spent")
            scopes[scope] = BudgetAlert(threshold=threshold, kind=event.type, seq=event.seq,
                                        spent=spent if isinstance(spent, str) else None)

    # --- queries -------------------------------------------------------------------------

    def conversation(self, conversation_id: str) -> ConversationRow | None:
        return self._state.conversations.get(conversation_id)

    def conversations(
        self,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
        tag: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        below_seq: int | None = None,
    ) -> Iterator[ConversationRow]:
        """Matching conversations, newest activity first; `below_seq` continues a page
        (rows whose last event is older than that seq). Lazy: a page stops early."""
        if conversation_id is not None:
            row = self._state.conversations.get(conversation_id)
            rows: Any = [row] if row is not None else []
        else:
            rows = reversed(self._state.conversations.values())
        for row in rows:
            if below_seq is not None and row.last_seq >= below_seq:
                continue
            if user_id is not None and row.user_id != user_id:
                continue
            if tag is not None and tag not in row.tags:
                continue
            if after is not None and row.last_at < after:
                continue
            if before is not None and row.first_at > before:
                continue
            yield row

    def costs(self, by: str) -> list[CostRollup]:
        """Rollups by "day" (calendar order) or "model" / "user" / "tag" (costliest first)."""
        table: dict[str, CostRollup] = getattr(self._state, f"by_{by}")
        if by == "day":
            return [table[k] for k in sorted(table)]
        return sorted(table.values(), key=lambda r: (-r.cost, r.key or ""))

    def group_count(self, by: str) -> int:
        """How many groups the rollup by `by` has."""
        table: dict[str, CostRollup] = getattr(self._state, f"by_{by}")
        return len(table)

    @property
    def total(self) -> CostRollup:
        return self._state.total

    @property
    def alerts(self) -> int:
        return self._state.alerts

    def budget_definitions(self) -> list[dict[str, Any]]:
        """The latest recorded definition of each budget, by name."""
        return [self._state.budgets[name] for name in sorted(self._state.budgets)]

    def budget_alerts(self, budget: str, window: str) -> dict[str, BudgetAlert]:
        """Scope -> latest alert of `budget` in the window labelled `window`."""
        return self._state.budget_alerts.get(budget, {}).get(window, {})

    @property
    def conversation_count(self) -> int:
        return len(self._state.conversations)
