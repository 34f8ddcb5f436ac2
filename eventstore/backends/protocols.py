"""What a backend is: small declared protocols, one per concern.

A store needs an `EventLog` (the log itself), a `CheckpointStore` (durable subscription
positions) and a `MetadataStore` (the cursor secret and a few named values); together
they are a `Backend`. Everything else is optional and checked with `isinstance` against
these runtime-checkable protocols, never by probing for attribute names:

- `KeyStore`: per-user data keys, needed only by `encryption=` (crypto-shredding), and
  `KeyLister` for one that can also list them (per-period keys, retention);
- `CommitListener`: hears commits made by other stores or processes on the same log, so
  live subscriptions see them; `check_listener` lets the guardian repair it;
- `CostTotalsReader`: answers cost questions from a rollup kept in the commit
  transaction (see eventstore.rollup) instead of replaying cost events.

A third-party backend implements the protocols it can, registers a URL scheme with
`eventstore.backends.register_scheme`, and proves itself by subclassing
`eventstore.testing.BackendConformance`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..codec import PreparedEvent
    from ..events import RecordedEvent
    from ..query import Query
    from ..rollup import CostFilters, CostTotals
    from .base import Checkpoint, KeyRecord, Outcome


@runtime_checkable
class EventLog(Protocol):
    """The append-only log: group commits, filtered reads, counts and the head."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    async def close(self) -> None:
        """Release connections; the backend may be opened again."""

    async def commit_group(
        self, requests: Sequence[Sequence[PreparedEvent]]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        """Commit a group in one transaction (see `eventstore.backends.base.plan_group`).

        Returns each request's outcome and the events newly written, in seq order. Raises
        (BackendError) only if the whole group failed and nothing was written. Derived
        data (the cost rollup, integrity tree nodes) is written in the same transaction.
        """

    async def query(self, query: Query, *, after_seq: int, limit: int) -> list[RecordedEvent]:
        """Events matching `query` with seq > after_seq, ascending, at most `limit`."""

    async def count(self, query: Query) -> int:
        """How many events match `query`."""

    async def head(self) -> int:
        """The highest committed seq (0 for an empty log)."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Named positions of durable subscriptions and projections."""

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        """The checkpoint saved under `name`, or None."""

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Insert or replace the checkpoint of `checkpoint.name`."""

    async def list_checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, by name."""

    async def delete_checkpoint(self, name: str) -> None:
        """Remove the checkpoint of `name` (nothing if there is none)."""


@runtime_checkable
class MetadataStore(Protocol):
    """The store's own small values: the cursor secret, key-check values."""

    async def secret(self) -> bytes:
        """A random per-store secret (cursor MACs), created with the schema."""

    async def get_meta(self, key: str) -> bytes | None:
        """A value of the store's metadata (e.g. the encryption key-check value)."""

    async def set_meta_if_absent(self, key: str, value: bytes) -> bytes:
        """Store `value` under `key` unless one is there; returns the value that is stored
        (so stores starting at once agree on one)."""


@runtime_checkable
class Backend(EventLog, CheckpointStore, MetadataStore, Protocol):
    """What every store needs from its backend: a log, checkpoints and metadata."""


@runtime_checkable
class KeyStore(Protocol):
    """Per-user data keys for crypto-shredding (see eventstore.encryption)."""

    async def load_keys(self, user_ids: Sequence[str]) -> dict[str, KeyRecord]:
        """The newest key generation of each of these users that has one."""

    async def create_key(self, user_id: str, generation: int, wrapped: bytes) -> KeyRecord:
        """Insert this generation of the user's key unless it exists; returns the stored
        record (the winner, when stores create it at once)."""

    async def destroy_keys(self, user_id: str) -> KeyRecord:
        """Overwrite every wrapped key of the user, keeping tombstones (a tombstone of
        generation 1 if the user had no key); returns the newest, now a tombstone."""


@runtime_checkable
class KeyLister(Protocol):
    """A key store that can list whose keys it holds (forgetting by period, retention)."""

    async def key_owners(self, prefix: str | None = None) -> list[str]:
        """The owners (user ids, or user and period) with a live key, optionally only
        those starting with `prefix`."""


@runtime_checkable
class CommitListener(Protocol):
    """Hears commits other stores or processes make to the same log."""

    async def listen(self, on_head: Callable[[int], None]) -> None:
        """Call `on_head(seq)` soon after any commit to the log (a wake-up only: readers
        then read by cursor)."""

    def unlisten(self, on_head: Callable[[int], None]) -> None:
        """Stop calling `on_head`."""

    async def check_listener(self) -> bool:
        """True if the listener had stopped and runs again (commits may have gone
        unnoticed meanwhile: catch up); the guardian calls this on every tick."""


@runtime_checkable
class CostTotalsReader(Protocol):
    """Cost questions answered from the rollup, in O(matching buckets)."""

    async def cost_totals(self, filters: CostFilters) -> CostTotals:
        """Totals of the model calls matching `filters` (times are the calls' occurred_at)."""
