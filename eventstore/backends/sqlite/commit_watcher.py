"""Live delivery across stores and processes sharing one SQLite file.

SQLite has no notification channel like PostgreSQL's LISTEN/NOTIFY, and a store's
`event_appended` signal only fires for its own appends, so without this a subscription
would see another process's events only at the guardian's next tick (30 s by default).
`PRAGMA data_version` answers, in microseconds and without reading any table, whether
any other connection committed since it was last asked; a connection of its own polls it
on a daemon thread every `interval` and, when it moved, reads the head and hands it to
the store on its event loop, which wakes the subscriptions that are behind. The event
loop hears nothing until something changed.

The store's own writer is "another connection" too, so its commits are reported as well;
a subscription that already has them from the signal is not behind, and is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .connection import connect

log = logging.getLogger("eventstore.sqlite")

INTERVAL = 0.05  # seconds: the most a commit from elsewhere waits to be noticed


class CommitWatcher:
    def __init__(self, path: Path, pragmas: Sequence[str], on_head: Callable[[int], None],
                 loop: asyncio.AbstractEventLoop, interval: float = INTERVAL) -> None:
        self._path = path
        self._pragmas = list(pragmas)
        self._on_head = on_head
        self._loop = loop
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        conn = connect(self._path, [*self._pragmas, "PRAGMA query_only = ON"])
        try:
            version = self._version(conn)
        except BaseException:
            conn.close()
            raise
        self._stop.clear()
        # A daemon thread: a store its app forgot to close must not keep the process alive.
        self._thread = threading.Thread(target=self._run, args=(conn, version),
                                        name="eventstore-sqlite-watch", daemon=True)
        self._thread.start()

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        ((version,),) = conn.execute("PRAGMA data_version").fetchall()
        return int(version)

    def _run(self, conn: sqlite3.Connection, version: int) -> None:
        try:
            while not self._stop.wait(self.interval):
                now = self._version(conn)
                if now == version:
                    continue
                version = now
                ((head,),) = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM events").fetchall()
                self._loop.call_soon_threadsafe(self._on_head, int(head))
        except BaseException as exc:  # the guardian sees the thread gone and restarts it
            if not self._stop.is_set():
                log.warning("watching %s for commits from other processes stopped: %r; the "
                            "guardian restarts it", self._path, exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
