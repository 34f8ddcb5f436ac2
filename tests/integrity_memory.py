"""A pure in-memory `TreeStore` for the integrity tests: a list of stored events and a
dict of tree nodes, written the way a backend writes them (frontier + extend per
commit). Tests tamper with `events` and `nodes` directly, as an attacker with write
access to the database would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eventstore.integrity.leaf import StoredLeaf, encode_leaf
from eventstore.integrity.merkle import NodeKey, extend, frontier, leaf_hash


class MemoryTreeStore:
    def __init__(self) -> None:
        self.events: list[StoredLeaf] = []
        self.nodes: dict[NodeKey, bytes] = {}
        self.size = 0
        self.node_fetches = 0

    def commit(self, leaves: Sequence[StoredLeaf]) -> None:
        """One commit: the events and every node they complete, together."""
        hashes = [leaf_hash(encode_leaf(leaf)) for leaf in leaves]
        frontier_hashes = [self.nodes[key] for key in frontier(self.size)]
        for level, index, h in extend(self.size, frontier_hashes, hashes):
            assert (level, index) not in self.nodes, "a stored node is never rewritten"
            self.nodes[(level, index)] = h
        self.events.extend(leaves)
        self.size += len(leaves)

    def rebuild(self) -> None:
        """What an attacker who rewrites the whole database does after editing events:
        recompute every leaf and node from the events as they now are."""
        events, self.events, self.nodes, self.size = self.events, [], {}, 0
        self.commit(events)

    async def tree_size(self) -> int:
        return self.size

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        self.node_fetches += 1
        return {key: self.nodes[key] for key in keys if key in self.nodes}

    async def stored_leaves(self, from_seq: int, limit: int) -> Sequence[StoredLeaf]:
        rows = sorted((e for e in self.events if e.seq >= from_seq), key=lambda e: e.seq)
        return rows[:limit]


def make_leaf(seq: int, *, data: str = "hi", user_id: str | None = "u1") -> StoredLeaf:
    return StoredLeaf(
        seq=seq,
        id=f"0190f0a2-7c1e-7b3a-9d2f-{seq:012x}",
        type="message_sent",
        conversation_id="c1",
        user_id=user_id,
        occurred_at=1_764_000_000_000_000 + seq,
        recorded_at=1_764_000_000_000_500 + seq,
        document=b'{"role":"user","content":"' + data.encode() + b'"}',
    )
