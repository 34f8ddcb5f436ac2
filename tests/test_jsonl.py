"""What only the jsonl backend has to get right: day files, torn tails, several processes.

The conformance suite (every test taking `store` / `open_store`) runs on jsonl:// too;
these tests look at the files themselves."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from eventstore import BackendError, Event, EventStore, RecordedEvent, UnsupportedURLError

from .test_sqlite import (
    BATCH,
    KILL_WRITER,
    Acks,
    assert_contiguous,
    check_after_kill,
    read_line,
    switches,
)


def url(directory: Path, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"jsonl:///{directory}" + (f"?{query}" if query else "")


def msg(content: str, conv: str = "c1") -> Event:
    return Event(type="message_sent", conversation_id=conv, user_id="u1",
                 data={"role": "user", "content": content})


async def read_all(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read()]


def day_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("events-*.jsonl"))


def lines(path: Path) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


_opened: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opened is not None and args and isinstance(args[0], str | Path):
        _opened.append(os.fspath(args[0]))  # type: ignore[arg-type]


sys.addaudithook(_audit)  # process-wide and permanent: it records only inside `opens()`


@contextmanager
def opens() -> Iterator[list[str]]:
    """The paths this process opens inside the block (from the interpreter's audit hook)."""
    global _opened
    seen: list[str] = []
    _opened = seen
    try:
        yield seen
    finally:
        _opened = None


# --- URLs and layout -------------------------------------------------------------------


async def test_urls_name_relative_and_absolute_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with EventStore.open("jsonl:///audit") as store:
        await store.append(msg("hi"))
    assert (tmp_path / "audit").is_dir()
    async with EventStore.open(f"jsonl:///{tmp_path / 'abs'}") as store:
        await store.append(msg("hi"))
    assert day_files(tmp_path / "abs")
    for bad in ("jsonl://", "jsonl://host/dir", f"jsonl:///{tmp_path}?colour=red"):
        with pytest.raises(UnsupportedURLError):
            EventStore.open(bad)
    with pytest.raises(BackendError, match="does not exist"):
        async with EventStore.open(f"jsonl:///{tmp_path / 'no' / 'such'}"):
            pass


async def test_each_line_is_the_event_as_json_with_its_group_marker(tmp_path: Path) -> None:
    async with EventStore.open(url(tmp_path / "log")) as store:
        one = await store.append(msg("a"))
        many = await store.append_many([msg("b"), msg("c")])
    (path,) = day_files(tmp_path / "log")
    assert path.name == f"events-{one.recorded_at.date().isoformat()}.jsonl"
    docs = lines(path)
    assert [d["seq"] for d in docs] == [1, 2, 3]
    assert [d["data"]["content"] for d in docs] == ["a", "b", "c"]  # type: ignore[index]
    assert [d["commit"] for d in docs] == [1, 3, 3]  # each group's last seq
    assert docs[1]["id"] == many[0].id


# --- day partitioning ------------------------------------------------------------------


async def test_a_day_boundary_starts_a_new_file_and_reads_span_both(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 1, 23, 59, 59, 900_000, tzinfo=UTC))
    async with EventStore.open(url(tmp_path), clock=clock) as store:
        before = await store.append_many([msg(f"late {i}") for i in range(3)])
        clock.now = datetime(2026, 3, 2, 0, 0, 0, 100_000, tzinfo=UTC)
        after = await store.append_many([msg(f"early {i}") for i in range(2)])
        assert {e.recorded_at.date() for e in before} == {clock.now.date() - timedelta(1)}
        assert {e.recorded_at.date() for e in after} == {clock.now.date()}
        events = await read_all(store)
        assert [e.id for e in events] == [e.id for e in before + after]
        assert_contiguous(events)
        # a clock that steps back never makes recorded_at decrease, nor reopens a day
        clock.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        late = await store.append(msg("from a slow clock"))
        assert late.recorded_at == after[-1].recorded_at
    files = [p.name for p in day_files(tmp_path)]
    assert files == ["events-2026-03-01.jsonl", "events-2026-03-02.jsonl"]
    assert [d["seq"] for d in lines(tmp_path / files[0])] == [1, 2, 3]
    assert [d["seq"] for d in lines(tmp_path / files[1])] == [4, 5, 6]


async def test_a_time_filtered_read_opens_only_the_days_it_covers(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 5, 1, 12, tzinfo=UTC))
    async with EventStore.open(url(tmp_path), clock=clock) as store:
        for day in range(5):
            clock.now = datetime(2026, 5, 1 + day, 12, tzinfo=UTC)
            await store.append_many([msg(f"day {day} #{i}", conv=f"c{i % 2}")
                                     for i in range(4)])
    assert len(day_files(tmp_path)) == 5
    start = datetime(2026, 5, 3, tzinfo=UTC)
    end = datetime(2026, 5, 4, 23, 59, tzinfo=UTC)
    async with EventStore.open(url(tmp_path)) as store:  # a fresh index
        with opens() as opened:
            page = await store.list_events(after=start, before=end, conversation_id="c1")
            n = await store.count_events(after=start, before=end)
        assert [e.data["content"] for e in page.events] == [
            "day 2 #1", "day 2 #3", "day 3 #1", "day 3 #3"]
        assert n == 8
        touched = sorted(Path(p).name for p in opened if "events-" in p)
        assert touched == ["events-2026-05-03.jsonl", "events-2026-05-04.jsonl"]
        # paging by cursor inside the window stays inside those files too
        with opens() as opened:
            first = await store.list_events(after=start, before=end, limit=3)
            assert first.next_cursor is not None
            rest = await store.list_events(after=start, before=end, limit=10,
                                           cursor=first.next_cursor)
        assert len(first.events) + len(rest.events) == 8
        assert {Path(p).name for p in opened if "events-" in p} <= {
            "events-2026-05-03.jsonl", "events-2026-05-04.jsonl"}


# --- crashes ---------------------------------------------------------------------------


TORN_WRITER = textwrap.dedent("""
    import fcntl, os, sys, time
    directory, partial = sys.argv[1], sys.argv[2].encode()
    lock = os.open(os.path.join(directory, ".lock"), os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as a writer holds it while it appends
    name = [n for n in os.listdir(directory) if n.startswith("events-")][0]
    with open(os.path.join(directory, name), "ab") as out:
        out.write(partial)
        out.flush()
    print("TORN", flush=True)
    time.sleep(60)
""")


async def test_a_writer_killed_mid_line_leaves_a_tail_that_is_never_read(
    tmp_path: Path,
) -> None:
    async with EventStore.open(url(tmp_path)) as store:
        kept = await store.append_many([msg(f"kept {i}") for i in range(3)])
    (path,) = day_files(tmp_path)
    size = path.stat().st_size
    # what a writer leaves when killed inside one group's write: two whole lines of a
    # three-event group, then half of the third
    done = path.read_bytes().splitlines(keepends=True)
    group = b"".join(
        line.replace(b'"seq":%d' % (i + 1), b'"seq":%d' % (i + 4))
            .replace(b'"commit":3', b'"commit":6')
            .replace(b'"id":"', b'"id":"torn-')
        for i, line in enumerate(done))
    partial = group[: len(group) - len(done[-1]) // 2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TORN_WRITER, str(tmp_path), partial.decode(),
        stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)) == b"TORN\n"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
    assert path.stat().st_size == size + len(partial)

    async with EventStore.open(url(tmp_path), lock_timeout=10) as store:
        events = await read_all(store)
        assert [e.id for e in events] == [e.id for e in kept]  # nothing of the torn group
        assert await store.head() == 3 and await store.count_events() == 3
        # the dead writer's lock went with it; the next append cuts the tail and goes on
        rec = await store.append(msg("after the crash"))
        assert rec.seq == 4
        assert [e.data["content"] for e in await read_all(store)] == [
            "kept 0", "kept 1", "kept 2", "after the crash"]
    assert [d["seq"] for d in lines(path)] == [1, 2, 3, 4]
    assert path.read_bytes().endswith(b"\n")


async def test_a_changed_complete_line_is_reported_not_skipped(tmp_path: Path) -> None:
    async with EventStore.open(url(tmp_path)) as store:
        await store.append_many([msg(f"m{i}") for i in range(3)])
    (path,) = day_files(tmp_path)
    text = path.read_bytes().splitlines(keepends=True)
    text[1] = b"this is not an event\n"
    path.write_bytes(b"".join(text))
    async with EventStore.open(url(tmp_path)) as store:
        with pytest.raises(BackendError, match=r"not an event.*changed outside eventstore"):
            await read_all(store)


async def spawn_writer(target: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(KILL_WRITER), target, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigkill_mid_stream_loses_no_acknowledged_event_and_no_batch_is_partial(
    tmp_path: Path,
) -> None:
    target = url(tmp_path)
    total = 0
    for run in ("first", "second"):
        proc = await spawn_writer(target, "stream", "--tag", run, "--batch-size", str(BATCH))
        acks = Acks({}, {})
        try:
            while len(acks) < 300:
                acks.take(await read_line(proc))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
        assert proc.stdout is not None
        for line in (await asyncio.wait_for(proc.stdout.read(), 30)).decode().split("\n")[:-1]:
            acks.take(line)
        async with EventStore.open(target) as store:
            events = await read_all(store)
            assert len(events) >= total + len(acks.singles) + BATCH * len(acks.batches)
            check_after_kill(events, run, acks)
            rec = await store.append(msg(f"after {run}"))
            assert rec.seq == len(events) + 1
            total = rec.seq


# --- several processes -----------------------------------------------------------------


async def test_several_processes_append_to_one_directory(tmp_path: Path) -> None:
    target = url(tmp_path)
    async with EventStore.open(target):
        pass
    procs = [await spawn_writer(target, "fixed", "--tag", f"p{i}", "--rounds", "15",
                                "--singles", "10", "--batches", "1", "--batch-size", "10")
             for i in range(3)]
    acked: list[tuple[str, int]] = []
    try:
        for proc in procs:
            assert await read_line(proc) == "READY"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        for proc in procs:
            while (line := await read_line(proc, seconds=60)) != "DONE":
                kind, event_id, seq = line.split()
                assert kind == "E"
                acked.append((event_id, int(seq)))
            assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert len(acked) == 3 * 15 * 20
    async with EventStore.open(target) as store:
        events = await read_all(store)
    assert_contiguous(events)  # no seq twice, none skipped
    assert sorted(acked, key=lambda a: a[1]) == [(e.id, e.seq) for e in events]
    assert switches(events) >= 2


async def test_stores_in_one_process_share_a_directory_and_hear_each_other(
    tmp_path: Path,
) -> None:
    async with EventStore.open(url(tmp_path), guardian_interval=3600) as a, \
            EventStore.open(url(tmp_path)) as b:
        seen: list[int] = []
        sub = await a.subscribe(lambda e: seen.append(e.seq), name="w")

        async def until(predicate: Callable[[], bool]) -> None:
            while not predicate():  # noqa: ASYNC110 - the handler's list has no event
                await asyncio.sleep(0.005)

        await asyncio.wait_for(until(lambda: sub.idle), 10)
        recs = await asyncio.gather(*(b.append(msg(str(i))) for i in range(20)),
                                    *(a.append(msg(f"a{i}")) for i in range(20)))
        assert sorted(r.seq for r in recs) == list(range(1, 41))
        await asyncio.wait_for(until(lambda: len(seen) == 40), 10)  # b's via the watcher
        assert seen == list(range(1, 41))
        assert a.guardian.ticks == 0


def test_the_lock_file_is_an_flock(tmp_path: Path) -> None:
    """Other tools may take the same lock to read a quiet snapshot of the directory."""

    async def main() -> None:
        async with EventStore.open(url(tmp_path), lock_timeout=0.2) as store:
            await store.append(msg("first"))
            fd = os.open(tmp_path / ".lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with pytest.raises(BackendError, match="lock_timeout"):
                    await store.append(msg("blocked"))
            finally:
                os.close(fd)
            assert (await store.append(msg("free again"))).seq == 2

    asyncio.run(main())


async def test_a_subscriber_pages_other_processes_appends_without_a_gap(
    tmp_path: Path,
) -> None:
    """Readers take no lock: paging while two processes append must still see every
    event once, in seq order (the writers' groups interleave under the directory lock)."""
    target = url(tmp_path)
    async with EventStore.open(target, guardian_interval=3600) as store:
        seen: list[RecordedEvent] = []
        sub = await store.subscribe(seen.append, name="tail")
        procs = [await spawn_writer(target, "fixed", "--tag", f"w{i}", "--rounds", "8",
                                    "--singles", "5", "--batches", "1", "--batch-size", "5")
                 for i in range(2)]
        acked: list[tuple[str, int]] = []
        try:
            for proc in procs:
                assert await read_line(proc) == "READY"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            for proc in procs:
                while (line := await read_line(proc, seconds=60)) != "DONE":
                    _, event_id, seq = line.split()
                    acked.append((event_id, int(seq)))
                assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

        async def until() -> None:
            while len(seen) < len(acked):  # noqa: ASYNC110 - the handler's list has no event
                await asyncio.sleep(0.005)

        await asyncio.wait_for(until(), 30)
        assert [(e.id, e.seq) for e in seen] == sorted(acked, key=lambda a: a[1])
        assert store.guardian.ticks == 0  # delivered by the directory watcher
        await sub.stop()


def day_lines(directory: Path) -> tuple[Path, list[bytes]]:
    (path,) = sorted(directory.glob("events-*.jsonl"))
    return path, path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def with_content(line: bytes, old: bytes, new: bytes) -> bytes:
    assert old in line
    return line.replace(old, new)


def releaf(line: bytes) -> bytes:
    """What an attacker with the directory does after editing a line: store the leaf
    hash of the new content, with eventstore's own code."""
    from eventstore.backends.jsonl.log import document_of
    from eventstore.backends.jsonl.tree import _stored_leaf
    from eventstore.integrity import encode_leaf, leaf_hash

    body = line.rstrip(b"\n")
    leaf = leaf_hash(encode_leaf(_stored_leaf(body)))
    cut = len(document_of(body)) - 1
    old = body[cut + len(b',"leaf":"'):cut + len(b',"leaf":"') + 64]
    return line.replace(old, leaf.hex().encode())


TAMPERING = {
    "edit a line": (lambda ls: [*ls[:7], with_content(ls[7], b"m7", b"mX"), *ls[8:]], 8,
                    "altered"),
    "delete a line": (lambda ls: ls[:4] + ls[5:], 5, "missing"),
    "swap two lines": (lambda ls: [*ls[:2], ls[5], *ls[3:5], ls[2], *ls[6:]], 3,
                       "altered"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_tampering_with_the_files_is_caught_at_the_first_bad_seq(
        tmp_path: Path, case: str) -> None:
    change, first_bad, word = TAMPERING[case]
    async with EventStore.open(url(tmp_path / "log")) as store:
        await store.append_many([msg(f"m{i}") for i in range(20)])
        assert (await store.verify()).ok
    path, lines = day_lines(tmp_path / "log")
    rewrite(path, change(lines))
    async with EventStore.open(url(tmp_path / "log")) as store:
        report = await store.verify()
    assert not report.ok
    assert report.first_bad_seq == first_bad, report.problems
    assert word in report.problems[0]


async def test_a_rewritten_line_with_its_leaf_is_caught_against_an_earlier_checkpoint(
        tmp_path: Path) -> None:
    """The tree is rebuilt from the lines, so only a checkpoint kept elsewhere shows
    that history changed, or that the log was cut at its end."""
    async with EventStore.open(url(tmp_path / "log")) as store:
        for start in range(0, 20, 5):  # four groups: a cut between two is a clean end
            await store.append_many([msg(f"m{i}") for i in range(start, start + 5)])
        text = await store.checkpoint()
        head = await store.tree_head()
    path, lines = day_lines(tmp_path / "log")
    rewrite(path, [*lines[:3], releaf(with_content(lines[3], b"m3", b"mX")), *lines[4:]])
    async with EventStore.open(url(tmp_path / "log")) as store:
        assert (await store.verify()).ok  # consistent with itself ...
        report = await store.verify(checkpoint=text)
        assert (await store.tree_head()).root != head.root
    assert not report.ok  # ... but no longer the history the checkpoint saw
    assert "does not extend the checkpoint" in report.problems[-1]
    rewrite(path, lines[:15])
    async with EventStore.open(url(tmp_path / "log")) as store:
        report = await store.verify(checkpoint=text)
    assert report.first_bad_seq == 16 and "truncated" in report.problems[-1]


async def test_lines_written_before_leaves_were_kept_get_their_tree(tmp_path: Path) -> None:
    async with EventStore.open(url(tmp_path / "log")) as store:
        await store.append_many([msg(f"m{i}") for i in range(10)])
        head = await store.tree_head()
    path, lines = day_lines(tmp_path / "log")
    old = [line[:line.index(b',"leaf":"')] + line[line.index(b',"digest":"'):]
           for line in lines]
    rewrite(path, old)
    async with EventStore.open(url(tmp_path / "log")) as store:
        assert await store.tree_head() == head  # the same leaves, from the content
        await store.append(msg("new"))
        report = await store.verify()
        assert report.ok and report.size == 11
        assert (await store.prove_consistency(10)).verify(head.root,
                                                          (await store.tree_head()).root)
