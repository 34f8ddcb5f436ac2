"""The integrity tree's part of a commit, shared by every backend: the leaf hash of each
new row, computed once from exactly what the row stores (see eventstore.integrity.leaf),
and the memory backend's whole tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..clock import to_micros
from ..integrity.appender import TreeAppender
from ..integrity.layout import assemble, leaf_ranges
from ..integrity.leaf import StoredLeaf, hash_leaf
from ..integrity.merkle import NodeKey
from .base import NewRow


def leaf_columns(rows: Sequence[NewRow], recorded_micros: int) -> tuple[list[int], list[bytes]]:
    """The `occurred_at` (integer microseconds) and RFC 9162 leaf hash of each row, in
    order. Both are stored with the row: verify recomputes the hash from the stored
    columns and document, so it must be fed the very values inserted."""
    occurred = [to_micros(row.event.occurred_at) for row in rows]
    hashes = [
        hash_leaf(e.seq, e.id, e.type, e.conversation_id, e.user_id, when, recorded_micros,
                  row.document)
        for row, when in zip(rows, occurred, strict=True)
        for e in (row.event,)
    ]
    return occurred, hashes


EventRecord = tuple[int, str, str, str | None, str | None, int, bytes, bytes, int, bytes]
"""An events row in the databases' column order: seq, id, type, conversation_id, user_id,
recorded_at, digest, body, occurred_at, leaf_hash."""


def event_records(rows: Sequence[NewRow],
                  recorded_micros: int) -> tuple[list[EventRecord], list[bytes]]:
    """The rows to insert, with the `leaf_columns` they are stored with, and the leaf
    hashes in order for the tree."""
    occurred, hashes = leaf_columns(rows, recorded_micros)
    records: list[EventRecord] = [
        (e.seq, e.id, e.type, e.conversation_id, e.user_id, recorded_micros, row.digest,
         row.document, when, h)
        for row, when, h in zip(rows, occurred, hashes, strict=True)
        for e in (row.event,)
    ]
    return records, hashes


class MemoryTree:
    """The memory backend's tree: the stored leaves, their hashes and the node rows, laid
    out as the databases lay them out (see eventstore.integrity.layout), so one code path
    answers every backend's proofs."""

    def __init__(self) -> None:
        self.leaves: list[StoredLeaf] = []
        self.hashes: list[bytes] = []
        self.nodes: dict[NodeKey, bytes] = {}
        self.size = 0
        self._appender = TreeAppender()

    def grow(self, rows: Sequence[NewRow], recorded_micros: int) -> Callable[[], None]:
        """Compute what `rows` add; returns the step that stores it (the backend calls it
        with the events, so a failure before leaves the tree as it was)."""
        occurred, hashes = leaf_columns(rows, recorded_micros)
        size = self.size
        keys = self._appender.needs(size)
        growth = self._appender.grow(size, self._read(keys), hashes)

        def store() -> None:
            for row, when, h in zip(rows, occurred, hashes, strict=True):
                e = row.event
                self.leaves.append(StoredLeaf(e.seq, e.id, e.type, e.conversation_id,
                                              e.user_id, when, recorded_micros, row.document,
                                              leaf_hash=h))
            self.hashes.extend(hashes)
            self.nodes.update({(level, index): h for level, index, h in growth.nodes})
            self.size = growth.after.size
            self._appender.committed(growth)

        return store

    def _read(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        leaves = {i: self.hashes[i] for lo, hi in leaf_ranges(keys)
                  for i in range(lo, min(hi, len(self.hashes)))}
        return assemble(keys, leaves, self.nodes)

    async def tree_size(self) -> int:
        return self.size

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        return self._read(keys)

    async def stored_leaves(self, from_seq: int, limit: int) -> Sequence[StoredLeaf]:
        start = max(from_seq - 1, 0)
        return self.leaves[start:start + limit]
