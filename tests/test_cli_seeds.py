"""The CLI on the seeds' rows: `eventstore prompts`, `costs --by tag`, a jsonl:// store."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from eventstore import EventStore, ModelPrice

from .test_cli import json_lines, ok, run, table_rows


class FixedPricing:
    def price_for(self, provider: str, model: str) -> ModelPrice:
        return ModelPrice(input=Decimal("0.001"), output=Decimal("0.002"))


async def fill(url: str) -> None:
    async with EventStore.open(url, pricing=FixedPricing()) as store:
        await store.register_prompt("greet", "v1", user="Hi {name}", system="Be brief")
        await store.register_prompt("greet", "v2", user="Hello {name}")
        await store.activate_prompt("greet", "v1")
        await store.register_prompt("summarise", "1", user="Summarise: {text}")
        with store.conversation("c1", tags=["beta"]):
            await store.record_cost(provider="openai", model="m", input_tokens=100,
                                    output_tokens=50)
            with store.trace("run", tags=["agent"]):
                await store.record_cost(provider="openai", model="m", input_tokens=200,
                                        output_tokens=100)
        await store.record_cost(provider="openai", model="m", input_tokens=300,
                                output_tokens=150)


def test_prompts_lists_names_versions_and_the_active_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    asyncio.run(fill(url))
    rows = json_lines(run("prompts", "--json", url=url))
    assert rows == [{"name": "greet", "versions": ["v1", "v2"], "active": "v1"},
                    {"name": "summarise", "versions": ["1"], "active": "1"}]
    table = table_rows(run("prompts", url=url))
    assert table[0] == ["name", "active", "versions"]
    assert table[1] == ["greet", "v1", "v1, v2"]
    shown = ok(run("prompts", "greet", url=url)).out
    assert "greet v1 (active)" in shown and "Be brief" in shown and "Hi {name}" in shown
    missing = run("prompts", "nope", url=url)
    assert missing.code != 0 and "no prompt named 'nope'" in missing.err
    assert "Traceback" not in missing.err


def test_costs_by_tag_on_a_jsonl_store(tmp_path: Path) -> None:
    url = f"jsonl:///{tmp_path / 'log'}"
    asyncio.run(fill(url))
    doc = json_lines(run("costs", "--by", "tag", "--json", url=url))[0]
    groups = {g["key"]: g for g in doc["groups"]}
    assert set(groups) == {"beta", "agent", None}
    assert Decimal(groups["beta"]["total_cost"]) == Decimal("0.6")  # 0.2 + 0.4
    assert Decimal(groups["agent"]["total_cost"]) == Decimal("0.4")
    assert Decimal(groups[None]["total_cost"]) == Decimal("0.6")
    assert doc["calls"] == 3 and Decimal(doc["total_cost"]) == Decimal("1.2")  # each once
    listed = json_lines(run("list", "--json", "--type", "prompt_activated", url=url))
    assert [e["data"] for e in listed] == [{"name": "greet", "version": "v1"}]


def test_a_missing_jsonl_directory_is_an_error_not_a_new_log(tmp_path: Path) -> None:
    result = run("list", url=f"jsonl:///{tmp_path / 'typo'}")
    assert result.code == 1 and "no eventstore directory" in result.err
    assert not (tmp_path / "typo").exists()
