"""Call latency percentiles by model and by prompt version.

Percentiles are nearest-rank: the p-th percentile of n sorted samples is the sample at
1-based rank ceil(p * n / 100). It is always an observed value (no interpolation), exact,
and the same however the samples were grouped; for the samples 1..100 it gives p50 = 50,
p95 = 95, p99 = 99.

Every sample is kept, unsorted, in arrival order: appending is O(1) per event and a query
sorts only the samples it selects. Sorted insertion would cost O(n) per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..calls import LLM_CALL
from ..events import COST_RECORDED, RecordedEvent
from .base import MALFORMED, RowIndex, State, StructProjection, parse_latency, prompt_of

__all__ = ["LatencyStats", "nearest_rank"]

_FIELDS = ("model", "prompt", "version")
PERCENTILES = (50, 95, 99)


def nearest_rank(ordered: Sequence[float], p: int) -> float:
    """The nearest-rank p-th percentile (0 < p <= 100) of non-empty, sorted samples."""
    rank = -(-p * len(ordered) // 100)  # ceil without floats
    return ordered[max(rank, 1) - 1]


class LatencySeries(msgspec.Struct, array_like=True):
    model: str
    prompt: str | None
    version: str | None
    values: list[float] = msgspec.field(default_factory=list)


class LatencyState(State, kw_only=True):
    series: list[LatencySeries] = msgspec.field(default_factory=list)


class LatencyStats(StructProjection[LatencyState]):
    """p50/p95/p99 of `latency_ms` by model, prompt and prompt version: of every recorded
    model call (`llm_call`, priced or not, failed or not) and of cost records of their own
    (`record_cost`); the cost record of a recorded call (it names its `call_id`) is the
    same sample and is not counted twice.

    Events without latency_ms are no samples (and not malformed).
    """

    name = "latency_stats"
    types = frozenset({LLM_CALL, COST_RECORDED})
    version = 2  # 2: samples of model calls (1 had only those of priced calls)

    _series: RowIndex[LatencySeries]

    def _empty(self) -> LatencyState:
        return LatencyState()

    def _index(self) -> None:
        self._series = RowIndex(_FIELDS, self._state.series)

    def apply(self, event: RecordedEvent) -> None:
        kind = event.type
        if kind != LLM_CALL and kind != COST_RECORDED:
            return
        try:
            data = event.data
            if kind == COST_RECORDED and type(data.get("call_id")) is str:
                return
            latency = data.get("latency_ms")
            if latency is None:
                return
            latency = parse_latency(latency)
            model = data["model"]
            if type(model) is not str:
                raise TypeError("model must be a string")
            prompt, version = prompt_of(event.metadata)
        except MALFORMED:
            self._state.skipped += 1
            return
        key = (model, prompt, version)
        series = self._series.by_key.get(key)
        if series is None:
            series = LatencySeries(model, prompt, version)
            self._series.insert(key, series)
        series.values.append(latency)

    # --- queries ---------------------------------------------------------------------------

    def samples(
        self, model: str | None = None, prompt: str | None = None, version: str | None = None
    ) -> list[float]:
        """The latencies matching every given filter, sorted ascending."""
        chosen = self._series.select({"model": model, "prompt": prompt, "version": version})
        values = [v for series in chosen for v in series.values]
        values.sort()
        return values

    def percentiles(
        self, model: str | None = None, prompt: str | None = None, version: str | None = None
    ) -> dict[str, float | None]:
        """{"p50", "p95", "p99", "count"} of the matching latencies (ms), nearest-rank.

        With no matching sample, count is 0 and the percentiles are None.
        """
        values = self.samples(model, prompt, version)
        result: dict[str, float | None] = {
            f"p{p}": nearest_rank(values, p) if values else None for p in PERCENTILES
        }
        result["count"] = len(values)
        return result

    def models(self) -> list[str]:
        """Models with at least one latency sample, sorted."""
        return self._series.values("model")
