"""Guardrail violations: how many, of which policy, by whom, where; and the latest few."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

from ..events import POLICY_VIOLATION, RecordedEvent
from .base import MALFORMED, RowIndex, State, StructProjection

__all__ = ["GuardrailViolations", "Violation"]

_FIELDS = ("policy", "user_id", "conversation_id")


class Violation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One policy_violation event, as `recent()` lists it."""

    seq: int
    policy: str
    reason: str
    severity: str | None
    user_id: str | None
    conversation_id: str | None
    occurred_at: datetime


class ViolationRow(msgspec.Struct, array_like=True, gc=False):
    policy: str
    user_id: str | None
    conversation_id: str | None
    count: int = 0


class ViolationsState(State, kw_only=True):
    rows: list[ViolationRow] = msgspec.field(default_factory=list)
    recent: list[Violation] = msgspec.field(default_factory=list)  # oldest first


class GuardrailViolations(StructProjection[ViolationsState]):
    """Violation counts by policy, user and conversation, and the most recent violations.

    Only the last `recent_limit` violations are kept in full, so memory stays bounded
    however long the log; counts cover all of them.
    """

    name = "guardrail_violations"
    types = frozenset({POLICY_VIOLATION})
    recent_limit: ClassVar[int] = 100

    _rows: RowIndex[ViolationRow]

    def _empty(self) -> ViolationsState:
        return ViolationsState()

    def _index(self) -> None:
        self._rows = RowIndex(_FIELDS, self._state.rows)

    def apply(self, event: RecordedEvent) -> None:
        if event.type != POLICY_VIOLATION:
            return
        data = event.data
        try:
            policy = data["policy"]
            reason = data["reason"]
            severity = data.get("severity")
            if (
                type(policy) is not str
                or type(reason) is not str
                or (severity is not None and type(severity) is not str)
            ):
                raise TypeError("policy_violation fields of the wrong type")
        except MALFORMED:
            self._state.skipped += 1
            return
        user_id = event.user_id
        conversation_id = event.conversation_id
        key = (policy, user_id, conversation_id)
        row = self._rows.by_key.get(key)
        if row is None:
            row = ViolationRow(policy, user_id, conversation_id)
            self._rows.insert(key, row)
        row.count += 1
        recent = self._state.recent
        recent.append(
            Violation(
                seq=event.seq,
                policy=policy,
                reason=reason,
                severity=severity,
                user_id=user_id,
                conversation_id=conversation_id,
                occurred_at=event.occurred_at,
            )
        )
        if len(recent) > self.recent_limit:
            # Shifting a 100-pointer list is cheaper than a deque, and a list is what
            # msgspec serialises.
            del recent[0]

    # --- queries ---------------------------------------------------------------------------

    def count(
        self,
        policy: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
    ) -> int:
        """Violations matching every given filter (none: all of them)."""
        rows = self._rows.select(
            {"policy": policy, "user_id": user_id, "conversation_id": conversation_id},
        )
        return sum(r.count for r in rows)

    def _by(self, field: str) -> dict[str | None, int]:
        groups = self._rows.by_field(field)
        return {key: sum(r.count for r in groups[key]) for key in self._rows.values(field)}

    def by_policy(self) -> dict[str, int]:
        """Violations per policy, policies sorted."""
        return {key: n for key, n in self._by("policy").items() if key is not None}

    def by_user(self) -> dict[str | None, int]:
        """Violations per user (None: events with no user), keys sorted, None first."""
        return self._by("user_id")

    def by_conversation(self) -> dict[str | None, int]:
        """Violations per conversation (None: events with no conversation), None first."""
        return self._by("conversation_id")

    def recent(self, n: int = 10) -> list[Violation]:
        """Up to n of the latest violations (at most `recent_limit`), newest first."""
        if n <= 0:
            return []
        return self._state.recent[::-1][:n]
