"""`eventstore prompts`: the prompt registry (names, versions, the active one)."""

from __future__ import annotations

import click
import msgspec
from rich.table import Table
from rich.text import Text

from ..prompts import PromptRegistry
from ..store import EventStore
from .base import emit_json, note, out, with_store


class PromptRow(msgspec.Struct, kw_only=True):
    name: str
    versions: list[str]
    active: str | None


@click.command("prompts")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one prompt per line.")
@with_store
async def prompts_cmd(store: EventStore, *, name: str | None, as_json: bool) -> None:
    """Registered prompts: their versions in registration order and the active one.

    With NAME, that prompt's active version in full (system and user templates).
    """
    registry = await store.rebuild(PromptRegistry())
    if name is not None:
        prompt = registry.get(name)  # PromptNotFoundError names the known ones
        if as_json:
            emit_json(prompt)
            return
        out.print(Text(f"{prompt.name} {prompt.version} (active)", style="bold"))
        if prompt.system is not None:
            out.print(Text("system: ", style="bold") + Text(prompt.system))
        out.print(Text("user: ", style="bold") + Text(prompt.user))
        return
    rows = [PromptRow(name=n, versions=registry.versions(n), active=registry.active_version(n))
            for n in registry.names()]
    if as_json:
        for row in rows:
            emit_json(row)
        return
    if not rows:
        note("no prompts registered")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "active", "versions"):
        table.add_column(column)
    for row in rows:
        table.add_row(Text(row.name), Text(row.active or ""), Text(", ".join(row.versions)))
    out.print(table)


COMMANDS = (prompts_cmd,)
