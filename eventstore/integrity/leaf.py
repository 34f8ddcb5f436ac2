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

import struct
from datetime import UTC, datetime

import msgspec

__all__ = ["LEAF_VERSION", "StoredLeaf", "encode_leaf", "leaf_bytes", "to_micros"]

LEAF_VERSION = 1

_HEAD = struct.Struct(">BQI")  # version, seq, len(id)
_U32 = struct.Struct(">I")
_TAIL = struct.Struct(">qqI")  # occurred_at, recorded_at, len(document)
_NULL = b"\x00"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    (no float on the way)."""
    if t.tzinfo is None:
        raise ValueError(f"{t!r} has no timezone; eventstore stores times in UTC")
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _opt(value: str | None) -> bytes:
    if value is None:
        return _NULL
    raw = value.encode()
    return b"\x01" + _U32.pack(len(raw)) + raw


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
    raw_id = id.encode()
    raw_type = type.encode()
    return b"".join(
        (
            _HEAD.pack(LEAF_VERSION, seq, len(raw_id)),
            raw_id,
            _U32.pack(len(raw_type)),
            raw_type,
            _opt(conversation_id),
            _opt(user_id),
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
