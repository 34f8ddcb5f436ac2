"""The `eventstore` command: read, follow, total and export an eventstore log.

    eventstore --db sqlite:///audit.db list --conversation c1 --after 7d
    eventstore show c1
    eventstore tail --type policy_violation
    eventstore costs --by model --after 2026-11-01
    eventstore export --format parquet --output events.parquet
    eventstore rebuild
    eventstore subscriptions

Data goes to stdout; progress bars, next-page cursors and errors go to stderr, so stdout
can always be piped. Errors are one line, `error: <message>`, with exit status 2 for bad
input (options, dates, cursors, URLs) and 1 for everything else (a missing database, an
unreachable server).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from typing import Any

import click
import msgspec
from rich.table import Table
from rich.text import Text

from ..errors import EventStoreError, InvalidCursorError, InvalidQueryError, UnsupportedURLError
from ..events import COST_RECORDED, RecordedEvent
from ..query import MAX_LIMIT
from ..store import EventStore
from . import export as cli_export
from .base import (
    RELATIVE_TIMES,
    Filters,
    emit_json,
    err,
    filter_options,
    make_filters,
    note,
    out,
    pages,
    progress_bar,
    time_option,
    with_store,
)
from .costs import GROUPS, cost_totals, costs_table
from .render import (
    Transcript,
    add_event_row,
    compact_json,
    event_line,
    events_table,
    fmt_time,
    iso,
)
from .retention import retention_cmd
from .tail import follow

DEFAULT_URL = "sqlite:///eventstore.db"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", default=DEFAULT_URL, show_default=True, envvar="EVENTSTORE_URL",
              show_envvar=True, metavar="URL",
              help="Store URL: sqlite:///path.db, sqlite:////abs/path.db or "
                   "postgresql://user@host:port/db. A SQLite file must already exist "
                   "(add ?create=1 to allow a new one).")
@click.option("--master-key-file", type=click.Path(dir_okay=False), metavar="FILE",
              envvar="EVENTSTORE_MASTER_KEY_FILE", show_envvar=True,
              help="The master key of an encrypted store (base64 or hex), so its personal "
                   "fields read decrypted, or [ERASED] once forgotten. EVENTSTORE_MASTER_KEY "
                   "may hold the key itself. Without a key they show as [ENCRYPTED].")
@click.version_option(package_name="eventstore")
def cli(db: str, master_key_file: str | None) -> None:
    """Read, follow, total and export an eventstore log."""


# --- list / count --------------------------------------------------------------------------


@cli.command("list")
@filter_options()
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True,
              help="Events per page.")
@click.option("--cursor", metavar="CURSOR", help="Continue after a previous page (the "
              "next_cursor it printed); pass the same filters.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines, one RecordedEvent per line (decodes back with msgspec).")
@with_store
async def list_cmd(store: EventStore, *, limit: int, cursor: str | None, as_json: bool,
                   **filters: Any) -> None:
    """One page of events, oldest first.

    The next page's cursor goes to stderr: with --json as a JSON line
    {"next_cursor": ..., "after": ..., "before": ...} (next_cursor is null on the last page;
    after/before are the absolute bounds, present when given), otherwise as a hint. Pass it
    back with --cursor and the same filters; a relative --after like 7d moves with the
    clock, so continue with the absolute times printed alongside the cursor.
    """
    f = make_filters(**filters)
    try:
        page = await store.list_events(**f.query(), limit=limit, cursor=cursor)
    except InvalidCursorError as exc:
        given = click.get_current_context().meta.get(RELATIVE_TIMES, set())
        relative = [n for n in ("after", "before") if n in given]
        if relative:
            raise InvalidCursorError(
                f"{exc} (--{' and --'.join(relative)} is relative and moves with the clock; "
                "pass the absolute time printed with the cursor)"
            ) from exc
        raise
    bounds = {n: iso(v) for n, v in (("after", f.after), ("before", f.before)) if v is not None}
    if as_json:
        for event in page.events:
            emit_json(event)
        err.file.write(compact_json({"next_cursor": page.next_cursor, **bounds}) + "\n")
        return
    table = events_table()
    for event in page.events:
        add_event_row(table, event)
    out.print(table)
    if page.next_cursor is not None:
        flags = " ".join(f"--{n} {v}" for n, v in bounds.items())
        note(f"next page: --cursor {page.next_cursor}" + (f" {flags}" if flags else ""))


@cli.command("count")
@filter_options()
@click.option("--json", "as_json", is_flag=True, help='Print {"count": N}.')
@with_store
async def count_cmd(store: EventStore, *, as_json: bool, **filters: Any) -> None:
    """How many events match the filters."""
    n = await store.count_events(**make_filters(**filters).query())
    if as_json:
        emit_json({"count": n})
    else:
        out.print(str(n))


# --- show ----------------------------------------------------------------------------------


@cli.command("show")
@click.argument("conversation_id")
@with_store
async def show_cmd(store: EventStore, conversation_id: str) -> None:
    """A conversation's timeline as a transcript, with a running cost total."""
    transcript = Transcript(seq_width=len(str(await store.head())))
    shown = 0
    async for page in pages(store, Filters(conversation_id=conversation_id)):
        if not page and shown == 0:
            raise EventStoreError(f"no events in conversation {conversation_id!r}")
        if shown == 0:
            out.print(Text(f"conversation {conversation_id}", style="bold"))
        shown += len(page)
        out.print(transcript.page(page))
    users = ", ".join(sorted(transcript.users)) or "-"
    out.print(transcript.footer())
    out.print(Text(f"{shown} events · users: {users}", style="dim"))


# --- tail ----------------------------------------------------------------------------------


@cli.command("tail")
@filter_options(times=False)
@click.option("--from-seq", type=click.IntRange(min=0), metavar="SEQ",
              help="Start at this seq (0: the whole log) instead of the last events.")
@click.option("-n", "--last", type=click.IntRange(min=0), default=10, show_default=True,
              help="Show the last N matching events first.")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="Exit after N events (the ones shown first included).")
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.25, show_default=True,
              help="Seconds between polls of the log for new events.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one RecordedEvent per line.")
@with_store
async def tail_cmd(store: EventStore, *, from_seq: int | None, last: int, count: int | None,
                   interval: float, as_json: bool, **filters: Any) -> None:
    """Follow the log: the last events, then new ones as they commit. Ctrl-C stops it.

    New events are read from the log by seq, woken as soon as any process commits, with
    a poll every --interval seconds as a safety net.
    """

    def show(event: RecordedEvent) -> None:
        if as_json:
            emit_json(event)
        else:
            out.print(event_line(event), soft_wrap=True)
        sys.stdout.flush()  # a follower is read live, line by line

    await follow(store, make_filters(**filters), show, from_seq=from_seq, last=last,
                 count=count, interval=interval)


# --- costs ---------------------------------------------------------------------------------


@cli.command("costs")
@click.option("--by", type=click.Choice(GROUPS), default="user", show_default=True,
              help="Group totals by this.")
@time_option("--after", "Costs recorded at or after TIME (ISO date or datetime, naive = "
             "UTC, or a period ago like 7d, 12h, 30m).")
@time_option("--before", "Costs recorded at or before TIME.")
@click.option("--conversation", "conversation_id", metavar="ID", help="Only this conversation.")
@click.option("--user", "user_id", metavar="ID", help="Only this user.")
@click.option("--provider", metavar="NAME", help="Only this provider.")
@click.option("--model", metavar="NAME", help="Only this model.")
@click.option("--top", type=click.IntRange(min=1), metavar="N",
              help="Only the N most expensive groups (the total still covers all).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document; amounts are exact decimal strings.")
@with_store
async def costs_cmd(store: EventStore, *, by: str, after: datetime | None,
                    before: datetime | None, conversation_id: str | None, user_id: str | None,
                    provider: str | None, model: str | None, top: int | None,
                    as_json: bool) -> None:
    """Exact cost totals grouped by user, model, provider, day or conversation.

    Days are the UTC date of each call (occurred_at); --after/--before bound the time the
    cost was recorded, like every other filter.
    """
    f = make_filters(conversation_id=conversation_id, user_id=user_id,
                     types=(COST_RECORDED,), after=after, before=before)
    totals = await cost_totals(store, f, by, provider=provider, model=model)
    rows = totals.ordered(top)
    if totals.skipped:
        note(f"warning: skipped {totals.skipped} cost records without a valid total_cost")
    grand = totals.total
    if as_json:
        emit_json({"by": by, "after": after, "before": before, "groups": rows,
                   "calls": grand.calls, "input_tokens": grand.input_tokens,
                   "output_tokens": grand.output_tokens, "total_cost": grand.total_cost})
        return
    out.print(costs_table(totals, rows))
    if len(totals.groups) > len(rows):
        note(f"top {len(rows)} of {len(totals.groups)} groups; the total covers all of them")


# --- export --------------------------------------------------------------------------------


@cli.command("export")
@filter_options()
@click.option("--format", "fmt", type=click.Choice(cli_export.FORMATS),
              help="Output format (default: from the --output suffix, else jsonl).")
@click.option("-o", "--output", metavar="FILE", help="Write here instead of stdout.")
@with_store
async def export_cmd(store: EventStore, *, fmt: str | None, output: str | None,
                     **filters: Any) -> None:
    """Every matching event, oldest first, as JSON lines, CSV or Parquet.

    CSV and Parquet have one column per field, with data and metadata as JSON text.
    """
    fmt = fmt or cli_export.infer_format(output)
    written = await cli_export.export(store, make_filters(**filters), fmt, output)
    if output not in (None, "-"):
        note(f"exported {written} events to {output} ({fmt})")


# --- rebuild -------------------------------------------------------------------------------


@cli.command("rebuild")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON document.")
@with_store
async def rebuild_cmd(store: EventStore, *, as_json: bool) -> None:
    """Rebuild the built-in projections from the whole log and summarise them."""
    from ..signals import rebuild_progress
    from .projections import BuiltIn, print_summary, summary

    projections = BuiltIn()
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("rebuild", total=await store.head())

        def on_progress(sender: Any, *, position: int, head: int, **_: Any) -> None:
            bar.update(task, completed=position, total=head)

        rebuild_progress.connect(on_progress, sender=store, weak=False)
        try:
            await store.rebuild(*projections.all())
        finally:
            rebuild_progress.disconnect(on_progress, sender=store)
    elapsed = time.perf_counter() - started
    result = summary(projections)
    if as_json:
        emit_json(result)
    else:
        print_summary(out, result)
    note(f"replayed the log to seq {projections.costs.position} in {elapsed:.2f}s")


cli.add_command(rebuild_cmd, name="replay")
cli.add_command(retention_cmd)


# --- subscriptions -------------------------------------------------------------------------


class SubscriptionRow(msgspec.Struct, kw_only=True):
    name: str
    position: int
    lag: int
    updated_at: datetime | None
    status: str


@cli.command("subscriptions")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one subscription per line.")
@with_store
async def subscriptions_cmd(store: EventStore, *, as_json: bool) -> None:
    """Durable subscriptions and projections: stored position, lag behind the log, status.

    Status is "stored" for a checkpoint with no subscription running in this process
    (the command cannot see subscriptions running in other processes).
    """
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


# --- entry point ---------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside task-group wrappers."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> None:
    """Run the command; never lets a traceback reach the user for an expected failure."""
    try:
        code = cli.main(args=argv, prog_name="eventstore", standalone_mode=False)
    except BaseException as raised:  # sorted into exit codes below; the rest re-raised
        exc = _leaf(raised)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`| head`): stop quietly, and keep Python from
            # complaining again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        if isinstance(exc, click.ClickException):
            err.file.write(f"error: {_one_line(exc.format_message())}\n")
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort | KeyboardInterrupt | asyncio.CancelledError):
            err.file.write("error: interrupted\n")
            sys.exit(130)
        if isinstance(exc, InvalidQueryError | UnsupportedURLError):
            err.file.write(f"error: {_one_line(str(exc))}\n")
            sys.exit(2)
        if isinstance(exc, EventStoreError | OSError):
            err.file.write(f"error: {_one_line(str(exc)) or type(exc).__name__}\n")
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
