"""`jsonl:///dir`: the log as JSON-lines files, one per UTC day (see log.py), beside the
store's metadata, checkpoints and keys (state.py), for several processes at once.

All file work runs on the backend's own threads, under one mutex per backend: appends
and reads of one store never interleave inside the index, and appends of several stores
or processes exclude each other through the directory lock. A daemon thread notices
other processes' commits (names and size of the newest file, polled every
`watch_interval`) and tells the store's subscriptions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ...clock import utcnow
from ...codec import PreparedEvent
from ...errors import BackendError
from ...events import RecordedEvent
from ...integrity.leaf import StoredLeaf
from ...integrity.merkle import NodeKey
from ...query import Query
from ..base import Checkpoint, KeyRecord, Outcome, announce_head
from .lock import DirectoryLock
from .log import JsonlLog
from .state import SideFiles
from .tree import JsonlTree

log = logging.getLogger("eventstore.jsonl")

T = TypeVar("T")

LOCK_FILE = ".lock"
WATCH_INTERVAL = 0.05
SECRET_KEY = "secret"


class JsonlBackend:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        lock_timeout: float | str = 30.0,
        watch_interval: float | str = WATCH_INTERVAL,
        create: bool | str = True,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.directory = Path(directory)
        if str(synchronous).lower() not in ("normal", "full"):
            raise ValueError("synchronous must be normal or full")
        self._sync = str(synchronous).lower() == "full"
        self._lock_timeout = float(lock_timeout)
        self._watch_interval = float(watch_interval)
        if not 0 <= self._watch_interval < float("inf"):
            raise ValueError("watch_interval must be a number of seconds >= 0 (0: off)")
        self._create = create not in (False, "0", "false", "no")
        self._clock = clock
        self._mutex = threading.Lock()
        self._threads: ThreadPoolExecutor | None = None
        self._dir_lock: DirectoryLock | None = None
        self.log: JsonlLog | None = None
        self._tree = JsonlTree()
        self._side: SideFiles | None = None
        self._secret: bytes | None = None
        self._callbacks: list[Callable[[int], None]] = []
        self._watcher: threading.Thread | None = None
        self._stop_watching = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._threads is None:
            raise BackendError("the jsonl backend is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, functools.partial(self._locked, fn, *args))

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._mutex:
            try:
                return fn(*args)
            except OSError as exc:
                raise BackendError(f"{self.directory}: {exc}") from exc

    def _open(self) -> bytes:
        if not self.directory.is_dir():
            if not self._create:
                raise BackendError(f"no eventstore directory at {self.directory}; check the "
                                   "path (create=1 allows a new one)")
            if not self.directory.parent.is_dir():
                raise BackendError(f"cannot create {self.directory}: directory "
                                   f"{self.directory.parent} does not exist")
            self.directory.mkdir(exist_ok=True)
        self._dir_lock = DirectoryLock(self.directory / LOCK_FILE, self._lock_timeout)
        self._dir_lock.open()
        self._side = SideFiles(self.directory, self._dir_lock, sync=self._sync)
        self.log = JsonlLog(self.directory, self._dir_lock, sync=self._sync, clock=self._clock)
        return self._side.get_meta(SECRET_KEY) or self._side.set_meta_if_absent(
            SECRET_KEY, os.urandom(32))

    async def open(self) -> None:
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="eventstore-jsonl")
        try:
            self._secret = await self._run(self._open)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._stop_watching.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await asyncio.to_thread(watcher.join)
        self._callbacks.clear()
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=True)
        with self._mutex:
            if self.log is not None:
                self.log.close()
                self.log = None
            if self._dir_lock is not None:
                self._dir_lock.close()
                self._dir_lock = None

    def reindex(self) -> None:
        """Drop the in-memory index; the next operation rebuilds it from the files (after
        they were changed outside eventstore, e.g. restored from a backup)."""
        with self._mutex:
            if self.log is not None and self._dir_lock is not None:
                self.log.close()
                self.log = JsonlLog(self.directory, self._dir_lock, sync=self._sync,
                                    clock=self._clock)
                self._tree = JsonlTree()

    def _the_log(self) -> JsonlLog:
        if self.log is None:
            raise BackendError("the jsonl backend is not open")
        return self.log

    def _the_side(self) -> SideFiles:
        if self._side is None:
            raise BackendError("the jsonl backend is not open")
        return self._side

    # --- the log -------------------------------------------------------------------------

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        return await self._run(lambda: self._the_log().commit(requests))

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        return await self._run(lambda: self._the_log().query(query, after_seq, limit))

    async def count(self, query: Query) -> int:
        return await self._run(lambda: self._the_log().count(query))

    async def head(self) -> int:
        return await self._run(lambda: self._the_log().head())

    # --- the integrity tree (eventstore.integrity.TreeStore; see tree.py) --------------

    def _synced(self) -> JsonlTree:
        self._tree.sync(self._the_log())
        return self._tree

    async def tree_size(self) -> int:
        """The number of leaves: the committed lines of every process, read up to now."""
        return await self._run(lambda: self._synced().size)

    async def tree_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        return await self._run(lambda: self._synced().nodes(keys))

    async def stored_leaves(self, from_seq: int, limit: int) -> Sequence[StoredLeaf]:
        return await self._run(
            lambda: self._synced().stored_leaves(self._the_log(), from_seq, limit))

    async def secret(self) -> bytes:
        if self._secret is None:
            raise BackendError("the jsonl backend is not open")
        return self._secret

    # --- commits of other processes ------------------------------------------------------

    async def listen(self, on_head: Callable[[int], None]) -> None:
        """Call `on_head(seq)` soon after any process commits to the directory; off with
        the URL option watch_interval=0."""
        if self._watch_interval == 0:
            return
        self._callbacks.append(on_head)
        if self._watcher is None:
            self._start_watcher(asyncio.get_running_loop())

    def unlisten(self, on_head: Callable[[int], None]) -> None:
        self._callbacks = [c for c in self._callbacks if c != on_head]

    def _start_watcher(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop_watching.clear()
        with self._mutex:
            seen = self._the_log().signature()
        # A daemon thread: a store its app forgot to close must not keep the process alive.
        self._watcher = threading.Thread(target=self._watch, args=(loop, seen),
                                         name="eventstore-jsonl-watch", daemon=True)
        self._watcher.start()

    def _watch(self, loop: asyncio.AbstractEventLoop, seen: tuple[int, ...]) -> None:
        try:
            while not self._stop_watching.wait(self._watch_interval):
                with self._mutex:
                    current = self._the_log().signature()
                    if current == seen:
                        continue
                    seen = current
                    head = self._the_log().head()
                loop.call_soon_threadsafe(announce_head, self._callbacks, head)
        except BaseException as exc:  # the guardian sees the thread gone and restarts it
            if not self._stop_watching.is_set():
                log.warning("watching %s for commits of other processes stopped: %r; the "
                            "guardian restarts it", self.directory, exc)

    async def check_listener(self) -> bool:
        """True if the watcher had stopped and runs again (commits may have gone unnoticed
        meanwhile: catch up); the guardian calls this on every tick."""
        watcher = self._watcher
        if watcher is None or watcher.is_alive() or self._threads is None:
            return False
        self._start_watcher(asyncio.get_running_loop())
        return True

    def stop_watching(self) -> None:
        """Stop noticing other processes' commits (tests of the guardian's catch-up)."""
        self._stop_watching.set()
        if self._watcher is not None:
            self._watcher.join()

    # --- checkpoints, metadata, keys -----------------------------------------------------

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        return await self._run(lambda: self._the_side().load_checkpoint(name))

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self._run(lambda: self._the_side().save_checkpoint(checkpoint))

    async def list_checkpoints(self) -> list[Checkpoint]:
        return await self._run(lambda: self._the_side().list_checkpoints())

    async def delete_checkpoint(self, name: str) -> None:
        await self._run(lambda: self._the_side().delete_checkpoint(name))

    async def get_meta(self, key: str) -> bytes | None:
        return await self._run(lambda: self._the_side().get_meta(key))

    async def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        return await self._run(lambda: self._the_side().set_meta_if_absent(key, value))

    async def load_keys(self, user_ids: Sequence[str]) -> dict[str, KeyRecord]:
        return await self._run(lambda: self._the_side().load_keys(user_ids))

    async def create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        return await self._run(lambda: self._the_side().create_key(user_id, generation, wrapped))

    async def destroy_keys(self, user_id: str) -> KeyRecord:
        return await self._run(lambda: self._the_side().destroy_keys(user_id))

    async def key_owners(self, prefix: str | None = None) -> list[str]:
        """The owners (user ids, or user and period) that have a live key (retention)."""
        return await self._run(lambda: self._the_side().key_owners(prefix))
