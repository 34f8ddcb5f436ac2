"""The error hierarchy. Every error says what went wrong and what to do about it."""

from __future__ import annotations


class EventStoreError(Exception):
    """Base class of every error eventstore raises on purpose."""


class InvalidEventError(EventStoreError, ValueError):
    """An event is malformed: fix the event; nothing was written."""


class DuplicateEventError(EventStoreError):
    """An event id is already stored with different content (ids are idempotency keys)."""

    def __init__(self, event_id: str, message: str | None = None) -> None:
        self.event_id = event_id
        super().__init__(
            message
            or f"event id {event_id!r} is already stored with different content; an id is an "
            "idempotency key, so give a new event a new id (omit id= to get a fresh UUIDv7)"
        )


class InvalidQueryError(EventStoreError, ValueError):
    """A filter, limit or position passed to a read is not valid."""


class InvalidCursorError(InvalidQueryError):
    """A cursor is malformed, tampered with, from another store or used with other filters."""


class RedactionError(EventStoreError):
    """A redact hook raised or returned something other than an Event; nothing was written."""


class RedactorConfigError(EventStoreError, ValueError):
    """A redactor (PIIRedactor) was built with an unknown detector, action, field or region."""


class RetentionError(EventStoreError, ValueError):
    """A retention policy is not valid, or the store cannot apply one (no encryption)."""


class UnsupportedURLError(EventStoreError, ValueError):
    """The store URL names a scheme eventstore has no backend for."""


class StoreClosedError(EventStoreError, RuntimeError):
    """The store is not open (use `async with EventStore.open(url) as store:`)."""


class BackendError(EventStoreError):
    """The storage backend failed (disk, lock, connection); the operation did not complete."""


class CorruptEventError(BackendError):
    """A stored event cannot be decoded (a damaged or hand-edited row); `seq` names it.

    Nothing of the log is changed by reading it: restore the row from a backup, or stop
    reading before it. A subscription that meets one is marked failed with this seq
    rather than restarted in a loop.
    """

    def __init__(self, seq: int, detail: str) -> None:
        self.seq = seq
        super().__init__(
            f"the stored event at seq {seq} is corrupt and cannot be read ({detail}); the "
            "log was changed outside eventstore: restore that row from a backup "
            "(eventstore verify names the first bad seq)"
        )


class SchemaVersionError(BackendError):
    """The database was written by a newer eventstore whose schema this version cannot read."""


class SubscriptionError(EventStoreError):
    """A subscription could not be created or resumed."""


class HandlerTimeoutError(SubscriptionError, TimeoutError):
    """A subscription handler did not finish within its `handler_timeout`; the call was
    cancelled and counts as a failed attempt."""


class CatchUpTimeoutError(SubscriptionError, TimeoutError):
    """`Subscription.caught_up()` timed out before the subscription reached the head."""


class InvalidOptionError(EventStoreError, ValueError):
    """An option given to EventStore.open() or subscribe() is not valid."""


class UnknownModelError(EventStoreError, LookupError):
    """No price is known for a provider/model pair; nothing was recorded."""

    def __init__(self, provider: str, model: str, detail: str = "") -> None:
        self.provider = provider
        self.model = model
        hint = (
            f"no price is known for model {model!r} of provider {provider!r}; pass "
            "pricing=PriceTable({...}) with your own per-token prices, or check the spelling"
        )
        super().__init__(f"{hint} ({detail})" if detail else hint)


class InvalidCallError(EventStoreError, ValueError):
    """A model call passed to record_llm_call is malformed; nothing was recorded."""


class MissingMessageError(EventStoreError, LookupError):
    """A recorded call references a message or an earlier call the log does not hold
    among the events read (read the whole conversation to rebuild its calls)."""


class EncryptionError(EventStoreError):
    """Encrypted fields could not be encrypted or decrypted (wrong or missing master key)."""


class InvalidPriceError(EventStoreError, ValueError):
    """A price is not a finite, non-negative Decimal (or an int or decimal string)."""


class InvalidUsageError(EventStoreError, ValueError):
    """Token counts passed to compute_cost are not valid; nothing was computed."""


class SnapshotError(EventStoreError, ValueError):
    """A snapshot blob is corrupt or belongs to another projection or version: rebuild it."""


class MissingDependencyError(EventStoreError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class IntegrityError(EventStoreError):
    """Base class of the errors of `eventstore.integrity` (trees, proofs, notes, keys), and
    what a damaged tree raises: the log was changed outside eventstore; run verify."""


class ProofRequestError(IntegrityError, ValueError):
    """A proof was asked for a seq or tree size the log does not have."""


class SigningKeyError(IntegrityError, ValueError):
    """A signing key could not be loaded: it is not an unencrypted Ed25519 private key."""


class MalformedNoteError(IntegrityError, ValueError):
    """A signed note, checkpoint or verifier key is not in its C2SP format."""


class NoteVerificationError(IntegrityError):
    """A note is well formed but no trusted key signed it, or a trusted key's signature
    does not verify (the note may have been altered: do not trust its text)."""


class PromptNotFoundError(EventStoreError, LookupError):
    """No prompt of that name (or version, or no active version) is registered."""


class PromptConflictError(EventStoreError):
    """A prompt version is already registered with other content; versions never change,
    register a new version instead."""


class InvalidBudgetError(EventStoreError, ValueError):
    """A Budget definition is not valid (limit, per, window, warn_at or name): fix it."""


class BudgetExceededError(EventStoreError):
    """A budget that applies to this call is exhausted: the call was refused (or
    check_budget() was asked). `statuses` holds the BudgetStatus of each exhausted budget."""

    def __init__(self, message: str, statuses: tuple[object, ...] = ()) -> None:
        self.statuses = statuses
        super().__init__(message)
