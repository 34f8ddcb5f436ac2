"""The Integrity service over a pure in-memory TreeStore: heads, proofs and checkpoints
agree with the RFC definitions, and verify() pins each kind of tampering on the right
seq."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventstore.integrity import (
    EMPTY_ROOT,
    Integrity,
    IntegrityError,
    MalformedNoteError,
    ProofRequestError,
    TreeStore,
    encode_leaf,
    leaf_hash,
    open_checkpoint,
    parse_checkpoint,
    verify_consistency,
)
from eventstore.integrity.leaf import StoredLeaf, leaf_bytes, to_micros
from eventstore.integrity.merkle import mth

from .integrity_memory import MemoryTreeStore, make_leaf

ORIGIN = "audit.example/test-log"


def make_store(n: int, batches: tuple[int, ...] = (1, 4, 9)) -> MemoryTreeStore:
    tree = MemoryTreeStore()
    seq = 1
    steps = list(batches)
    while seq <= n:
        step = min(steps.pop(0) if steps else 16, n - seq + 1)
        tree.commit([make_leaf(s) for s in range(seq, seq + step)])
        seq += step
    return tree


def reference_hashes(tree: MemoryTreeStore) -> list[bytes]:
    return [leaf_hash(encode_leaf(e)) for e in sorted(tree.events, key=lambda e: e.seq)]


def test_memory_tree_store_satisfies_the_protocol() -> None:
    assert isinstance(MemoryTreeStore(), TreeStore)


async def test_heads_and_proofs_match_the_rfc_with_one_fetch_each() -> None:
    tree = make_store(37)
    integrity = Integrity(tree, ORIGIN)
    hashes = reference_hashes(tree)
    head = await integrity.tree_head()
    assert (head.size, head.root) == (37, mth(hashes))
    assert (await integrity.tree_head(0)).root == EMPTY_ROOT
    for size in (1, 2, 13, 37):
        root = mth(hashes[:size])
        for seq in range(1, size + 1):
            before = tree.node_fetches
            proof = await integrity.prove(seq, size)
            assert tree.node_fetches == before + 1
            assert (proof.seq, proof.index, proof.tree_size) == (seq, seq - 1, size)
            assert proof.leaf_hash == hashes[seq - 1]
            assert proof.verify(root)
        for old in range(size + 1):
            c = await integrity.prove_consistency(old, size)
            assert verify_consistency(old, size, mth(hashes[:old]), root, c.hashes)
    latest = await integrity.prove(5)
    assert latest.tree_size == 37 and latest.verify(head.root)


async def test_bad_proof_requests_raise() -> None:
    integrity = Integrity(make_store(5), ORIGIN)
    for seq, size in [(0, None), (6, None), (3, 2), (1, 6), (1, -1)]:
        with pytest.raises(ProofRequestError):
            await integrity.prove(seq, size)
    with pytest.raises(ProofRequestError):
        await integrity.prove_consistency(4, 3)
    with pytest.raises(ProofRequestError):
        await integrity.prove_consistency(1, 9)


async def test_a_missing_stored_node_is_reported_not_mistaken() -> None:
    tree = make_store(8)
    del tree.nodes[(3, 0)]
    with pytest.raises(IntegrityError, match="level 3, index 0"):
        await Integrity(tree, ORIGIN).tree_head()


async def test_checkpoints_unsigned_and_signed() -> None:
    tree = make_store(10)
    plain = Integrity(tree, ORIGIN)
    text = await plain.checkpoint()
    cp = parse_checkpoint(text)
    head = await plain.tree_head()
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 10, head.root)

    key = Ed25519PrivateKey.generate()
    signed = Integrity(tree, ORIGIN, key)
    note = await signed.checkpoint()
    assert note.startswith(text + "\n\u2014 " + ORIGIN + " ")
    assert signed.verifier_key is not None
    assert open_checkpoint(note, [signed.verifier_key]).root == head.root

    with pytest.raises(IntegrityError, match="cannot name a signing key"):
        Integrity(tree, "has space", key)
    with pytest.raises(IntegrityError, match="one non-empty line"):
        Integrity(tree, "two\nlines")


async def test_an_intact_log_verifies_with_and_without_checkpoints() -> None:
    key = Ed25519PrivateKey.generate()
    tree = make_store(50)
    integrity = Integrity(tree, ORIGIN, key)
    checkpoints = []
    for n in range(51, 90, 13):
        checkpoints.append(await integrity.checkpoint())
        tree.commit([make_leaf(s) for s in range(n, n + 13)])
    head = await integrity.tree_head()
    seen: list[tuple[int, int]] = []
    report = await integrity.verify(batch=7, progress=lambda d, t: seen.append((d, t)))
    assert report.ok and report.problems == [] and report.first_bad_seq is None
    assert (report.size, report.root) == (head.size, head.root)
    assert seen[-1] == (head.size, head.size)
    for cp in checkpoints:
        report = await integrity.verify(cp, batch=7)
        assert report.ok, report.problems
    empty = await Integrity(MemoryTreeStore(), ORIGIN).verify()
    assert empty.ok and empty.size == 0 and empty.root == EMPTY_ROOT


def _edit(tree: MemoryTreeStore, seq: int, **changes: object) -> None:
    i = next(i for i, e in enumerate(tree.events) if e.seq == seq)
    tree.events[i] = msgspec.structs.replace(tree.events[i], **changes)


async def test_edited_event_is_the_first_bad_seq() -> None:
    tree = make_store(40)
    _edit(tree, 17, document=b'{"role":"user","content":"changed"}')
    _edit(tree, 30, user_id=None)
    report = await Integrity(tree, ORIGIN).verify(batch=8)
    assert not report.ok and report.first_bad_seq == 17
    assert "seq 17 was altered" in report.problems[0]
    assert report.size == 16


async def test_deleted_event_is_the_first_bad_seq() -> None:
    tree = make_store(40)
    tree.events = [e for e in tree.events if e.seq != 2]
    report = await Integrity(tree, ORIGIN).verify()
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "seq 2 missing" in report.problems[0]


async def test_deleted_events_at_the_end_are_caught() -> None:
    tree = make_store(40)
    tree.events = [e for e in tree.events if e.seq <= 37]
    report = await Integrity(tree, ORIGIN).verify()
    assert (report.ok, report.first_bad_seq) == (False, 38)
    assert "38..40 missing" in report.problems[0]


async def test_swapped_events_are_caught_at_the_first() -> None:
    tree = make_store(40)
    a = next(e for e in tree.events if e.seq == 9)
    b = next(e for e in tree.events if e.seq == 21)
    _edit(tree, 9, **{f: getattr(b, f) for f in StoredLeaf.__struct_fields__ if f != "seq"})
    _edit(tree, 21, **{f: getattr(a, f) for f in StoredLeaf.__struct_fields__ if f != "seq"})
    report = await Integrity(tree, ORIGIN).verify()
    assert (report.ok, report.first_bad_seq) == (False, 9)


async def test_a_repeated_seq_is_caught() -> None:
    tree = make_store(20)
    tree.events.append(make_leaf(7, data="a second seq 7"))
    report = await Integrity(tree, ORIGIN).verify(batch=5)
    assert (report.ok, report.first_bad_seq) == (False, 8)
    assert "seq 7 appears again" in report.problems[0]


async def test_inserted_event_is_caught() -> None:
    tree = make_store(40)
    tree.events.append(make_leaf(41))
    report = await Integrity(tree, ORIGIN).verify()
    assert (report.ok, report.first_bad_seq) == (False, 41)
    assert "not in the tree" in report.problems[0]


async def test_edited_event_with_its_leaf_node_is_caught_by_the_tree() -> None:
    tree = make_store(40)
    _edit(tree, 35, type="tampered")
    leaf = next(e for e in tree.events if e.seq == 35)
    tree.nodes[(0, 34)] = leaf_hash(encode_leaf(leaf))
    report = await Integrity(tree, ORIGIN).verify()
    assert not report.ok
    # 40 = 32 + 8: seq 35 lies under the frontier node over seqs 33..40.
    assert report.first_bad_seq == 33
    assert "seqs 33..40" in report.problems[0]


@pytest.mark.parametrize(("damage", "first_bad", "seqs"), [
    # 100 = 64 + 32 + 4: none of these nodes is on the frontier, so the root stays right
    # and only comparing every stored node finds them.
    ({(4, 2): b"\x00" * 32}, 33, "33..48"),
    ({(4, 1): None}, 17, "17..32"),
    ({(4, 3): b"\x00" * 32, (5, 0): b"\x01" * 32}, 1, "1..32"),
])
async def test_an_altered_or_lost_inner_node_is_caught_at_its_first_seq(
    damage: dict[tuple[int, int], bytes | None], first_bad: int, seqs: str
) -> None:
    tree = make_store(100)
    for key, value in damage.items():
        if value is None:
            del tree.nodes[key]
        else:
            tree.nodes[key] = value
    report = await Integrity(tree, ORIGIN).verify()
    assert (report.ok, report.first_bad_seq) == (False, first_bad), report.problems
    assert f"seqs {seqs}" in report.problems[0]


async def test_truncated_log_is_caught_against_an_older_checkpoint() -> None:
    key = Ed25519PrivateKey.generate()
    tree = make_store(40)
    integrity = Integrity(tree, ORIGIN, key)
    checkpoint = await integrity.checkpoint()
    # The attacker drops the last events and rebuilds the tree to match.
    tree.events = [e for e in tree.events if e.seq <= 31]
    tree.rebuild()
    assert (await integrity.verify()).ok
    report = await integrity.verify(checkpoint)
    assert (report.ok, report.first_bad_seq) == (False, 32)
    assert "truncated" in report.problems[0]


async def test_a_fault_below_the_checkpoint_is_reported_at_its_seq() -> None:
    tree = make_store(40)
    integrity = Integrity(tree, ORIGIN)
    checkpoint = await integrity.checkpoint()
    _edit(tree, 20, conversation_id="c2")
    report = await integrity.verify(checkpoint)
    assert (report.ok, report.first_bad_seq, report.size) == (False, 20, 19)
    assert "seq 20 was altered" in report.problems[0]
    assert "could not be checked past the first bad seq 20" in report.problems[1]


async def test_whole_database_rewrite_is_caught_against_an_earlier_checkpoint() -> None:
    key = Ed25519PrivateKey.generate()
    tree = make_store(40)
    integrity = Integrity(tree, ORIGIN, key)
    checkpoint = await integrity.checkpoint()
    tree.commit([make_leaf(s) for s in range(41, 46)])
    old_proof = await integrity.prove(12, 40)
    _edit(tree, 12, document=b'{"role":"user","content":"rewritten"}')
    tree.rebuild()
    # Consistent with itself, so only an outside checkpoint can tell.
    assert (await integrity.verify()).ok
    report = await integrity.verify(checkpoint)
    assert not report.ok and report.first_bad_seq is None
    assert "does not extend the checkpoint" in report.problems[0]
    # And the proof handed out before no longer matches the new tree at that size.
    assert not old_proof.verify((await integrity.tree_head(40)).root)


async def test_checkpoint_problems_are_reported() -> None:
    key = Ed25519PrivateKey.generate()
    tree = make_store(10)
    ours = Integrity(tree, ORIGIN, key)
    foreign = await Integrity(tree, ORIGIN, Ed25519PrivateKey.generate()).checkpoint()
    report = await ours.verify(foreign)
    assert not report.ok and "cannot be trusted" in report.problems[0]
    elsewhere = await Integrity(tree, "other.example/log").checkpoint()
    report = await Integrity(tree, ORIGIN).verify(elsewhere)
    assert not report.ok and "other.example/log" in report.problems[0]
    with pytest.raises(MalformedNoteError):
        await ours.verify("not a checkpoint")


def test_leaf_bytes_are_unambiguous() -> None:
    base = dict(
        seq=1,
        id="id",
        type="t",
        conversation_id="c",
        user_id="u",
        occurred_at=5,
        recorded_at=6,
        document=b"{}",
    )
    variants = [
        {},
        {"conversation_id": None},
        {"conversation_id": ""},
        {"user_id": None},
        {"user_id": ""},
        {"id": "i", "type": "dt"},  # the same characters moved between fields
        {"conversation_id": "cu", "user_id": ""},
        {"seq": 2},
        {"occurred_at": 6, "recorded_at": 5},
        {"document": b"{} "},
    ]
    encoded = {leaf_bytes(**{**base, **v}) for v in variants}  # type: ignore[arg-type]
    assert len(encoded) == len(variants)
    raw = leaf_bytes(**base)  # type: ignore[arg-type]
    assert raw[0] == 1  # the version byte
    assert raw == bytes.fromhex(
        "01" "0000000000000001" "00000002" "6964" "00000001" "74"
        "01" "00000001" "63" "01" "00000001" "75"
        "0000000000000005" "0000000000000006" "00000002" "7b7d"
    )


def test_to_micros_is_exact_and_requires_a_timezone() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    t = datetime(2026, 12, 2, 6, 0, 0, 123456, tzinfo=UTC)
    assert to_micros(t) == 1_796_191_200_123_456
    assert to_micros(t.astimezone(timezone(timedelta(hours=5)))) == to_micros(t)
    assert to_micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    with pytest.raises(ValueError, match="timezone"):
        to_micros(datetime(2026, 1, 1))


def test_proof_json_uses_base64() -> None:
    import base64
    import json

    from eventstore.integrity import InclusionProof, from_json, to_json

    proof = InclusionProof(
        seq=3, index=2, tree_size=5, leaf_hash=b"\x01" * 32, hashes=[b"\xff" * 32]
    )
    doc = json.loads(to_json(proof))
    assert doc == {
        "seq": 3,
        "index": 2,
        "tree_size": 5,
        "leaf_hash": base64.b64encode(b"\x01" * 32).decode(),
        "hashes": [base64.b64encode(b"\xff" * 32).decode()],
    }
    assert from_json(to_json(proof), InclusionProof) == proof


class _Failing(MemoryTreeStore):
    """Fails every page read from `fail_from` on (a connection lost mid-verify)."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from = fail_from
        self.asked: list[int] = []

    async def stored_leaves(self, from_seq: int, limit: int) -> list[StoredLeaf]:
        self.asked.append(from_seq)
        if from_seq >= self.fail_from:
            raise IntegrityError(f"page from seq {from_seq} could not be read")
        return list(await super().stored_leaves(from_seq, limit))


def _failing_store(n: int, fail_from: int) -> _Failing:
    tree = _Failing(fail_from)
    tree.commit([make_leaf(s) for s in range(1, n + 1)])
    return tree


async def test_verify_reads_the_next_page_ahead_and_lets_go_of_it() -> None:
    # A bad page ends verify with its report, though the page after it (asked for
    # ahead) fails: that read is cancelled or its failure collected, never raised.
    tree = _failing_store(40, fail_from=9)
    _edit(tree, 3, document=b"{}")
    report = await Integrity(tree, ORIGIN).verify(batch=8)
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert tree.asked[0] == 1 and set(tree.asked) <= {1, 9}
    # A page that fails before any fault is found fails verify itself.
    tree = _failing_store(40, fail_from=17)
    with pytest.raises(IntegrityError, match="seq 17 could not be read"):
        await Integrity(tree, ORIGIN).verify(batch=8)
    assert tree.asked == [1, 9, 17]
    # An intact log: each page asked for once, and one past the end.
    tree = _failing_store(40, fail_from=10_000)
    assert (await Integrity(tree, ORIGIN).verify(batch=8)).ok
    assert tree.asked == [1, 9, 17, 25, 33, 41]
