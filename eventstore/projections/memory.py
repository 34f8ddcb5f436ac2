"""Memory trims: how often a conversation's context was cut, and how much went."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..events import MEMORY_TRIMMED, RecordedEvent
from .base import MALFORMED, RowIndex, State, StructProjection

__all__ = ["MemoryTrims"]

_FIELDS = ("conversation_id", "strategy")


class TrimRow(msgspec.Struct, array_like=True, gc=False):
    conversation_id: str | None
    strategy: str
    count: int = 0
    messages_removed: int = 0
    tokens_removed: int = 0


class TrimsState(State, kw_only=True):
    rows: list[TrimRow] = msgspec.field(default_factory=list)


class MemoryTrims(StructProjection[TrimsState]):
    """Trim counts, tokens removed and messages removed, by conversation and strategy.

    A trim that would add messages or remove a negative number of tokens is malformed
    (skipped): it would make the totals lie.
    """

    name = "memory_trims"
    types = frozenset({MEMORY_TRIMMED})

    _rows: RowIndex[TrimRow]

    def _empty(self) -> TrimsState:
        return TrimsState()

    def _index(self) -> None:
        self._rows = RowIndex(_FIELDS, self._state.rows)

    def apply(self, event: RecordedEvent) -> None:
        if event.type != MEMORY_TRIMMED:
            return
        data = event.data
        try:
            strategy = data["strategy"]
            before = data["messages_before"]
            after = data["messages_after"]
            tokens = data["tokens_removed"]
            if (
                type(strategy) is not str
                or type(before) is not int
                or type(after) is not int
                or type(tokens) is not int
            ):
                raise TypeError("memory_trimmed fields of the wrong type")
            if not before >= after >= 0 or tokens < 0:
                raise ValueError("memory_trimmed counts are inconsistent")
        except MALFORMED:
            self._state.skipped += 1
            return
        key = (event.conversation_id, strategy)
        row = self._rows.by_key.get(key)
        if row is None:
            row = TrimRow(*key)
            self._rows.insert(key, row)
        row.count += 1
        row.messages_removed += before - after
        row.tokens_removed += tokens

    # --- queries ---------------------------------------------------------------------------

    def _select(self, conversation_id: str | None) -> Sequence[TrimRow]:
        return self._rows.select({"conversation_id": conversation_id})

    def count(self, conversation_id: str | None = None) -> int:
        """How many trims (in one conversation, or in all)."""
        return sum(r.count for r in self._select(conversation_id))

    def tokens_removed(self, conversation_id: str | None = None) -> int:
        """Tokens removed by trims (in one conversation, or in all)."""
        return sum(r.tokens_removed for r in self._select(conversation_id))

    def messages_removed(self, conversation_id: str | None = None) -> int:
        """Messages removed by trims, messages_before - messages_after summed."""
        return sum(r.messages_removed for r in self._select(conversation_id))

    def by_strategy(self) -> dict[str, int]:
        """Trims per strategy, strategies sorted."""
        groups = self._rows.by_field("strategy")
        return {key: sum(r.count for r in groups[key]) for key in self._rows.values("strategy")}
