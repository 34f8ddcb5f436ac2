"""The errors of the integrity layer.

They live here rather than in `eventstore.errors` for now; every one subclasses
`eventstore.errors.EventStoreError`, so `except EventStoreError` still catches them.
"""

from __future__ import annotations

from eventstore.errors import EventStoreError


class IntegrityError(EventStoreError):
    """Base class of the errors of `eventstore.integrity` (trees, proofs, notes, keys)."""


class ProofRequestError(IntegrityError, ValueError):
    """A proof was asked for a seq or tree size the log does not have."""


class SigningKeyError(IntegrityError, ValueError):
    """A signing key could not be loaded: it is not an unencrypted Ed25519 private key."""


class MalformedNoteError(IntegrityError, ValueError):
    """A signed note, checkpoint or verifier key is not in its C2SP format."""


class NoteVerificationError(IntegrityError):
    """A note is well formed but no trusted key signed it, or a trusted key's signature
    does not verify (the note may have been altered: do not trust its text)."""
