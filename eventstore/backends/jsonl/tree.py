"""The Merkle tree of a jsonl directory (see eventstore.integrity).

Each line carries its event's leaf hash (the `leaf` key, see log.py), written in the same
`write` as the line, so a leaf can no more be lost apart from its event than in a
database row. The interior of the tree is derived data: each process rebuilds it in memory
from the lines, in the order the files store them, and extends it with whatever any
process appended since, whenever a tree operation asks (amortised O(1) per event, the
leaves kept as 32 bytes each). Levels below `layout.STORED_FROM` are folded from the
leaves when read, as the databases do.

Since the tree is rebuilt from the lines, a line deleted or edited together with its
`leaf` is seen by `verify` as a seq out of place or a changed root against an earlier
checkpoint, and a log cut at its end only against a checkpoint (`checkpoint_dir=`):
keep one where the directory's owner cannot rewrite it. Lines written before the `leaf`
key existed get the hash of their content when first read (as the database migration
builds the tree of an existing log).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec

from ...clock import to_micros
from ...integrity.appender import TreeAppender
from ...integrity.layout import assemble, leaf_ranges
from ...integrity.leaf import StoredLeaf, hash_leaf
from ...integrity.merkle import NodeKey
from .log import READ_BLOCK, CorruptLogError, DayFile, JsonlLog, document_of

__all__ = ["JsonlTree"]

_HASH = 32


class _LeafHead(msgspec.Struct):
    seq: int
    commit: int
    leaf: str | None = None


class _LeafLine(msgspec.Struct):
    """What a leaf is computed from, as the line stores it."""

    seq: int
    id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    conversation_id: str | None = None
    user_id: str | None = None
    leaf: str | None = None


_head_decoder = msgspec.json.Decoder(_LeafHead)
_line_decoder = msgspec.json.Decoder(_LeafLine)


def _stored_leaf(line: bytes) -> StoredLeaf:
    try:
        fields = _line_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptLogError(f"a line that is not an event ({exc}); the directory was "
                              "changed outside eventstore") from None
    return StoredLeaf(fields.seq, fields.id, fields.type, fields.conversation_id,
                      fields.user_id, to_micros(fields.occurred_at),
                      to_micros(fields.recorded_at), document_of(line),
                      None if fields.leaf is None else bytes.fromhex(fields.leaf))


class JsonlTree:
    """One process's tree over the lines of a directory, in stored order.

    Not thread-safe by itself: the backend calls it under its mutex, with its log."""

    def __init__(self) -> None:
        self._leaves = bytearray()  # the leaf hashes, 32 bytes each, by position
        self._seqs = array("q")  # by position: the line's seq (stored order)
        self._offsets = array("q")  # by position: where its line starts in its file
        self._lengths = array("q")
        self._starts: list[tuple[int, DayFile]] = []  # (first position, file)
        self._nodes: dict[NodeKey, bytes] = {}
        self._appender = TreeAppender()
        self._in_order = True  # every seq above the one before it, as eventstore writes
        self._file = 0  # the file being read (index in the log's sorted files)
        self._read_to = 0  # bytes of it folded in

    @property
    def size(self) -> int:
        return len(self._seqs)

    def sync(self, log: JsonlLog) -> None:
        """Fold in every committed line not folded yet, of any process."""
        files = log.listed()  # listed before reading: a file with a later one is complete
        while self._file < len(files):
            f = files[self._file]
            if not self._starts or self._starts[-1][1] is not f:
                self._starts.append((self.size, f))
            self._read(log, f)
            if self._file + 1 == len(files):
                return
            self._file += 1
            self._read_to = 0

    def _read(self, log: JsonlLog, f: DayFile) -> None:
        block = READ_BLOCK
        while True:
            chunk = log.pread(f, block, self._read_to)
            if not chunk:
                return
            used = self._fold(f, chunk, self._read_to)
            self._read_to += used
            if len(chunk) < block:
                return
            if used == 0:  # one group larger than the block
                block *= 2

    def _fold(self, f: DayFile, chunk: bytes, base: int) -> int:
        """Fold the complete groups at the start of `chunk`; the bytes they take."""
        pos = used = 0
        pending: list[tuple[int, int, int, bytes]] = []  # seq, offset, length, leaf
        while True:
            newline = chunk.find(b"\n", pos)
            if newline < 0:
                return used
            line = chunk[pos:newline]
            try:
                head = _head_decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise CorruptLogError(
                    f"{f.path}, byte {base + pos}: a complete line that is not an event "
                    f"({exc}); the file was changed outside eventstore") from None
            if head.leaf is not None:
                leaf = bytes.fromhex(head.leaf)
            else:  # written before lines kept their leaf
                stored = _stored_leaf(line)
                leaf = hash_leaf(stored.seq, stored.id, stored.type, stored.conversation_id,
                                 stored.user_id, stored.occurred_at, stored.recorded_at,
                                 stored.document)
            if len(leaf) != _HASH:
                raise CorruptLogError(f"{f.path}, byte {base + pos}: a leaf hash of "
                                      f"{len(leaf)} bytes; the file was changed outside "
                                      "eventstore")
            pending.append((head.seq, base + pos, newline + 1 - pos, leaf))
            pos = newline + 1
            if head.seq == head.commit:
                self._grow(pending)
                pending = []
                used = pos

    def _grow(self, lines: list[tuple[int, int, int, bytes]]) -> None:
        size = self.size
        hashes = [leaf for _, _, _, leaf in lines]
        growth = self._appender.grow(size, self.nodes(self._appender.needs(size)), hashes)
        for seq, offset, length, leaf in lines:
            if self._seqs and seq <= self._seqs[-1]:
                self._in_order = False
            self._seqs.append(seq)
            self._offsets.append(offset)
            self._lengths.append(length)
            self._leaves += leaf
        self._nodes.update({(level, index): h for level, index, h in growth.nodes})
        self._appender.committed(growth)

    def nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The hashes of `keys` (those of the tree's current size; others left out)."""
        leaves = self._leaves
        found = {i: bytes(leaves[i * _HASH:(i + 1) * _HASH])
                 for lo, hi in leaf_ranges(keys) for i in range(lo, min(hi, self.size))}
        return assemble(keys, found, self._nodes)

    def stored_leaves(self, log: JsonlLog, from_seq: int, limit: int) -> list[StoredLeaf]:
        """Up to `limit` lines with seq >= `from_seq`, in seq order, each without its
        kept leaf: unlike a database row, a line carries its own seq, so a line moved
        elsewhere still hashes to its own `leaf`. Verify compares it with the tree's leaf
        at its seq's position instead (`nodes`), which a moved line does not match."""
        if self._in_order:
            start = bisect_left(self._seqs, from_seq)
            positions: Sequence[int] = range(start, min(start + limit, self.size))
        else:  # the files were changed outside eventstore
            seqs = self._seqs
            ranked = sorted((p for p in range(self.size) if seqs[p] >= from_seq),
                            key=seqs.__getitem__)
            positions = ranked[:limit]
        out: list[StoredLeaf] = []
        for position in positions:
            _, f = self._starts[bisect_right(self._starts, position,
                                             key=lambda s: s[0]) - 1]
            line = log.pread(f, self._lengths[position], self._offsets[position])
            leaf = _stored_leaf(line.rstrip(b"\n"))
            out.append(StoredLeaf(leaf.seq, leaf.id, leaf.type, leaf.conversation_id,
                                  leaf.user_id, leaf.occurred_at, leaf.recorded_at,
                                  leaf.document))
        return out
