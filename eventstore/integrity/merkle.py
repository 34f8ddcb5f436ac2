"""RFC 9162 section 2.1 Merkle trees: hashing, proofs, and a stored-node model.

Three layers, all pure and backend-independent:

1. The RFC's definitions, written as the RFC writes them: `leaf_hash`, `node_hash`,
   `EMPTY_ROOT`, `mth` (the Merkle Tree Hash of a list), `inclusion_path` (2.1.3.1),
   `consistency_proof` (2.1.4.1), and the two verification algorithms `verify_inclusion`
   (2.1.3.2) and `verify_consistency` (2.1.4.2). The verifiers return a bool and never
   raise on bad input: a malformed proof simply does not verify.

2. The stored-node model. A backend stores the hash of every *complete* aligned subtree,
   keyed by `(level, index)`: node `(l, i)` is the root of the leaves
   `[i * 2**l, (i + 1) * 2**l)`, so level 0 holds the leaf hashes. Invariants:

   - a node is written once, when its last leaf is appended, and never changes after
     (appending only ever adds nodes to the right), so a reader needs no lock: any
     tree size up to the committed one can be answered from the nodes present;
   - for a tree of `n` leaves exactly the nodes `(l, i)` with `(i + 1) * 2**l <= n`
     exist: about `2n` in all, i.e. amortised two inserts per appended leaf;
   - every root and every proof element is either a stored node or the hash of a
     right-edge range `[a, b)` that splits into O(log n) stored nodes (the binary digits
     of `b - a`, largest first), folded from the right.

   A writer calls `frontier(size)` and `extend(size, frontier_hashes, new_leaf_hashes)`
   inside its commit transaction. A reader calls `root_keys` / `inclusion_keys` /
   `consistency_keys`, fetches those nodes in ONE batch, and hands them to `root_from` /
   `inclusion_from` / `consistency_from`.

3. `CompactRange`: the frontier kept in memory, for building a tree from a stream of
   leaves (verification, migrations) without storing it.

Sizes and indexes are 0-based leaf counts and positions (leaf `i` is seq `i + 1`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "NodeKey",
    "completed_keys",
    "consistency_from",
    "consistency_keys",
    "consistency_proof",
    "extend",
    "frontier",
    "inclusion_from",
    "inclusion_keys",
    "inclusion_path",
    "leaf_hash",
    "mth",
    "node_hash",
    "root_from",
    "root_keys",
    "verify_consistency",
    "verify_inclusion",
]

NodeKey = tuple[int, int]
"""`(level, index)` of a complete subtree: leaves `[index * 2**level, (index+1) * 2**level)`."""

_sha256 = hashlib.sha256

EMPTY_ROOT: bytes = _sha256(b"").digest()
"""The root of the empty tree, `SHA-256("")` (RFC 9162 2.1.1)."""


def leaf_hash(data: bytes) -> bytes:
    """`SHA-256(0x00 || data)`: the hash of one leaf input."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """`SHA-256(0x01 || left || right)`: the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than `n` (n >= 2): the RFC's `k`."""
    return 1 << ((n - 1).bit_length() - 1)


def completed_keys(start: int, end: int, from_level: int = 0) -> list[NodeKey]:
    """The nodes of level `from_level` and up that appending leaves `start..end-1` to a
    tree of `start` leaves completes, level by level: node `(l, i)` completes with leaf
    `(i + 1) * 2**l - 1`."""
    keys: list[NodeKey] = []
    level = from_level
    while end >> level:
        keys.extend((level, i) for i in range(start >> level, end >> level))
        level += 1
    return keys


# -- 1. The RFC's definitions -------------------------------------------------------------


def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D_n) of a list of leaf *hashes* (RFC 9162 2.1.1), by the RFC's recursion.

    Takes hashes rather than inputs so callers can reuse them; `mth([leaf_hash(d) ...])`
    is the RFC's MTH of the inputs `d`. The reference definition, O(n log n) with
    slicing; `CompactRange` and the stored-node readers are the fast paths.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(mth(leaf_hashes[:k]), mth(leaf_hashes[k:]))


def inclusion_path(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D_n) (RFC 9162 2.1.3.1) for leaf `index`, from the leaf hashes."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of {n} leaves")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_path(index, leaf_hashes[:k]), mth(leaf_hashes[k:])]
    return [*inclusion_path(index - k, leaf_hashes[k:]), mth(leaf_hashes[:k])]


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D_n) (RFC 9162 2.1.4.1) between sizes `old_size` and `len(leaf_hashes)`.

    The RFC defines it for 0 < m < n; for m == 0 and m == n the proof is empty (there
    is nothing to prove), which is what `verify_consistency` expects.
    """
    n = len(leaf_hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is not between 0 and the tree size {n}")
    if old_size in (0, n):
        return []
    return _subproof(old_size, leaf_hashes, True)


def _subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, d[:k], b), mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), mth(d[:k])]


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether `path` proves leaf hash `leaf` is leaf `index` of the tree of `size` leaves
    with root `root`: the algorithm of RFC 9162 2.1.3.2, step for step. Never raises."""
    # 1. leaf_index >= tree_size fails.
    if not 0 <= index < size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1; 3. r = hash.
    fn, sn = index, size - 1
    r = leaf
    # 4. For each value p in the inclusion_path array:
    for p in path:
        # a. If sn is 0, fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or fn == sn:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # ii. If LSB(fn) is not set, right-shift fn and sn until LSB(fn) is set or fn is 0.
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # c. Right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 and r must equal the root.
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree (`new_size`, `new_root`) extends (`old_size`,
    `old_root`): RFC 9162 2.1.4.2 step for step for 0 < old_size < new_size. Never raises.

    The RFC leaves the edges undefined; here, as in the reference implementations, they
    need an empty proof: old_size == new_size needs equal roots, and old_size == 0 needs
    `old_root` to be the empty tree's root (any tree extends the empty one).
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    # 1. An empty consistency_path fails.
    if not proof:
        return False
    path = list(proof)
    # 2. If first is an exact power of 2, prepend first_hash.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = old_size - 1, new_size - 1
    # 4. If LSB(fn) is set, right-shift fn and sn equally until it is not.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = consistency_path[0].
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for c in path[1:]:
        # a. If sn is 0, fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or fn == sn:
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # iii. If LSB(fn) is not set, right-shift until LSB(fn) is set or fn is 0.
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        # c. Right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash, and sn == 0.
    return fr == old_root and sr == new_root and sn == 0


# -- 2. The stored-node model -------------------------------------------------------------


def _range_keys(lo: int, hi: int) -> list[NodeKey]:
    """The complete subtrees covering [lo, hi), largest first (the binary digits of
    hi - lo). Every range the RFC's recursion names starts at a multiple of the largest
    power of two not above its length, so each piece is an aligned, stored node."""
    keys: list[NodeKey] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo & ((1 << level) - 1):
            raise ValueError(f"range [{lo}, {hi}) is not a subtree of a log tree")
        keys.append((level, lo >> level))
        lo += 1 << level
    return keys


def _range_hash(nodes: Mapping[NodeKey, bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) from stored nodes: the pieces of `_range_keys`, folded from the right
    (the RFC's split puts the largest power of two on the left at every step)."""
    keys = _range_keys(lo, hi)
    h = _node(nodes, keys[-1])
    for key in reversed(keys[:-1]):
        h = node_hash(_node(nodes, key), h)
    return h


def _node(nodes: Mapping[NodeKey, bytes], key: NodeKey) -> bytes:
    try:
        return nodes[key]
    except KeyError:
        raise KeyError(
            f"tree node (level {key[0]}, index {key[1]}) was not fetched or is not stored"
        ) from None


def _path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PATH(index, D[0:size]), leaf end first."""
    out: list[tuple[int, int]] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
    out.reverse()
    return out


def _subproof_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PROOF(old_size, D[0:size]), 0 < old_size < size."""
    out: list[tuple[int, int]] = []
    lo, hi, m, b = 0, size, old_size, True
    while True:
        n = hi - lo
        if m == n:
            if not b:
                out.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
            b = False
    out.reverse()
    return out


def _union_keys(ranges: Iterable[tuple[int, int]]) -> list[NodeKey]:
    seen: dict[NodeKey, None] = {}
    for lo, hi in ranges:
        for key in _range_keys(lo, hi):
            seen[key] = None
    return list(seen)


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"tree size {size} is negative")


def frontier(size: int) -> list[NodeKey]:
    """The O(log n) complete subtrees covering leaves [0, size), largest first.

    Their hashes are all a writer needs to append (`extend`), and folded from the right
    they give the root (`root_keys(size) == frontier(size)`)."""
    _check_size(size)
    return _range_keys(0, size)


def root_keys(size: int) -> list[NodeKey]:
    """The stored nodes `root_from` needs for the root of the tree of `size` leaves."""
    return frontier(size)


def root_from(nodes: Mapping[NodeKey, bytes], size: int) -> bytes:
    """The root of the tree of `size` leaves from the nodes of `root_keys(size)`."""
    _check_size(size)
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(nodes, 0, size)


def inclusion_keys(index: int, size: int) -> list[NodeKey]:
    """The stored nodes `inclusion_from` needs for the path of leaf `index` in `size`.

    Does not include the leaf itself: add `(0, index)` to the same fetch if you want the
    leaf hash too."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    return _union_keys(_path_ranges(index, size))


def inclusion_from(nodes: Mapping[NodeKey, bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) from the nodes of `inclusion_keys(index, size)`."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    return [_range_hash(nodes, lo, hi) for lo, hi in _path_ranges(index, size)]


def consistency_keys(old_size: int, new_size: int) -> list[NodeKey]:
    """The stored nodes `consistency_from` needs to prove `new_size` extends `old_size`."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is not between 0 and the new size {new_size}")
    if old_size in (0, new_size):
        return []
    return _union_keys(_subproof_ranges(old_size, new_size))


def consistency_from(
    nodes: Mapping[NodeKey, bytes], old_size: int, new_size: int
) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) from the nodes of `consistency_keys`."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is not between 0 and the new size {new_size}")
    if old_size in (0, new_size):
        return []
    return [_range_hash(nodes, lo, hi) for lo, hi in _subproof_ranges(old_size, new_size)]


def extend(
    size: int, frontier_hashes: Sequence[bytes], new_leaf_hashes: Sequence[bytes]
) -> list[tuple[int, int, bytes]]:
    """Every node `(level, index, hash)` that appending `new_leaf_hashes` to a tree of
    `size` leaves completes, level 0 (the new leaves themselves) included.

    `frontier_hashes` are the stored hashes of `frontier(size)`, in that order. The
    result holds each new node exactly once, so a backend can insert it as is; about
    two nodes per leaf, computed a level at a time (one list comprehension per level,
    not a Python loop per node).
    """
    _check_size(size)
    keys = frontier(size)
    if len(frontier_hashes) != len(keys):
        raise ValueError(
            f"a tree of {size} leaves has {len(keys)} frontier nodes, "
            f"got {len(frontier_hashes)} hashes"
        )
    left = dict(zip((level for level, _ in keys), frontier_hashes, strict=True))
    out: list[tuple[int, int, bytes]] = []
    level = 0
    start = size  # index of the first new node at this level
    row: list[bytes] = list(new_leaf_hashes)
    sha = _sha256
    while row:
        out.extend(zip([level] * len(row), range(start, start + len(row)), row, strict=True))
        if start & 1:
            # The new row starts with a right child: its left sibling is the stored
            # frontier node of this level (index start - 1).
            row.insert(0, left[level])
            start -= 1
        # An unpaired last node waits for its right sibling in a later append.
        pairs = zip(row[0::2], row[1::2], strict=False)
        row = [sha(b"\x01" + a + b).digest() for a, b in pairs]
        start >>= 1
        level += 1
    return out


# -- 3. CompactRange ----------------------------------------------------------------------


class CompactRange:
    """The frontier of a growing tree, held in memory: append leaf hashes, read the root.

    Memory is O(log n); appending a batch costs about one hash per leaf plus one per
    completed node, done a level at a time. `hashes` are the hashes of
    `frontier(size)`, in that order, so a `CompactRange` can also seed `extend`.
    """

    __slots__ = ("_levels", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        keys = frontier(size)
        if len(keys) != len(hashes):
            raise ValueError(
                f"a tree of {size} leaves has {len(keys)} frontier nodes, got {len(hashes)}"
            )
        self.size = size
        # level -> hash of the frontier node at that level (bit `level` of size is set).
        self._levels: dict[int, bytes] = {
            level: h for (level, _), h in zip(keys, hashes, strict=True)
        }

    @property
    def hashes(self) -> list[bytes]:
        """The hashes of `frontier(self.size)`, largest subtree first."""
        return [self._levels[level] for level, _ in frontier(self.size)]

    def append(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append leaves (their leaf hashes, in order)."""
        if not leaf_hashes:
            return
        levels = self._levels
        size = self.size
        start = size
        row: list[bytes] = list(leaf_hashes)
        level = 0
        sha = _sha256
        while row:
            if start & 1:
                row.insert(0, levels.pop(level))
                start -= 1
            if len(row) & 1:
                # The last node of an odd row is the new frontier node of this level.
                levels[level] = row.pop()
            pairs = zip(row[0::2], row[1::2], strict=True)
            row = [sha(b"\x01" + a + b).digest() for a, b in pairs]
            start >>= 1
            level += 1
        self.size = size + len(leaf_hashes)

    def append_nodes(
        self, leaf_hashes: Sequence[bytes], from_level: int = 0
    ) -> list[tuple[int, int, bytes]]:
        """Append leaves, and return every node `(level, index, hash)` they complete at
        `from_level` or above (what `extend` returns, without the levels below): a
        backend that stores only some levels builds no tuples for the others."""
        out: list[tuple[int, int, bytes]] = []
        if not leaf_hashes:
            return out
        levels = self._levels
        start = self.size
        row: list[bytes] = list(leaf_hashes)
        level = 0
        sha = _sha256
        while row:
            if level >= from_level:
                out.extend(zip([level] * len(row), range(start, start + len(row)), row,
                               strict=True))
            if start & 1:
                row.insert(0, levels.pop(level))
                start -= 1
            if len(row) & 1:
                levels[level] = row.pop()
            pairs = zip(row[0::2], row[1::2], strict=True)
            row = [sha(b"\x01" + a + b).digest() for a, b in pairs]
            start >>= 1
            level += 1
        self.size += len(leaf_hashes)
        return out

    def copy(self) -> CompactRange:
        """An independent copy (a writer grows a copy and keeps it only once committed)."""
        return CompactRange(self.size, self.hashes)

    def root(self) -> bytes:
        """The root of the tree of `self.size` leaves."""
        if self.size == 0:
            return EMPTY_ROOT
        hashes = self.hashes
        h = hashes[-1]
        for left in reversed(hashes[:-1]):
            h = node_hash(left, h)
        return h
