"""The Merkle core against RFC 9162 and published known answers, exhaustively for small
trees, and by property for random ones."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.integrity.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeKey,
    completed_keys,
    consistency_from,
    consistency_keys,
    consistency_proof,
    extend,
    frontier,
    inclusion_from,
    inclusion_keys,
    inclusion_path,
    leaf_hash,
    mth,
    node_hash,
    root_from,
    root_keys,
    verify_consistency,
    verify_inclusion,
)
from eventstore.integrity.types import ConsistencyProof, InclusionProof, from_json, to_json

h = bytes.fromhex

# Known answers from transparency-dev/merkle (the RFC 6962 reference implementation's
# Go successor): leaf inputs, node hashes and roots from testonly/constants.go
# (LeafInputs, NodeHashes, RootHashes, EmptyRootHash); proofs from proof/verify_test.go
# (inclusionProofs, consistencyProofs); proof node ids from proof/proof_test.go
# (TestInclusion, TestConsistency).
LEAF_INPUTS = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
NODE_HASHES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
ROOTS = [  # by tree size, 0..8
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# (1-based leaf, tree size, path), as in verify_test.go's inclusionProofs.
INCLUSION_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (3, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        2,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
# The stored nodes each proof touches, from proof_test.go (their compact.NodeID(level,
# index)); order there follows their rehash layout, so compare as sets.
INCLUSION_NODE_IDS = {
    (0, 1): [],
    (0, 2): [(0, 1)],
    (1, 2): [(0, 0)],
    (1, 3): [(0, 0), (0, 2)],
    (0, 7): [(0, 1), (1, 1), (0, 6), (1, 2)],
    (1, 7): [(0, 0), (1, 1), (0, 6), (1, 2)],
    (2, 7): [(0, 3), (1, 0), (0, 6), (1, 2)],
    (3, 7): [(0, 2), (1, 0), (0, 6), (1, 2)],
    (4, 7): [(0, 5), (0, 6), (2, 0)],
    (5, 7): [(0, 4), (0, 6), (2, 0)],
    (6, 7): [(1, 2), (2, 0)],
    (2, 4): [(0, 3), (1, 0)],
    (3, 5): [(0, 2), (1, 0), (0, 4)],
    (3, 6): [(0, 2), (1, 0), (1, 2)],
    (4, 6): [(0, 5), (2, 0)],
    (10, 15): [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)],
    (24, 31): [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)],
    (81, 95): [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)],
}
CONSISTENCY_NODE_IDS = {
    (1, 2): [(0, 1)],
    (1, 4): [(0, 1), (1, 1)],
    (1, 6): [(0, 1), (1, 1), (1, 2)],
    (2, 3): [(0, 2)],
    (2, 8): [(1, 1), (2, 1)],
    (3, 7): [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)],
    (4, 7): [(0, 6), (1, 2)],
    (5, 7): [(0, 4), (0, 5), (0, 6), (2, 0)],
    (6, 7): [(1, 2), (0, 6), (2, 0)],
    (7, 8): [(0, 6), (0, 7), (1, 2), (2, 0)],
    (2, 4): [(1, 1)],
    (3, 5): [(0, 2), (0, 3), (1, 0), (0, 4)],
    (3, 6): [(0, 2), (0, 3), (1, 0), (1, 2)],
    (4, 6): [(1, 2)],
    (1, 7): [(0, 1), (1, 1), (0, 6), (1, 2)],
    (10, 15): [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)],
    (24, 31): [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)],
    (81, 95): [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)],
}

KAT_HASHES = [leaf_hash(d) for d in LEAF_INPUTS]


def build_nodes(hashes: list[bytes], batches: list[int]) -> dict[NodeKey, bytes]:
    """The stored nodes a backend ends with after committing `hashes` in batches of the
    given sizes (the last batch takes the rest)."""
    nodes: dict[NodeKey, bytes] = {}
    size = 0
    steps = list(batches)
    while size < len(hashes):
        step = steps.pop(0) if steps else len(hashes) - size
        chunk = hashes[size : size + step]
        for level, index, value in extend(size, [nodes[k] for k in frontier(size)], chunk):
            assert (level, index) not in nodes
            nodes[(level, index)] = value
        size += len(chunk)
    return nodes


def all_complete_nodes(hashes: list[bytes]) -> dict[NodeKey, bytes]:
    """Every complete aligned subtree of the log, by the RFC's MTH definition."""
    out: dict[NodeKey, bytes] = {}
    level = 0
    while (1 << level) <= len(hashes):
        width = 1 << level
        for index in range(len(hashes) // width):
            out[(level, index)] = mth(hashes[index * width : (index + 1) * width])
        level += 1
    return out


# -- known answers -------------------------------------------------------------------------


def test_hashing_primitives_follow_rfc_9162() -> None:
    import hashlib

    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == ROOTS[0]
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"L" * 32, b"R" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def test_leaf_and_node_hashes_match_the_reference() -> None:
    assert KAT_HASHES == NODE_HASHES[0]
    nodes = all_complete_nodes(KAT_HASHES)
    for level, row in enumerate(NODE_HASHES):
        for index, value in enumerate(row):
            assert nodes[(level, index)] == value


@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_reference_for_every_size(size: int) -> None:
    assert mth(KAT_HASHES[:size]) == ROOTS[size]
    cr = CompactRange()
    cr.append(KAT_HASHES[:size])
    assert cr.root() == ROOTS[size]
    assert root_from(build_nodes(KAT_HASHES[:size], [1] * size), size) == ROOTS[size]


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION_VECTORS)
def test_known_inclusion_paths(leaf: int, size: int, path: list[bytes]) -> None:
    index = leaf - 1
    assert inclusion_path(index, KAT_HASHES[:size]) == path
    nodes = build_nodes(KAT_HASHES, [3, 2])
    assert inclusion_from(nodes, index, size) == path
    assert verify_inclusion(KAT_HASHES[index], index, size, path, ROOTS[size])


def go_inclusion_probes(
    index: int, size: int, path: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    """transparency-dev/merkle proof/verify_test.go corruptInclusionProof: every probe must
    fail verification."""
    some = h("abacaba000000000000000000000000000000000000000000060061e00123456")
    probes = [
        (index - 1, size, root, leaf, path),
        (index + 1, size, root, leaf, path),
        (index ^ 2, size, root, leaf, path),
        (index, size * 2, root, leaf, path),
        (index, size // 2, root, leaf, path),
        (index, size, root, b"WrongLeaf", path),
        (index, size, EMPTY_ROOT, leaf, path),
        (index, size, some, leaf, path),
        (index, size, root, leaf, [*path, b""]),
        (index, size, root, leaf, [*path, root]),
        (index, size, root, leaf, [b"", *path]),
        (index, size, root, leaf, [root, *path]),
    ]
    for i in range(len(path)):
        wrong = list(path)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((index, size, root, leaf, wrong))
    if path:
        probes.append((index, size, root, leaf, path[:-1]))
    if len(path) > 1:
        probes.append((index, size, root, leaf, [some, path[0], *path[1:]]))
    return probes


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION_VECTORS)
def test_corrupted_known_inclusion_proofs_fail(leaf: int, size: int, path: list[bytes]) -> None:
    index = leaf - 1
    for i, s, root, lh, p in go_inclusion_probes(index, size, path, ROOTS[size], KAT_HASHES[index]):
        assert not verify_inclusion(lh, i, s, p, root), (i, s, p)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_known_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(old, KAT_HASHES[:new]) == proof
    nodes = build_nodes(KAT_HASHES, [5])
    assert consistency_from(nodes, old, new) == proof
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    if proof:
        some = h("abacaba000000000000000000000000000000000000000000060061e00123456")
        r1, r2 = ROOTS[old], ROOTS[new]
        probes = [
            (old - 1, new, r1, r2, proof),
            (old + 1, new, r1, r2, proof),
            (old ^ 2, new, r1, r2, proof),
            (old, new * 2, r1, r2, proof),
            (old, new // 2, r1, r2, proof),
            (old, new, b"WrongRoot", r2, proof),
            (old, new, r1, b"WrongRoot", proof),
            (old, new, r2, r1, proof),
            (old, new, r1, r2, []),
            (old, new, r1, r2, [*proof, b""]),
            (old, new, r1, r2, [*proof, r1]),
            (old, new, r1, r2, [*proof, r2]),
            (old, new, r1, r2, [b"", *proof]),
            (old, new, r1, r2, [r1, *proof]),
            (old, new, r1, r2, [r2, *proof]),
            (old, new, r1, r2, [proof[0], *proof]),
            (old, new, r1, r2, proof[:-1]),
            (old, new, some, r2, proof),
        ]
        for i in range(len(proof)):
            wrong = list(proof)
            wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
            probes.append((old, new, r1, r2, wrong))
        for o, n, a, b, p in probes:
            assert not verify_consistency(o, n, a, b, p), (o, n, p)


def test_consistency_edge_cases() -> None:
    # The cases transparency-dev/merkle's TestVerifyConsistency pins, with one deliberate
    # difference: from size 0 the old root must really be the empty tree's.
    r1, r2 = b"don't care 1", b"don't care 2"
    assert not verify_consistency(0, 0, r1, r2, [])
    assert not verify_consistency(1, 1, r1, r2, [])
    assert verify_consistency(0, 0, r1, r1, [])
    assert verify_consistency(1, 1, r2, r2, [])
    assert verify_consistency(0, 1, EMPTY_ROOT, r2, [])
    assert not verify_consistency(0, 1, r1, r2, [])
    assert not verify_consistency(1, 0, r1, r2, [])
    assert not verify_consistency(2, 1, r1, r2, [])
    assert not verify_consistency(1, 2, r1, r2, [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def test_inclusion_edge_cases() -> None:
    some = h("abacaba000000000000000000000000000000000000000000060061e00123456")
    for index, size in [(0, 0), (0, 1), (1, 0), (2, 1)]:
        assert not verify_inclusion(some, index, size, [], b"")
        assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
        assert not verify_inclusion(some, index, size, [], EMPTY_ROOT)
    single = leaf_hash(b"data")
    assert verify_inclusion(single, 0, 1, [], single)
    assert not verify_inclusion(b"", 0, 1, [], single)
    assert not verify_inclusion(single, 0, 1, [], b"")


@pytest.mark.parametrize(("key", "expected"), INCLUSION_NODE_IDS.items())
def test_inclusion_reads_the_reference_node_set(
    key: tuple[int, int], expected: list[NodeKey]
) -> None:
    index, size = key
    keys = inclusion_keys(index, size)
    assert len(keys) == len(set(keys))
    assert set(keys) == set(expected)


@pytest.mark.parametrize(("key", "expected"), CONSISTENCY_NODE_IDS.items())
def test_consistency_reads_the_reference_node_set(
    key: tuple[int, int], expected: list[NodeKey]
) -> None:
    old, new = key
    assert set(consistency_keys(old, new)) == set(expected)


def test_frontier_is_the_binary_digits_of_the_size() -> None:
    assert frontier(0) == []
    assert frontier(1) == [(0, 0)]
    assert frontier(7) == [(2, 0), (1, 2), (0, 6)]
    assert frontier(8) == [(3, 0)]
    assert frontier(13) == [(3, 0), (2, 2), (0, 12)]
    assert root_keys(13) == frontier(13)
    # CompactTrees() in testonly/constants.go: the frontier hashes of sizes 0..8.
    nh = NODE_HASHES
    compact = [
        [],
        [nh[0][0]],
        [nh[1][0]],
        [nh[1][0], nh[0][2]],
        [nh[2][0]],
        [nh[2][0], nh[0][4]],
        [nh[2][0], nh[1][2]],
        [nh[2][0], nh[1][2], nh[0][6]],
        [nh[3][0]],
    ]
    for size, hashes in enumerate(compact):
        cr = CompactRange()
        cr.append(KAT_HASHES[:size])
        assert cr.hashes == hashes


def test_bad_requests_raise() -> None:
    with pytest.raises(ValueError):
        inclusion_keys(3, 3)
    with pytest.raises(ValueError):
        inclusion_path(0, [])
    with pytest.raises(ValueError):
        consistency_keys(5, 4)
    with pytest.raises(ValueError):
        extend(3, [b"x"], [b"y"])  # a tree of 3 has two frontier nodes
    with pytest.raises(KeyError, match="level 1, index 0"):
        root_from({}, 2)


# -- exhaustive ----------------------------------------------------------------------------

N = 64
HASHES = [leaf_hash(i.to_bytes(2, "big")) for i in range(N + 1)]


@pytest.fixture(scope="module")
def stored() -> dict[NodeKey, bytes]:
    nodes = build_nodes(HASHES, [1, 1, 3, 7, 2, 16, 1])
    # The stored-node model keeps exactly the complete aligned subtrees of the log.
    assert nodes == all_complete_nodes(HASHES)
    return nodes


def test_extend_is_the_same_for_every_batch_split() -> None:
    rng = random.Random(20261202)
    expected = all_complete_nodes(HASHES)
    for _ in range(40):
        batches: list[int] = []
        while sum(batches) < N:
            batches.append(rng.randint(1, 9))
        assert build_nodes(HASHES, batches) == expected
    # About two stored nodes per leaf: amortised O(1) inserts per append.
    assert len(expected) == 2 * len(HASHES) - bin(len(HASHES)).count("1")


def test_compact_range_matches_mth_for_every_size_and_split() -> None:
    rng = random.Random(7)
    for size in range(N + 1):
        cr = CompactRange()
        done = 0
        while done < size:
            step = min(size - done, rng.randint(1, 11))
            cr.append(HASHES[done : done + step])
            done += step
            # Seeding a CompactRange from stored frontier hashes resumes it.
            cr = CompactRange(cr.size, cr.hashes)
        assert cr.size == size
        assert cr.root() == mth(HASHES[:size])


@pytest.mark.parametrize("size", range(1, N + 1))
def test_every_inclusion_proof_matches_the_rfc_and_verifies(
    size: int, stored: dict[NodeKey, bytes]
) -> None:
    root = mth(HASHES[:size])
    assert root_from({k: stored[k] for k in root_keys(size)}, size) == root
    for index in range(size):
        keys = inclusion_keys(index, size)
        path = inclusion_from({k: stored[k] for k in keys}, index, size)
        assert path == inclusion_path(index, HASHES[:size])
        assert len(keys) <= 2 * size.bit_length()
        assert verify_inclusion(HASHES[index], index, size, path, root)
        assert not verify_inclusion(HASHES[index + 1], index, size, path, root)


@pytest.mark.parametrize("new", range(N + 1))
def test_every_consistency_proof_matches_the_rfc_and_verifies(
    new: int, stored: dict[NodeKey, bytes]
) -> None:
    new_root = mth(HASHES[:new])
    for old in range(new + 1):
        keys = consistency_keys(old, new)
        proof = consistency_from({k: stored[k] for k in keys}, old, new)
        assert proof == consistency_proof(old, HASHES[:new])
        assert len(keys) <= 2 * new.bit_length()
        old_root = mth(HASHES[:old])
        assert verify_consistency(old, new, old_root, new_root, proof)
        if 0 < old < new:
            # A different old root (the log rewritten below `old`) must not verify.
            assert not verify_consistency(old, new, mth(HASHES[1 : old + 1]), new_root, proof)


# -- properties ----------------------------------------------------------------------------


def _flip(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    wrong = list(proof)
    value = bytearray(wrong[element])
    value[bit // 8] ^= 1 << (bit % 8)
    wrong[element] = bytes(value)
    return wrong


log_sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=150, deadline=None)
@given(size=log_sizes, data=st.data())
def test_random_inclusion_proofs_verify_and_any_flip_fails(size: int, data: st.DataObject) -> None:
    seed = data.draw(st.binary(min_size=1, max_size=8))
    hashes = [leaf_hash(seed + i.to_bytes(4, "big")) for i in range(size)]
    nodes = build_nodes(hashes, [data.draw(st.integers(1, size))])
    root = root_from(nodes, size)
    index = data.draw(st.integers(0, size - 1))
    path = inclusion_from(nodes, index, size)
    proof = InclusionProof(index + 1, index, size, hashes[index], path)
    assert proof.verify(root)
    assert from_json(to_json(proof), InclusionProof) == proof
    if path:
        element = data.draw(st.integers(0, len(path) - 1))
        bit = data.draw(st.integers(0, 255))
        assert not verify_inclusion(hashes[index], index, size, _flip(path, element, bit), root)
    bit = data.draw(st.integers(0, 255))
    assert not verify_inclusion(_flip([hashes[index]], 0, bit)[0], index, size, path, root)
    other = data.draw(st.integers(0, size - 1))
    if other != index:
        assert not verify_inclusion(hashes[index], other, size, path, root)
    other_size = data.draw(st.integers(1, size + 40))
    if other_size != size and index < other_size:
        all_hashes = hashes + [leaf_hash(seed + b"more" + bytes([i])) for i in range(40)]
        other_root = mth(all_hashes[:other_size])
        # Against the head of the size claimed. (Against the *same* root a path may
        # verify for a neighbouring size, e.g. leaf 0 of 3 and of 4: RFC 9162 binds the
        # size through the signed tree head, not through the path.)
        assert not verify_inclusion(hashes[index], index, other_size, path, other_root)


@settings(max_examples=150, deadline=None)
@given(new=log_sizes, data=st.data())
def test_random_consistency_proofs_verify_and_any_flip_fails(
    new: int, data: st.DataObject
) -> None:
    seed = data.draw(st.binary(min_size=1, max_size=8))
    hashes = [leaf_hash(seed + i.to_bytes(4, "big")) for i in range(new)]
    nodes = build_nodes(hashes, [data.draw(st.integers(1, new))])
    old = data.draw(st.integers(0, new))
    old_root, new_root = mth(hashes[:old]), root_from(nodes, new)
    proof = ConsistencyProof(old, new, consistency_from(nodes, old, new))
    assert proof.verify(old_root, new_root)
    assert from_json(to_json(proof), ConsistencyProof) == proof
    if proof.hashes:
        element = data.draw(st.integers(0, len(proof.hashes) - 1))
        bit = data.draw(st.integers(0, 255))
        wrong = _flip(proof.hashes, element, bit)
        assert not verify_consistency(old, new, old_root, new_root, wrong)
    if 0 < old < new:
        bit = data.draw(st.integers(0, 255))
        bad_old = _flip([old_root], 0, bit)[0]
        assert not verify_consistency(old, new, bad_old, new_root, proof.hashes)
        other_old = data.draw(st.integers(1, new - 1))
        if other_old != old:
            assert not verify_consistency(
                other_old, new, mth(hashes[:other_old]), new_root, proof.hashes
            )


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 6))
def test_completed_keys_are_the_nodes_an_append_completes(
    start: int, count: int, from_level: int
) -> None:
    cr = CompactRange()
    cr.append([leaf_hash(b"%d" % i) for i in range(start)])
    built = cr.append_nodes([leaf_hash(b"%d" % i) for i in range(start, start + count)],
                            from_level)
    keys = completed_keys(start, start + count, from_level)
    assert sorted(keys) == sorted((level, index) for level, index, _ in built)
