"""`eventstore subscriptions`: the durable subscriptions' stored positions and lag."""

from __future__ import annotations

from datetime import datetime

import click
import msgspec
from rich.table import Table
from rich.text import Text

from ..store import EventStore
from .base import emit_json, note, out, with_store
from .render import fmt_time


class SubscriptionRow(msgspec.Struct, kw_only=True):
    name: str
    position: int
    lag: int
    updated_at: datetime | None
    status: str


async def subscription_rows(store: EventStore) -> list[SubscriptionRow]:
    """Every stored checkpoint, by name, with its lag behind the head. Status is "stored"
    for a checkpoint with no subscription running in this process (subscriptions running
    in other processes cannot be seen from here)."""
    head = await store.head()
    running = {s.name: s for s in store.subscriptions if s.name is not None}
    rows = []
    for checkpoint in sorted(await store.backend.list_checkpoints(), key=lambda c: c.name):
        sub = running.get(checkpoint.name)
        position = sub.position if sub is not None else checkpoint.position
        rows.append(SubscriptionRow(
            name=checkpoint.name, position=position, lag=max(head - position, 0),
            updated_at=checkpoint.updated_at,
            status=str(sub.status) if sub is not None else "stored"))
    return rows


@click.command("subscriptions")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one subscription per line.")
@with_store
async def subscriptions_cmd(store: EventStore, *, as_json: bool) -> None:
    """Durable subscriptions and projections: stored position, lag behind the log, status.

    Status is "stored" for a checkpoint with no subscription running in this process
    (the command cannot see subscriptions running in other processes).
    """
    rows = await subscription_rows(store)
    if as_json:
        for row in rows:
            emit_json(row)
        return
    if not rows:
        note("no durable subscriptions")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "position", "lag", "updated", "status"):
        table.add_column(column, justify="right" if column in ("position", "lag") else "left")
    for row in rows:
        table.add_row(Text(row.name), str(row.position), str(row.lag), fmt_time(row.updated_at),
                      row.status)
    out.print(table)


COMMANDS = (subscriptions_cmd,)
