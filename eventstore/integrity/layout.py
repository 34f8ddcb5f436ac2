"""How the database backends store the tree: which nodes are rows, which are recomputed.

Every level of the stored-node model (see `merkle`) as rows would cost about two rows per
appended event, which on SQLite is a quarter of an append. So a backend stores:

- level 0, the leaf hashes, in the event's own row (one more column, no extra row);
- levels `STORED_FROM` and up in a node table: about one row per 2**(STORED_FROM-1)
  events;
- nothing of levels 1 .. STORED_FROM-1: such a node covers at most 2**(STORED_FROM-1)
  leaves, and is folded from their stored leaf hashes when read.

A read of any node set is thus still O(1) queries and O(log n) rows plus at most
2**(STORED_FROM-1) leaf hashes per recomputed node. `leaf_ranges` and `table_keys` say
what to fetch for some keys; `assemble` answers the keys from what was fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from eventstore.integrity.merkle import NodeKey

__all__ = ["STORED_FROM", "assemble", "leaf_ranges", "table_keys"]

STORED_FROM = 4
"""The lowest interior level stored as rows; levels 1..3 are folded from leaf hashes."""

_sha256 = hashlib.sha256


def leaf_ranges(keys: Sequence[NodeKey]) -> list[tuple[int, int]]:
    """The leaf index ranges `[lo, hi)` whose leaf hashes `keys` need, merged and sorted
    (verification asks for thousands of consecutive leaves: one range)."""
    spans = sorted(
        (index << level, (index + 1) << level) for level, index in keys if level < STORED_FROM
    )
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def table_keys(keys: Sequence[NodeKey]) -> list[NodeKey]:
    """The keys stored as rows of the node table."""
    return [key for key in keys if key[0] >= STORED_FROM]


def assemble(
    keys: Sequence[NodeKey],
    leaves: Mapping[int, bytes],
    table: Mapping[NodeKey, bytes],
) -> dict[NodeKey, bytes]:
    """The hashes of `keys` from the fetched leaf hashes (by leaf index) and table rows;
    a key whose leaves or row are not all stored is left out, as `TreeStore` says."""
    out: dict[NodeKey, bytes] = {}
    sha = _sha256
    for key in keys:
        level, index = key
        if level == 0:
            h = leaves.get(index)
            if h is not None:
                out[key] = h
        elif level < STORED_FROM:
            lo = index << level
            row = [leaves.get(i) for i in range(lo, lo + (1 << level))]
            if any(h is None for h in row):
                continue
            hashes: list[bytes] = row  # type: ignore[assignment]
            while len(hashes) > 1:
                hashes = [sha(b"\x01" + a + b).digest()
                          for a, b in zip(hashes[0::2], hashes[1::2], strict=True)]
            out[key] = hashes[0]
        else:
            h = table.get(key)
            if h is not None:
                out[key] = h
    return out
