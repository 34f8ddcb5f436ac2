"""Running projections: a full replay from seq 0, and resuming a live one from its snapshot.

A fresh replay is in order and never repeats, so each event goes straight to the apply()
of the projections that take its type: no per-event position check. Keeping a projection
live is a durable subscription (the store launches it); this module only decides where
it resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..backends.base import Backend
from ..errors import SnapshotError
from ..query import Query, build_query
from ..reads import LogReader
from .base import Projection

__all__ = ["PROGRESS_EVERY", "rebuild", "resume"]

log = logging.getLogger("eventstore.projections")

PROGRESS_EVERY = 10_000

Progress = Callable[[int, int], None]  # (position, head)


async def rebuild(reader: LogReader, projections: tuple[Projection, ...],
                  progress: Progress) -> None:
    """Reset the projections and replay the log into them in one pass; `progress` hears
    every PROGRESS_EVERY events and once at the end."""
    every = PROGRESS_EVERY
    wanted: set[str] | None = set()
    for p in projections:
        p.reset()
        if p.types is None or wanted is None:
            wanted = None
        else:
            wanted |= p.types
    head = await reader.head()
    routes: dict[str, list[Any]] = {}
    everything = [p.apply for p in projections if p.types is None]
    done = last = 0
    async for event in reader.read(build_query(type=wanted)):
        applies = routes.get(event.type)
        if applies is None:
            applies = routes[event.type] = everything + [
                p.apply for p in projections if p.types and event.type in p.types
            ]
        for apply in applies:
            apply(event)
        last = event.seq
        done += 1
        if done % every == 0:
            progress(last, max(head, last))
    end = max(head, last)
    for p in projections:
        p.position = end
    progress(end, end)


async def resume(projection: Projection, backend: Backend, key: str,
                 unseal: Callable[[bytes], Awaitable[bytes | None]] | None = None) -> int:
    """Restore `projection` from the snapshot in checkpoint `key`; returns the position to
    go on from (0, after a reset, when there is no usable snapshot). `unseal` opens a
    snapshot stored encrypted (None: it cannot be used, rebuild)."""
    projection.reset()
    checkpoint = await backend.load_checkpoint(key)
    if checkpoint is None or checkpoint.state is None:
        return 0
    state = checkpoint.state
    if unseal is not None:
        opened = await unseal(state)
        if opened is None:
            log.info("projection %s: its snapshot was sealed under a destroyed key (a "
                     "forget or retention run); rebuilding from seq 0", key)
            return 0
        state = opened
    try:
        projection.restore(state)
    except SnapshotError as exc:
        log.warning("projection %s: %s; rebuilding from seq 0", key, exc)
        projection.reset()
        return 0
    return checkpoint.position


def types_of(projection: Projection) -> Query:
    return build_query(type=projection.types)
