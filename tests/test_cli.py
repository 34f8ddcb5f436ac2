"""The `eventstore` command, run the way users run it: the installed console script in a
subprocess, against a SQLite file (and a PostgreSQL schema where a server answers) that
the test seeds through the Python API with a known log, so every figure is known exactly.

Starting the command costs a few hundred milliseconds, so independent invocations run
side by side (`run_all`) and each test groups the assertions about one command.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventstore import Event, EventStore, RecordedEvent
from eventstore.backends import Checkpoint, backend_for_url
from eventstore.pricing import ModelPrice, PriceTable

from .conftest import PG_URL, drop_pg_schema, require_pg, wait_for

TIMEOUT = 60  # seconds; only reached when something is broken


def _command() -> list[str]:
    # The script pip installed beside this interpreter, then any on PATH, then the module.
    script = (shutil.which("eventstore", path=os.path.dirname(sys.executable))
              or shutil.which("eventstore"))
    return [script] if script else [sys.executable, "-m", "eventstore.cli"]


COMMAND = _command()


def _env(url: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "FORCE_COLOR", "EVENTSTORE_URL")}
    if url is not None:
        env["EVENTSTORE_URL"] = url
    return {**env, **(extra or {})}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def start(*args: str, url: str | None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(url, env))


def finish(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=TIMEOUT)
    return Result(proc.returncode, out, err)


def run(*args: str, url: str | None, env: dict[str, str] | None = None) -> Result:
    return finish(start(*args, url=url, env=env))


def run_all(*calls: Sequence[str], url: str | None) -> list[Result]:
    """Run independent invocations side by side."""
    return [finish(p) for p in [start(*args, url=url) for args in calls]]


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}: {result.err}"
    return result


def table_rows(result: Result) -> list[list[str]]:
    """The rows of a rich table as printed to a pipe (cells are at least 2 spaces apart),
    header first."""
    return [re.split(r"\s{2,}", line.strip()) for line in ok(result).lines if line.strip()]


def json_lines(result: Result) -> list[Any]:
    return [msgspec.json.decode(line) for line in ok(result).lines]


def decode_events(lines: Sequence[str]) -> list[RecordedEvent]:
    return [msgspec.json.decode(line, type=RecordedEvent) for line in lines]


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(moment: datetime) -> str:
    return moment.isoformat()


# --- the known log -------------------------------------------------------------------------

PRICES = PriceTable({
    "openai/gpt-4o": ModelPrice.per_million(input="2.5", output="10"),
    "anthropic/claude-sonnet": ModelPrice.per_million(input="3", output="15"),
})

# What `list` says of each event, by seq.
SUMMARY = {
    1: "title: Trip",
    2: "user: Hi [red]there[/red]",  # rich markup in content is text, never a style
    3: "assistant: Hello!\\nHow can I help?",
    4: "openai/gpt-4o · 1200 in / 300 out · 420 ms · $0.006",  # latency rounded
    5: "pii: card number [high]",
    6: "summarize: 10 → 4 messages, 500 tokens removed",
    7: '{"rating":5}',
    8: "user: Plan",
    9: "anthropic/claude-sonnet · 1000 in / 500 out · $0.0105",
    10: "openai/gpt-4o · 10 in / 7 out · $0.000095",
    11: "openai/gpt-4o · 1 in / 1 out · $0.0000125",
}


@dataclass
class Log:
    url: str
    events: list[RecordedEvent]
    checkpoints: dict[str, Checkpoint]

    def where(self, **match: Any) -> list[RecordedEvent]:
        return [e for e in self.events if all(getattr(e, k) == v for k, v in match.items())]


async def seed_known_log(url: str) -> Log:
    async with EventStore.open(url, pricing=PRICES) as store:
        c1: dict[str, Any] = {"conversation_id": "c1", "user_id": "u1"}
        c2: dict[str, Any] = {"conversation_id": "c2", "user_id": "u2"}
        await store.track("conversation_created", {"title": "Trip"}, **c1)
        await store.track("message_sent", {"role": "user", "content": "Hi [red]there[/red]"},
                          **c1)
        await store.track("message_sent",
                          {"role": "assistant", "content": "Hello!\nHow can I help?"}, **c1)
        await store.record_cost(provider="openai", model="gpt-4o", input_tokens=1200,
                                output_tokens=300, latency_ms=420.0,
                                metadata={"prompt_name": "greet", "prompt_version": "v1"}, **c1)
        await store.track("policy_violation",
                          {"policy": "pii", "reason": "card number", "severity": "high"}, **c1)
        await store.track("memory_trimmed", {"strategy": "summarize", "messages_before": 10,
                                             "messages_after": 4, "tokens_removed": 500}, **c1)
        await store.track("user_feedback", {"rating": 5}, **c1)
        await store.track("message_sent", {"role": "user", "content": "Plan"}, **c2)
        await store.record_cost(provider="anthropic", model="claude-sonnet", input_tokens=1000,
                                output_tokens=500, **c2)
        await store.record_cost(provider="openai", model="gpt-4o", input_tokens=10,
                                output_tokens=7, **c2)
        await store.record_cost(provider="openai", model="gpt-4o", input_tokens=1,
                                output_tokens=1)
        # A durable subscription that caught up and stopped, and one left behind.
        sub = await store.subscribe(lambda event: None, name="alerts",
                                    types={"policy_violation"})
        await wait_for(lambda: sub.position == 11)
        await sub.stop()
        await store.backend.save_checkpoint(Checkpoint(name="reports", position=3))
        events = [e async for e in store.read()]
        checkpoints = {c.name: c for c in await store.backend.list_checkpoints()}
    return Log(url, events, checkpoints)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    path = tmp_path_factory.mktemp("cli") / "audit.db"
    return asyncio.run(seed_known_log(f"sqlite:///{path}"))


BIG = 1_001  # one more than a page of every command that walks pages


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A conversation and a user's cost records each longer than one page."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli-big') / 'big.db'}"
    cost = {"provider": "acme", "model": "m1", "input_tokens": 1, "output_tokens": 1,
            "cache_read_tokens": 0, "cache_write_tokens": 0, "input_cost": "0.0000005",
            "output_cost": "0.0000005", "total_cost": "0.000001", "price_source": "test"}

    async def seed() -> None:
        async with EventStore.open(url) as store:
            await store.append_many(
                Event(type="message_sent", conversation_id="big", user_id="talker",
                      data={"role": "user", "content": f"message {i}"}) for i in range(BIG))
            await store.append_many(
                Event(type="cost_recorded", user_id="spender", data=cost) for _ in range(BIG))

    asyncio.run(seed())
    return url


# --- list and count ------------------------------------------------------------------------


def test_list_prints_each_event_as_a_row_and_applies_every_filter(log: Log) -> None:
    ev = log.events
    a, b = ev[4].recorded_at, ev[7].recorded_at
    everything, c2, u1_types, period, last_hour, before_an_hour, first_page = run_all(
        ["list"],
        ["list", "--conversation", "c2"],
        ["list", "--user", "u1", "--type", "message_sent", "--type", "policy_violation"],
        ["list", "--after", iso(a), "--before", iso(b)],
        ["list", "--after", "1h"],
        ["list", "--before", "1h"],
        ["list", "--limit", "4"],
        url=log.url,
    )
    rows = table_rows(everything)
    assert rows[0] == ["seq", "recorded_at", "type", "conversation", "user", "summary"]
    assert rows[1:] == [
        [str(e.seq), when(e.recorded_at), e.type, e.conversation_id or "-", e.user_id or "-",
         SUMMARY[e.seq]] for e in ev
    ]
    assert everything.err == ""

    def seqs(result: Result) -> list[int]:
        return [int(row[0]) for row in table_rows(result)[1:]]

    assert seqs(c2) == [e.seq for e in log.where(conversation_id="c2")] == [8, 9, 10]
    assert seqs(u1_types) == [2, 3, 5]
    assert seqs(period) == [e.seq for e in ev if a <= e.recorded_at <= b]
    assert seqs(last_hour) == list(range(1, 12))
    assert seqs(before_an_hour) == []
    assert seqs(first_page) == [1, 2, 3, 4]
    assert first_page.err.startswith("next page: --cursor ")


def test_list_json_round_trips_and_pages_by_cursor(log: Log) -> None:
    whole = ok(run("list", "--json", url=log.url))
    assert decode_events(whole.lines) == log.events
    assert json.loads(whole.err) == {"next_cursor": None}

    # Walk u1's events three at a time: every page, in order, nothing twice.
    walked: list[RecordedEvent] = []
    cursors: list[str] = []
    cursor: str | None = None
    while True:
        page = ok(run("list", "--json", "--user", "u1", "--limit", "3",
                      *(["--cursor", cursor] if cursor else []), url=log.url))
        walked += decode_events(page.lines)
        cursor = json.loads(page.err)["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert walked == log.where(user_id="u1")
    assert len(cursors) == 2

    tampered = cursors[0][:-2] + ("AA" if not cursors[0].endswith("AA") else "BB")
    bad, other_filters, relative = run_all(
        ["list", "--user", "u1", "--cursor", tampered],
        ["list", "--user", "u2", "--cursor", cursors[0]],
        ["list", "--user", "u1", "--after", "1d", "--cursor", cursors[0]],
        url=log.url,
    )
    for result in (bad, other_filters, relative):
        assert result.code == 2, result
        assert result.out == "" and len(result.err.splitlines()) == 1
    assert bad.err.startswith("error: cursor was altered")
    assert other_filters.err.startswith("error: cursor was made with other filters")
    assert "--after is relative" in relative.err

    # A relative bound is printed in absolute form with the cursor, to continue with.
    first = ok(run("list", "--json", "--limit", "2", "--after", "1d", url=log.url))
    hint = json.loads(first.err)
    second = ok(run("list", "--json", "--limit", "2", "--after", hint["after"],
                    "--cursor", hint["next_cursor"], url=log.url))
    assert decode_events(first.lines + second.lines) == log.events[:4]


def test_count_applies_the_filters(log: Log) -> None:
    everything, c1 = run_all(
        ["count"],
        ["count", "--json", "--conversation", "c1", "--user", "u1", "--type", "message_sent",
         "--type", "memory_trimmed", "--after", iso(log.events[2].recorded_at)],
        url=log.url,
    )
    assert ok(everything).out == "11\n"
    assert json_lines(c1) == [{"count": 2}]  # seq 3 and 6


# --- show ----------------------------------------------------------------------------------


def test_show_prints_the_conversation_as_a_transcript_with_a_running_total(log: Log) -> None:
    c1, c2, as_json = run_all(["show", "c1"], ["show", "c2"], ["show", "c2", "--json"],
                              url=log.url)
    t = {e.seq: when(e.recorded_at) for e in log.events}
    # Piped, no line is padded out to a table's or a terminal's width.
    assert [line for line in ok(c1).lines if line != line.rstrip()] == []
    # A continuation line of a message starts under the message's first line.
    first, second = ok(c1).lines[3:5]
    assert second.strip() == "How can I help?"
    assert second.index("How") == first.index("Hello!")
    assert decode_events(ok(as_json).lines) == log.where(conversation_id="c2")

    def lines(result: Result) -> list[str]:
        return [" ".join(line.split()) for line in ok(result).lines]

    assert lines(c1) == [
        "conversation c1",
        f"#1 {t[1]} created title: Trip",
        f"#2 {t[2]} user Hi [red]there[/red]",
        f"#3 {t[3]} assistant Hello!",
        "How can I help?",
        f"#4 {t[4]} cost openai/gpt-4o · 1200 in / 300 out · 420 ms · $0.006 running total "
        "$0.006",
        f"#5 {t[5]} violation pii: card number [high]",
        f"#6 {t[6]} trim summarize: 10 → 4 messages, 500 tokens removed",
        f'#7 {t[7]} event user_feedback {{"rating":5}}',
        "total cost $0.006 over 1 call (2 messages, 1 cost record, 1 violation, 1 trim, "
        "1 creation, 1 custom event)",
        "7 events · users: u1",
    ]
    assert lines(c2) == [
        "conversation c2",
        f"#8 {t[8]} user Plan",
        f"#9 {t[9]} cost anthropic/claude-sonnet · 1000 in / 500 out · $0.0105 running total "
        "$0.0105",
        f"#10 {t[10]} cost openai/gpt-4o · 10 in / 7 out · $0.000095 running total $0.010595",
        "total cost $0.010595 over 2 calls (1 message, 2 cost records)",
        "3 events · users: u2",
    ]


def test_show_requests_prints_the_exact_request_of_every_model_call(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    first = {"model": "gpt-4o", "temperature": 0,
             "messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Hi <b>there</b>"}]}
    # The second request repeats the first's messages: the log stores them once and the
    # call references them, so what is printed must be rebuilt, not copied.
    second = {**first, "messages": [*first["messages"],
                                    {"role": "assistant", "content": "Hello!"},
                                    {"role": "user", "content": "More"}]}
    reply = {"id": "r", "model": "gpt-4o", "choices": [
        {"index": 0, "finish_reason": "stop",
         "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}

    async def seed() -> list[str]:
        async with EventStore.open(url, pricing=PRICES) as store:
            ids = []
            for request, latency in ((first, 420.0), (second, 42.0)):
                call = await store.record_llm_call(
                    provider="openai", model="gpt-4o", request=request, response=reply,
                    latency_ms=latency, conversation_id="chat")
                ids.append(call.id)
            failed = await store.record_llm_call(
                provider="openai", model="gpt-4o", request=first, response=None,
                latency_ms=50.0, conversation_id="chat",
                error={"type": "rate_limit", "message": "slow down", "status_code": 429})
            return [*ids, failed.id]

    ids = asyncio.run(seed())
    text, machine, plain = run_all(["show", "chat", "--requests"],
                                   ["show", "chat", "--requests", "--json"],
                                   ["show", "chat"], url=url)
    calls = json_lines(machine)
    assert [c["id"] for c in calls] == ids
    assert [c["request"] for c in calls] == [first, second, first]
    assert [c["response"] for c in calls] == [reply, reply, None]
    lines = ok(text).lines
    call_lines = [i for i, line in enumerate(lines) if " call " in line]
    assert [lines[i].split("  call  ")[1].strip() for i in call_lines] == [
        "openai/gpt-4o · chat · 12 in / 3 out · 420 ms",
        "openai/gpt-4o · chat · 12 in / 3 out · 42 ms",
        "openai/gpt-4o · chat · no usage · 50 ms · error rate_limit (429) · unpriced",
    ]
    for i, request in zip(call_lines, (first, second, first), strict=True):
        # The indented JSON under the call line parses back to the request as sent.
        body = []
        for line in lines[i + 1:]:
            if re.match(r"\s*#\d+ ", line) or line.startswith("total cost"):
                break
            body.append(line.strip())
        assert body[0].startswith("request {")
        assert json.loads(" ".join(body).removeprefix("request ")) == request
    assert "request" not in ok(plain).out
    # 12 in / 3 out at $2.5 / $10 per million, twice.
    assert ok(plain).lines[-2].startswith("total cost $0.00012 over 2 calls (")
    assert "3 model calls" in ok(plain).lines[-2]


def test_commands_that_read_everything_walk_every_page(big: str, tmp_path: Path) -> None:
    target = tmp_path / "big.jsonl"
    show, costs, export = run_all(
        ["show", "big"],
        ["costs", "--user", "spender", "--json"],
        ["export", "--output", str(target)],
        url=big,
    )
    shown = ok(show).lines
    assert [line.split()[-1] for line in shown[1:-2]] == [str(i) for i in range(BIG)]
    assert shown[-1] == f"{BIG} events · users: talker"
    doc = json_lines(costs)[0]
    assert (doc["calls"], Decimal(doc["total_cost"])) == (BIG, Decimal("0.001001"))
    assert ok(export).err == f"exported {2 * BIG} events to {target} (jsonl)\n"
    assert [e.seq for e in decode_events(target.read_text().splitlines())] == list(
        range(1, 2 * BIG + 1))


# --- costs ---------------------------------------------------------------------------------


def test_costs_are_exact_in_every_grouping(log: Log) -> None:
    by_user, by_model, by_provider, by_day, top, u2_gpt, none = run_all(
        ["costs"],
        ["costs", "--by", "model", "--json"],
        ["costs", "--by", "provider"],
        ["costs", "--by", "day", "--json"],
        ["costs", "--by", "conversation", "--top", "1"],
        ["costs", "--user", "u2", "--model", "gpt-4o", "--json"],
        ["costs", "--after", "now", "--json"],
        url=log.url,
    )
    assert table_rows(by_user) == [
        ["user", "calls", "input tokens", "output tokens", "cost"],
        ["u2", "2", "1010", "507", "$0.010595"],
        ["u1", "1", "1200", "300", "$0.006"],
        ["(none)", "1", "1", "1", "$0.0000125"],
        ["total", "4", "2211", "808", "$0.0166075"],
    ]
    model = json_lines(by_model)[0]
    assert model["groups"] == [
        {"key": "claude-sonnet", "calls": 1, "input_tokens": 1000, "output_tokens": 500,
         "total_cost": "0.010500", "unpriced_calls": 0},
        {"key": "gpt-4o", "calls": 3, "input_tokens": 1211, "output_tokens": 308,
         "total_cost": "0.0061075", "unpriced_calls": 0},
    ]
    assert (model["calls"], model["total_cost"]) == (4, "0.0166075")
    assert table_rows(by_provider)[1:] == [
        ["anthropic", "1", "1000", "500", "$0.0105"],
        ["openai", "3", "1211", "308", "$0.0061075"],
        ["total", "4", "2211", "808", "$0.0166075"],
    ]
    today = {e.occurred_at.date().isoformat() for e in log.where(type="cost_recorded")}
    assert [g["key"] for g in json_lines(by_day)[0]["groups"]] == sorted(today)
    assert table_rows(top)[1:] == [["c2", "2", "1010", "507", "$0.010595"],
                                   ["total", "4", "2211", "808", "$0.0166075"]]
    assert top.err == "top 1 of 3 groups; the total covers all of them\n"
    assert Decimal(json_lines(u2_gpt)[0]["total_cost"]) == Decimal("0.000095")
    assert json_lines(none)[0]["calls"] == 0

    async def api_totals() -> tuple[Decimal, Decimal]:
        async with EventStore.open(log.url) as store:
            return (await store.sum_cost(),
                    await store.sum_cost(user_id="u2", model="gpt-4o"))

    assert asyncio.run(api_totals()) == (Decimal(model["total_cost"]),
                                         Decimal(json_lines(u2_gpt)[0]["total_cost"]))


# --- tail ----------------------------------------------------------------------------------


class Follower:
    """A running `tail`, read line by line with a timeout (never a sleep)."""

    def __init__(self, *args: str, url: str) -> None:
        self.proc = start("tail", *args, url=url)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def line(self) -> str:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError("tail printed nothing in time") from None
        assert line is not None, f"tail ended early: {self.proc.wait()} {self.stderr()}"
        return line.rstrip("\n")

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def wait(self) -> int:
        return self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    """Kills any follower a failed test left running."""
    started: list[Follower] = []
    yield started
    for follower in started:
        if follower.proc.poll() is None:
            follower.proc.kill()
            follower.proc.wait()


@pytest.fixture
def small(tmp_path: Path) -> tuple[str, list[RecordedEvent]]:
    url = f"sqlite:///{tmp_path / 'tail.db'}"

    async def seed() -> list[RecordedEvent]:
        async with EventStore.open(url) as store:
            return await store.append_many(
                Event(type="message_sent", conversation_id="t", data={"role": "user",
                                                                      "content": str(i)})
                for i in range(3))

    return url, asyncio.run(seed())


async def append(url: str, event: Event) -> RecordedEvent:
    async with EventStore.open(url) as store:
        return await store.append(event)


def test_tail_shows_the_last_events_then_follows_another_process(
    small: tuple[str, list[RecordedEvent]], followers: list[Follower],
) -> None:
    url, seeded = small
    everything = Follower("--json", "-n", "2", "--count", "3", "--interval", "0.05", url=url)
    pings = Follower("--json", "--type", "ping", "--count", "1", "--interval", "0.05", url=url)
    table = Follower("-n", "1", url=url)
    followers += [everything, pings, table]
    backlog = [everything.line(), everything.line()]
    assert decode_events(backlog) == seeded[-2:]
    assert table.line().split()[:4] == ["#3", *when(seeded[2].recorded_at).split(),
                                        "message_sent"]

    appended = asyncio.run(append(url, Event(type="ping", data={"n": 1})))
    assert decode_events([everything.line()]) == [appended]
    assert decode_events([pings.line()]) == [appended]
    assert table.line().split()[3:] == ["ping", '{"n":1}']
    assert (everything.wait(), pings.wait()) == (0, 0)

    table.proc.send_signal(signal.SIGTERM)  # stops cleanly: exit 0, nothing on stderr
    assert table.wait() == 0
    assert table.stderr() == ""


# --- export --------------------------------------------------------------------------------


def test_export_writes_every_format_and_reads_back(log: Log, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    files = {fmt: tmp_path / f"events.{fmt}" for fmt in ("jsonl", "csv", "parquet")}
    jsonl, as_csv, parquet, filtered, csv_stdout = run_all(
        ["export", "--output", str(files["jsonl"])],
        ["export", "--format", "csv", "--output", str(files["csv"])],
        ["export", "-o", str(files["parquet"])],  # the format from the suffix
        ["export", "--type", "cost_recorded", "--user", "u2"],
        ["export", "--format", "csv", "--conversation", "c2"],
        url=log.url,
    )
    for result, fmt in ((jsonl, "jsonl"), (as_csv, "csv"), (parquet, "parquet")):
        assert ok(result).err == f"exported 11 events to {files[fmt]} ({fmt})\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files.values())

    assert decode_events(files["jsonl"].read_text().splitlines()) == log.events
    assert decode_events(ok(filtered).lines) == [
        e for e in log.events if e.type == "cost_recorded" and e.user_id == "u2"]

    def same(row: dict[str, Any], event: RecordedEvent) -> None:
        assert (int(row["seq"]), row["id"], row["type"]) == (event.seq, event.id, event.type)
        assert (row["conversation_id"] or None, row["user_id"] or None) == (
            event.conversation_id, event.user_id)
        for name in ("occurred_at", "recorded_at"):
            value = row[name]
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            assert moment == getattr(event, name)
        assert json.loads(row["data"]) == event.data
        assert json.loads(row["metadata"]) == event.metadata

    with files["csv"].open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(log.events)
    for row, event in zip(rows, log.events, strict=True):
        same(row, event)
    assert [int(r["seq"]) for r in csv.DictReader(ok(csv_stdout).lines)] == [8, 9, 10]

    parquet_rows = pq.read_table(files["parquet"]).to_pylist()
    assert len(parquet_rows) == len(log.events)
    for row, event in zip(parquet_rows, log.events, strict=True):
        same(row, event)


def test_parquet_without_pyarrow_is_a_one_line_error(log: Log, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "pyarrow").mkdir(parents=True)
    (blocker / "pyarrow" / "__init__.py").write_text("raise ImportError('no pyarrow here')\n")
    target = tmp_path / "out.parquet"
    result = run("export", "-o", str(target), url=log.url,
                 env={"PYTHONPATH": os.pathsep.join(  # keep the eventstore under test
                     [str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert (result.code, result.out) == (1, "")
    assert result.err == "error: Parquet export needs pyarrow: pip install " \
                         "'eventstore[parquet]'\n"
    assert list(tmp_path.iterdir()) == [blocker]


# --- rebuild and subscriptions -------------------------------------------------------------


def test_rebuild_replays_the_log_into_the_built_in_projections(log: Log) -> None:
    as_json, as_table = run_all(["rebuild", "--json"], ["rebuild"], url=log.url)
    doc = json_lines(as_json)[0]
    assert doc["position"] == 11
    assert doc["costs"] == {
        "total_cost": "0.0166075", "calls": 4, "input_tokens": 2211, "output_tokens": 808,
        "skipped": 0,
        "by_model": [
            {"model": "claude-sonnet", "calls": 1, "input_tokens": 1000, "output_tokens": 500,
             "total_cost": "0.010500"},
            {"model": "gpt-4o", "calls": 3, "input_tokens": 1211, "output_tokens": 308,
             "total_cost": "0.0061075"},
        ],
    }
    assert doc["violations"] == {"total": 1, "by_policy": {"pii": 1}, "skipped": 0}
    assert doc["trims"] == {"total": 1, "tokens_removed": 500, "messages_removed": 6,
                            "by_strategy": {"summarize": 1}, "skipped": 0}
    assert doc["latency"]["models"] == {
        "gpt-4o": {"p50": 420.0, "p95": 420.0, "p99": 420.0, "count": 1}}
    (greet,) = doc["prompts"]["versions"]
    assert (greet["prompt_name"], greet["prompt_version"], greet["executions"],
            greet["feedback_count"], greet["avg_rating"]) == ("greet", "v1", 1, 1, 5.0)
    assert as_json.err.startswith("replayed the log to seq 11 in ")

    lines = [" ".join(line.split()) for line in ok(as_table).lines]
    for expected in ("costs: $0.0166075 over 4 calls, 2211 input / 808 output tokens",
                     "gpt-4o 3 1211 308 $0.0061075", "guardrail violations: 1", "pii 1",
                     "memory trims: 1, 6 messages and 500 tokens removed",
                     "gpt-4o 1 420 420 420", "greet v1 1 $0.006 1 5.00"):
        assert expected in lines


def test_subscriptions_lists_checkpoints_with_their_lag(log: Log) -> None:
    as_table, as_json = run_all(["subscriptions"], ["subscriptions", "--json"], url=log.url)
    alerts, reports = log.checkpoints["alerts"], log.checkpoints["reports"]
    assert alerts.updated_at is not None and reports.updated_at is not None
    assert table_rows(as_table) == [
        ["name", "position", "lag", "updated", "status"],
        ["alerts", "11", "0", when(alerts.updated_at), "stored"],
        ["reports", "3", "8", when(reports.updated_at), "stored"],
    ]
    assert [{**row, "updated_at": datetime.fromisoformat(row["updated_at"])}
            for row in json_lines(as_json)] == [
        {"name": "alerts", "position": 11, "lag": 0, "updated_at": alerts.updated_at,
         "status": "stored"},
        {"name": "reports", "position": 3, "lag": 8, "updated_at": reports.updated_at,
         "status": "stored"},
    ]


# --- errors --------------------------------------------------------------------------------


def test_bad_input_and_unreachable_stores_are_one_line_errors(log: Log, tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    cases: list[tuple[list[str], int, str]] = [
        (["list", "--after", "yesterday"], 2,
         "error: Invalid value for '--after': 'yesterday' is not a date"),
        (["count", "--before", "2026-13-45"], 2, "error: Invalid value for '--before'"),
        (["list", "--cursor", "not-a-cursor"], 2, "error: cursor is malformed"),
        (["list", "--after", "1h", "--before", "2h"], 2, "error: --after ("),
        (["nosuch"], 2, "error: No such command 'nosuch'"),
        (["--db", "mysql://localhost/x", "count"], 2, "error: unknown store URL"),
        (["--db", f"sqlite:///{missing}", "count"], 1,
         f"error: no eventstore database at {missing}"),
        (["--db", "postgresql://app:hunter2@127.0.0.1:1/audit", "count"], 1,
         "error: cannot reach PostgreSQL at 127.0.0.1:1"),
        (["show", "nope"], 1, "error: no events in conversation 'nope'"),
    ]
    results = run_all(*(args for args, _, _ in cases), url=log.url)
    for (args, code, message), result in zip(cases, results, strict=True):
        assert (result.code, result.out) == (code, ""), (args, result)
        assert result.err.startswith(message), (args, result.err)
        assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err, args
    assert "hunter2" not in results[-2].err
    assert not missing.exists()  # a typo'd path is never created


# --- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_store(followers: list[Follower]) -> None:
    require_pg()
    schema = f"es_cli_{uuid.uuid4().hex[:12]}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    assert getattr(backend_for_url(url), "schema", None) == schema
    try:
        pg = asyncio.run(seed_known_log(url))
        follower = Follower("--json", "-n", "1", "--count", "2", "--interval", "60", url=url)
        followers.append(follower)
        assert decode_events([follower.line()]) == pg.events[-1:]
        listing, costs, exported = run_all(
            ["list", "--json"], ["costs", "--json"], ["export", "--format", "csv"], url=url)
        # The interval is a minute: only the server's notification can wake it this soon.
        appended = asyncio.run(append(url, Event(type="ping")))
        assert decode_events([follower.line()]) == [appended]
        assert follower.wait() == 0
        assert decode_events(ok(listing).lines) == pg.events
        assert json_lines(costs)[0]["total_cost"] == "0.0166075"
        assert [int(r["seq"]) for r in csv.DictReader(ok(exported).lines)] == list(range(1, 12))
    finally:
        asyncio.run(drop_pg_schema(schema))


# --- conventions ---------------------------------------------------------------------------


def test_the_bare_command_and_the_module_print_the_help() -> None:
    bare = ok(run(url=None))
    module = subprocess.run([sys.executable, "-m", "eventstore", "--help"], capture_output=True,
                            text=True, env=_env(None), timeout=TIMEOUT)
    assert module.returncode == 0, module.stderr
    for result in (bare.out, module.stdout):
        lines = result.splitlines()
        assert lines[0] == "Usage: eventstore [OPTIONS] COMMAND [ARGS]..."
        commands = {line.split()[0] for line in lines[lines.index("Commands:") + 1:]}
        assert {"list", "count", "show", "tail", "costs", "export", "rebuild",
                "subscriptions"} <= commands
        assert "replay" not in commands  # an undocumented second name for rebuild, gone
    assert bare.err == ""
    gone = run("replay", url=None)
    assert gone.code == 2 and gone.err.startswith("error: No such command 'replay'")


def test_no_color_turns_off_every_escape_even_when_color_is_forced(log: Log) -> None:
    forced = ok(run("show", "c1", url=log.url, env={"FORCE_COLOR": "1"}))
    plain = ok(run("show", "c1", url=log.url, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}))
    assert "\x1b[" in forced.out
    assert "\x1b[" not in plain.out
    assert plain.out == re.sub(r"\x1b\[[0-9;]*m", "", forced.out)


def test_latencies_are_rounded_for_people_and_exact_in_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'latency.db'}"

    async def seed() -> None:
        async with EventStore.open(url, pricing=PRICES) as store:
            for latency in (1234.5678, 4.26):
                await store.record_cost(provider="openai", model="gpt-4o", input_tokens=1,
                                        output_tokens=1, latency_ms=latency,
                                        conversation_id="l")

    asyncio.run(seed())
    shown, listed = run_all(["show", "l"], ["list", "--json"], url=url)
    assert [" 1235 ms " in line or " 4.3 ms " in line for line in ok(shown).lines[1:3]] == [
        True, True]
    assert [e.data["latency_ms"] for e in decode_events(ok(listed).lines)] == [1234.5678, 4.26]


def test_export_into_a_missing_folder_names_the_folder(log: Log, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.csv"
    result = run("export", "-o", str(target), url=log.url)
    assert (result.code, result.out) == (1, "")
    assert result.err == (f"error: Could not open file '{target}': the folder "
                          f"{target.parent} does not exist\n")
    assert ".partial" not in result.err and not target.parent.exists()


def test_tail_exits_130_on_ctrl_c_and_quietly_on_a_closed_pipe(
    small: tuple[str, list[RecordedEvent]], followers: list[Follower],
) -> None:
    url, _ = small
    interrupted = Follower("-n", "1", url=url)
    followers.append(interrupted)
    interrupted.line()  # following now: its signal handlers are installed
    interrupted.proc.send_signal(signal.SIGINT)
    assert interrupted.wait() == 130
    assert interrupted.stderr() == ""

    # The reader goes away mid-stream, as `| head -1` does.
    asyncio.run(many(url, 5_000))  # more than a pipe buffer holds
    tail = start("tail", "--json", "--from-seq", "0", url=url)
    head = subprocess.run(["head", "-n", "1"], stdin=tail.stdout, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert tail.stdout is not None
    tail.stdout.close()
    assert decode_events(head.stdout.splitlines())[0].seq == 1
    assert finish(tail) == Result(1, "", "")


async def many(url: str, n: int) -> None:
    async with EventStore.open(url) as store:
        await store.append_many(Event(type="ping", data={"n": i}) for i in range(n))
