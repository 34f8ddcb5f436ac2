"""eventstore: an asyncio, append-only event store for auditing AI applications."""

from .errors import (
    BackendError,
    DuplicateEventError,
    EventStoreError,
    InvalidCursorError,
    InvalidEventError,
    InvalidQueryError,
    RedactionError,
    SchemaVersionError,
    StoreClosedError,
    SubscriptionError,
    UnknownModelError,
    UnsupportedURLError,
)
from . import signals
from .events import Event, RecordedEvent
from .store import EventStore, Page

__all__ = [
    "BackendError",
    "DuplicateEventError",
    "Event",
    "EventStore",
    "EventStoreError",
    "InvalidCursorError",
    "InvalidEventError",
    "InvalidQueryError",
    "Page",
    "RecordedEvent",
    "RedactionError",
    "SchemaVersionError",
    "StoreClosedError",
    "SubscriptionError",
    "UnknownModelError",
    "UnsupportedURLError",
    "signals",
]
