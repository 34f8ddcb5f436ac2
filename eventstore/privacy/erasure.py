"""Erasure beyond the keys: what forget_user and retention do once keys are destroyed.

Destroying a data key erases the ciphertext in the log, but plaintext derived from it may
live on elsewhere: in the live events queued for a subscription, in a projection's memory
and in the snapshots projections save with their checkpoints, and (on disk) in the pages
a database overwrote. So after keys are destroyed:

1. live deliveries already on their way are revealed again from storage
   (WritePipeline.reveal_live: the forgetting process knows whom it forgot);
2. the key that projection snapshots are stored encrypted under is destroyed and replaced,
   so no stored snapshot, nor any old row version of one, can be read again;
3. every live projection of the store is rewound: its state is reset and rebuilt from the
   log, which now reads as erased (it never saves the stale snapshot), and every stored
   snapshot is deleted, so a projection resumed anywhere later rebuilds from the log
   instead of serving what it kept;
4. the backend scrubs what was overwritten (SQLite: a truncating WAL checkpoint, pending
   while another process's reader holds an old snapshot; PostgreSQL: the key and
   checkpoint tables are rewritten).

Totals survive: costs, token counts and types are never personal fields, so a rebuilt
projection adds up to what it did. Stored events are never rewritten (their bytes are
Merkle leaves): erasure happens around them.

The audit record (`user_forgotten`, `retention_applied`) is written by the store itself,
after the erasure: no redact hook can refuse it, and it names only what the store already
holds as identifiers (the user id, periods, counts).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ..events import USER_FORGOTTEN, Event, RecordedEvent

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["ErasurePendingWarning", "erase_derived", "forget_user"]


class ErasurePendingWarning(UserWarning):
    """Keys are destroyed and every read shows the erasure, but old bytes remain on disk
    until another process's reader lets go; the store finishes the scrub by itself."""


def _pending_note(store: EventStore) -> str | None:
    if not getattr(store.backend, "erasure_pending", False):
        return None
    return ("another connection's reader keeps the database's WAL from being truncated: the "
            "destroyed keys stay in the files until it finishes, then the store truncates "
            "the WAL by itself")


async def erase_derived(store: EventStore) -> str | None:
    """Steps 1-4 of the module docstring; returns what is still pending on disk, if
    anything (and warns with ErasurePendingWarning)."""
    if store.encryption is not None:  # every stored snapshot (and old version) dies
        await store.encryption.renew_snapshot_key()
    for subscription in store.subscriptions:
        if subscription.snapshot is not None:
            await subscription.rewind()
    for checkpoint in await store.backend.list_checkpoints():
        if checkpoint.state is not None:
            await store.backend.delete_checkpoint(checkpoint.name)
    scrub = getattr(store.backend, "scrub", None)
    if scrub is not None:
        await scrub()
    pending = _pending_note(store)
    if pending is not None:
        warnings.warn(ErasurePendingWarning(pending), stacklevel=3)
    return pending


async def forget_user(store: EventStore, user_id: str) -> RecordedEvent:
    """Destroy the user's keys, erase what was derived from them, and log it."""
    encryption = store.encryption
    assert encryption is not None
    # live deliveries from now on show what the log shows (WritePipeline.reveal_live)
    await encryption.forget(user_id)
    pending = await erase_derived(store)
    data: dict[str, object] = {"user_id": user_id}
    if pending is not None:
        data["pending"] = pending
    return await store.append_audit(Event(type=USER_FORGOTTEN, user_id=user_id, data=data))
