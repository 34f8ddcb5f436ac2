"""The integrity service: tree heads, proofs, checkpoints and verification, written
against one small backend capability, `TreeStore`.

A store holds one `Integrity` and delegates `tree_head()`, `prove()`,
`prove_consistency()`, `checkpoint()` and `verify()` to it. Every read is ONE batched
`tree_nodes` fetch of O(log n) nodes after one `tree_size` call; since stored nodes never
change once written, no transaction spans the two calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec.structs import astuple

from eventstore.errors import (
    IntegrityError,
    MalformedNoteError,
    NoteVerificationError,
    ProofRequestError,
)
from eventstore.integrity.layout import STORED_FROM
from eventstore.integrity.leaf import StoredLeaf, hash_leaves
from eventstore.integrity.merkle import (
    CompactRange,
    NodeKey,
    completed_keys,
    consistency_from,
    consistency_keys,
    frontier,
    inclusion_from,
    inclusion_keys,
    root_from,
    root_keys,
)
from eventstore.integrity.note import (
    Checkpoint,
    format_checkpoint,
    is_valid_key_name,
    open_checkpoint,
    parse_checkpoint,
    sign_note,
    split_note_text,
    verifier_key,
)
from eventstore.integrity.rehash import LeafRow, Rehasher
from eventstore.integrity.types import ConsistencyProof, InclusionProof, TreeHead, VerifyReport

__all__ = ["Integrity", "LeafRowStore", "TreeStore"]

VERIFY_BATCH = 10_000


@runtime_checkable
class TreeStore(Protocol):
    """What a backend provides for integrity. Three reads; the writes happen inside the
    backend's own commit transaction (see `merkle.frontier` and `merkle.extend`).

    - `tree_size()`: the number of leaves the *stored tree* covers (one more than the
      highest level-0 index stored, or a stored head), never a count of event rows:
      verification compares the two.
    - `tree_nodes(keys)`: the stored hashes of the given `(level, index)` nodes, in one
      round trip; keys not stored are left out of the result (the service reports them).
    - `stored_leaves(from_seq, limit)`: up to `limit` stored events with
      `seq >= from_seq`, in seq order, as `StoredLeaf`s; an empty list past the end.
      Read straight from the events table, whatever the tree says.
    """

    async def tree_size(self) -> int:
        """The number of leaves in the stored tree."""
        ...

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The stored hashes of `keys` (missing ones omitted), in one round trip."""
        ...

    async def stored_leaves(self, from_seq: int, limit: int) -> Sequence[StoredLeaf]:
        """A page of stored events from `from_seq` on, in seq order."""
        ...


@runtime_checkable
class LeafRowStore(Protocol):
    """A `TreeStore` that also hands verify its pages as plain rows (what `stored_leaves`
    gives, as `eventstore.integrity.rehash.LeafRow`s): verify's fast path. A kept leaf
    hash that must not be trusted is given as b"", never None (None sends verify to
    `tree_nodes` for it)."""

    async def leaf_rows(self, from_seq: int, limit: int) -> Sequence[LeafRow]:
        """A page of stored events from `from_seq` on, in seq order, as `LeafRow`s."""
        ...


class Integrity:
    """Tree heads, proofs, checkpoints and verification over one `TreeStore`.

    `origin` names the log (the first line of its checkpoints, and the key name its
    signatures carry). With a `signing_key`, checkpoints are C2SP signed notes, and a
    checkpoint given to `verify` must carry a valid signature by that key.
    """

    def __init__(
        self, tree: TreeStore, origin: str, signing_key: Ed25519PrivateKey | None = None
    ) -> None:
        if not origin or any(c < " " for c in origin):
            raise IntegrityError(f"a log origin must be one non-empty line: {origin!r}")
        if signing_key is not None and not is_valid_key_name(origin):
            raise IntegrityError(
                f"origin {origin!r} cannot name a signing key: use no spaces and no '+' "
                "(e.g. 'example.com/audit-log')"
            )
        self.tree = tree
        self.origin = origin
        self.signing_key = signing_key
        self.verifier_key: str | None = (
            verifier_key(signing_key, origin) if signing_key is not None else None
        )

    async def _fetch(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        if not keys:
            return {}
        nodes = await self.tree.tree_nodes(keys)
        missing = [k for k in keys if k not in nodes]
        if missing:
            level, index = missing[0]
            raise IntegrityError(
                f"the stored tree lacks node (level {level}, index {index}) and "
                f"{len(missing) - 1} more: the tree is damaged; run verify()"
            )
        return nodes

    async def _size(self, size: int | None) -> tuple[int, int]:
        current = await self.tree.tree_size()
        if size is None:
            return current, current
        if not 0 <= size <= current:
            raise ProofRequestError(
                f"tree size {size} is not between 0 and the log's size {current}"
            )
        return size, current

    async def tree_head(self, size: int | None = None) -> TreeHead:
        """The tree head at `size` leaves (default: the whole log)."""
        size, _ = await self._size(size)
        nodes = await self._fetch(root_keys(size))
        return TreeHead(size=size, root=root_from(nodes, size))

    async def prove(self, seq: int, size: int | None = None) -> InclusionProof:
        """Proof that event `seq` is in the tree of `size` leaves (default: the whole
        log); it verifies against `tree_head(size).root`."""
        size, current = await self._size(size)
        if not 1 <= seq <= size:
            raise ProofRequestError(
                f"seq {seq} is not in a tree of {size} events (the log has {current})"
            )
        index = seq - 1
        keys = inclusion_keys(index, size)
        nodes = await self._fetch([(0, index), *keys])
        return InclusionProof(
            seq=seq,
            index=index,
            tree_size=size,
            leaf_hash=nodes[(0, index)],
            hashes=inclusion_from(nodes, index, size),
        )

    async def prove_consistency(
        self, old_size: int, new_size: int | None = None
    ) -> ConsistencyProof:
        """Proof that the tree of `new_size` leaves (default: the whole log) extends the
        tree of `old_size` leaves."""
        new_size, _ = await self._size(new_size)
        if not 0 <= old_size <= new_size:
            raise ProofRequestError(
                f"old size {old_size} is not between 0 and the new size {new_size}"
            )
        nodes = await self._fetch(consistency_keys(old_size, new_size))
        return ConsistencyProof(
            old_size=old_size,
            new_size=new_size,
            hashes=consistency_from(nodes, old_size, new_size),
        )

    async def checkpoint(self) -> str:
        """The current tree head as a C2SP tlog checkpoint; a signed note when the
        service has a signing key, the bare checkpoint text otherwise."""
        head = await self.tree_head()
        text = format_checkpoint(self.origin, head.size, head.root)
        if self.signing_key is None:
            return text
        return sign_note(text, self.signing_key, self.origin)

    def read_checkpoint(self, text: str) -> Checkpoint:
        """Parse a checkpoint written for this log. With a signing key, its signature by
        that key must verify; without one, signatures cannot be checked and are skipped.

        Raises `MalformedNoteError` or `NoteVerificationError`, and `IntegrityError` if
        the checkpoint names another log."""
        if self.verifier_key is not None:
            cp = open_checkpoint(text, [self.verifier_key])
        else:
            cp = parse_checkpoint(split_note_text(text))
        if cp.origin != self.origin:
            raise IntegrityError(
                f"the checkpoint is for log {cp.origin!r}, this log is {self.origin!r}"
            )
        return cp

    async def verify(
        self,
        checkpoint: str | None = None,
        *,
        batch: int = VERIFY_BATCH,
        progress: Callable[[int, int], None] | None = None,
    ) -> VerifyReport:
        """Recompute every leaf from the stored events and the whole tree, and compare
        them with the stored tree (and with `checkpoint`, the text of an earlier one, if
        given). Reports the first bad seq: an edited, deleted, swapped or inserted event,
        or a log that no longer extends the checkpoint.

        `progress(done, total)` is called after each page. A malformed checkpoint raises
        `MalformedNoteError`; one whose signature fails is reported, not raised.
        """
        problems: list[str] = []
        cp: Checkpoint | None = None
        if checkpoint is not None:
            try:
                cp = self.read_checkpoint(checkpoint)
            except NoteVerificationError as exc:
                problems.append(f"the checkpoint cannot be trusted: {exc}")
            except MalformedNoteError:
                raise
            except IntegrityError as exc:
                problems.append(str(exc))
        size = await self.tree.tree_size()
        cr = CompactRange()
        cp_root: bytes | None = None
        first_bad: int | None = None
        next_seq = 1
        rehash = Rehasher()
        # Read ahead: the next page is fetched (by the database, or on its thread) while
        # this one is hashed, so the two overlap instead of taking turns.
        ahead = asyncio.ensure_future(self._page(next_seq, batch, size, rehash))
        try:
            while first_bad is None:
                page, hash_first, stored = await ahead
                if not page:
                    break
                ahead = asyncio.ensure_future(
                    self._page(page[-1][0] + 1, batch, size, rehash))
                count, fault = _contiguous_prefix(page, next_seq, size)
                if fault is not None:
                    first_bad, problem = fault
                    problems.append(problem)
                rows = page if count == len(page) else page[:count]
                good = hash_first(count)
                next_seq += count
                if good:
                    start = cr.size
                    kept: list[bytes | None] = [row[8] for row in rows]
                    if None in kept:  # the backend keeps its leaves apart from the events
                        nodes = await self.tree.tree_nodes(
                            [(0, i) for i in range(start, start + len(good))]
                        )
                        kept = [nodes.get((0, i)) for i in range(start, start + len(good))]
                    if kept != good:
                        offset = next(i for i, h in enumerate(good) if kept[i] != h)
                        seq = start + offset + 1
                        first_bad = seq
                        problems.append(
                            f"seq {seq} was altered: its stored content no longer hashes to "
                            "its leaf in the tree (edited, or swapped with another event)"
                        )
                        del good[offset:]
                    if cp is not None and cp_root is None and start < cp.size <= start + len(good):
                        built = cr.append_nodes(good[: cp.size - start], STORED_FROM)
                        cp_root = cr.root()
                        built += cr.append_nodes(good[cp.size - start :], STORED_FROM)
                    else:
                        built = cr.append_nodes(good, STORED_FROM)
                    # Every stored node the good leaves complete must be their hash:
                    # an altered node would otherwise only show in failing proofs.
                    wrong = _first_wrong_node(built, stored)
                    if wrong is not None and (first_bad is None or wrong[0] < first_bad):
                        first_bad = wrong[0]
                        problems.append(wrong[1])
                if progress is not None:
                    progress(cr.size, size)
        finally:
            _drop(ahead)
        if first_bad is None and cr.size < size:
            first_bad = cr.size + 1
            problems.append(
                f"seq {cr.size + 1}..{size} missing: the tree has {size} leaves but the log "
                f"ends at seq {cr.size} (events were deleted from the end)"
            )
        if first_bad is None:
            first_bad = await self._compare_stored_root(cr, problems)
        if cp is not None:
            if cp.size == 0:
                cp_root = CompactRange().root()
            if cp.size > cr.size and first_bad is not None:
                problems.append(
                    f"the checkpoint (size {cp.size}) could not be checked past the first "
                    f"bad seq {first_bad}"
                )
            elif cp.size > cr.size:
                first_bad = cr.size + 1
                problems.append(
                    f"the log has {cr.size} events but the checkpoint covers {cp.size}: "
                    f"seq {cr.size + 1} on were removed since (the log was truncated)"
                )
            elif cp_root != cp.root:
                problems.append(
                    f"the log does not extend the checkpoint: its first {cp.size} events "
                    "hash to another root (the log was rewritten since the checkpoint)"
                )
        return VerifyReport(
            ok=not problems,
            size=cr.size,
            root=cr.root(),
            first_bad_seq=first_bad,
            problems=problems,
        )

    async def _page(self, from_seq: int, limit: int, size: int, rehash: Rehasher) -> _Page:
        """A page of stored events as rows in `LeafRow` order (seq first, the kept leaf
        hash last), how to hash its first n (the backend's own rows of bytes when it
        gives them, `LeafRowStore`; its `StoredLeaf`s otherwise), and the stored nodes
        of levels `STORED_FROM` and up that the page's leaves complete in a tree of
        `size` (fetched with the page, so a read-ahead brings both)."""
        tree = self.tree
        rows: Sequence[Sequence[Any]]
        if isinstance(tree, LeafRowStore):
            rows = await tree.leaf_rows(from_seq, limit)

            def hash_first(n: int) -> list[bytes]:
                return rehash.hashes(rows if n == len(rows) else rows[:n])
        else:
            leaves = await tree.stored_leaves(from_seq, limit)
            rows = [astuple(leaf) for leaf in leaves]

            def hash_first(n: int) -> list[bytes]:
                return hash_leaves(leaves[:n])
        start = from_seq - 1
        keys = completed_keys(start, min(start + len(rows), size), STORED_FROM)
        nodes = await tree.tree_nodes(keys) if keys and rows else {}
        return rows, hash_first, nodes

    async def _compare_stored_root(self, cr: CompactRange, problems: list[str]) -> int | None:
        """Compare the recomputed frontier with the stored one; on a mismatch, report the
        seqs under the first differing node and return the first of them."""
        keys = frontier(cr.size)
        stored = await self.tree.tree_nodes(keys) if keys else {}
        built = [(level, index, h) for (level, index), h in zip(keys, cr.hashes, strict=True)]
        wrong = _first_wrong_node(built, stored)
        if wrong is None:
            return None
        problems.append(wrong[1])
        return wrong[0]


_Page = tuple[Sequence[Sequence[Any]], Callable[[int], list[bytes]], Mapping[NodeKey, bytes]]


def _first_wrong_node(
    built: Sequence[tuple[int, int, bytes]], stored: Mapping[NodeKey, bytes]
) -> tuple[int, str] | None:
    """Of the recomputed nodes `built` that `stored` lacks or holds otherwise, the one
    over the lowest seqs (they come level by level): its first seq, and the problem."""
    wrong = min(((index << level, level) for level, index, h in built
                 if stored.get((level, index)) != h), default=None)
    if wrong is None:
        return None
    lo, level = wrong
    hi = lo + (1 << level)
    return lo + 1, (f"the stored tree over seqs {lo + 1}..{hi} does not match those events: "
                    "tree nodes were altered or lost")


def _drop(task: asyncio.Future[Any]) -> None:
    """Let go of a read-ahead no longer wanted: cancel it, or collect its outcome so a
    failure nobody awaits is not logged as never retrieved."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


def _contiguous_prefix(
    page: Sequence[Sequence[Any]], next_seq: int, size: int
) -> tuple[int, tuple[int, str] | None]:
    """How many rows of `page` (`LeafRow`s) continue the log from `next_seq` without a
    gap and within the tree's `size`, and the first fault after them (its seq and what
    it is)."""
    last = page[-1][0]
    if page[0][0] == next_seq and last == next_seq + len(page) - 1 and last <= size:
        return len(page), None  # the common case: checked by its two ends
    for count, row in enumerate(page):
        seq = row[0]
        expected = next_seq + count
        if seq > expected:
            gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            return count, (
                expected,
                f"seq {gap} missing: the log jumps from seq {expected - 1} to {seq} "
                "(an event was deleted)",
            )
        if seq < expected:
            return count, (
                expected,
                f"seq {seq} appears again or out of order after seq {expected - 1}",
            )
        if seq > size:
            return count, (
                seq,
                f"seq {seq} is not in the tree (the tree has {size} leaves): an event "
                "was inserted without going through the store",
            )
    return len(page), None
