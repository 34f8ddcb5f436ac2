"""The integrity page's data: the tree head, the latest checkpoint and "verify now".

Everything here only reads. `store.checkpoint()` formats (and signs) the current tree
head in memory; it writes nothing. Checkpoints written by stores opened with
`checkpoint_dir=` are read from that directory when `eventstore serve --checkpoints DIR`
names it (never written: the viewer is not the log's auditor).

Verifying recomputes every leaf from storage: seconds on a million events. So it runs
only when asked (a POST), one run at a time however many ask (they share its result),
and the page shows the last result with its time; loading the page never verifies.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ...clock import utcnow
from ...errors import EventStoreError, IntegrityError
from ...integrity import parse_checkpoint
from ...integrity.note import split_note_text
from ...store import EventStore
from ..render import fmt_time

CHECKPOINT_GLOB = "checkpoint-*.txt"  # the auditor's file names (zero-padded sizes)
MAX_CHECKPOINT_BYTES = 64 * 1024  # a checkpoint is a few lines; anything bigger is not one


def hashes(root: bytes) -> dict[str, str]:
    """A root as the two spellings people compare: hex, and base64 as checkpoints show."""
    return {"hex": root.hex(), "base64": base64.b64encode(root).decode("ascii")}


@dataclass(frozen=True)
class LatestCheckpoint:
    """The newest checkpoint file of a directory, parsed (or why it could not be)."""

    name: str
    text: str
    size: int | None
    root: bytes | None
    signed: bool
    problem: str | None


def latest_checkpoint(directory: Path, origin: str) -> LatestCheckpoint | None:
    """The checkpoint of the largest tree in `directory` (None when there is none); one
    that is not a checkpoint of the log named `origin` says so in its `problem`."""
    files = sorted(directory.glob(CHECKPOINT_GLOB))
    if not files:
        return None
    path = files[-1]
    try:
        raw = path.read_bytes()[:MAX_CHECKPOINT_BYTES]
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return LatestCheckpoint(path.name, "", None, None, False, f"unreadable: {exc}")
    body = split_note_text(text)
    try:
        parsed = parse_checkpoint(body)
    except EventStoreError as exc:
        return LatestCheckpoint(path.name, text, None, None, False, str(exc))
    problem = None if parsed.origin == origin else (
        f"it is a checkpoint of the log {parsed.origin!r}, not of this log ({origin!r})")
    return LatestCheckpoint(path.name, text, parsed.size, parsed.root, body != text, problem)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    size: int
    root: bytes
    first_bad_seq: int | None
    problems: list[str]
    against: str | None  # the checkpoint file the log was proved to extend, if any
    finished_at: datetime
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "size": self.size, "root": hashes(self.root),
                "first_bad_seq": self.first_bad_seq, "problems": self.problems,
                "checkpoint": self.against, "finished_at": self.finished_at,
                "time": fmt_time(self.finished_at), "seconds": round(self.seconds, 3)}


class Verification:
    """At most one verify() at a time; everyone who asks meanwhile gets its result."""

    def __init__(self) -> None:
        self.last: VerifyResult | None = None
        self._running: asyncio.Task[VerifyResult] | None = None

    @property
    def running(self) -> bool:
        return self._running is not None and not self._running.done()

    async def run(self, store: EventStore, checkpoint: LatestCheckpoint | None) -> VerifyResult:
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._verify(store, checkpoint))
        # Shielded: a client that goes away does not cancel the run others wait for.
        return await asyncio.shield(self._running)

    async def _verify(self, store: EventStore,
                      checkpoint: LatestCheckpoint | None) -> VerifyResult:
        usable = checkpoint if checkpoint is not None and checkpoint.problem is None else None
        started = time.perf_counter()
        report = await store.verify(usable.text if usable is not None else None)
        result = VerifyResult(report.ok, report.size, report.root, report.first_bad_seq,
                              list(report.problems), usable.name if usable else None,
                              utcnow(), time.perf_counter() - started)
        self.last = result
        return result


async def integrity_data(store: EventStore, verification: Verification,
                         checkpoints: Path | None) -> dict[str, Any]:
    """Tree head, latest checkpoint and the last verify result: no verify, no writes."""
    try:
        # One tree computation, not two: the head is the one the checkpoint states.
        current = await store.checkpoint()
    except IntegrityError as exc:  # a backend that keeps no tree
        return {"available": False, "reason": str(exc), "origin": None, "tree_head": None,
                "checkpoint": None, "checkpoints_dir": None, "verify": None,
                "verifying": False}
    head = parse_checkpoint(split_note_text(current))
    latest = await asyncio.to_thread(latest_checkpoint, checkpoints, store.origin) \
        if checkpoints is not None else None
    shown: Mapping[str, Any]
    if latest is not None:
        shown = {"source": "file", "name": latest.name, "text": latest.text,
                 "size": latest.size,
                 "root": hashes(latest.root) if latest.root is not None else None,
                 "signed": latest.signed, "problem": latest.problem,
                 "behind": head.size - latest.size if latest.size is not None else None}
    else:
        shown = {"source": "current", "name": None, "text": current,
                 "size": head.size, "root": hashes(head.root),
                 "signed": split_note_text(current) != current, "problem": None,
                 "behind": 0}
    return {
        "available": True, "reason": None, "origin": store.origin,
        "verifier_key": store.verifier_key,
        "tree_head": {"size": head.size, "root": hashes(head.root)},
        "checkpoint": dict(shown),
        "checkpoints_dir": str(checkpoints) if checkpoints is not None else None,
        "verify": verification.last.as_dict() if verification.last is not None else None,
        "verifying": verification.running,
    }


async def verify_now(store: EventStore, verification: Verification,
                     checkpoints: Path | None) -> VerifyResult:
    """Run verify() (or join the run in progress), against the latest checkpoint file
    when there is a usable one."""
    latest = await asyncio.to_thread(latest_checkpoint, checkpoints, store.origin) \
        if checkpoints is not None else None
    return await verification.run(store, latest)
