"""The log of a jsonl directory: one JSON-lines file per UTC day, and an index of them.

Each line is the stored document of one event (a RecordedEvent as JSON, so `grep` and
`jq` read it) with three more keys: `leaf`, the event's leaf hash in the integrity tree
(tree.py), `digest`, the content fingerprint idempotent retries are checked against, and
`commit`, the seq of the last event of the group it was written in. A group is
committed once its last line is complete: lines of a group whose last line is missing or
torn were never acknowledged and are never read. That is all a crashed writer can leave
behind, because every writer appends under the directory lock (lock.py) and the next
one truncates such a tail before it writes.

Seqs are contiguous from 1 and `recorded_at` never decreases with seq (the writer keeps
it so under the lock), so the events of one UTC day are one file and one seq range. Once
a later day's file exists an earlier one never grows again: a reader that lists the
directory and then reads each file to its end can never see a later event without every
earlier one, whatever the writers are doing meanwhile.

The index lives in memory, built lazily from the lines, file by file: a read bounded in
time indexes only the days it covers; a writer indexes everything once (it checks ids
against the whole log), then only what other processes appended since.
"""

from __future__ import annotations

import logging
import os
import re
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from heapq import merge
from pathlib import Path

import msgspec

from ...clock import from_micros, to_micros
from ...codec import PreparedEvent, decode_recorded
from ...errors import BackendError
from ...events import RecordedEvent
from ...query import Query
from ..base import Outcome, StoredId, plan_group, request_ids
from ..tree import leaf_columns
from .lock import DirectoryLock

log = logging.getLogger("eventstore.jsonl")

DAY_FILE = re.compile(r"events-(\d{4}-\d{2}-\d{2})\.jsonl")
READ_BLOCK = 1 << 22
OPEN_READERS = 32  # day files kept open for reading at once


def day_file_name(day: date) -> str:
    return f"events-{day.isoformat()}.jsonl"


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def encode_line(document: bytes, leaf: bytes, digest: bytes, commit: int) -> bytes:
    """A stored document as one line: its leaf hash, digest and group's last seq appended."""
    return b'%s,"leaf":"%s","digest":"%s","commit":%d}\n' % (
        document[:-1], leaf.hex().encode(), digest.hex().encode(), commit)


def document_of(line: bytes) -> bytes:
    """The stored document of a line (without its newline), as it was encoded. The keys
    `encode_line` appends come last, so the last `"digest"` key starts them (a key of
    that name inside the document comes before it), preceded by the leaf hash in lines
    written since leaves were kept."""
    cut = line.rfind(b',"digest":"')
    leaf = cut - _LEAF_KEY_LENGTH
    if leaf >= 0 and line.startswith(b',"leaf":"', leaf):
        cut = leaf
    return line[:cut] + b"}"


_LEAF_KEY_LENGTH = len(b',"leaf":""') + 64


class LineHead(msgspec.Struct):
    """The fields of a line the index keeps (the rest is decoded only when read)."""

    seq: int
    id: str
    type: str
    recorded_at: datetime
    digest: str
    commit: int
    conversation_id: str | None = None
    user_id: str | None = None


_head_decoder = msgspec.json.Decoder(LineHead)


class CorruptLogError(BackendError):
    """A complete line of a day file is not an event in its place: the file was changed
    outside eventstore."""


class DayFile:
    """One day's file and the index of its committed lines (row i = i-th line)."""

    def __init__(self, day: date, path: Path, number: int) -> None:
        self.number = number  # in the order this process found the files
        self.day = day
        self.path = path
        self.indexed = 0  # bytes of complete groups indexed
        self.closing = False  # a later day's file exists: this one no longer grows
        self.complete = False  # closing, and indexed to its end since
        self.seqs = array("q")
        self.offsets = array("q")
        self.micros = array("q")
        self.types: list[str] = []
        self.conversations: list[str | None] = []
        self.users: list[str | None] = []
        self.by_type: dict[str, list[int]] = {}
        self.by_conversation: dict[str, list[int]] = {}
        self.by_user: dict[str, list[int]] = {}

    def span(self, row: int) -> tuple[int, int]:
        """(offset, length) of a row's line."""
        start = self.offsets[row]
        end = self.offsets[row + 1] if row + 1 < len(self.offsets) else self.indexed
        return start, end - start

    def rows(self, query: Query, after_seq: int) -> Iterator[int]:
        """Rows matching `query` with seq > after_seq, in seq order."""
        start = bisect_right(self.seqs, after_seq)
        end = len(self.seqs)
        if query.after is not None:
            start = max(start, bisect_left(self.micros, to_micros(query.after)))
        if query.before is not None:
            end = min(end, bisect_right(self.micros, to_micros(query.before)))
        if start >= end:
            return
        candidates: Iterator[int]
        if query.conversation_id is not None:
            candidates = _from(self.by_conversation.get(query.conversation_id, []), start)
        elif query.user_id is not None:
            candidates = _from(self.by_user.get(query.user_id, []), start)
        elif query.types is not None:
            candidates = merge(*(_from(self.by_type.get(t, []), start) for t in query.types))
        else:
            yield from range(start, end)
            return
        user, types = query.user_id, query.types
        for row in candidates:
            if row >= end:
                return
            if user is not None and self.users[row] != user:
                continue
            if types is not None and self.types[row] not in types:
                continue
            yield row


def _from(rows: list[int], start: int) -> Iterator[int]:
    for i in range(bisect_left(rows, start), len(rows)):
        yield rows[i]


class JsonlLog:
    """The day files of one directory: appends under the lock, reads without it.

    Not thread-safe by itself: the backend calls it under one mutex.
    """

    def __init__(self, directory: Path, lock: DirectoryLock, *, sync: bool,
                 clock: Callable[[], datetime]) -> None:
        self.directory = directory
        self._lock = lock
        self._sync = sync
        self._clock = clock
        self.files: list[DayFile] = []
        self._by_day: dict[date, DayFile] = {}
        self._numbered: list[DayFile] = []
        # id -> file number << 32 | row: an int per event, the digest stays in the line
        self._ids: dict[str, int] = {}
        # one string object per distinct type, conversation or user, however many rows
        self._strings: dict[str, str] = {}
        self._readers: OrderedDict[Path, int] = OrderedDict()
        self._writer: tuple[Path, int] | None = None

    def close(self) -> None:
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        if self._writer is not None:
            os.close(self._writer[1])
            self._writer = None

    # --- files ---------------------------------------------------------------------------

    def _list(self) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise BackendError(f"cannot list {self.directory}: {exc}") from exc
        added = False
        for name in names:
            match = DAY_FILE.fullmatch(name)
            if match is None:
                continue
            day = date.fromisoformat(match.group(1))
            if day not in self._by_day:
                self._add_file(day)
                added = True
        if added:
            self.files = sorted(self._by_day.values(), key=lambda f: f.day)
        for f in self.files[:-1]:
            f.closing = True

    def _add_file(self, day: date) -> DayFile:
        f = self._by_day[day] = DayFile(day, self.directory / day_file_name(day),
                                        len(self._numbered))
        self._numbered.append(f)
        return f

    def _reader(self, f: DayFile) -> int:
        fd = self._readers.get(f.path)
        if fd is not None:
            self._readers.move_to_end(f.path)
            return fd
        try:
            fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise BackendError(f"cannot open {f.path}: {exc}") from exc
        self._readers[f.path] = fd
        if len(self._readers) > OPEN_READERS:
            _, oldest = self._readers.popitem(last=False)
            os.close(oldest)
        return fd

    def _ensure(self, f: DayFile) -> None:
        """Index what was committed to `f` since it was last read."""
        if f.complete:
            return
        closing = f.closing  # as listed before reading: then the read below sees its end
        fd = self._reader(f)
        block = READ_BLOCK
        while True:
            chunk = os.pread(fd, block, f.indexed)
            if not chunk:
                break
            used = self._absorb(f, chunk, f.indexed)
            f.indexed += used
            if len(chunk) < block:
                break
            if used == 0:  # one group larger than the block
                block *= 2
        if closing:
            f.complete = True

    def _absorb(self, f: DayFile, chunk: bytes, base: int) -> int:
        """Index the complete groups at the start of `chunk` (the bytes of `f` from offset
        `base`); returns how many bytes they take. The rest is a tail still being written,
        or torn."""
        pos = used = 0
        pending: list[tuple[LineHead, int]] = []
        while True:
            newline = chunk.find(b"\n", pos)
            if newline < 0:
                break
            try:
                head = _head_decoder.decode(chunk[pos:newline])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise CorruptLogError(
                    f"{f.path}, byte {base + pos}: a complete line that is not an event "
                    f"({exc}); the file was changed outside eventstore"
                ) from None
            pending.append((head, base + pos))
            pos = newline + 1
            if head.seq == head.commit:
                for line, offset in pending:
                    self._add(f, line, offset)
                pending.clear()
                used = pos
        return used

    def _add(self, f: DayFile, head: LineHead, offset: int) -> None:
        row = len(f.seqs)
        if row and head.seq != f.seqs[-1] + 1:
            raise CorruptLogError(
                f"{f.path}, byte {offset}: seq {head.seq} follows seq {f.seqs[-1]}; the file "
                "was changed outside eventstore"
            )
        strings = self._strings
        kind = strings.setdefault(head.type, head.type)
        conversation = head.conversation_id
        if conversation is not None:
            conversation = strings.setdefault(conversation, conversation)
            f.by_conversation.setdefault(conversation, []).append(row)
        user = head.user_id
        if user is not None:
            user = strings.setdefault(user, user)
            f.by_user.setdefault(user, []).append(row)
        f.seqs.append(head.seq)
        f.offsets.append(offset)
        f.micros.append(to_micros(head.recorded_at))
        f.types.append(kind)
        f.conversations.append(conversation)
        f.users.append(user)
        f.by_type.setdefault(kind, []).append(row)
        self._ids.setdefault(head.id, f.number << 32 | row)

    def _ensure_all(self) -> None:
        self._list()
        for f in self.files:
            self._ensure(f)

    def listed(self) -> list[DayFile]:
        """The day files, oldest first, as listed now."""
        self._list()
        return self.files

    def pread(self, f: DayFile, length: int, offset: int) -> bytes:
        return os.pread(self._reader(f), length, offset)

    def _lines(self, rows: Sequence[tuple[DayFile, int]]) -> list[bytes]:
        out: list[bytes] = []
        for f, row in rows:
            offset, length = f.span(row)
            out.append(os.pread(self._reader(f), length, offset))
        return out

    # --- reads ---------------------------------------------------------------------------

    def _candidates(self, query: Query) -> list[DayFile]:
        """The files that can hold events of the query's time window: by name alone."""
        self._list()
        low = day_of(query.after) if query.after is not None else None
        high = day_of(query.before) if query.before is not None else None
        return [f for f in self.files
                if (low is None or f.day >= low) and (high is None or f.day <= high)]

    def query(self, query: Query, after_seq: int, limit: int) -> list[RecordedEvent]:
        found: list[tuple[DayFile, int]] = []
        for f in self._candidates(query):
            self._ensure(f)
            if not f.seqs or f.seqs[-1] <= after_seq:
                continue
            for row in f.rows(query, after_seq):
                found.append((f, row))
                if len(found) >= limit:
                    break
            if len(found) >= limit:
                break
        return [decode_recorded(line) for line in self._lines(found)]

    def count(self, query: Query) -> int:
        n = 0
        plain = query.conversation_id is None and query.user_id is None and query.types is None
        for f in self._candidates(query):
            self._ensure(f)
            if plain:
                start = 0 if query.after is None else bisect_left(f.micros,
                                                                  to_micros(query.after))
                end = (len(f.seqs) if query.before is None
                       else bisect_right(f.micros, to_micros(query.before)))
                n += max(end - start, 0)
            else:
                n += sum(1 for _ in f.rows(query, 0))
        return n

    def _last(self) -> tuple[int, int | None]:
        """(seq, recorded_at micros) of the last committed event, (0, None) if none."""
        self._list()
        for f in reversed(self.files):
            self._ensure(f)
            if f.seqs:
                return f.seqs[-1], f.micros[-1]
        return 0, None

    def head(self) -> int:
        return self._last()[0]

    def signature(self) -> tuple[int, ...]:
        """Changes whenever any process commits (cheap: names and one stat)."""
        self._list()
        if not self.files:
            return (0,)
        newest = self.files[-1]
        try:
            size = os.stat(newest.path).st_size
        except OSError:
            size = -1
        return (len(self.files), newest.day.toordinal(), size)

    # --- writes --------------------------------------------------------------------------

    def _stored(self, ids: list[str]) -> dict[str, StoredId]:
        known = [(i, self._ids[i]) for i in ids if i in self._ids]
        lines = self._lines([(self._numbered[at >> 32], at & 0xFFFFFFFF) for _, at in known])
        return {i: StoredId(bytes.fromhex(_head_decoder.decode(line).digest),
                            decode_recorded(line))
                for (i, _), line in zip(known, lines, strict=True)}

    def _repair(self) -> None:
        """Cut the newest file back to its last complete group (we hold the lock, so bytes
        past it belong to a writer that died mid-append and were never acknowledged)."""
        if not self.files:
            return
        newest = self.files[-1]
        size = os.fstat(self._reader(newest)).st_size
        if size > newest.indexed:
            log.warning("%s: discarding %d bytes of an append that never completed (its "
                        "writer stopped mid-write)", newest.path, size - newest.indexed)
            os.truncate(newest.path, newest.indexed)

    def _file_for(self, day: date) -> tuple[DayFile, int]:
        f = self._by_day.get(day)
        if f is None:
            f = self._add_file(day)
            for older in self.files:  # we hold the lock and indexed them to their end
                older.closing = older.complete = True
            self.files.append(f)
        if self._writer is not None and self._writer[0] == f.path:
            return f, self._writer[1]
        if self._writer is not None:
            os.close(self._writer[1])
            self._writer = None
        created = not f.path.exists()
        fd = os.open(f.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if created and self._sync:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._writer = (f.path, fd)
        return f, fd

    def commit(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        with self._lock.held():
            self._ensure_all()
            self._repair()
            last_seq, last_micros = self._last()
            now = self._clock()
            if last_micros is not None and to_micros(now) < last_micros:
                now = from_micros(last_micros)  # recorded_at never decreases with seq
            plan = plan_group(requests, self._stored(request_ids(requests)), last_seq + 1, now)
            if not plan.rows:
                return plan.outcomes, []
            commit = plan.rows[-1].event.seq
            _, leaves = leaf_columns(plan.rows, to_micros(now))
            data = b"".join(encode_line(r.document, leaf, r.digest, commit)
                            for r, leaf in zip(plan.rows, leaves, strict=True))
            f, fd = self._file_for(day_of(now))
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self._sync:
                    os.fsync(fd)
            except OSError as exc:
                os.truncate(f.path, f.indexed)  # nothing of the group stays
                raise BackendError(f"append to {f.path} failed: {exc}") from exc
            f.indexed += self._absorb(f, data, f.indexed)
            return plan.outcomes, [row.event for row in plan.rows]
