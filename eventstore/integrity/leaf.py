"""The canonical leaf bytes of one stored event.

A leaf commits to what is *stored*, not to what a reader decodes: the stored document
goes in byte for byte (ciphertext of encrypted fields included), so crypto-shredding a
user (dropping their key) or retention (dropping a key) never changes a leaf, while any
edit of a stored row does.

Encoding, version 1 (all integers big-endian, no padding, no separators)::

    u8      version               0x01
    u64     seq                   1-based position in the log
    str     id
    str     type
    optstr  conversation_id
    optstr  user_id
    i64     occurred_at           integer microseconds since 1970-01-01T00:00:00Z
    i64     recorded_at           integer microseconds since 1970-01-01T00:00:00Z
    bytes   document              the stored document, exactly as stored

    str     = u32 length || UTF-8 bytes
    bytes   = u32 length || bytes
    optstr  = 0x00                          (null)
            | 0x01 || u32 length || UTF-8   (a string, possibly empty)

Every variable-length field carries its length, so no two different events encode to
the same bytes, and null is distinct from the empty string. A new encoding gets a new
version byte; version 1 leaves stay readable forever.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from datetime import datetime

import msgspec

from eventstore.clock import to_micros as _clock_micros

__all__ = [
    "LEAF_VERSION",
    "StoredLeaf",
    "encode_leaf",
    "hash_leaves",
    "leaf_bytes",
    "to_micros",
]

LEAF_VERSION = 1

_HEAD = struct.Struct(">BQI")  # version, seq, len(id)
_U32 = struct.Struct(">I")
_TAIL = struct.Struct(">qqI")  # occurred_at, recorded_at, len(document)
_NULL = b"\x00"


class StoredLeaf(msgspec.Struct, frozen=True, array_like=True):
    """What a backend hands to verification for one stored event: the fields a leaf is
    computed from, as stored (times as integer microseconds since the epoch, UTC)."""

    seq: int
    id: str
    type: str
    conversation_id: str | None
    user_id: str | None
    occurred_at: int
    recorded_at: int
    document: bytes


def to_micros(t: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (UTC), exactly
    (no float on the way): the store's own `clock.to_micros`, refusing naive times,
    whose meaning a leaf must not guess."""
    if t.tzinfo is None:
        raise ValueError(f"{t!r} has no timezone; eventstore stores times in UTC")
    return _clock_micros(t)


def leaf_bytes(
    seq: int,
    id: str,
    type: str,
    conversation_id: str | None,
    user_id: str | None,
    occurred_at: int,
    recorded_at: int,
    document: bytes,
) -> bytes:
    """The version-1 leaf bytes of one stored event (see the module docstring)."""
    # Inlined rather than split into helpers: verify encodes every event of the log, and
    # each function call here costs a measurable share of its 200k events/s budget.
    raw_id = id.encode()
    raw_type = type.encode()
    pack32 = _U32.pack
    if conversation_id is None:
        conv = _NULL
    else:
        raw = conversation_id.encode()
        conv = b"\x01" + pack32(len(raw)) + raw
    if user_id is None:
        user = _NULL
    else:
        raw = user_id.encode()
        user = b"\x01" + pack32(len(raw)) + raw
    return b"".join(
        (
            _HEAD.pack(LEAF_VERSION, seq, len(raw_id)),
            raw_id,
            pack32(len(raw_type)),
            raw_type,
            conv,
            user,
            _TAIL.pack(occurred_at, recorded_at, len(document)),
            document,
        )
    )


def encode_leaf(leaf: StoredLeaf) -> bytes:
    """The leaf bytes of a `StoredLeaf`."""
    return leaf_bytes(
        leaf.seq,
        leaf.id,
        leaf.type,
        leaf.conversation_id,
        leaf.user_id,
        leaf.occurred_at,
        leaf.recorded_at,
        leaf.document,
    )


def hash_leaves(leaves: Iterable[StoredLeaf]) -> list[bytes]:
    """The RFC 9162 leaf hashes `SHA-256(0x00 || leaf bytes)` of stored events, in order:
    what a backend computes at commit and what verify recomputes."""
    sha = hashlib.sha256
    return [
        sha(
            b"\x00"
            + leaf_bytes(
                leaf.seq,
                leaf.id,
                leaf.type,
                leaf.conversation_id,
                leaf.user_id,
                leaf.occurred_at,
                leaf.recorded_at,
                leaf.document,
            )
        ).digest()
        for leaf in leaves
    ]
