"""OpenTelemetry GenAI in and out (the `otel` extra).

In: `EventStoreSpanExporter(store)` records every finished span that carries the GenAI
semantic conventions as a model call, priced like the SDK integrations' calls; the OTLP
receiver (`otlp_app`, mounted by `eventstore serve` at POST /v1/traces) does the same for
spans sent by other processes and languages. Out: `instrument_store(store)` makes a span
of every store operation.
"""

from .exporter import EventStoreSpanExporter, SpanRecorder
from .operations import StoreInstrumentation, instrument_store
from .otlp import otlp_app, otlp_receiver, spans_from_otlp

__all__ = ["EventStoreSpanExporter", "SpanRecorder", "StoreInstrumentation",
           "instrument_store", "otlp_app", "otlp_receiver", "spans_from_otlp"]
