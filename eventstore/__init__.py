"""eventstore: an asyncio, append-only event store for auditing AI applications.

    async with EventStore.open("sqlite:///audit.db") as store:
        await store.append(Event(type="message_sent", conversation_id="c1", data={...}))

The public names are the ones in `__all__`; submodules `eventstore.signals`,
`eventstore.projections`, `eventstore.integrations`, `eventstore.redaction` and
`eventstore.encryption` are public too.
"""

import logging
from importlib.metadata import PackageNotFoundError, version

from . import signals
from .budgets import Budget, BudgetStatus
from .errors import (
    BackendError,
    BudgetExceededError,
    CatchUpTimeoutError,
    CorruptEventError,
    DuplicateEventError,
    EncryptionError,
    EventStoreError,
    HandlerTimeoutError,
    InvalidCursorError,
    InvalidEventError,
    InvalidOptionError,
    InvalidPriceError,
    InvalidQueryError,
    InvalidUsageError,
    MissingDependencyError,
    RedactionError,
    RedactorConfigError,
    RetentionError,
    SchemaVersionError,
    SnapshotError,
    StoreClosedError,
    SubscriptionError,
    UnknownModelError,
    UnsupportedURLError,
)
from .events import Event, RecordedEvent
from .pricing import ModelPrice, PriceTable, PricingProvider
from .privacy import Encryption, PIIRedactor, Retention
from .store import EventStore, Page
from .subscriptions import Subscription

try:
    __version__ = version("eventstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# A library logs, the application decides where it goes (no "No handlers" warning).
logging.getLogger("eventstore").addHandler(logging.NullHandler())

__all__ = [
    "BackendError",
    "Budget",
    "BudgetExceededError",
    "BudgetStatus",
    "CatchUpTimeoutError",
    "CorruptEventError",
    "DuplicateEventError",
    "Encryption",
    "EncryptionError",
    "Event",
    "EventStore",
    "EventStoreError",
    "HandlerTimeoutError",
    "InvalidCursorError",
    "InvalidEventError",
    "InvalidOptionError",
    "InvalidPriceError",
    "InvalidQueryError",
    "InvalidUsageError",
    "MissingDependencyError",
    "ModelPrice",
    "PIIRedactor",
    "Page",
    "PriceTable",
    "PricingProvider",
    "RecordedEvent",
    "RedactionError",
    "RedactorConfigError",
    "Retention",
    "RetentionError",
    "SchemaVersionError",
    "SnapshotError",
    "StoreClosedError",
    "Subscription",
    "SubscriptionError",
    "UnknownModelError",
    "UnsupportedURLError",
    "__version__",
    "signals",
]
