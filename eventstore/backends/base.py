"""The records backends store, and the group-commit planning every backend shares.

The protocols a backend implements are in eventstore.backends.protocols (`Backend` is
re-exported here for the modules that import it from this one).

A backend stores prepared events and answers reads; it never sees hooks, signals or
cursors. Appends reach it as a *group*: several callers' requests committed in one
transaction, each request all or nothing. `plan_group` decides, from the ids already
stored, which requests are idempotent retries, which conflict, and which seqs the new
events get, so every backend resolves a group exactly the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from ..clock import from_micros
from ..codec import PreparedEvent, place, recorded, same_content, stamp
from ..errors import DuplicateEventError, EventStoreError
from ..events import RecordedEvent
from .protocols import Backend

__all__ = ["Backend", "Checkpoint", "GroupPlan", "KeyRecord", "NewRow", "Outcome", "StoredId",
           "plan_group", "request_ids"]

log = logging.getLogger("eventstore.backends")

Outcome = list[RecordedEvent] | EventStoreError


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A durable subscription's or projection's progress: `position` is the last seq done."""

    name: str
    position: int
    state: bytes | None = None
    updated_at: datetime | None = None


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One generation of a user's data key (see eventstore.encryption).

    `wrapped` is the data key encrypted under the master key, or None once the user was
    forgotten: the row stays as a tombstone (`forgotten_at`), so the user stays forgotten
    and the erasure can be audited.
    """

    user_id: str
    generation: int
    wrapped: bytes | None
    created_at: datetime
    forgotten_at: datetime | None = None


def newest_keys(records: Iterable[KeyRecord]) -> dict[str, KeyRecord]:
    """The highest generation of each user among `records`."""
    newest: dict[str, KeyRecord] = {}
    for key in records:
        known = newest.get(key.user_id)
        if known is None or key.generation > known.generation:
            newest[key.user_id] = key
    return newest


def checkpoint_from_row(row: Sequence[Any]) -> Checkpoint:
    """A Checkpoint from a (name, position, state, updated_at micros) row."""
    name, position, state, updated = row
    return Checkpoint(
        name=name,
        position=int(position),
        state=bytes(state) if state is not None else None,
        updated_at=from_micros(int(updated)),
    )


def key_record_from_row(row: Sequence[Any]) -> KeyRecord:
    """A KeyRecord from a (user_id, generation, wrapped, created_at micros, forgotten_at
    micros) row."""
    user_id, generation, wrapped, created, forgotten = row
    return KeyRecord(
        user_id=user_id, generation=int(generation),
        wrapped=bytes(wrapped) if wrapped is not None else None,
        created_at=from_micros(int(created)),
        forgotten_at=from_micros(int(forgotten)) if forgotten is not None else None,
    )


def announce_head(callbacks: Sequence[Callable[[int], None]], head: int) -> None:
    """Tell every `listen()` callback the log reached `head`; one that raises is logged
    and the others still hear it."""
    for callback in list(callbacks):
        try:
            callback(head)
        except Exception:
            log.exception("on_head callback failed")


@dataclass(slots=True)
class StoredId:
    """What a backend knows of an id already in the log."""

    digest: bytes
    event: RecordedEvent


@dataclass(slots=True)
class NewRow:
    event: RecordedEvent
    document: bytes
    digest: bytes


@dataclass(slots=True)
class GroupPlan:
    outcomes: list[Outcome] = field(default_factory=list)
    rows: list[NewRow] = field(default_factory=list)


def plan_group(
    requests: Sequence[Sequence[PreparedEvent]],
    stored: Mapping[str, StoredId],
    next_seq: int,
    recorded_at: datetime,
) -> GroupPlan:
    """Resolve a group: each request either fully commits, fully matches, or fails alone."""
    plan = GroupPlan()
    outcomes = plan.outcomes
    plan_rows = plan.rows
    # id -> (digest, event) of what this group writes; tuples, not StoredIds: this loop
    # runs once per appended event under the backend's write lock
    accepted: dict[str, tuple[bytes, RecordedEvent]] = {}
    recorded_stamp = stamp(recorded_at)
    for request in requests:
        start_seq = next_seq
        mine: dict[str, tuple[bytes, RecordedEvent]] = {}
        results: list[RecordedEvent] = []
        rows: list[NewRow] = []
        conflict: EventStoreError | None = None
        for prepared in request:
            visible = prepared.visible
            event_id = visible.id
            known = stored.get(event_id)
            if known is not None:
                if not same_content(known.digest, known.event, prepared):
                    conflict = DuplicateEventError(event_id)
                    break
                results.append(known.event)
                continue
            earlier = accepted.get(event_id) or mine.get(event_id)
            if earlier is not None:
                if not same_content(earlier[0], earlier[1], prepared):
                    conflict = DuplicateEventError(event_id)
                    break
                results.append(earlier[1])
                continue
            event = recorded(visible, next_seq, recorded_at)
            rows.append(NewRow(event, place(prepared.body, next_seq, recorded_stamp),
                               prepared.digest))
            mine[event_id] = (prepared.digest, event)
            results.append(event)
            next_seq += 1
        if conflict is not None:
            next_seq = start_seq
            outcomes.append(conflict)
            continue
        accepted.update(mine)
        plan_rows.extend(rows)
        outcomes.append(results)
    return plan


def request_ids(requests: Sequence[Sequence[PreparedEvent]]) -> list[str]:
    return list({p.visible.id: None for request in requests for p in request})
