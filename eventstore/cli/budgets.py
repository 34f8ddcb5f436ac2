"""`eventstore budgets` (each budget: spent, limit, the scopes over it) and `eventstore
alerts` (budget and guardrail alert events, `--follow` like tail).

Which budgets: a store opened with `budgets=[...]` records each definition once as a
`budget_defined` event, so the CLI knows them from the log; `--budgets FILE` (a JSON list
of `{"limit": "5", "per": "user", "window": "day", "warn_at": [0.8], "name": "..."}`)
names them instead. The CLI only reads: it appends no alert (the stores' watchers do).
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..budgets import ALERT_TYPES, BUDGET_DEFINED, BUDGET_EXCEEDED, Budget, BudgetWatcher
from ..budgets import window_of as budget_window
from ..clock import utcnow
from ..errors import EventStoreError, InvalidBudgetError
from ..events import RecordedEvent
from ..query import build_query
from ..store import EventStore
from .base import emit_json, out, time_option, with_store
from .follow import follow, last_events
from .render import event_line, fmt_money

# what `eventstore alerts` lists: the budget alerts, and guardrail violations beside them
ALERTS = (*sorted(ALERT_TYPES), "policy_violation")


def load_budgets(path: str) -> list[Budget]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read budgets from {path}: {exc}") from exc
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise click.BadParameter(f"{path} must hold a JSON list of budget objects")
    try:
        return [Budget.from_definition(d) for d in raw]
    except InvalidBudgetError as exc:
        raise click.BadParameter(str(exc)) from exc


async def recorded_budgets(store: EventStore) -> list[Budget]:
    """The budgets stores were opened with, from their `budget_defined` events (the latest
    definition of each name wins)."""
    found: dict[str, Budget] = {}
    async for event in store.read(type=BUDGET_DEFINED):
        try:
            budget = Budget.from_definition(event.data)
        except EventStoreError:
            continue  # a malformed definition event names no budget
        found[budget.label] = budget
    return list(found.values())


async def scopes_alerted(store: EventStore, budget: Budget, window: str) -> set[str]:
    """The scopes with an alert of this budget in this window: those near or over it."""
    scopes = set()
    async for event in store.read(type=set(ALERT_TYPES) - {"budget_refused"}):
        data = event.data
        if data.get("budget") == budget.label and data.get("window") == window:
            scope = data.get("scope")
            if isinstance(scope, str):
                scopes.add(scope)
    return scopes


@click.command("budgets")
@click.option("--budgets", "budgets_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A JSON list of budget definitions (default: those recorded in the log "
                   "by stores opened with budgets=).")
@time_option("--at", "The window to show: the one holding TIME (default: now).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one per budget and scope.")
@with_store
async def budgets_cmd(store: EventStore, *, budgets_file: str | None, at: datetime | None,
                      as_json: bool) -> None:
    """Each budget with its limit, and the spent of the whole budget (per total) or of each
    scope near or over it (those with a warning or exceeded alert in the window).

    Unpriced calls are counted beside the spent figure: they have no known cost, so the
    real spend may be higher than shown.
    """
    moment = at or utcnow()
    budgets = load_budgets(budgets_file) if budgets_file else await recorded_budgets(store)
    if not budgets:
        out.print("no budgets: open a store with budgets=[...] or pass --budgets FILE")
        return
    watcher = BudgetWatcher(store, budgets)  # for its questions: it is never started here
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("budget", "per", "window", "scope", "spent", "limit", "remaining",
                 "unpriced", "state"):
        table.add_column(name, no_wrap=True,
                         justify="right" if name in ("spent", "limit", "remaining",
                                                     "unpriced") else "left")
    for budget in budgets:
        window = budget_window(budget.window, moment)
        scopes = [""] if budget.per == "total" else sorted(
            await scopes_alerted(store, budget, window.label))
        if not scopes:
            table.add_row(budget.label, budget.per, window.label, "(none over a threshold)",
                          "", fmt_money(budget.limit), "", "", "ok")
            if as_json:
                emit_json({"budget": budget.label, "per": budget.per, "window": window.label,
                           "limit": budget.limit, "scopes": []})
            continue
        for scope in scopes:
            status = (await watcher.status(at=moment, **_ids(budget, scope)))
            mine = next(s for s in status if s.budget.label == budget.label)
            state = "exceeded" if mine.exhausted else next(
                (t.label for t in reversed(budget.thresholds) if mine.spent >= t.amount), "ok")
            if as_json:
                emit_json({"budget": budget.label, "per": budget.per, "window": window.label,
                           "scope": scope, "spent": mine.spent, "limit": mine.limit,
                           "remaining": mine.remaining, "unpriced_calls": mine.unpriced_calls,
                           "state": state})
            table.add_row(budget.label, budget.per, window.label, scope or "(all)",
                          fmt_money(mine.spent), fmt_money(mine.limit),
                          fmt_money(mine.remaining), str(mine.unpriced_calls),
                          Text(state, style="bold red" if mine.exhausted else "yellow"
                               if state != "ok" else ""))
    if not as_json:
        out.print(table)


def _ids(budget: Budget, scope: str) -> dict[str, Any]:
    if budget.per == "user":
        return {"user_id": scope}
    if budget.per == "conversation":
        return {"conversation_id": scope}
    if budget.per == "tag":
        return {"tags": [scope]}
    return {}


@click.command("alerts")
@click.option("--type", "types", multiple=True, type=click.Choice(ALERTS), metavar="TYPE",
              help=f"Only this alert type (repeat for several): {', '.join(ALERTS)}.")
@click.option("--user", "user_id", metavar="ID", help="Only this user.")
@click.option("-n", "--last", type=click.IntRange(min=0), default=20, show_default=True,
              help="Show the last N alerts first.")
@click.option("-f", "--follow", "following", is_flag=True,
              help="Keep showing new alerts as they commit, like tail.")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="With --follow: exit after N alerts (the ones shown first included).")
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.25, show_default=True,
              help="Seconds between polls of the log when following.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one RecordedEvent per line.")
@with_store
async def alerts_cmd(store: EventStore, *, types: tuple[str, ...], user_id: str | None,
                     last: int, following: bool, count: int | None, interval: float,
                     as_json: bool) -> None:
    """The alert events: budget warnings, budgets exceeded, calls refused by a budget, and
    guardrail violations; --follow keeps showing new ones (Ctrl-C stops, exit status 130).
    """

    def show(event: RecordedEvent) -> None:
        if as_json:
            emit_json(event)
        else:
            out.print(alert_line(event), soft_wrap=True)
        sys.stdout.flush()  # read live, line by line

    f = build_query(type=set(types or ALERTS), user_id=user_id)
    if following:
        followed = await follow(store, f, show, from_seq=None, last=last, count=count,
                                interval=interval)
        if followed.signal == signal.SIGINT:
            raise click.exceptions.Exit(130)
        return
    events, _ = await last_events(store, f, last)
    for event in events:
        show(event)


def alert_line(event: RecordedEvent) -> Text:
    data = event.data
    if event.type not in ALERT_TYPES or not isinstance(data.get("budget"), str):
        return event_line(event)
    line = Text()
    line.append(f"#{event.seq}", style="dim")
    line.append(f"  {event.occurred_at.isoformat(timespec='seconds')}  ")
    line.append(event.type, style="bold red" if event.type == BUDGET_EXCEEDED else "bold")
    line.append(f"  {data.get('budget')}")
    scope = data.get("scope")
    if scope:
        line.append(f"  {data.get('per')}={scope}", style="cyan")
    if data.get("window"):
        line.append(f"  window {data.get('window')}")
    if "spent" in data:
        line.append(f"  spent ${data.get('spent')} of ${data.get('limit')}")
    if data.get("threshold") and data.get("threshold") != "exceeded":
        line.append(f"  ({data.get('threshold')})", style="yellow")
    return line


COMMANDS = (budgets_cmd, alerts_cmd)
