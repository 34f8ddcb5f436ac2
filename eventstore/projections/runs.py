"""Runs (traces) summed up: status, steps, cost, tokens and latency per `trace_id`.

A call recorded inside `store.trace(trace_id)` carries `trace_id` in its metadata. Each
recorded call is one step: an `llm_call` event (record_llm_call and the integrations),
a `cost_recorded` event that belongs to no `llm_call` (record_cost by hand; one with a
`call_id` only adds its cost to its call), or an `llm_error` event of a failed call. A run
has failed when any of its calls failed. Latency is the sum of its calls' latencies.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from ..events import COST_RECORDED, RecordedEvent
from .base import MALFORMED, ZERO, State, StructProjection, add_money, parse_latency, parse_money

__all__ = ["LLM_CALL", "LLM_ERROR", "RunSummaries", "RunSummary"]

LLM_CALL = "llm_call"
LLM_ERROR = "llm_error"


class RunRow(msgspec.Struct, array_like=True, gc=False):
    trace_id: str
    failed: bool = False
    steps: int = 0
    cost: Decimal = ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0


class RunsState(State, kw_only=True):
    rows: dict[str, RunRow] = msgspec.field(default_factory=dict)


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One run: "failed" when any of its calls failed; steps = recorded calls; cost
    exact; latency the sum of its calls' latencies (ms)."""

    trace_id: str
    status: Literal["succeeded", "failed"]
    steps: int
    cost: Decimal
    input_tokens: int
    output_tokens: int
    latency_ms: float


def _tokens(data: dict[str, object], name: str) -> int:
    value = data.get(name, 0)
    if value is None:
        return 0
    if type(value) is not int:
        raise TypeError(f"{name} must be an int")
    return value


class RunSummaries(StructProjection[RunsState]):
    """One RunSummary per trace_id (see the module docstring)."""

    name = "run_summaries"
    types = frozenset({LLM_CALL, COST_RECORDED, LLM_ERROR})

    def _empty(self) -> RunsState:
        return RunsState()

    def apply(self, event: RecordedEvent) -> None:
        trace_id = event.metadata.get("trace_id")
        if trace_id is None:
            return
        try:
            if type(trace_id) is not str:
                raise TypeError("trace_id must be a string")
            data = event.data
            kind = event.type
            latency = data.get("latency_ms")
            latency = parse_latency(latency) if latency is not None else 0.0
            if kind == LLM_CALL:
                step, failed = True, bool(data.get("error"))
                tokens = (_tokens(data, "input_tokens"), _tokens(data, "output_tokens"))
                cost = ZERO
            elif kind == COST_RECORDED:
                cost = parse_money(data["total_cost"])
                step, failed = data.get("call_id") is None, False
                tokens = ((_tokens(data, "input_tokens"), _tokens(data, "output_tokens"))
                          if step else (0, 0))
                if not step:
                    latency = 0.0  # counted with its llm_call
            else:  # an integration's record of a failed call
                step, failed, tokens, cost = True, True, (0, 0), ZERO
        except MALFORMED:
            self._state.skipped += 1
            return
        row = self._state.rows.get(trace_id)
        if row is None:
            row = self._state.rows[trace_id] = RunRow(trace_id)
        row.steps += step
        row.failed = row.failed or failed
        row.cost = add_money(row.cost, cost)
        row.input_tokens += tokens[0]
        row.output_tokens += tokens[1]
        row.latency_ms += latency

    # --- queries ---------------------------------------------------------------------------

    def get(self, trace_id: str) -> RunSummary | None:
        """The run's summary, or None if no call was recorded in it."""
        row = self._state.rows.get(trace_id)
        return None if row is None else _summary(row)

    def runs(self) -> list[RunSummary]:
        """Every run, by trace_id."""
        return [_summary(self._state.rows[k]) for k in sorted(self._state.rows)]


def _summary(row: RunRow) -> RunSummary:
    return RunSummary(trace_id=row.trace_id, status="failed" if row.failed else "succeeded",
                      steps=row.steps, cost=row.cost, input_tokens=row.input_tokens,
                      output_tokens=row.output_tokens, latency_ms=row.latency_ms)
