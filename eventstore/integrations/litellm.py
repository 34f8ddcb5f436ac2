"""Record every call LiteLLM makes, whatever the provider, through its callbacks.

    import litellm
    from eventstore.integrations.litellm import EventStoreLogger

    litellm.callbacks = [EventStoreLogger(store)]
    with store.conversation("c1", user_id="u1"):
        litellm.completion(model="anthropic/claude-sonnet-4-5", messages=[...])

Sync and async calls, streams included (LiteLLM reports a stream once, assembled, when it
ends), successes and failures, go through `record_llm_call`. LiteLLM hands every
provider's answer over in the OpenAI chat shape, so the call is recorded as a chat call:
`messages` and the parameters LiteLLM sent (`optional_params`), the response as LiteLLM
returned it, usage priced by genai-prices for the provider LiteLLM used (its
`custom_llm_provider`, mapped to the OpenTelemetry provider names), latency and, for
streams, time to first token.

Attribution: the logger's own ids, else `metadata={"conversation_id": ..., "user_id":
...}` passed to the LiteLLM call, else the `store.conversation(...)` scope the call ran in
(LiteLLM runs sync callbacks on a worker thread, so pass the ids in metadata there).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from litellm.integrations.custom_logger import CustomLogger

from ..calls import to_json
from ..scope import current_attribution
from ._recording import Binding, Call, record_async, record_sync, stats

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["EventStoreLogger"]

# LiteLLM's provider names -> OpenTelemetry's gen_ai.provider.name (what pricing reads).
_PROVIDERS: Final = {"gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai",
                     "vertex_ai_beta": "gcp.vertex_ai", "bedrock": "aws.bedrock",
                     "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference",
                     "mistral": "mistral_ai", "xai": "x_ai"}
_SEEN: Final = 10_000
_CLIENT_OPTIONS: Final = frozenset({"max_retries", "timeout", "api_base", "api_key"})


def _utc(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    # LiteLLM stamps naive local times.
    return moment.astimezone(UTC)


class EventStoreLogger(CustomLogger):
    """A LiteLLM callback that records every call in `store` (add it to
    `litellm.callbacks`). The options are those of `instrument_openai`."""

    def __init__(self, store: EventStore, conversation_id: str | None = None,
                 user_id: str | None = None, *, metadata: Mapping[str, Any] | None = None,
                 record_messages: bool = True, record_timeout: float = 5.0) -> None:
        super().__init__()
        self._store = store
        self._ids = (conversation_id, user_id)
        self._metadata = dict(metadata or {})
        self._record_messages = record_messages
        self._record_timeout = record_timeout
        # A call LiteLLM reports twice (sync and async handlers) is recorded once.
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def _first_time(self, kwargs: Mapping[str, Any]) -> bool:
        call_id = kwargs.get("litellm_call_id")
        if not isinstance(call_id, str):
            return True
        with self._lock:
            if call_id in self._seen:
                return False
            self._seen[call_id] = None
            if len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
        return True

    def _call(self, kwargs: Mapping[str, Any], response: Any, start: Any, end: Any,
              error: BaseException | None) -> Call | None:
        if not self._first_time(kwargs):
            return None
        stats.add("calls")
        provider = str(kwargs.get("custom_llm_provider") or "openai")
        # optional_params is what LiteLLM sent besides model and messages, plus a few of
        # its client options (retries) that never reach the wire; extra_body is merged in.
        sent = dict(kwargs.get("optional_params") or {})
        extra = sent.pop("extra_body", None)
        params = {k: v for k, v in sent.items() if k not in _CLIENT_OPTIONS}
        if isinstance(extra, Mapping):
            params.update(extra)
        request = {"model": kwargs.get("model"), "messages": kwargs.get("messages") or [],
                   **params}
        given = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        scope = current_attribution()
        conversation_id = self._ids[0] or given.get("conversation_id") or scope.conversation_id
        user_id = self._ids[1] or given.get("user_id") or kwargs.get("user") or scope.user_id
        binding = Binding(store=self._store, provider=_PROVIDERS.get(provider, provider),
                          conversation_id=None, user_id=None, metadata=self._metadata,
                          record_messages=self._record_messages,
                          record_timeout=self._record_timeout)
        started, ended = _utc(start), _utc(end)
        streamed = kwargs.get("complete_streaming_response")
        call = Call(
            binding=binding, flavor="chat", path="litellm", request=to_json(request),
            conversation_id=conversation_id if isinstance(conversation_id, str) else None,
            user_id=user_id if isinstance(user_id, str) else None,
            metadata={**scope.metadata, **self._metadata, "litellm.provider": provider},
            stream=bool(kwargs.get("stream")),
        )
        if started is not None:
            call.started_at = started
        call.end(streamed if streamed is not None else response, error)
        if started is not None and ended is not None:
            call.latency_ms = (ended - started).total_seconds() * 1000
            first = _utc(kwargs.get("completion_start_time"))
            if call.stream and first is not None:
                call.first_token_ms = max((first - started).total_seconds() * 1000, 0.0)
        return call

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                          end_time: Any) -> None:
        call = self._call(kwargs, response_obj, start_time, end_time, None)
        if call is not None:
            record_sync(call)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        call = self._call(kwargs, response_obj, start_time, end_time, None)
        if call is not None:
            await record_async(call)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                          end_time: Any) -> None:
        error = kwargs.get("exception")
        call = self._call(kwargs, None, start_time, end_time,
                          error if isinstance(error, BaseException) else None)
        if call is not None:
            record_sync(call)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        error = kwargs.get("exception")
        call = self._call(kwargs, None, start_time, end_time,
                          error if isinstance(error, BaseException) else None)
        if call is not None:
            await record_async(call)
