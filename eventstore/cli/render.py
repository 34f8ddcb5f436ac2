"""How the `eventstore` command shows events to a person: one-line summaries, times,
money, and the conversation transcript. Machine output (JSON, CSV, Parquet) lives in
the command modules; nothing here is meant to be parsed back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from rich.table import Table
from rich.text import Text

from ..calls import LLM_CALL
from ..events import (
    CONVERSATION_CREATED,
    COST_RECORDED,
    MEMORY_TRIMMED,
    MESSAGE_SENT,
    POLICY_VIOLATION,
    RecordedEvent,
)
from ..pricing.money import EXACT, ZERO, cost_or_none

_json = msgspec.json.Encoder(decimal_format="string")


def compact_json(value: Any) -> str:
    return _json.encode(value).decode()


def fmt_time(moment: datetime | None) -> str:
    """Seconds are what a person scans for; the exact time is in the JSON output."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as msgspec writes it, so it parses back exactly."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fmt_money(amount: Decimal) -> str:
    """Every significant digit of the amount (never rounded, never in exponent form), at
    least cents: $0.0060000 and $0.006 are the same money, and the shorter one reads."""
    text = format(amount, "f")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def fmt_ms(value: Any) -> str:
    """Milliseconds as a person reads them: whole ones, tenths below 10 (the exact float
    is in the JSON output); "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.1f}" if abs(value) < 10 else str(round(value))


def cost_of(event: RecordedEvent) -> Decimal | None:
    """The total cost of a cost_recorded event, or None if its data is not a cost."""
    data = event.data
    return cost_or_none(data.get("total_cost")) if isinstance(data, dict) else None


def fmt_key(value: str | None) -> str:
    return "(none)" if value is None else value


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\\n")


def _cost_text(data: Mapping[str, Any]) -> str:
    parts = [f"{data['provider']}/{data['model']}",
             f"{data['input_tokens']} in / {data['output_tokens']} out"]
    cached = [f"{data[k]} {label}" for k, label in (("cache_read_tokens", "cache read"),
                                                    ("cache_write_tokens", "cache write"))
              if data.get(k)]
    if cached:
        parts.append(", ".join(cached))
    if data.get("latency_ms") is not None:
        parts.append(f"{fmt_ms(data['latency_ms'])} ms")
    total = Decimal(data["total_cost"])
    parts.append(fmt_money(total))
    return " · ".join(parts)


def _call_text(data: Mapping[str, Any]) -> str:
    parts = [f"{data['provider']}/{data['model']}", str(data.get("api") or "call")]
    if data.get("stream"):
        parts.append("stream")
    if "input_tokens" in data:
        parts.append(f"{data['input_tokens']} in / {data['output_tokens']} out")
    else:
        parts.append("no usage")
    if data.get("latency_ms") is not None:
        parts.append(f"{fmt_ms(data['latency_ms'])} ms")
    error = data.get("error")
    if isinstance(error, Mapping):
        status = error.get("status_code")
        parts.append(f"error {error.get('type')}" + (f" ({status})" if status else ""))
    if data.get("priced") is False:
        parts.append("unpriced")
    return " · ".join(parts)


def describe(event: RecordedEvent, *, one_line: bool = True) -> str:
    """What happened, in words; the raw data as JSON when it is not the expected shape
    (extra keys and malformed payloads must never hide an event from an auditor)."""
    data = event.data
    try:
        kind = event.type
        if kind == MESSAGE_SENT:
            content = str(data["content"])
            return f"{data['role']}: {_one_line(content) if one_line else content}"
        if kind == COST_RECORDED:
            return _cost_text(data)
        if kind == LLM_CALL:
            return _call_text(data)
        if kind == POLICY_VIOLATION:
            severity = data.get("severity")
            text = f"{data['policy']}: {data['reason']}"
            return f"{text} [{severity}]" if severity else text
        if kind == MEMORY_TRIMMED:
            return (f"{data['strategy']}: {data['messages_before']} → "
                    f"{data['messages_after']} messages, {data['tokens_removed']} tokens "
                    "removed")
        if kind == CONVERSATION_CREATED:
            title = data.get("title")
            return f"title: {title}" if title is not None else "created"
    except (KeyError, TypeError, ValueError, InvalidOperation):
        pass
    return compact_json(data)


def event_line(event: RecordedEvent) -> Text:
    """One event on one line (for `tail`): seq, time, type, who, what."""
    who = " ".join(f"{label}={value}" for label, value in
                   (("conversation", event.conversation_id), ("user", event.user_id))
                   if value is not None)
    line = Text()
    line.append(f"#{event.seq}", style="dim")
    line.append(f"  {fmt_time(event.recorded_at)}  ")
    line.append(event.type, style="bold")
    if who:
        line.append(f"  {who}", style="cyan")
    line.append(f"  {describe(event)}")
    return line


def events_table() -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("recorded_at", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("conversation", no_wrap=True)
    table.add_column("user", no_wrap=True)
    table.add_column("summary")
    return table


def add_event_row(table: Table, event: RecordedEvent) -> None:
    # Text cells, not strings: event content is user data and must never be read as
    # rich markup ("[red]" in a message is text, not a style).
    table.add_row(Text(str(event.seq)), Text(fmt_time(event.recorded_at)), Text(event.type),
                  Text(event.conversation_id or "-"), Text(event.user_id or "-"),
                  Text(describe(event)))


_KINDS = {
    MESSAGE_SENT: "message",
    COST_RECORDED: "cost",
    POLICY_VIOLATION: "violation",
    MEMORY_TRIMMED: "trim",
    CONVERSATION_CREATED: "created",
    LLM_CALL: "call",
}
_STYLES = {"call": "magenta", "cost": "green", "violation": "bold red", "trim": "yellow",
           "created": "dim"}


class Transcript:
    """A conversation's timeline, rendered page by page with a running cost total;
    `requests` (call id -> the exact request body) are shown under their calls."""

    def __init__(self, seq_width: int,
                 requests: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.seq_width = seq_width
        self.requests = requests or {}
        self.total = ZERO
        self.calls = 0
        self.counts: dict[str, int] = {}
        self.users: set[str] = set()

    def page(self, events: list[RecordedEvent]) -> Text:
        """The page's lines. Plain text lines rather than a table: a table pads every row
        to its widest, which fills piped output with trailing spaces."""
        lines = Text()
        for event in events:
            kind = _KINDS.get(event.type, "event")
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if event.user_id is not None:
                self.users.add(event.user_id)
            label = kind
            text = Text(describe(event, one_line=False))
            if kind == "message":
                label = str(event.data.get("role", "message"))
                content = event.data.get("content")
                if isinstance(content, str):
                    text = Text(content)
            elif kind == "event":
                text = Text(f"{event.type} {compact_json(event.data)}")
            elif kind == "cost":
                cost = cost_of(event)
                if cost is not None:
                    self.total = EXACT.add(self.total, cost)
                    self.calls += 1
                text.append(f"   running total {fmt_money(self.total)}", style="dim")
            elif kind == "call" and event.id in self.requests:
                # Indented JSON, key order as sent: the request is read, not parsed back
                # (`show --requests --json` is the machine form).
                request = msgspec.json.format(_json.encode(self.requests[event.id]), indent=2)
                text.append("\nrequest ")
                text.append(request.decode(), style="dim")
            if lines:
                lines.append("\n")
            lines.append(f"#{event.seq}".rjust(self.seq_width + 1), style="dim")
            lines.append(f"  {fmt_time(event.recorded_at)}  ")
            lines.append(label.ljust(10), style=_STYLES.get(kind, "bold"))
            lines.append("  ")
            # Continuation lines of a multi-line message start under its first line.
            indent = "\n" + " " * (self.seq_width + 1 + 2 + 19 + 2 + max(len(label), 10) + 2)
            for i, part in enumerate(text.split("\n", allow_blank=True)):
                if i:
                    lines.append(indent)
                lines.append_text(part)
        return lines

    def footer(self) -> Text:
        names = [("message", "message"), ("call", "model call"), ("cost", "cost record"),
                 ("violation", "violation"), ("trim", "trim"), ("created", "creation"),
                 ("event", "custom event")]
        counts = ", ".join(_plural(self.counts[k], label) for k, label in names
                           if k in self.counts)
        return Text(f"total cost {fmt_money(self.total)} over {_plural(self.calls, 'call')} "
                    f"({counts})", style="bold")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
