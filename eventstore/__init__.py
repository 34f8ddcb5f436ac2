"""eventstore: an asyncio, append-only event store for auditing AI applications."""

from . import signals
from .encryption import Encryption
from .errors import (
    BackendError,
    DuplicateEventError,
    EncryptionError,
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
from .events import Event, RecordedEvent
from .pricing import ModelPrice, PriceTable, PricingProvider
from .redaction import PIIRedactor
from .store import EventStore, Page
from .subscriptions import Subscription

__all__ = [
    "BackendError",
    "DuplicateEventError",
    "Encryption",
    "EncryptionError",
    "Event",
    "EventStore",
    "EventStoreError",
    "InvalidCursorError",
    "InvalidEventError",
    "InvalidQueryError",
    "ModelPrice",
    "PIIRedactor",
    "Page",
    "PriceTable",
    "PricingProvider",
    "RecordedEvent",
    "RedactionError",
    "SchemaVersionError",
    "StoreClosedError",
    "Subscription",
    "SubscriptionError",
    "UnknownModelError",
    "UnsupportedURLError",
    "signals",
]
