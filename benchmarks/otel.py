"""OpenTelemetry exporter figures: GenAI spans/s recorded through EventStoreSpanExporter,
the process CPU time each costs (all threads: app, processor, loop, SQLite; on a loaded
machine the steadier figure), and what ending a span costs the app's thread (the
BatchSpanProcessor only queues it; the exporter runs on the processor's worker).

    python benchmarks/otel.py                 # --spans 5000 --url sqlite:///...

Baseline in the same process: ending the same spans into a processor whose exporter does
nothing (the SDK's own cost), so the "added" figure is the exporter's share alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from eventstore import EventStore
from eventstore.integrations.opentelemetry import EventStoreSpanExporter


class NullExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def attributes(i: int) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 120 + i % 50, "gen_ai.usage.output_tokens": 30,
            "gen_ai.conversation.id": f"c{i % 200}", "user.id": f"u{i % 20}"}


def end_spans(provider: TracerProvider, n: int) -> list[float]:
    """Per-span wall time on the app's thread (start, attributes, end), microseconds."""
    tracer = provider.get_tracer("bench")
    times = []
    for i in range(n):
        started = time.perf_counter()
        span = tracer.start_span("chat gpt-4o-mini", attributes=attributes(i))
        span.end()
        times.append((time.perf_counter() - started) * 1e6)
    return times


async def run(url: str, n: int) -> None:
    null = TracerProvider()
    null.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=n + 1))
    baseline = await asyncio.to_thread(end_spans, null, n)
    null.shutdown()
    async with EventStore.open(url) as store:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(
            EventStoreSpanExporter(store), max_queue_size=n + 1, max_export_batch_size=512))
        started = time.perf_counter()
        cpu = time.process_time()
        ours = await asyncio.to_thread(end_spans, provider, n)
        await asyncio.to_thread(provider.force_flush, 600_000)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        recorded = await store.count_events(type="llm_call")
        await asyncio.to_thread(provider.shutdown)
    print(f"{url}: {recorded} of {n} spans recorded in {elapsed:.2f} s = "
          f"{recorded / elapsed:,.0f} spans/s; process CPU {cpu / n * 1e6:,.0f} us a span "
          f"({n / cpu:,.0f} spans per CPU second: the figure a shared machine moves least)")
    p50 = statistics.median(ours)
    p99 = sorted(ours)[int(0.99 * (len(ours) - 1))]
    base50 = statistics.median(baseline)
    print(f"app thread per span: p50 {p50:.1f} us, p99 {p99:.1f} us; the SDK alone "
          f"(null exporter) p50 {base50:.1f} us; added by eventstore p50 "
          f"{p50 - base50:+.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=5_000)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'otel.db'}"
        asyncio.run(run(url, args.spans))


if __name__ == "__main__":
    main()
