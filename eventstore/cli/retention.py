"""`eventstore retention`: expire personal fields older than a limit (or say what would
go, with --dry-run). Needs the store's master key (--master-key-file or
EVENTSTORE_MASTER_KEY); see eventstore.privacy.retention."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from ..privacy.retention import Retention, RetentionReport
from ..store import EventStore
from .base import STORE_OPTIONS, emit_json, note, out, parse_duration, with_store
from .render import iso


@with_store
async def _apply(store: EventStore, *, dry_run: bool) -> RetentionReport:
    return await store.apply_retention(dry_run=dry_run)


@click.command("retention")
@click.option("--content-after", required=True, metavar="PERIOD",
              help="Keep personal fields this long after their key period ends: 30d, 12w.")
@click.option("--period", type=click.Choice(["month", "day"]), default="month",
              show_default=True, help="The key period of stores made with retention on.")
@click.option("--dry-run", is_flag=True, help="Only say what would be erased.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")
def retention_cmd(content_after: str, period: str, dry_run: bool, as_json: bool) -> None:
    """Erase personal fields of key periods older than --content-after (crypto-shredding):
    types, times, tokens and costs stay."""
    try:
        limit = parse_duration(content_after)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--content-after") from exc
    ctx = click.get_current_context()
    options: dict[str, Any] = {"retention": Retention(content_after=limit,
                                                      period="day" if period == "day"
                                                      else "month")}
    ctx.meta[STORE_OPTIONS] = options
    report = _apply(dry_run=dry_run)
    if as_json:
        emit_json({"cutoff": iso(report.cutoff), "periods": report.periods,
                   "keys": report.keys, "legacy_keys": report.legacy_keys,
                   "dry_run": report.dry_run, "pending": report.pending,
                   "seq": report.event.seq if report.event is not None else None})
        return
    verb = "would erase" if dry_run else "erased"
    periods = ", ".join(report.periods) or "none"
    out.print(Text(f"{verb} {report.keys} keys of periods ended before {iso(report.cutoff)}: "
                   f"{periods}"))
    if report.legacy_keys:
        note(f"{report.legacy_keys} per-user keys from before retention cannot expire; "
             "forget_user still erases them")
    if report.pending:
        note(f"pending: {report.pending}")


COMMANDS = (retention_cmd,)
