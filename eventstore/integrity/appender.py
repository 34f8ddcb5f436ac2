"""The writer's side of a stored tree: what a commit adds, from a frontier kept between
commits.

A backend calls, inside its commit transaction and under its seq lock:

    keys = appender.needs(size)            # [] when the cached frontier is for `size`
    nodes = <fetch keys>                   # only after another writer committed
    growth = appender.grow(size, nodes, leaf_hashes)
    <insert growth.nodes with the events>  # the rows `layout` says are stored
    COMMIT
    appender.committed(growth)             # only now is the new frontier trusted

`size` is the log's size as read inside the lock, so a frontier cached by this process is
used only when no one else appended since; a rolled-back commit leaves the cache as it
was (and a cache for the wrong size is simply reloaded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventstore.errors import IntegrityError
from eventstore.integrity.layout import STORED_FROM
from eventstore.integrity.merkle import CompactRange, NodeKey, frontier

__all__ = ["Growth", "TreeAppender"]


@dataclass(frozen=True, slots=True)
class Growth:
    """What one commit adds to the tree: the node rows to insert, and the frontier after."""

    nodes: list[tuple[int, int, bytes]]
    after: CompactRange


class TreeAppender:
    """Grows a backend's stored tree commit by commit (see the module docstring)."""

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached: CompactRange | None = None

    def needs(self, size: int) -> list[NodeKey]:
        """The frontier nodes to fetch before growing a tree of `size` leaves."""
        cached = self._cached
        if cached is not None and cached.size == size:
            return []
        return frontier(size)

    def grow(
        self, size: int, fetched: Mapping[NodeKey, bytes], leaf_hashes: Sequence[bytes]
    ) -> Growth:
        """The nodes that appending `leaf_hashes` to the tree of `size` leaves completes
        (levels stored as rows only), from the cache or the `fetched` frontier."""
        cached = self._cached
        if cached is not None and cached.size == size:
            start = cached.copy()
        else:
            keys = frontier(size)
            missing = [key for key in keys if key not in fetched]
            if missing:
                level, index = missing[0]
                raise IntegrityError(
                    f"cannot extend the stored tree: its node (level {level}, index {index}) "
                    f"for a log of {size} events is missing, so the tree was damaged or the "
                    "log was changed outside eventstore; run `eventstore verify`"
                )
            start = CompactRange(size, [fetched[key] for key in keys])
        nodes = start.append_nodes(leaf_hashes, STORED_FROM)
        return Growth(nodes=nodes, after=start)

    def committed(self, growth: Growth) -> None:
        """The commit that wrote `growth` succeeded: cache its frontier."""
        self._cached = growth.after

    def forget(self) -> None:
        """Drop the cache (after a failed commit whose outcome is unknown)."""
        self._cached = None
