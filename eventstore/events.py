"""Events as they are appended (Event) and as they are stored (RecordedEvent).

Also the payload structs of the built-in event types: appending a built-in type checks
its `data` against them, so a malformed message or cost record is refused before it is
written, while extra keys stay allowed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec
import uuid_utils

from .clock import utcnow


def new_event_id() -> str:
    """A new time-ordered UUIDv7 (keeps the unique id index append-only)."""
    return str(uuid_utils.uuid7())


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened in an AI conversation, as the app appends it."""

    type: str
    data: dict[str, Any] = {}
    conversation_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = {}
    id: str = msgspec.field(default_factory=new_event_id)
    occurred_at: datetime = msgspec.field(default_factory=utcnow)


class RecordedEvent(Event, frozen=True, kw_only=True):
    """An event as the log holds it: its global position and commit time added."""

    seq: int
    recorded_at: datetime


# --- built-in payloads -------------------------------------------------------------------

CONVERSATION_CREATED: Final = "conversation_created"
MESSAGE_SENT: Final = "message_sent"
MEMORY_TRIMMED: Final = "memory_trimmed"
POLICY_VIOLATION: Final = "policy_violation"
COST_RECORDED: Final = "cost_recorded"
USER_FORGOTTEN: Final = "user_forgotten"


class ConversationCreated(msgspec.Struct, kw_only=True):
    title: str | None = None


class MessageSent(msgspec.Struct, kw_only=True):
    role: str
    content: str
    tokens: int | None = None


class MemoryTrimmed(msgspec.Struct, kw_only=True):
    strategy: str
    messages_before: int
    messages_after: int
    tokens_removed: int


class PolicyViolation(msgspec.Struct, kw_only=True):
    policy: str
    reason: str
    severity: str | None = None


class CostRecorded(msgspec.Struct, kw_only=True):
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    input_cost: str
    output_cost: str
    total_cost: str
    price_source: str
    latency_ms: float | None = None


BUILTIN_PAYLOADS: Final[dict[str, type[msgspec.Struct]]] = {
    CONVERSATION_CREATED: ConversationCreated,
    MESSAGE_SENT: MessageSent,
    MEMORY_TRIMMED: MemoryTrimmed,
    POLICY_VIOLATION: PolicyViolation,
    COST_RECORDED: CostRecorded,
}
BUILTIN_TYPES: Final = frozenset(BUILTIN_PAYLOADS)


def payload(event: Event) -> Any:
    """The typed payload of a built-in event (raises msgspec.ValidationError if malformed)."""
    return msgspec.convert(event.data, BUILTIN_PAYLOADS[event.type])
