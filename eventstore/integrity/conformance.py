"""The tree's conformance case: what every backend's `TreeStore` must satisfy, written
once so each backend's tests (and a third party's) run the same checks.

    await check_tree(store)   # an open, empty store on the backend under test

It appends groups of several sizes (crossing the stored levels of
`eventstore.integrity.layout`) and single events at once, then checks, against the
RFC 9162 definitions computed from the backend's own `stored_leaves`: the head, every
inclusion proof, consistency proofs between sizes, and that `verify()` is clean.
Raises AssertionError naming the first thing that is wrong.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from eventstore.events import Event
from eventstore.integrity.leaf import encode_leaf
from eventstore.integrity.merkle import leaf_hash, mth, verify_consistency
from eventstore.integrity.service import TreeStore

if TYPE_CHECKING:
    from eventstore.store import EventStore

__all__ = ["check_tree"]

GROUPS = (1, 3, 16, 1, 17, 40, 2, 31)


async def check_tree(store: EventStore) -> None:
    """Run the conformance case on an open, empty store (see the module docstring)."""
    backend = store.backend
    assert isinstance(backend, TreeStore), f"{type(backend).__name__} is not a TreeStore"
    assert await backend.tree_size() == 0, "check_tree needs an empty log"
    n = 0
    for size in GROUPS:
        await store.append_many([Event(type="conformance", data={"i": n + i})
                                 for i in range(size)])
        n += size
    await asyncio.gather(*(store.append(Event(type="conformance", data={"single": i}))
                           for i in range(9)))
    n += 9
    leaves = await backend.stored_leaves(1, n + 1)
    assert [leaf.seq for leaf in leaves] == list(range(1, n + 1)), "stored_leaves: not 1..n"
    hashes = [leaf_hash(encode_leaf(leaf)) for leaf in leaves]
    assert await backend.tree_size() == n, "tree_size is not the number of events"
    stored = await backend.tree_nodes([(0, i) for i in range(n)])
    assert [stored.get((0, i)) for i in range(n)] == hashes, \
        "stored leaf hashes differ from those of the stored events"
    head = await store.tree_head()
    assert (head.size, head.root) == (n, mth(hashes)), "the head is not MTH of the leaves"
    for seq in range(1, n + 1):
        assert (await store.prove(seq)).verify(head.root), f"inclusion proof of seq {seq}"
    sizes = [0, 1, 2, 3, 15, 16, 17, 20, 32, 33, 64, 100, n]
    for old in sizes:
        for new in (s for s in sizes if s >= old):
            proof = await store.prove_consistency(old, new)
            assert verify_consistency(old, new, mth(hashes[:old]), mth(hashes[:new]),
                                      proof.hashes), f"consistency proof {old} -> {new}"
    report = await store.verify()
    assert report.ok and report.size == n, f"verify: {report.problems}"
