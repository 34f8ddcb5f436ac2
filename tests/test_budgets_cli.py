"""`eventstore budgets` and `eventstore alerts` (issue 18), run as a user runs them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import anyio

from eventstore import Budget, EventStore

from .test_budgets import alerts, settled
from .test_cli import TIMEOUT, finish, json_lines, ok, run, start

DAILY = Budget(limit=Decimal("1"), per="user", window="day", warn_at=(0.5,), name="daily")
ALL = Budget(limit=Decimal("10"), per="total", window="month", name="all")


async def seeded(url: str, *spends: tuple[str, str]) -> None:
    async with EventStore.open(url, budgets=[DAILY, ALL]) as store:
        for user, amount in spends:
            await store.record_cost(provider="test", model="m", input_tokens=1,
                                    output_tokens=1, cost=Decimal(amount), user_id=user)
        await settled(store)


async def test_budgets_shows_each_budget_with_spent_limit_and_the_scopes_over_it(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    await seeded(url, ("u1", "0.70"), ("u1", "0.40"), ("u2", "0.60"), ("u3", "0.10"))
    rows = {(r["budget"], r["scope"]): r for r in json_lines(run("budgets", "--json",
                                                                 url=url))}
    assert set(rows) == {("daily", "u1"), ("daily", "u2"), ("all", "")}
    assert (rows["daily", "u1"]["spent"], rows["daily", "u1"]["state"]) == ("1.10", "exceeded")
    assert (rows["daily", "u2"]["spent"], rows["daily", "u2"]["state"]) == ("0.60",
                                                                            "warn_at=0.5")
    assert (rows["all", ""]["spent"], rows["all", ""]["remaining"]) == ("1.80", "8.20")
    table = ok(run("budgets", url=url)).out
    assert "exceeded" in table and "$1.10" in table and "$1.00" in table
    # budgets from a file instead of the log: one with a lower limit
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps([{"limit": "1.5", "per": "total", "window": "total"}]))
    (row,) = json_lines(run("budgets", "--budgets", str(path), "--json", url=url))
    assert (row["budget"], row["spent"], row["state"]) == ("total/total/1.5", "1.80", "exceeded")
    path.write_text(json.dumps([{"limit": "-1", "per": "total", "window": "total"}]))
    bad = run("budgets", "--budgets", str(path), url=url)
    assert bad.code == 2 and "positive" in bad.err


async def test_alerts_lists_and_follows_the_alert_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    await seeded(url, ("u1", "1.20"))
    listed = json_lines(run("alerts", "--json", url=url))
    assert sorted(e["type"] for e in listed) == ["budget_exceeded", "budget_warning"]
    assert "budget_exceeded  daily  user=u1" in ok(run("alerts", url=url)).out
    follower = start("alerts", "--follow", "--json", "--count", "3", url=url)
    try:
        with anyio.fail_after(TIMEOUT):
            await seeded(url, ("u2", "0.55"))  # one more alert: u2's warning
            async with EventStore.open(url) as store:
                assert len(await alerts(store)) == 3
        result = await anyio.to_thread.run_sync(finish, follower)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    followed = json_lines(result)
    assert [(e["type"], e["user_id"]) for e in followed][-1] == ("budget_warning", "u2")
    assert len(followed) == 3
