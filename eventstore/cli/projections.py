"""`eventstore rebuild`: the built-in projections, and what a person wants to see of them
once the whole log has been replayed into them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..projections import (
    ConversationCosts,
    GuardrailViolations,
    LatencyStats,
    MemoryTrims,
    Projection,
    PromptVersions,
)
from ..signals import rebuild_progress
from ..store import EventStore
from .base import emit_json, note, out, progress_bar, with_store
from .render import fmt_key, fmt_money, fmt_ms


@dataclass
class BuiltIn:
    costs: ConversationCosts = field(default_factory=ConversationCosts)
    violations: GuardrailViolations = field(default_factory=GuardrailViolations)
    trims: MemoryTrims = field(default_factory=MemoryTrims)
    latency: LatencyStats = field(default_factory=LatencyStats)
    prompts: PromptVersions = field(default_factory=PromptVersions)

    def all(self) -> tuple[Projection, ...]:
        return (self.costs, self.violations, self.trims, self.latency, self.prompts)


def summary(p: BuiltIn) -> dict[str, Any]:
    """Plain values (Decimals stay Decimals) for JSON and for the tables below."""
    costs = p.costs
    totals = costs.tokens()
    by_model = []
    for model, cost in sorted(costs.by("model").items(), key=lambda kv: (-kv[1], kv[0] or "")):
        tokens = costs.tokens(model=model)
        by_model.append({"model": model, "calls": tokens.calls, "input_tokens": tokens.input,
                         "output_tokens": tokens.output, "total_cost": cost})
    return {
        "position": p.costs.position,
        "costs": {"total_cost": costs.total(), "calls": totals.calls,
                  "input_tokens": totals.input, "output_tokens": totals.output,
                  "by_model": by_model, "skipped": costs.skipped},
        "violations": {"total": p.violations.count(), "by_policy": p.violations.by_policy(),
                       "skipped": p.violations.skipped},
        "trims": {"total": p.trims.count(), "tokens_removed": p.trims.tokens_removed(),
                  "messages_removed": p.trims.messages_removed(),
                  "by_strategy": p.trims.by_strategy(), "skipped": p.trims.skipped},
        "latency": {"models": {m: p.latency.percentiles(model=m) for m in p.latency.models()},
                    "skipped": p.latency.skipped},
        "prompts": {"versions": [s for name in p.prompts.prompts()
                                 for s in p.prompts.compare(name)],
                    "unattributed_feedback": p.prompts.unattributed_feedback,
                    "skipped": p.prompts.skipped},
    }


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def print_summary(console: Console, s: dict[str, Any]) -> None:
    c = s["costs"]
    console.print(Text(f"costs: {fmt_money(c['total_cost'])} over {c['calls']} calls, "
                       f"{c['input_tokens']} input / {c['output_tokens']} output tokens",
                       style="bold"))
    if c["by_model"]:
        table = _table("model", "calls", "input tokens", "output tokens", "cost")
        for row in c["by_model"]:
            table.add_row(Text(row["model"]), str(row["calls"]), str(row["input_tokens"]),
                          str(row["output_tokens"]), fmt_money(row["total_cost"]))
        console.print(table)

    v = s["violations"]
    console.print(Text(f"guardrail violations: {v['total']}", style="bold"))
    if v["by_policy"]:
        table = _table("policy", "violations")
        for policy, n in v["by_policy"].items():
            table.add_row(Text(policy), str(n))
        console.print(table)

    t = s["trims"]
    console.print(Text(f"memory trims: {t['total']}, {t['messages_removed']} messages and "
                       f"{t['tokens_removed']} tokens removed", style="bold"))
    if t["by_strategy"]:
        table = _table("strategy", "trims")
        for strategy, n in t["by_strategy"].items():
            table.add_row(Text(strategy), str(n))
        console.print(table)

    models = s["latency"]["models"]
    console.print(Text(f"latency: {len(models)} models with samples", style="bold"))
    if models:
        table = _table("model", "samples", "p50 ms", "p95 ms", "p99 ms")
        for model, pct in models.items():
            table.add_row(Text(model), str(pct["count"]), fmt_ms(pct["p50"]), fmt_ms(pct["p95"]),
                          fmt_ms(pct["p99"]))
        console.print(table)

    prompts = s["prompts"]
    console.print(Text(f"prompt versions: {len(prompts['versions'])}", style="bold"))
    if prompts["versions"]:
        table = _table("prompt", "version", "executions", "cost", "ratings", "avg rating")
        for st in prompts["versions"]:
            rating = "-" if st.avg_rating is None else f"{st.avg_rating:.2f}"
            table.add_row(Text(st.prompt_name), Text(fmt_key(st.prompt_version)),
                          str(st.executions), fmt_money(st.total_cost), str(st.feedback_count),
                          rating)
        console.print(table)

    skipped = {name: s[name]["skipped"] for name in ("costs", "violations", "trims", "latency",
                                                     "prompts") if s[name]["skipped"]}
    if skipped:
        console.print(Text("skipped malformed events: " + ", ".join(
            f"{name} {n}" for name, n in skipped.items()), style="yellow"))


@click.command("rebuild")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON document.")
@with_store
async def rebuild_cmd(store: EventStore, *, as_json: bool) -> None:
    """Rebuild the built-in projections from the whole log and summarise them."""
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



COMMANDS = (rebuild_cmd,)
