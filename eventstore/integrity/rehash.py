"""verify's side of the leaf encoding: the leaf hashes of a page of stored events at once,
from rows of their stored bytes.

verify hashes every event of the log, so its cost is Python's per-row overhead, not
SHA-256. A backend that can hand over plain rows (its cursor's own tuples, strings still
as the UTF-8 bytes it stores) lets verify skip building a `StoredLeaf` per event and
encoding its strings; a `LeafRow` is::

    (seq, id, type, conversation_id, user_id, occurred_at, recorded_at, document, leaf_hash)

with `id`, `type`, `conversation_id` and `user_id` as UTF-8 bytes (the last two may be
None), the times as integer microseconds, `document` as stored, and `leaf_hash` the hash
the backend keeps for the event (None when it keeps its leaves apart from the events).

`Rehasher` encodes exactly `leaf.leaf_bytes` (tests pin the two against each other); it
caches the middle of the encoding (type, conversation_id, user_id), which repeats from
event to event in real logs, and stops caching for a log where it does not.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

from eventstore.integrity.leaf import LEAF_VERSION, StoredLeaf

__all__ = ["LeafRow", "Rehasher", "leaf_row"]

LeafRow = tuple[int, bytes, bytes, bytes | None, bytes | None, int, int, bytes, bytes | None]

_HEAD = struct.Struct(">BBQI").pack  # 0x00 (RFC 9162's leaf prefix), version, seq, len(id)
_U32 = struct.Struct(">I").pack
_TAIL = struct.Struct(">qqI").pack  # occurred_at, recorded_at, len(document)
_CACHE_LIMIT = 65_536  # entries; a log of all-distinct conversations must not grow it


def leaf_row(leaf: StoredLeaf) -> LeafRow:
    """A `StoredLeaf` as a `LeafRow` (for backends that only give `StoredLeaf`s)."""
    conv, user = leaf.conversation_id, leaf.user_id
    return (leaf.seq, leaf.id.encode(), leaf.type.encode(),
            None if conv is None else conv.encode(), None if user is None else user.encode(),
            leaf.occurred_at, leaf.recorded_at, leaf.document, leaf.leaf_hash)


_Middle = tuple[bytes, bytes | None, bytes | None]


class _Middles(dict[_Middle, bytes]):
    """(type, conversation_id, user_id) -> their encoding, computed on first use."""

    def __missing__(self, key: _Middle) -> bytes:
        type_, conv, user = key
        out = _U32(len(type_)) + type_
        out += b"\x00" if conv is None else b"\x01" + _U32(len(conv)) + conv
        out += b"\x00" if user is None else b"\x01" + _U32(len(user)) + user
        self[key] = out
        return out


class Rehasher:
    """Leaf hashes of `LeafRow` pages, one verify run long (it keeps its cache)."""

    __slots__ = ("_cached", "_middles")

    def __init__(self) -> None:
        self._middles = _Middles()
        self._cached = True

    def hashes(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """`SHA-256(0x00 || leaf_bytes(row))` of each row, in order."""
        # One comprehension and no Python function call per row in the common case:
        # about half of what a call per row costs.
        sha, join, head, tail = hashlib.sha256, b"".join, _HEAD, _TAIL
        if not self._cached:
            u32 = _U32
            return [
                sha(join((head(0, LEAF_VERSION, seq, len(id_)), id_, u32(len(type_)), type_,
                          b"\x00" if conv is None else b"\x01" + u32(len(conv)) + conv,
                          b"\x00" if user is None else b"\x01" + u32(len(user)) + user,
                          tail(occurred, recorded, len(doc)), doc))).digest()
                for seq, id_, type_, conv, user, occurred, recorded, doc, _ in rows
            ]
        middles = self._middles
        before = len(middles)
        out = [
            sha(join((head(0, LEAF_VERSION, seq, len(id_)), id_, middles[type_, conv, user],
                      tail(occurred, recorded, len(doc)), doc))).digest()
            for seq, id_, type_, conv, user, occurred, recorded, doc, _ in rows
        ]
        if (len(middles) - before) * 2 > len(rows):
            self._cached = False  # mostly misses: encoding inline is cheaper
            middles.clear()
        elif len(middles) > _CACHE_LIMIT:
            middles.clear()
        return out
