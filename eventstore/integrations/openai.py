"""Record the calls an OpenAI client makes: chat completions and the Responses API.

    client = instrument_openai(OpenAI(), store, conversation_id="c1", user_id="u1")
    client.chat.completions.create(model="gpt-4o", messages=[...])   # recorded

Every path that reaches `/chat/completions` or `/responses` is recorded: `create` (plain
and `stream=True`), `.parse()`, `.stream()`, `with_raw_response`,
`with_streaming_response` (when its body is read with `.parse()`), copies made with
`with_options()` / `copy()`, the async client and the beta namespace. Each call goes
through `record_llm_call`: the whole request (messages stored once per conversation),
the whole response, usage, cost, latency, time to first token, attempts and errors.

Legacy `/completions` calls are refused with a warning naming the path.

Streamed chat completions carry usage only with `stream_options={"include_usage":
True}`; this integration does not add it (the extra final chunk with empty `choices`
breaks the common `chunk.choices[0]` loop), so without it the call is recorded unpriced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._recording import Binding
from ._stainless import Sdk, bind, install

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI

    from ..store import EventStore

__all__ = ["instrument_openai"]

ClientT = TypeVar("ClientT", bound="OpenAI | AsyncOpenAI")


def _flavor(method: str, path: str) -> str | None:
    if method != "post":
        return None
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/responses"):
        return "responses"
    return None


def _refused(method: str, path: str) -> str | None:
    if method == "post" and path.endswith("/completions") and "/chat/" not in path:
        return "the legacy completions API is not recorded; use chat completions"
    return None


def _sdk() -> Sdk:
    import openai

    return Sdk(name="openai", module=openai, flavor_of=_flavor, refused=_refused,
               client_classes=(openai.OpenAI, openai.AsyncOpenAI))


def instrument_openai(
    client: ClientT,
    store: EventStore,
    conversation_id: str | None = None,
    user_id: str | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    record_messages: bool = True,
    record_timeout: float = 5.0,
    enforce_budgets: bool = False,
) -> ClientT:
    """Record every model call of `client` (an `openai.OpenAI`, `AsyncOpenAI` or an Azure
    client) in `store`; returns the client. Azure clients record provider
    "azure.ai.openai", others "openai".

    `conversation_id` / `user_id` attribute every call; when None, those of the enclosing
    `store.conversation(...)` block apply. `metadata` is added to every event.
    `record_messages=False` records parameters, usage, cost, timings and errors, never a
    message or the content of a reply. `record_timeout` bounds how long a sync call waits
    for its events to be written. `enforce_budgets=True` refuses a call with
    BudgetExceededError, before it is sent, when a budget of the store that it falls under
    is exhausted (the refusal is recorded as a `budget_refused` event). Instrumenting
    again replaces the binding.
    """
    from openai import AsyncAzureOpenAI, AzureOpenAI

    install(_sdk())
    azure = isinstance(client, AzureOpenAI | AsyncAzureOpenAI)
    bind(client, Binding(
        store=store, provider="azure.ai.openai" if azure else "openai",
        conversation_id=conversation_id, user_id=user_id,
        metadata=dict(metadata or {}), record_messages=record_messages,
        record_timeout=record_timeout, enforce_budgets=enforce_budgets,
    ))
    return client
