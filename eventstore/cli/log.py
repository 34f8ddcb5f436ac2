"""Reading the log: `list`, `count`, `show` and `tail`."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click
from rich.text import Text

from ..errors import EventStoreError, InvalidCursorError
from ..events import RecordedEvent
from ..query import MAX_LIMIT
from ..query import Query as Filters
from ..store import EventStore
from .base import (
    RELATIVE_TIMES,
    emit_json,
    err,
    filter_options,
    make_filters,
    note,
    out,
    pages,
    where,
    with_store,
)
from .follow import follow
from .render import Transcript, add_event_row, compact_json, event_line, events_table, iso


@click.command("list")
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
        page = await store.list_events(**where(f), limit=limit, cursor=cursor)
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


@click.command("count")
@filter_options()
@click.option("--json", "as_json", is_flag=True, help='Print {"count": N}.')
@with_store
async def count_cmd(store: EventStore, *, as_json: bool, **filters: Any) -> None:
    """How many events match the filters."""
    n = await store.count_events(**where(make_filters(**filters)))
    if as_json:
        emit_json({"count": n})
    else:
        out.print(str(n))


@click.command("show")
@click.argument("conversation_id")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines, one RecordedEvent per line, oldest first.")
@click.option("--requests", is_flag=True,
              help="Show each model call's exact request, rebuilt from the messages it "
              "references (with --json: one model call per line, request and response "
              "included, instead of the events).")
@with_store
async def show_cmd(store: EventStore, conversation_id: str, *, as_json: bool,
                   requests: bool) -> None:
    """A conversation's timeline as a transcript, with a running cost total."""
    if requests and as_json:
        calls = await store.calls(conversation_id=conversation_id)
        if not calls and await store.count_events(conversation_id=conversation_id) == 0:
            raise EventStoreError(f"no events in conversation {conversation_id!r}")
        for call in calls:
            emit_json(call)
        return
    sent = ({call.id: call.request for call in await store.calls(conversation_id=conversation_id)}
            if requests else None)
    transcript = Transcript(seq_width=len(str(await store.head())), requests=sent)
    shown = 0
    async for page in pages(store, Filters(conversation_id=conversation_id)):
        if not page and shown == 0:
            raise EventStoreError(f"no events in conversation {conversation_id!r}")
        if as_json:
            for event in page:
                emit_json(event)
            shown += len(page)
            continue
        if shown == 0:
            out.print(Text(f"conversation {conversation_id}", style="bold"))
        shown += len(page)
        out.print(transcript.page(page))
    if as_json:
        return
    users = ", ".join(sorted(transcript.users)) or "-"
    out.print(transcript.footer())
    out.print(Text(f"{shown} events · users: {users}", style="dim"))


@click.command("tail")
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
    """Follow the log: the last events, then new ones as they commit.

    New events are read from the log by seq, woken as soon as any process commits, with
    a poll every --interval seconds as a safety net. Ctrl-C stops it with exit status 130
    (as shells report an interrupted command), SIGTERM with 0, a closed pipe (`| head`)
    quietly.
    """

    def show(event: RecordedEvent) -> None:
        if as_json:
            emit_json(event)
        else:
            out.print(event_line(event), soft_wrap=True)
        sys.stdout.flush()  # a follower is read live, line by line

    followed = await follow(store, make_filters(**filters), show, from_seq=from_seq, last=last,
                            count=count, interval=interval)
    if followed.signal == signal.SIGINT:
        raise click.exceptions.Exit(130)


COMMANDS = (list_cmd, count_cmd, show_cmd, tail_cmd)
