"""Record the calls an Anthropic client makes to the Messages API.

    client = instrument_anthropic(Anthropic(), store, conversation_id="c1")

Every path that reaches `/v1/messages` is recorded: `messages.create` (plain and
`stream=True`), the `messages.stream()` helper, `.parse()`, `with_raw_response`,
`with_streaming_response` (read with `.parse()`), `with_options()` copies, the async
client and `beta.messages` (same shapes). Usage comes from genai-prices' reader of the
Messages body (cache reads, 5-minute and 1-hour cache writes, server-tool requests), and
a stream cut after message_start still records the input usage it reported.

Message batches (`/v1/messages/batches`) are refused with a warning: their results are
priced per request when read, which this integration does not do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._recording import Binding
from ._stainless import Sdk, bind, install

if TYPE_CHECKING:
    from anthropic import Anthropic, AsyncAnthropic

    from ..store import EventStore

__all__ = ["instrument_anthropic"]

ClientT = TypeVar("ClientT", bound="Anthropic | AsyncAnthropic")


def _flavor(method: str, path: str) -> str | None:
    return "messages" if method == "post" and path.endswith("/v1/messages") else None


def _refused(method: str, path: str) -> str | None:
    if method == "post" and path.endswith("/v1/messages/batches"):
        return "batch results are not recorded as calls"
    return None


def _sdk() -> Sdk:
    import anthropic

    return Sdk(name="anthropic", module=anthropic, flavor_of=_flavor, refused=_refused,
               client_classes=(anthropic.Anthropic, anthropic.AsyncAnthropic))


def instrument_anthropic(
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
    """Record every Messages call of `client` (an `anthropic.Anthropic` or
    `AsyncAnthropic`) in `store`; returns the client. The options are those of
    `instrument_openai`."""
    install(_sdk())
    bind(client, Binding(
        store=store, provider="anthropic", conversation_id=conversation_id,
        user_id=user_id, metadata=dict(metadata or {}), record_messages=record_messages,
        record_timeout=record_timeout, enforce_budgets=enforce_budgets,
    ))
    return client
