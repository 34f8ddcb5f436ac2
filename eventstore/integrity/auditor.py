"""The store's side of integrity: the log's origin, its `Integrity` service, and the
checkpoints it writes where the database's owner cannot rewrite them.

The origin names the log in every checkpoint, so it must not change when a file moves
or a server is renamed: the first store to open a log derives one from its URL (or takes
`origin=`) and keeps it in the log's metadata; later stores read it back (an explicit
`origin=` always wins, for logs copied under a new name).

Checkpoints: with `checkpoint_dir=` (a directory, or a callable taking the checkpoint
text), a task of the store writes the current checkpoint every `checkpoint_every`
committed events or `checkpoint_interval` seconds, whichever comes first, once more when
the store closes, and only when the log grew. A directory gets one new read-only file
per checkpoint (`checkpoint-<size>.txt`, never overwritten): point it at storage the
database's owner cannot write (another machine, a WORM bucket, an auditor's share).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventstore.errors import IntegrityError
from eventstore.integrity.keys import SigningKeyInput, load_signing_key
from eventstore.integrity.note import is_valid_key_name
from eventstore.integrity.service import Integrity, TreeStore

__all__ = ["Auditor", "CheckpointSink", "default_origin"]

log = logging.getLogger("eventstore.integrity")

CheckpointSink = str | os.PathLike[str] | Callable[[str], Any]
ORIGIN_META = "integrity_origin"
DEFAULT_EVERY = 1_000
DEFAULT_INTERVAL = 60.0


def default_origin(url: str | None) -> str:
    """A name for the log at `url`, usable as a signing key name (no spaces, no '+'),
    without credentials: `host/abs/path.db` for SQLite and jsonl, `host:port/db/schema`
    for PostgreSQL, `memory/<name>` for memory logs."""
    url = url or "memory://"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("sqlite", "jsonl"):
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        name = f"{socket.gethostname()}{Path(path).resolve()}"
    elif scheme in ("postgresql", "postgres"):
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        name = (f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
                f"{parts.path or '/'}/{query.get('schema', 'eventstore')}")
    else:
        name = f"{scheme or 'eventstore'}/{parts.netloc or 'private'}"
    return "".join("_" if c.isspace() or c == "+" else c for c in name)


class Auditor:
    """Integrity for one store: built unbound, bound to the backend at `start`."""

    def __init__(
        self,
        *,
        url: str | None,
        origin: str | None = None,
        signing_key: SigningKeyInput | None = None,
        checkpoint_dir: CheckpointSink | None = None,
        checkpoint_every: int | None = None,
        checkpoint_interval: float | None = None,
    ) -> None:
        self.url = url
        self._origin = origin
        self.signing_key: Ed25519PrivateKey | None = load_signing_key(signing_key)
        if origin is not None and self.signing_key is not None and not is_valid_key_name(
                origin):
            raise IntegrityError(f"origin {origin!r} cannot name a signing key: use no "
                                 "spaces and no '+' (e.g. 'example.com/audit-log')")
        every = checkpoint_every if checkpoint_every is not None else DEFAULT_EVERY
        interval = checkpoint_interval if checkpoint_interval is not None else DEFAULT_INTERVAL
        if checkpoint_dir is None and (checkpoint_every or checkpoint_interval) is not None:
            raise IntegrityError("checkpoint_every and checkpoint_interval need checkpoint_dir= "
                                 "(a directory, or a callable taking the checkpoint text)")
        if every < 1 or not interval > 0:
            raise IntegrityError("checkpoint_every must be >= 1 and checkpoint_interval > 0")
        self.sink = checkpoint_dir
        self.every = every
        self.interval = interval
        self._service: Integrity | None = None
        self._untreed = "this store's backend"  # named at start when it keeps no tree
        self._pending = 0
        self._wake = asyncio.Event()
        self._written_size = 0  # an empty log needs no checkpoint
        self._lock = asyncio.Lock()
        self.on_written: Callable[[str, int, Path | None], None] | None = None

    async def start(self, backend: Any) -> None:
        """Bind to the opened backend: resolve the origin and build the service."""
        if not isinstance(backend, TreeStore):
            self._service = None
            scheme = urlsplit(self.url or "").scheme.lower()
            self._untreed = (f"the {scheme}:// backend ({type(backend).__name__})" if scheme
                             else f"this store's backend ({type(backend).__name__})")
            if self.sink is not None:
                raise IntegrityError(
                    f"checkpoint_dir= needs a backend that keeps a Merkle tree; "
                    f"{self._untreed} does not")
            return
        # The log keeps its name: the first store to open it, named by origin= or after
        # its URL, records it, and every later one (the CLI, the viewer, an auditor's
        # verify) signs and checks under that name. A store naming it otherwise would
        # write checkpoints no verifier of the log accepts, so it is refused.
        given = self._origin
        # a bad name given is refused before it is stored
        service = Integrity(backend, given, self.signing_key) if given is not None else None
        origin = given or default_origin(self.url)
        if hasattr(backend, "set_meta_if_absent"):
            origin = (await backend.set_meta_if_absent(ORIGIN_META, origin.encode())).decode()
            if given is not None and origin != given:
                raise IntegrityError(
                    f"this log is named {origin!r} (kept in the log since it was first "
                    f"opened), not origin={given!r}: its checkpoints and their signatures "
                    f"carry that name. Open it without origin= or with origin={origin!r}")
        self._service = service or Integrity(backend, origin, self.signing_key)

    @property
    def service(self) -> Integrity:
        """The bound service; IntegrityError on a backend that keeps no tree."""
        if self._service is None:
            raise IntegrityError(
                f"{self._untreed} keeps no Merkle tree, so it cannot give tree heads, "
                "proofs or checkpoints, nor verify its log; memory://, sqlite://, "
                "postgresql:// and jsonl:// keep one"
            )
        return self._service

    # --- checkpoints -------------------------------------------------------------------

    def committed(self, count: int) -> None:
        """`count` more events were committed (wakes the writer every `every`)."""
        self._pending += count
        if self._pending >= self.every:
            self._wake.set()

    async def run(self) -> None:
        """Write checkpoints until cancelled (the store runs this in its task group)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.write()
            except Exception:  # a full disk must not stop the store; try again next time
                log.exception("writing a checkpoint failed")

    async def write(self) -> str | None:
        """Write the current checkpoint to the sink unless one of this size was already
        written; returns its text (None when nothing was written)."""
        if self.sink is None:
            return None
        async with self._lock:
            self._pending = 0
            service = self.service
            text = await service.checkpoint()
            size = int(text.split("\n", 2)[1])
            if size == self._written_size:
                return None
            delivered, path = await self._deliver(text, size)
            self._written_size = size
        if not delivered:
            return None
        if self.on_written is not None:
            self.on_written(text, size, path)
        return text

    async def _deliver(self, text: str, size: int) -> tuple[bool, Path | None]:
        sink = self.sink
        if callable(sink):
            result = sink(text)
            if inspect.isawaitable(result):
                await result
            return True, None
        assert sink is not None
        path = await asyncio.to_thread(_write_file, Path(sink), text, size)
        return path is not None, path


def _write_file(directory: Path, text: str, size: int) -> Path | None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{size:012d}.txt"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        return None  # written before (by this or another process): never overwritten
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path
