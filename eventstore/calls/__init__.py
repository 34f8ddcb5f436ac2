"""Model calls: recorded whole, priced exactly, read back exactly.

`CallRecorder.record` is the store's `record_llm_call` (every integration goes through
it); `read_calls` is `store.calls()`: the calls with the exact request of each;
`compute_metrics` is `store.metrics()`, the "cost, tokens and latency of model X last
week" question. `streams` turns a provider's stream
events into the response body the stream stands for.
"""

from .metrics import Metrics, compute_metrics, nearest_rank
from .reader import LLMCall, read_calls, request_of
from .record import LLM_CALL, CallRecorder, to_json

__all__ = [
    "LLM_CALL",
    "CallRecorder",
    "LLMCall",
    "Metrics",
    "compute_metrics",
    "nearest_rank",
    "read_calls",
    "request_of",
    "to_json",
]
