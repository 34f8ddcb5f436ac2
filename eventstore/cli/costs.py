"""`eventstore costs`: exact totals of the cost records, grouped one way.

Summed from the log page by page rather than from ConversationCosts, because the period
(--after/--before) bounds the calls' own time exactly, which the projection keeps only
by day. Calls recorded without a price (`llm_call` events with `priced` false) are not
in any total: each group and the total say how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import click
import msgspec
from rich.table import Table
from rich.text import Text

from ..calls import LLM_CALL
from ..events import COST_RECORDED, RecordedEvent
from ..pricing.money import EXACT, ZERO
from ..query import Query as Filters
from ..store import EventStore
from .base import emit_json, make_filters, note, out, pages, time_option, with_store
from .render import cost_of, fmt_key, fmt_money

GROUPS = ("user", "model", "provider", "day", "conversation", "tag")


@dataclass
class CostGroup:
    key: str | None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_cost: Decimal = ZERO
    unpriced_calls: int = 0

    def add(self, event: RecordedEvent, cost: Decimal) -> None:
        self.calls += 1
        self.input_tokens += _tokens(event, "input_tokens")
        self.output_tokens += _tokens(event, "output_tokens")
        self.total_cost = EXACT.add(self.total_cost, cost)


@dataclass
class CostTotals:
    by: str
    groups: dict[str | None, CostGroup] = field(default_factory=dict)
    total: CostGroup = field(default_factory=lambda: CostGroup(None))
    skipped: int = 0

    def ordered(self, top: int | None) -> list[CostGroup]:
        """Days in calendar order; anything else, or any --top, most expensive first."""
        rows = list(self.groups.values())
        if self.by == "day" and top is None:
            rows.sort(key=lambda g: g.key or "")
        else:
            rows.sort(key=lambda g: (-g.total_cost, g.key is not None, g.key or ""))
        return rows[:top] if top is not None else rows


def _tokens(event: RecordedEvent, name: str) -> int:
    value = event.data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def group_keys(event: RecordedEvent, by: str) -> list[str | None]:
    """The groups an event counts in: one, except by tag, where a record with several
    tags counts in each (and the total still once)."""
    if by != "tag":
        return [group_key(event, by)]
    tags = event.metadata.get("tags")
    found = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
    return list(dict.fromkeys(found)) or [None]


def group_key(event: RecordedEvent, by: str) -> str | None:
    if by == "user":
        return event.user_id
    if by == "conversation":
        return event.conversation_id
    if by == "day":  # the day the call happened, as ConversationCosts buckets it
        return event.occurred_at.astimezone(UTC).date().isoformat()
    value = event.data.get(by)  # provider or model
    return value if isinstance(value, str) else None


def _unpriced(event: RecordedEvent) -> bool:
    """A model call recorded without a cost (a priced one counts through its cost record;
    one that failed before reporting any usage cost nothing)."""
    data = event.data
    return not data.get("priced") and bool(data.get("usage") or not data.get("error"))


async def cost_totals(store: EventStore, f: Filters, by: str, *, provider: str | None,
                      model: str | None, after: datetime | None = None,
                      before: datetime | None = None) -> CostTotals:
    totals = CostTotals(by)
    async for page in pages(store, f):
        for event in page:
            data = event.data
            # One clock for cost questions: the call's own time.
            if (after is not None and event.occurred_at < after) or (
                before is not None and event.occurred_at > before
            ):
                continue
            # As sum_cost filters; not imported from pricing.records, which would load the
            # pricing dataset into every run of the command.
            if (provider is not None and data.get("provider") != provider) or (
                model is not None and data.get("model") != model
            ):
                continue
            if event.type == LLM_CALL:
                if _unpriced(event):
                    key = group_key(event, by)
                    group = totals.groups.get(key)
                    if group is None:
                        group = totals.groups[key] = CostGroup(key)
                    group.unpriced_calls += 1
                    totals.total.unpriced_calls += 1
                continue
            cost = cost_of(event)
            if cost is None:
                totals.skipped += 1
                continue
            for key in group_keys(event, by):
                group = totals.groups.get(key)
                if group is None:
                    group = totals.groups[key] = CostGroup(key)
                group.add(event, cost)
            totals.total.add(event, cost)
    return totals


def costs_table(totals: CostTotals, rows: list[CostGroup]) -> Table:
    grand = totals.total
    table = Table(box=None, header_style="bold", pad_edge=False, show_footer=True,
                  footer_style="bold")
    table.add_column(totals.by, footer="total")
    table.add_column("calls", justify="right", footer=str(grand.calls))
    table.add_column("input tokens", justify="right", footer=str(grand.input_tokens))
    table.add_column("output tokens", justify="right", footer=str(grand.output_tokens))
    table.add_column("cost", justify="right", footer=fmt_money(grand.total_cost))
    # Beside every total, how many calls it leaves out for want of a price.
    unpriced = grand.unpriced_calls > 0
    if unpriced:
        table.add_column("unpriced calls", justify="right", footer=str(grand.unpriced_calls))
    for g in rows:
        cells: list[Text | str] = [Text(fmt_key(g.key)), str(g.calls), str(g.input_tokens),
                                   str(g.output_tokens), fmt_money(g.total_cost)]
        table.add_row(*cells, *([str(g.unpriced_calls)] if unpriced else []))
    return table


@click.command("costs")
@click.option("--by", type=click.Choice(GROUPS), default="user", show_default=True,
              help="Group totals by this.")
@time_option("--after", "Calls made at or after TIME (ISO date or datetime, naive = "
             "UTC, or a period ago like 7d, 12h, 30m).")
@time_option("--before", "Calls made at or before TIME.")
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
    """Exact cost totals grouped by user, model, provider, day, conversation or tag.

    Days are the UTC date of each call (occurred_at), and --after/--before bound the same
    time. By tag, a record with several tags counts in each of their groups (the total
    counts it once); untagged ones group as (none). Calls recorded without a known price
    are counted beside the totals (the "unpriced calls" column, `unpriced_calls` in JSON),
    never as $0.
    """
    # The time bounds are checked here but applied to occurred_at, not the commit time.
    checked = make_filters(conversation_id=conversation_id, user_id=user_id,
                           types=(COST_RECORDED, LLM_CALL), after=after, before=before)
    f = msgspec.structs.replace(checked, after=None, before=None)
    totals = await cost_totals(store, f, by, provider=provider, model=model, after=after,
                               before=before)
    rows = totals.ordered(top)
    if totals.skipped:
        note(f"warning: skipped {totals.skipped} cost records without a valid total_cost")
    grand = totals.total
    if as_json:
        emit_json({"by": by, "after": after, "before": before, "groups": rows,
                   "calls": grand.calls, "input_tokens": grand.input_tokens,
                   "output_tokens": grand.output_tokens, "total_cost": grand.total_cost,
                   "unpriced_calls": grand.unpriced_calls})
        return
    out.print(costs_table(totals, rows))
    if len(totals.groups) > len(rows):
        note(f"top {len(rows)} of {len(totals.groups)} groups; the total covers all of them")


COMMANDS = (costs_cmd,)
