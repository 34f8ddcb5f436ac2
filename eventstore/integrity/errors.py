"""The errors of the integrity layer, re-exported from `eventstore.errors` (where every
eventstore error lives) so `from eventstore.integrity.errors import ...` keeps working."""

from __future__ import annotations

from eventstore.errors import (
    IntegrityError,
    MalformedNoteError,
    NoteVerificationError,
    ProofRequestError,
    SigningKeyError,
)

__all__ = [
    "IntegrityError",
    "MalformedNoteError",
    "NoteVerificationError",
    "ProofRequestError",
    "SigningKeyError",
]
