"""The Backend protocol, and the group-commit planning every backend shares.

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
from typing import Any, Protocol, runtime_checkable

import msgspec

from ..clock import from_micros
from ..codec import PreparedEvent, place, recorded, stamp
from ..errors import DuplicateEventError, EventStoreError
from ..events import RecordedEvent
from ..query import Query

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
    accepted: dict[str, StoredId] = {}
    recorded_stamp = stamp(recorded_at)
    for request in requests:
        start_seq = next_seq
        mine: dict[str, StoredId] = {}
        results: list[RecordedEvent] = []
        rows: list[NewRow] = []
        conflict: EventStoreError | None = None
        for prepared in request:
            event_id = prepared.visible.id
            known = stored.get(event_id) or accepted.get(event_id) or mine.get(event_id)
            if known is not None:
                if known.digest != prepared.digest:
                    conflict = DuplicateEventError(event_id)
                    break
                results.append(known.event)
                continue
            event = recorded(prepared.visible, next_seq, recorded_at)
            rows.append(NewRow(event, place(prepared.body, next_seq, recorded_stamp),
                               prepared.digest))
            mine[event_id] = StoredId(prepared.digest, event)
            results.append(event)
            next_seq += 1
        if conflict is not None:
            next_seq = start_seq
            plan.outcomes.append(conflict)
            continue
        accepted.update(mine)
        plan.rows.extend(rows)
        plan.outcomes.append(results)
    return plan


def request_ids(requests: Sequence[Sequence[PreparedEvent]]) -> list[str]:
    return list({p.visible.id: None for request in requests for p in request})


@runtime_checkable
class Backend(Protocol):
    """Storage for the log, checkpoints, store metadata and encryption keys."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    async def close(self) -> None: ...

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        """Commit a group in one transaction (see `plan_group`).

        Returns each request's outcome and the events newly written, in seq order. Raises
        (BackendError) only if the whole group failed and nothing was written.
        """

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        """Events matching `query` with seq > after_seq, ascending, at most `limit`."""

    async def count(self, query: Query) -> int: ...

    async def head(self) -> int:
        """The highest committed seq (0 for an empty log)."""

    async def secret(self) -> bytes:
        """A random per-store secret (cursor MACs), created with the schema."""

    async def load_checkpoint(self, name: str) -> Checkpoint | None: ...

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    async def list_checkpoints(self) -> list[Checkpoint]: ...

    async def delete_checkpoint(self, name: str) -> None: ...

    async def get_meta(self, key: str) -> bytes | None:
        """A value of the store's metadata (e.g. the encryption key-check value)."""

    async def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        """Store `value` under `key` unless one is there; returns the value that is stored
        (so stores starting at once agree on one)."""

    async def load_keys(self, user_ids: Sequence[str]) -> dict[str, KeyRecord]:
        """The newest key generation of each of these users that has one."""

    async def create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        """Insert this generation of the user's key unless it exists; returns the stored
        record (the winner, when stores create it at once)."""

    async def destroy_keys(self, user_id: str) -> KeyRecord:
        """Overwrite every wrapped key of the user, keeping tombstones (a tombstone of
        generation 1 if the user had no key); returns the newest, now a tombstone."""
