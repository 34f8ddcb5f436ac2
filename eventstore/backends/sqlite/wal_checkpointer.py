"""WAL checkpoints for the SQLite backend, run beside the writer rather than inside it.

Left to itself, SQLite checkpoints the WAL inside the commit that takes it past
`wal_autocheckpoint` pages: that one commit copies every frame into the database file and
syncs it, so about one append in a few hundred waits several milliseconds longer than the
rest (measured with benchmarks/subscribe.py: commit p99 4.2 ms with automatic checkpoints,
1.2 ms with this). The writer turns automatic checkpoints off and says when it committed;
a PASSIVE checkpoint then runs here, on a connection and thread of its own, at most once
per `interval`. PASSIVE copies what it can without taking the write lock or waiting on
readers, so commits carry on meanwhile, and the next writer resets the WAL to its start
once a checkpoint has copied every frame.

Why a clock and not a page count: the WAL grows by whole pages per b-tree leaf a commit
touches, which depends on how the rows spread over the indexes, not on their bytes, and
Python's sqlite3 has no WAL hook to count frames. A checkpoint with nothing to copy is
nearly free.

Under a stream of appends with no pause the WAL would never be reset: each checkpoint
finishes after the writer has added frames again. So when a checkpoint finds more than
`max_frames` in the WAL, the writer runs one PASSIVE checkpoint itself right after its
next commit; the frames left to copy are the few committed since the background one, and
the commit after it starts the WAL over. That costs one commit in every few thousand
pages a sync, where SQLite's own checkpoint cost one in every thousand a sync and the
whole copy.

Erasure (forget_user, retention) needs more than a PASSIVE checkpoint: the WAL still holds
the page images from before the overwrite, and the database file the pages from before
the last checkpoint. `truncate()` copies every frame into the file and cuts the WAL to zero
bytes while no checkpoint of ours runs beside it (they share a lock, which is what made
erasure fail now and then when the two raced). Another process's reader on an old
snapshot can still block it: the erasure is then *pending*, this thread retries it every
`interval` until it succeeds, and `pending` says so meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from .connection import connect

log = logging.getLogger("eventstore.sqlite")

INTERVAL = 0.1  # seconds between checkpoints while commits keep coming
MAX_FRAMES = 2_000  # about 8 MB of WAL: past this, the writer finishes a checkpoint itself
_PAGE = 4096


class WalCheckpointer:
    def __init__(self, path: Path, pragmas: Sequence[str], interval: float = INTERVAL,
                 max_frames: int = MAX_FRAMES) -> None:
        self._path = path
        self._pragmas = list(pragmas)
        self.interval = interval
        self.max_frames = max_frames
        self._writer_helps = False
        self._unchecked = 0  # bytes of documents committed since everything was copied
        self._lock = threading.Lock()  # one checkpoint at a time among our connections
        self._pending = threading.Event()  # an erasure's TRUNCATE still to finish
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.checkpoints = 0  # completed, for tests and diagnostics

    def start(self) -> None:
        self._conn = connect(self._path, self._pragmas)
        # A daemon thread: a store its app forgot to close must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name="eventstore-sqlite-checkpoint",
                                        daemon=True)
        self._thread.start()

    def committed(self, writer: sqlite3.Connection, written: int = 0) -> None:
        """Called by the writer, on its thread, after each commit of `written` bytes of
        documents.

        The writer also counts what it wrote since a checkpoint last copied everything:
        on a loaded machine the background thread may not get to run for a long while,
        and the WAL must stay bounded without it (the documents are a fraction of the
        pages a commit adds, so the count errs toward checkpointing late, but it does)."""
        self._unchecked += written
        if self._writer_helps or self._unchecked > self.max_frames * _PAGE:
            try:
                ((busy, frames, copied),) = writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
                # busy: the background checkpoint held the checkpoint lock; try next commit
                self._writer_helps = bool(busy) or copied < frames
                if not self._writer_helps:
                    self._unchecked = 0
            except sqlite3.Error as exc:  # the commit stands; a later checkpoint catches up
                self._writer_helps = False
                self._unchecked = 0
                log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
        self._dirty.set()

    @property
    def pending(self) -> bool:
        """True while an erasure waits for another connection's reader to let go."""
        return self._pending.is_set()

    def truncate(self, conn: sqlite3.Connection, busy_ms: int = 1_000) -> bool:
        """Checkpoint every frame and cut the WAL to zero bytes on `conn`, waiting up to
        `busy_ms` for readers; True when done, else the erasure is left pending (retried
        on this thread until it succeeds)."""
        with self._lock:
            done = _truncate(conn, busy_ms)
        if done:
            self._pending.clear()
        else:
            self._pending.set()
            self._dirty.set()
        return done

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        while not self._stop.is_set():
            if self._pending.is_set():  # no commit needed to try again
                self._dirty.wait(self.interval)
            else:
                self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()  # commits from here on call for the next checkpoint
            try:
                with self._lock:
                    if self._pending.is_set():
                        if _truncate(conn, 0):
                            self._pending.clear()
                            log.info("erasure in %s finished: the WAL is truncated",
                                     self._path)
                        continue
                    ((busy, frames, copied),) = conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)")
                self.checkpoints += 1
                self._writer_helps = frames > self.max_frames
                if not busy and copied >= frames:
                    self._unchecked = 0
            except sqlite3.Error as exc:  # the next commit asks again; nothing is lost
                log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
            self._stop.wait(self.interval)

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and close its connection;
        the writer's own close checkpoints whatever is left."""
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _truncate(conn: sqlite3.Connection, busy_ms: int) -> bool:
    (busy_timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
    try:
        ((busy, _frames, _copied),) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
    return not busy
