"""A log that proves it was not altered: an RFC 9162 Merkle tree over the events,
inclusion and consistency proofs, and checkpoints as C2SP signed notes.

- `merkle`: RFC 9162 section 2.1 hashing, proofs and their verification, and the
  stored-node model backends keep the tree in (`frontier`, `extend`, `*_keys`, `*_from`).
- `leaf`: the canonical bytes of one stored event.
- `note`: C2SP signed notes and tlog checkpoints with Ed25519 (Go's `sumdb/note` format).
- `keys`: loading the signing key (raw, PEM, or `EVENTSTORE_SIGNING_KEY`).
- `service`: the `TreeStore` protocol a backend implements and the `Integrity` service a
  store delegates `tree_head`, `prove`, `prove_consistency`, `checkpoint` and `verify` to.
"""

from __future__ import annotations

from eventstore.integrity.errors import (
    IntegrityError,
    MalformedNoteError,
    NoteVerificationError,
    ProofRequestError,
    SigningKeyError,
)
from eventstore.integrity.keys import SIGNING_KEY_ENV, load_signing_key
from eventstore.integrity.leaf import StoredLeaf, encode_leaf, leaf_bytes, to_micros
from eventstore.integrity.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeKey,
    consistency_from,
    consistency_keys,
    extend,
    frontier,
    inclusion_from,
    inclusion_keys,
    leaf_hash,
    node_hash,
    root_from,
    root_keys,
    verify_consistency,
    verify_inclusion,
)
from eventstore.integrity.note import (
    Checkpoint,
    format_checkpoint,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from eventstore.integrity.service import Integrity, TreeStore
from eventstore.integrity.types import (
    ConsistencyProof,
    InclusionProof,
    TreeHead,
    VerifyReport,
    from_json,
    to_json,
)

__all__ = [
    "EMPTY_ROOT",
    "SIGNING_KEY_ENV",
    "Checkpoint",
    "CompactRange",
    "ConsistencyProof",
    "InclusionProof",
    "Integrity",
    "IntegrityError",
    "MalformedNoteError",
    "NodeKey",
    "NoteVerificationError",
    "ProofRequestError",
    "SigningKeyError",
    "StoredLeaf",
    "TreeHead",
    "TreeStore",
    "VerifyReport",
    "consistency_from",
    "consistency_keys",
    "encode_leaf",
    "extend",
    "format_checkpoint",
    "from_json",
    "frontier",
    "inclusion_from",
    "inclusion_keys",
    "leaf_bytes",
    "leaf_hash",
    "load_signing_key",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "parse_verifier_key",
    "root_from",
    "root_keys",
    "sign_note",
    "to_json",
    "to_micros",
    "verifier_key",
    "verify_consistency",
    "verify_inclusion",
]
