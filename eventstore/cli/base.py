"""What every `eventstore` subcommand shares: the consoles, time and filter options, and
opening the store named by --db."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..clock import utcnow
from ..errors import UnsupportedURLError
from ..events import RecordedEvent
from ..privacy.encryption import DEFAULT_ENV, Encryption
from ..privacy.urls import safe_url
from ..query import Query as Filters
from ..query import build_query
from ..store import EventStore
from .render import iso

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

PAGE = 1_000  # events per list_events call when a command walks every page

_json = msgspec.json.Encoder(decimal_format="string")


# --- output --------------------------------------------------------------------------------


def _plain() -> dict[str, Any]:
    # NO_COLOR (no-color.org): no ANSI styling at all, even where FORCE_COLOR asks for it.
    return {"color_system": None} if os.environ.get("NO_COLOR") else {}


def _stdout_console() -> Console:
    # Piped output is for grep and files: do not wrap rows at a pretend 80 columns.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=1_000 if wide else None, **_plain())


out = _stdout_console()
err = Console(stderr=True, highlight=False, **_plain())


def emit_json(value: Any) -> None:
    sys.stdout.write(_json.encode(value).decode() + "\n")


def note(message: str) -> None:
    """A line for the person at the terminal, never mixed into the data on stdout."""
    err.print(Text(message), soft_wrap=True)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True,
                    disable=not err.is_terminal)  # a bar in a log file is only noise


# --- times ---------------------------------------------------------------------------------

_PERIOD = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
RELATIVE_TIMES = "eventstore.relative_times"  # ctx.meta: time options given relatively


def parse_duration(text: str) -> timedelta:
    """A period such as 30d, 12h, 4w (what parse_time takes as "ago")."""
    period = _PERIOD.fullmatch(text.strip())
    if period is None:
        raise ValueError(f"{text!r} is not a period like 30d, 12h, 4w")
    return timedelta(seconds=int(period[1]) * _UNIT_SECONDS[period[2].lower()])


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or datetime (naive = UTC), `now`, or a period ago: 7d, 12h, 30m."""
    value = text.strip()
    now = now or utcnow()
    if value.lower() == "now":
        return now
    period = _PERIOD.fullmatch(value)
    try:
        if period is not None:
            return now - timedelta(seconds=int(period[1]) * _UNIT_SECONDS[period[2].lower()])
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(
            f"{text!r} is not a date, a datetime (ISO 8601; naive means UTC) or a period "
            "ago like 7d, 12h, 30m"
        ) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _time_callback(ctx: click.Context, param: click.Parameter, value: str | None
                   ) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc
    if param.name and (value.strip().lower() == "now" or _PERIOD.fullmatch(value.strip())):
        ctx.meta.setdefault(RELATIVE_TIMES, set()).add(param.name)
    return moment


def time_option(name: str, help: str) -> Callable[[F], F]:
    return click.option(name, callback=_time_callback, metavar="TIME", help=help)


# --- filters -------------------------------------------------------------------------------


def where(f: Filters) -> dict[str, Any]:
    """The filters as keyword arguments of list_events, count_events and read."""
    return {"conversation_id": f.conversation_id, "user_id": f.user_id, "type": f.types,
            "after": f.after, "before": f.before}


def filter_options(*, times: bool = True) -> Callable[[F], F]:
    options = [
        click.option("--conversation", "conversation_id", metavar="ID",
                     help="Only this conversation."),
        click.option("--user", "user_id", metavar="ID", help="Only this user."),
        click.option("--type", "types", multiple=True, metavar="TYPE",
                     help="Only this event type (repeat for several)."),
    ]
    if times:
        options += [
            time_option("--after", "Recorded at or after TIME: an ISO date or datetime "
                        "(naive = UTC), or a period ago like 7d, 12h, 30m."),
            time_option("--before", "Recorded at or before TIME (same forms)."),
        ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def make_filters(conversation_id: str | None = None, user_id: str | None = None,
                 types: tuple[str, ...] = (), after: datetime | None = None,
                 before: datetime | None = None) -> Filters:
    if after is not None and before is not None and after > before:
        raise click.UsageError(f"--after ({iso(after)}) is later than --before ({iso(before)})")
    return build_query(conversation_id=conversation_id, user_id=user_id, type=types or None,
                       after=after, before=before)


async def pages(store: EventStore, f: Filters, limit: int = PAGE
                ) -> AsyncIterator[list[RecordedEvent]]:
    """Every page of matching events, cursor after cursor."""
    cursor: str | None = None
    while True:
        page = await store.list_events(**where(f), limit=limit, cursor=cursor)
        yield page.events
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


# --- the store -----------------------------------------------------------------------------


STORE_OPTIONS = "eventstore.store_options"  # ctx.meta: extra EventStore.open options


def store_encryption(master_key_file: str | None) -> Encryption | None:
    """The encryption a command reads an encrypted store with: the master key from
    --master-key-file or EVENTSTORE_MASTER_KEY. It decrypts envelopes wherever they are
    (the CLI does not know which fields the app encrypted) and marks nothing in a store
    that was never encrypted."""
    if master_key_file is None and not os.environ.get(DEFAULT_ENV):
        return None
    return Encryption(key_file=master_key_file, discover=True)


def open_store(url: str, master_key_file: str | None = None, **extra: Any) -> EventStore:
    options: dict[str, Any] = dict(extra)
    encryption = store_encryption(master_key_file)
    if encryption is not None:
        options["encryption"] = encryption
    parts = urlsplit(url)
    # A typo'd path must be an error, not a new empty database that answers "no events".
    scheme = parts.scheme.lower()
    if (scheme in ("sqlite", "jsonl", "postgresql", "postgres")
            and "create" not in dict(parse_qsl(parts.query))):
        options["create"] = False
    try:
        return EventStore.open(url, **options)
    except UnsupportedURLError:
        raise
    except (TypeError, ValueError) as exc:  # a backend refusing its URL's options
        raise click.UsageError(f"bad store URL {safe_url(url)}: {exc}") from exc


def with_store(func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """A click callback that opens the store named by --db and runs `func(store, ...)`."""

    @functools.wraps(func)
    def callback(*args: Any, **kwargs: Any) -> T:
        ctx = click.get_current_context()
        root = ctx.find_root().params
        url: str = root["db"]
        extra: dict[str, Any] = ctx.meta.get(STORE_OPTIONS, {})

        async def main() -> T:
            task = asyncio.current_task()
            loop = asyncio.get_running_loop()
            if task is not None:  # SIGTERM unwinds like Ctrl-C, so partial output is removed
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
            try:
                async with open_store(url, root.get("master_key_file"), **extra) as store:
                    return await func(store, *args, **kwargs)
            finally:
                loop.remove_signal_handler(signal.SIGTERM)

        return asyncio.run(main())

    return callback
