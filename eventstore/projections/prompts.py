"""Prompt Deck's A/B view: how each version of a prompt performs, costs and is rated.

Attribution comes from event metadata: `prompt_name` and `prompt_version` on model calls
(`llm_call`, whatever their price: unpriced and failed calls are executions too), on
cost records and on `user_feedback` events. A cost record of a recorded call (its
`call_id`) adds only its cost to that call's prompt; a cost record of its own
(`record_cost`) is an execution. Feedback usually arrives later and without that metadata,
so it goes to the prompt of the call it names (`call_id`, see store.feedback), else to
the prompt of the conversation's latest cost record that named one (the answer being
rated is the last prompted call; an unprompted side call, say a summariser, does not take
the rating away from it). Feedback that can be attributed to nothing is counted in
`unattributed_feedback`; feedback without a rating (a comment) is no rating.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal

import msgspec

from ..calls import LLM_CALL
from ..events import COST_RECORDED, RecordedEvent
from .base import (
    MALFORMED,
    ZERO,
    RowIndex,
    State,
    StructProjection,
    add_money,
    parse_latency,
    parse_money,
    prompt_of,
)

__all__ = ["USER_FEEDBACK", "PromptVersionStats", "PromptVersions"]

USER_FEEDBACK = "user_feedback"

# Averages are divisions, which must round somewhere; a fixed context keeps the rounding
# independent of the caller's ambient decimal context.
_DIVIDE = Context(prec=28).divide


class PromptRow(msgspec.Struct, array_like=True, gc=False):
    prompt_name: str
    prompt_version: str | None
    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_cost: Decimal = ZERO
    latency_count: int = 0
    latency_sum: float = 0.0
    feedback_count: int = 0
    rating_sum: float = 0.0


class PromptsState(State, kw_only=True):
    rows: list[PromptRow] = msgspec.field(default_factory=list)
    # conversation -> (prompt_name, prompt_version) of its latest prompted cost record
    last_prompt: dict[str, tuple[str, str | None]] = msgspec.field(default_factory=dict)
    # call id (of the llm_call, or of the cost record) -> its prompt, for rated calls
    call_prompt: dict[str, tuple[str, str | None]] = msgspec.field(default_factory=dict)
    unattributed_feedback: int = 0


class PromptVersionStats(msgspec.Struct, frozen=True, kw_only=True):
    """One prompt version's figures. Averages are None when there is nothing to average."""

    prompt_name: str
    prompt_version: str | None
    executions: int
    input_tokens: int
    output_tokens: int
    avg_input_tokens: float | None
    avg_output_tokens: float | None
    avg_latency_ms: float | None
    total_cost: Decimal
    avg_cost: Decimal | None
    feedback_count: int
    avg_rating: float | None


def _stats(row: PromptRow) -> PromptVersionStats:
    n = row.executions
    return PromptVersionStats(
        prompt_name=row.prompt_name,
        prompt_version=row.prompt_version,
        executions=n,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        avg_input_tokens=row.input_tokens / n if n else None,
        avg_output_tokens=row.output_tokens / n if n else None,
        avg_latency_ms=row.latency_sum / row.latency_count if row.latency_count else None,
        total_cost=row.total_cost,
        avg_cost=_DIVIDE(row.total_cost, Decimal(n)) if n else None,
        feedback_count=row.feedback_count,
        avg_rating=row.rating_sum / row.feedback_count if row.feedback_count else None,
    )


_DIGITS = re.compile(r"(\d+)")


def _version_order(version: str | None) -> tuple[int, tuple[str | int, ...], str]:
    """Natural order ("v2" before "v10"), no version first, the raw string breaking ties."""
    if version is None:
        return (0, (), "")
    parts = _DIGITS.split(version)  # text at even indexes, digit runs at odd ones
    return (1, tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), version)


class PromptVersions(StructProjection[PromptsState]):
    """Executions, tokens, latency, cost and ratings per (prompt_name, prompt_version).

    Cost records without a prompt_name are not about a prompt and are ignored.
    """

    name = "prompt_versions"
    types = frozenset({LLM_CALL, COST_RECORDED, USER_FEEDBACK})
    version = 2  # 2: model calls are executions (1 counted only priced ones)

    _rows: RowIndex[PromptRow]

    def _empty(self) -> PromptsState:
        return PromptsState()

    def _index(self) -> None:
        self._rows = RowIndex(("prompt_name", "prompt_version"), self._state.rows)

    def _row(self, key: tuple[str, str | None]) -> PromptRow:
        row = self._rows.by_key.get(key)
        if row is None:
            row = PromptRow(*key)
            self._rows.insert(key, row)
        return row

    def apply(self, event: RecordedEvent) -> None:
        kind = event.type
        if kind == USER_FEEDBACK:
            self._apply_feedback(event)
            return
        if kind != COST_RECORDED and kind != LLM_CALL:
            return
        data = event.data
        call_id = (data.get("call_id") if kind == COST_RECORDED and isinstance(data, dict)
                   else None)
        if type(call_id) is str:
            # The cost of a recorded call: the call itself was the execution.
            self._apply_call_cost(event, call_id)
            return
        try:
            name, version = prompt_of(event.metadata)
            if name is None:
                return
            if kind == LLM_CALL:  # a call that failed before reporting usage has none
                input_tokens = data.get("input_tokens", 0)
                output_tokens = data.get("output_tokens", 0)
            else:
                input_tokens = data["input_tokens"]
                output_tokens = data["output_tokens"]
            if type(input_tokens) is not int or type(output_tokens) is not int:
                raise TypeError("token counts must be ints")
            cost = parse_money(data["total_cost"]) if kind == COST_RECORDED else ZERO
            latency = data.get("latency_ms")
            if latency is not None:
                latency = parse_latency(latency)
        except MALFORMED:
            self._state.skipped += 1
            return
        key = (name, version)
        row = self._rows.by_key.get(key)
        if row is None:
            row = self._row(key)
        row.executions += 1
        row.input_tokens += input_tokens
        row.output_tokens += output_tokens
        row.total_cost = add_money(row.total_cost, cost)
        if latency is not None:
            row.latency_count += 1
            row.latency_sum += latency
        conversation_id = event.conversation_id
        if conversation_id is not None:
            self._state.last_prompt[conversation_id] = key
        self._state.call_prompt[event.id] = key

    def _apply_call_cost(self, event: RecordedEvent, call_id: str) -> None:
        key = self._state.call_prompt.get(call_id)
        if key is None:  # an unprompted call
            return
        try:
            cost = parse_money(event.data["total_cost"])
        except MALFORMED:
            self._state.skipped += 1
            return
        row = self._row(key)
        row.total_cost = add_money(row.total_cost, cost)
        self._state.call_prompt[event.id] = key

    def _apply_feedback(self, event: RecordedEvent) -> None:
        try:
            rating = event.data["rating"]
            if rating is None:  # a comment without a rating
                return
            kind = type(rating)
            if kind is int:
                rating = float(rating)
            elif kind is not float:
                raise TypeError("rating must be a number")
            if not -float("inf") < rating < float("inf"):  # also false for NaN
                raise ValueError("rating must be finite")
            name, version = prompt_of(event.metadata)
        except MALFORMED:
            self._state.skipped += 1
            return
        key: tuple[str, str | None] | None
        call_id = event.data.get("call_id")
        if type(call_id) is str and call_id in self._state.call_prompt:
            key = self._state.call_prompt[call_id]
        elif name is not None:
            key = (name, version)
        else:
            conversation_id = event.conversation_id
            key = None if conversation_id is None else self._state.last_prompt.get(conversation_id)
        if key is None:
            self._state.unattributed_feedback += 1
            return
        row = self._row(key)
        row.feedback_count += 1
        row.rating_sum += rating

    # --- queries ---------------------------------------------------------------------------

    @property
    def unattributed_feedback(self) -> int:
        """Feedback events with no prompt metadata in a conversation with no prompted call."""
        return self._state.unattributed_feedback

    def stats(self, prompt_name: str, version: str | None) -> PromptVersionStats | None:
        """One version's figures, or None if it was never executed nor rated."""
        row = self._rows.by_key.get((prompt_name, version))
        return None if row is None else _stats(row)

    def compare(self, prompt_name: str) -> list[PromptVersionStats]:
        """Every version of a prompt, side by side, in natural version order."""
        rows = self._rows.by_field("prompt_name").get(prompt_name, [])
        return [_stats(r) for r in sorted(rows, key=lambda r: _version_order(r.prompt_version))]

    def prompts(self) -> list[str]:
        """Names of every prompt seen, sorted."""
        return list(self._rows.values("prompt_name"))
