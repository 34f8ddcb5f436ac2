"""The values the integrity API returns: tree heads, proofs and verification reports.

All are frozen msgspec Structs. `to_json` / `from_json` encode them with msgspec, where
every `bytes` field (roots, hashes) is a string in standard base64 with padding
(RFC 4648 section 4): the same encoding the checkpoint's root line uses, so a root can be
compared by eye between `eventstore prove` output and a checkpoint.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from eventstore.integrity.merkle import verify_consistency, verify_inclusion

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "TreeHead",
    "VerifyReport",
    "from_json",
    "to_json",
]


class TreeHead(msgspec.Struct, frozen=True):
    """The log's tree at one size: `size` leaves (seqs 1..size) and their Merkle root."""

    size: int
    root: bytes


class InclusionProof(msgspec.Struct, frozen=True):
    """Proof that the event `seq` (leaf `index` = seq - 1, leaf hash `leaf_hash`) is in the
    tree of `tree_size` leaves: the RFC 9162 inclusion path `hashes`, leaf end first."""

    seq: int
    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]

    def verify(self, root: bytes) -> bool:
        """Whether this proof verifies against `root`, the root of a tree of
        `tree_size` leaves (RFC 9162 2.1.3.2); False, never an exception, when not."""
        return self.index == self.seq - 1 and verify_inclusion(
            self.leaf_hash, self.index, self.tree_size, self.hashes, root
        )


class ConsistencyProof(msgspec.Struct, frozen=True):
    """Proof that the tree of `new_size` leaves extends the tree of `old_size` leaves
    (RFC 9162 2.1.4): nothing in the first `old_size` leaves changed."""

    old_size: int
    new_size: int
    hashes: list[bytes]

    def verify(self, old_root: bytes, new_root: bytes) -> bool:
        """Whether this proof verifies between the two roots (RFC 9162 2.1.4.2)."""
        return verify_consistency(
            self.old_size, self.new_size, old_root, new_root, self.hashes
        )


class VerifyReport(msgspec.Struct, frozen=True):
    """What `verify()` found.

    `size` and `root` are those recomputed from the stored events (up to the first
    fault). `first_bad_seq` is the first seq that is edited, missing, reordered or extra
    (None when `ok`, or when the fault cannot be pinned on one event, e.g. a log
    rewritten consistently that no longer matches an earlier checkpoint). `problems`
    says, in words a person can act on, what is wrong.
    """

    ok: bool
    size: int
    root: bytes
    first_bad_seq: int | None
    problems: list[str]


_T = TypeVar("_T")


def to_json(value: TreeHead | InclusionProof | ConsistencyProof | VerifyReport) -> bytes:
    """JSON of a head, proof or report; `bytes` fields as standard padded base64."""
    return msgspec.json.encode(value)


def from_json(data: bytes | str, kind: type[_T]) -> _T:
    """Decode what `to_json` produced back into `kind` (e.g. `InclusionProof`)."""
    return msgspec.json.decode(data, type=kind)
