"""Retention (eventstore.privacy.retention) on every backend: personal fields expire by key
period, while types, times, tokens and costs stay, and a retention_applied event says
what was erased."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import Event, EventStore, Retention, RetentionError
from eventstore.pricing import ModelPrice, PriceTable
from eventstore.privacy.encryption import ERASED, Encryption, generate_master_key
from eventstore.privacy.retention import RETENTION_APPLIED
from eventstore.projections import ConversationCosts

from .conftest import StoreFactory, wait_for

KEY = generate_master_key()
PRICING = PriceTable({"openai/gpt-4o": ModelPrice.per_million(input="2.5", output="10")})
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
OLD = datetime(2026, 8, 15, tzinfo=UTC)      # its month ended long before NOW - 30 days
RECENT = datetime(2026, 11, 20, tzinfo=UTC)  # its month is not over yet at NOW - 30 days


def message(user: str | None, content: str, when: datetime) -> Event:
    return Event(type="message_sent", conversation_id="c1", user_id=user,
                 data={"role": "user", "content": content}, occurred_at=when)


def opened(open_store: StoreFactory, **options: Any) -> EventStore:
    return open_store(encryption=Encryption(KEY), pricing=PRICING,
                      retention=Retention(content_after=timedelta(days=30)), **options)


async def test_retention_erases_old_periods_and_keeps_recent_ones_and_every_cost(
        open_store: StoreFactory) -> None:
    with anyio.fail_after(60):
        async with opened(open_store) as store:
            old = await store.append(message("u1", "old diagnosis of u1", OLD))
            anonymous = await store.append(message(None, "old note of nobody", OLD))
            recent = await store.append(message("u1", "recent question of u1", RECENT))
            for when in (OLD, RECENT):
                await store.record_cost(conversation_id="c1", user_id="u1", provider="openai",
                                        model="gpt-4o", input_tokens=1000, output_tokens=100,
                                        occurred_at=when)
            live = ConversationCosts()
            sub = await store.project(live)
            before = (await store.sum_cost(), await store.count_events())
            await wait_for(lambda: sub.position >= 5, 20)

            dry = await store.apply_retention(dry_run=True, now=NOW)
            assert (dry.dry_run, dry.periods, dry.keys, dry.event) == (True, ["2026-08"], 2, None)
            assert (await store.list_events(limit=1)).events[0].data["content"] == \
                "old diagnosis of u1"

            report = await store.apply_retention(now=NOW)
            assert (report.periods, report.keys, report.legacy_keys) == (["2026-08"], 2, 0)
            assert report.cutoff == NOW - timedelta(days=30)
            assert report.event is not None and report.event.type == RETENTION_APPLIED
            assert report.event.data["periods"] == ["2026-08"]
            assert report.event.data["keys_destroyed"] == 2

            events = {e.id: e async for e in store.read()}
            assert events[old.id].data["content"] == ERASED
            assert events[anonymous.id].data["content"] == ERASED
            assert events[recent.id].data["content"] == "recent question of u1"
            assert (events[old.id].type, events[old.id].occurred_at) == (old.type, OLD)
            assert await store.sum_cost() == before[0]
            assert await store.count_events() == before[1] + 1
            rebuilt = await store.rebuild(ConversationCosts())
            await wait_for(lambda: sub.position >= 6, 20)
            assert rebuilt.total() == live.total() == before[0]

            again = await store.apply_retention(now=NOW)
            assert (again.keys, again.event) == (0, None)  # nothing left to erase: no record


async def test_a_writer_without_retention_keeps_per_period_keys(
        open_store: StoreFactory) -> None:
    with anyio.fail_after(60):
        async with opened(open_store) as store:
            await store.append(message("u1", "first", OLD))
        async with open_store(encryption=Encryption(KEY)) as plain:  # no retention=
            late = await plain.append(message("u1", "appended without retention", OLD))
        async with opened(open_store) as store:
            report = await store.apply_retention(now=NOW)
            assert report.periods == ["2026-08"]
            (stored,) = [e async for e in store.read() if e.id == late.id]
            assert stored.data["content"] == ERASED


def test_retention_needs_encryption_and_a_positive_limit() -> None:
    with pytest.raises(RetentionError, match="needs encryption"):
        EventStore.open("memory://", retention=Retention(content_after=timedelta(days=1)))
    for bad in (timedelta(0), timedelta(days=-1), 30):
        with pytest.raises(RetentionError):
            Retention(content_after=bad)  # type: ignore[arg-type]
    with pytest.raises(RetentionError, match="period"):
        Retention(content_after=timedelta(days=1), period="year")  # type: ignore[arg-type]


async def test_apply_retention_without_retention_says_what_to_do() -> None:
    async with EventStore.open("memory://", encryption=Encryption(KEY)) as store:
        with pytest.raises(RetentionError, match="retention=Retention"):
            await store.apply_retention()


def test_the_cli_says_what_retention_would_erase_then_erases_it(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    key_file = tmp_path / "master.key"
    key_file.write_text(KEY)
    old = datetime.now(UTC) - timedelta(days=120)

    async def seed() -> None:
        async with EventStore.open(f"sqlite:///{db}", encryption=Encryption(KEY),
                                   retention=Retention(content_after=timedelta(days=30))) as s:
            await s.append(message("u1", "old diagnosis", old))
            await s.append(message("u1", "fresh", datetime.now(UTC)))

    asyncio.run(seed())
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "eventstore", "--db", f"sqlite:///{db}",
                               "--master-key-file", str(key_file), *args],
                              capture_output=True, text=True, timeout=60, env=env)

    period = old.strftime("%Y-%m")
    dry = cli("retention", "--content-after", "30d", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) | {"cutoff": None} == {
        "cutoff": None, "periods": [period], "keys": 1, "legacy_keys": 0, "dry_run": True,
        "pending": None, "seq": None}
    shown = cli("show", "c1")
    assert "old diagnosis" in shown.stdout
    done = cli("retention", "--content-after", "30d")
    assert done.returncode == 0 and "erased 1 keys" in done.stdout and period in done.stdout
    shown = cli("show", "c1")
    assert "old diagnosis" not in shown.stdout and ERASED in shown.stdout
    assert "fresh" in shown.stdout
    bad = cli("retention", "--content-after", "soon")
    assert bad.returncode == 2 and "--content-after" in bad.stderr
