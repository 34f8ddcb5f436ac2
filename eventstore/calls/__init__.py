"""Model calls: recorded whole, priced exactly, read back exactly.

`record_llm_call(store, ...)` records one call (the store's `record_llm_call` method
delegates here, and so does every integration); `read_calls(store, ...)` gives the calls
back with the exact request of each; `compute_metrics(store, ...)` answers the "cost,
tokens and latency of model X last week" question. `streams` turns a provider's stream
events into the response body the stream stands for.
"""

from .metrics import Metrics, compute_metrics, nearest_rank
from .reader import LLMCall, read_calls, request_of
from .record import LLM_CALL, record_llm_call, to_json

__all__ = [
    "LLM_CALL",
    "LLMCall",
    "Metrics",
    "compute_metrics",
    "nearest_rank",
    "read_calls",
    "record_llm_call",
    "request_of",
    "to_json",
]
