"""`eventstore serve` in a real browser: Playwright drives Debian's Chromium against the
real command on a free port. A screenshot of every page is saved as a test artifact (the
path is printed; run pytest with -s to see it).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore
from eventstore.pricing import ModelPrice, PriceTable

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 30  # seconds; only reached when something is broken
PRICES = PriceTable({"openai/gpt-4o": ModelPrice.per_million(input="2.5", output="10")})

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium",
                    pytrace=False)
    pytest.skip(f"no {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


async def seed(url: str, checkpoints: Path) -> None:
    async with EventStore.open(url, pricing=PRICES, checkpoint_dir=checkpoints) as store:
        who: dict[str, Any] = {"conversation_id": "trip-42", "user_id": "ada",
                               "metadata": {"tags": ["prod"]}}
        await store.track("conversation_created", {"title": "Lisbon trip"}, **who)
        await store.track("message_sent", {"role": "user",
                                           "content": "Plan 3 days in Lisbon <script>x</script>"},
                          **who)
        await store.record_cost(provider="openai", model="gpt-4o", input_tokens=1200,
                                output_tokens=300, latency_ms=812.6, **who)
        await store.track("message_sent", {"role": "assistant",
                                           "content": "Day 1: Alfama and the castle.\n"
                                                      "Day 2: Belém.\nDay 3: Sintra."}, **who)
        await store.track("policy_violation", {"policy": "pii", "reason": "phone number",
                                               "severity": "medium"}, **who)
        await store.track("user_feedback", {"rating": 5}, **who)
        await store.track("message_sent", {"role": "user", "content": "hello"},
                          conversation_id="c-2", user_id="bob")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the printed URL with its token, the store URL) of a running `eventstore serve`."""
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'audit.db'}"
    asyncio.run(seed(url, folder / "checkpoints"))  # closing the store writes one
    proc = subprocess.Popen([sys.executable, "-m", "eventstore", "--db", url, "serve",
                             "--port", "0", "--checkpoints", str(folder / "checkpoints")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]+", line), (
            line, proc.poll(), proc.stderr.read() if proc.poll() is not None and proc.stderr
            else "")
        yield line, url
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nviewer screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


def test_open_with_the_token_click_into_a_conversation_and_see_every_page(
    served: tuple[str, str], browser: Any, shots: Path,
) -> None:
    address, _ = served
    base = address.split("/?")[0]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    # A live tail's event stream is cut when the page is left: that one may "fail".
    page.on("requestfailed", lambda r: None if "/api/tail" in r.url
            else problems.append(f"failed: {r.url}"))
    page.on("request", lambda r: None if r.url.startswith(base) else problems.append(r.url))
    try:
        page.goto(address)
        assert page.url == f"{base}/conversations"  # the token has left the address bar
        (cookie,) = context.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
        page.screenshot(path=str(shots / "conversations.png"), full_page=True)

        page.click("a.conversation:text-is('trip-42')")
        page.wait_for_url(f"{base}/conversations/trip-42")
        user = page.locator(".bubble.user .text").first
        assert user.inner_text() == "Plan 3 days in Lisbon <script>x</script>"  # as text
        assert "Day 2: Belém." in page.locator(".bubble.assistant .text").inner_text()
        call = page.locator(".call").first
        assert call.locator(".model").inner_text() == "openai/gpt-4o"
        assert call.locator(".cost").inner_text() == "$0.006"
        assert call.locator(".latency").inner_text() == "813 ms"
        assert page.locator(".cost.total").inner_text() == "$0.006"
        assert "pii: phone number [medium]" in page.locator(".notice.violation").inner_text()
        page.screenshot(path=str(shots / "conversation.png"), full_page=True)

        call.locator("a.request").click()  # the exact call, one click away
        page.wait_for_url(re.compile(r".*/events/3$"))
        assert '"model": "gpt-4o"' in page.locator("pre.json").first.inner_text()
        page.screenshot(path=str(shots / "event.png"), full_page=True)

        for name in ("costs", "violations", "subscriptions", "tail"):
            page.click(f"nav a[href='/{name}']")
            page.wait_for_url(f"{base}/{name}")
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        page.goto(f"{base}/costs")
        assert page.locator("h1 .cost.total").inner_text() == "$0.006"
        assert page.locator("svg.chart rect.bar").count() == 1

        page.click("nav a[href='/integrity']")
        page.wait_for_url(f"{base}/integrity")
        assert page.locator(".size").inner_text() == "7 events"
        assert "checkpoint-000000000007.txt" in page.locator("#checkpoint").inner_text()
        assert page.locator(".verify-result").count() == 0  # opening it verifies nothing
        page.click("#verify-now")
        page.wait_for_url(f"{base}/integrity#verify")
        assert page.locator(".verify-result.ok .verdict").inner_text() == (
            "ok: 7 events intact, extends checkpoint-000000000007.txt")
        page.screenshot(path=str(shots / "integrity.png"), full_page=True)
    finally:
        context.close()
    assert problems == []  # no CSP violation, nothing fetched from anywhere else
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{n}.png" for n in ("conversations", "conversation", "event", "costs", "violations",
                             "subscriptions", "tail", "integrity"))


APPEND = """
import asyncio, sys
from eventstore import Event, EventStore

async def main():
    async with EventStore.open(sys.argv[1]) as store:
        rec = await store.append(Event(type="ping", conversation_id="trip-42",
                                       data={"note": "<b>from another process</b>"}))
        print(rec.seq, flush=True)
        sys.stdin.readline()  # hold the store open until the test has looked

asyncio.run(main())
"""


def test_the_live_tail_shows_an_event_from_another_process_within_2_s(
    served: tuple[str, str], browser: Any, shots: Path,
) -> None:
    address, url = served
    context = browser.new_context(viewport={"width": 1280, "height": 700})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    writer = None
    try:
        page.goto(address)
        page.goto(address.split("/?")[0] + "/tail")
        page.wait_for_function("document.getElementById('status').textContent === 'live'")
        writer = subprocess.Popen([sys.executable, "-c", APPEND, url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        seq = int(writer.stdout.readline())  # committed now
        committed = time.monotonic()
        row = page.wait_for_selector(f"#tail tr[data-seq='{seq}']", timeout=2_000)
        assert time.monotonic() - committed < 2.0
        assert row is not None
        assert row.inner_text().split("\t")[2:] == [
            "ping", "trip-42", "-", '{"note":"<b>from another process</b>"}']
        page.screenshot(path=str(shots / "tail-live.png"), full_page=True)
    finally:
        if writer is not None:
            writer.communicate("\n", timeout=TIMEOUT)
        context.close()
