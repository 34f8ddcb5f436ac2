"""The directory's write lock: one `flock` on a lock file, shared by every process.

`flock` locks belong to an open file description, so two stores of one process exclude
each other as two processes do; a thread lock in front of it keeps the threads of one
backend, which share the description, from both thinking they hold it. A holder that dies
releases it with its descriptors: a crashed writer never leaves the directory locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import BackendError


class DirectoryLock:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._threads = threading.Lock()

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._threads.acquire(timeout=self.timeout):
            raise BackendError(f"timed out after {self.timeout}s waiting for {self.path}")
        try:
            fd = self._fd
            if fd is None:
                raise BackendError("the jsonl backend is not open")
            self._acquire(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _acquire(self, fd: int) -> None:
        # Non-blocking tries with a growing pause, so a stuck holder turns into an error
        # a person can act on instead of a hung append.
        deadline = time.monotonic() + self.timeout
        pause = 0.0001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise BackendError(f"cannot lock {self.path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"another process has held {self.path} for more than {self.timeout}s; "
                    "retry, or raise lock_timeout in the URL"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
