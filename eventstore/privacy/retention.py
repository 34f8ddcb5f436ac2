"""Retention: conversation content for N days, costs for years.

    store = EventStore.open(url, encryption=Encryption(...),
                            retention=Retention(content_after=timedelta(days=30)))
    report = await store.apply_retention()          # or dry_run=True: what would go

Built on crypto-shredding: with retention on, personal fields are encrypted under a key
per user *and period* of the event's `occurred_at` (a UTC calendar month by default, or a
day), and applying retention destroys the keys of every period that ended more than
`content_after` ago. Old content then reads as "[ERASED]" on every path while recent
content stays readable; types, times, token counts and costs stay, so projections and
budgets keep their totals. Content is erased once its whole period is past the limit, so it
lives between `content_after` and `content_after` plus one period.

Content of events without a user_id is covered too (a key of nobody per period). Fields
encrypted before retention was turned on use per-user keys, which retention cannot expire
(the report counts them as `legacy_keys`); forget_user still erases them. A store opened
once with retention records its period in its metadata, and every later writer keeps
using per-period keys.

Each run that erases anything appends a `retention_applied` event with the cutoff, the
periods and the number of keys destroyed (no user ids), written by the store itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, get_args

import msgspec

from ..errors import RetentionError
from ..events import Event, RecordedEvent
from .encryption import Period, split_owner
from .erasure import erase_derived

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["RETENTION_APPLIED", "Retention", "RetentionReport", "apply_retention"]

RETENTION_APPLIED = "retention_applied"


class Retention(msgspec.Struct, frozen=True, kw_only=True):
    """Keep personal fields for `content_after`, keyed by `period` ("month" or "day")."""

    content_after: timedelta
    period: Period = "month"

    def __post_init__(self) -> None:
        if not isinstance(self.content_after, timedelta) or self.content_after <= timedelta(0):
            raise RetentionError(
                f"content_after must be a positive timedelta (e.g. timedelta(days=30)), not "
                f"{self.content_after!r}")
        if self.period not in get_args(Period):
            raise RetentionError(f"period must be 'month' or 'day', not {self.period!r}")


class RetentionReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a retention run erased (or, with dry_run, would erase)."""

    cutoff: datetime            # periods that ended at or before this were expired
    periods: list[str]          # the expired periods, oldest first
    keys: int                   # keys destroyed (one per user and period)
    legacy_keys: int            # per-user keys from before retention, not expirable
    dry_run: bool
    pending: str | None = None  # what is still on disk (another reader), if anything
    event: RecordedEvent | None = None  # the retention_applied event, if one was written


async def apply_retention(store: EventStore, retention: Retention, *, dry_run: bool = False,
                          now: datetime | None = None) -> RetentionReport:
    encryption = store.encryption
    assert encryption is not None
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise RetentionError("now= must be a timezone-aware datetime")
    cutoff = now.astimezone(UTC) - retention.content_after
    owners = await (encryption.expired(cutoff) if dry_run else encryption.expire(cutoff))
    periods = sorted({period for owner in owners
                      if (period := split_owner(owner)[1]) is not None})
    legacy = await encryption.legacy_owners()
    if dry_run or not owners:
        return RetentionReport(cutoff=cutoff, periods=periods, keys=len(owners),
                               legacy_keys=len(legacy), dry_run=dry_run)
    pending = await erase_derived(store)
    data: dict[str, object] = {
        "cutoff": cutoff.isoformat(), "content_after_seconds":
        retention.content_after.total_seconds(), "periods": periods, "keys_destroyed":
        len(owners)}
    if pending is not None:
        data["pending"] = pending
    event = await store.append_audit(Event(type=RETENTION_APPLIED, data=data))
    return RetentionReport(cutoff=cutoff, periods=periods, keys=len(owners),
                           legacy_keys=len(legacy), dry_run=False, pending=pending,
                           event=event)
