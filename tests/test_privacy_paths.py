"""Privacy on every path (issue 14): one test per finding, searching the raw bytes of what
the backend keeps (the SQLite file with its -wal and -shm, the PostgreSQL tables and their
heap files) where the finding is about disk."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from eventstore import Event, EventStore, EventStoreError, RecordedEvent
from eventstore.backends import backend_for_url
from eventstore.errors import (
    BackendError,
    EncryptionError,
    InvalidCursorError,
    RedactorConfigError,
    UnsupportedURLError,
)
from eventstore.events import USER_FORGOTTEN
from eventstore.privacy.encryption import ENCRYPTED, ERASED, Encryption, generate_master_key
from eventstore.privacy.erasure import ErasurePendingWarning
from eventstore.privacy.hooks import run_hooks
from eventstore.privacy.pii import PIIRedactor
from eventstore.projections import GuardrailViolations
from eventstore.query import build_query

from .conftest import PG_URL, StoreFactory, drop_pg_schema, require_pg, wait_for

KEY = generate_master_key()
DIAGNOSIS = "PLAINTEXT diagnosis of Jane"
REASON = "PLAINTEXT reason: Jane asked for her neighbour's records"


def sqlite_files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


def tree_bytes(root: Path) -> bytes:
    """Every byte of every file under root (a jsonl store's directory)."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def raw(db: Path) -> bytes:
    """Every byte SQLite keeps for the store: the file, its WAL and its shared memory."""
    return b"".join(p.read_bytes() for p in sqlite_files(db) if p.exists())


async def pg_raw(schema: str, *tables: str) -> bytes:
    """The rows of these tables and, past any MVCC bookkeeping, the bytes of their heap
    files (what a disk image would show; dead row versions included)."""
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute("CHECKPOINT")  # so the heap files hold what the buffers do
        chunks: list[bytes] = []
        for table in tables:
            name = f'"{schema}".{table}'
            rows = await conn.fetch(f"SELECT * FROM {name}")
            chunks.extend(repr(tuple(r)).encode() for r in rows)
            path = await conn.fetchval("SELECT pg_relation_filepath($1::regclass)", name)
            chunks.append(await conn.fetchval("SELECT pg_read_binary_file($1)", path))
        return b"".join(chunks)
    finally:
        await conn.close()


def enc(*fields: str) -> Encryption:
    return Encryption(KEY, fields=fields or ("data.content",))


def message(user: str | None, content: Any, conv: str = "c1", **kw: Any) -> Event:
    return Event(type="message_sent", conversation_id=conv, user_id=user,
                 data={"role": "user", "content": content}, **kw)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
    return subprocess.run([sys.executable, "-m", "eventstore", *args], capture_output=True,
                          text=True, timeout=60, env={**full, **(env or {})})


# --- 1. an encrypted store opened without its key ------------------------------------------


async def test_an_encrypted_store_opened_without_encryption_refuses_writes(
        open_store: StoreFactory) -> None:
    with anyio.fail_after(30):
        async with open_store(encryption=enc()) as store:
            first = await store.append(message("u1", DIAGNOSIS))
        async with open_store() as plain:
            with pytest.raises(EncryptionError, match="opened without encryption"):
                await plain.append(message("u1", DIAGNOSIS))
            with pytest.raises(EncryptionError):
                await plain.append_many([message(None, "no user, still refused")])
            (shown,) = (await plain.list_events()).events
            assert shown.data["content"] == ENCRYPTED and shown.id == first.id
            assert [e.data["content"] async for e in plain.read()] == [ENCRYPTED]
        if open_store.kind == "sqlite":
            assert DIAGNOSIS.encode() not in raw(Path(store.backend.path))  # type: ignore[attr-defined]


def test_the_cli_reads_an_encrypted_store_with_its_master_key(tmp_path: Path) -> None:
    db = tmp_path / "private.db"
    key_file = tmp_path / "master.key"
    key_file.write_text(KEY + "\n")

    async def seed() -> None:
        async with EventStore.open(f"sqlite:///{db}", encryption=enc()) as store:
            await store.append(message("u1", DIAGNOSIS))
            await store.append(message("u2", "u2 stays readable"))
            await store.forget_user("u1")

    asyncio.run(seed())
    url = f"sqlite:///{db}"
    blind = cli("--db", url, "show", "c1")
    assert blind.returncode == 0, blind.stderr
    assert ENCRYPTED in blind.stdout and "u2 stays readable" not in blind.stdout
    for args, env in ((["--master-key-file", str(key_file)], None),
                      ([], {"EVENTSTORE_MASTER_KEY": KEY})):
        shown = cli("--db", url, *args, "show", "c1", env=env)
        assert shown.returncode == 0, shown.stderr
        assert ERASED in shown.stdout and "u2 stays readable" in shown.stdout
        assert DIAGNOSIS not in shown.stdout and ENCRYPTED not in shown.stdout
    wrong = cli("--db", url, "show", "c1", env={"EVENTSTORE_MASTER_KEY": generate_master_key()})
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: the master key does not")


# --- 2. projection snapshots --------------------------------------------------------------


def violation(user: str, reason: str) -> Event:
    return Event(type="policy_violation", conversation_id="c1", user_id=user,
                 data={"policy": "privacy", "reason": reason})


async def test_projection_snapshots_keep_no_plaintext_after_a_forget(
        open_store: StoreFactory) -> None:
    if open_store.kind == "memory":
        pytest.skip("about bytes on disk")
    fields = ("data.content", "data.reason")
    with anyio.fail_after(60):
        async with open_store(encryption=enc(*fields)) as store:
            live = GuardrailViolations()
            sub = await store.project(live, snapshot_every=1)
            await store.append(violation("u1", REASON))
            await store.append(violation("u2", "u2's reason"))
            await wait_for(lambda: sub.position == 2, 20)
            await sub.save_checkpoint()
            (saved,) = [c for c in await store.backend.list_checkpoints() if c.state]
            assert REASON.encode() in live.snapshot()  # the premise: snapshots hold fields
            assert REASON.encode() not in saved.state  # ... and are stored sealed
            await store.forget_user("u1")
            await wait_for(lambda: sub.position >= 3, 20)
            assert REASON.encode() not in live.snapshot()
            assert live.count(policy="privacy") == 2  # totals kept
            assert await disk(store, open_store) is not None
            assert REASON.encode() not in await disk(store, open_store)
        assert REASON.encode() not in await disk(store, open_store)
        async with open_store(encryption=enc(*fields)) as again:
            resumed = GuardrailViolations()
            sub = await again.project(resumed)
            await wait_for(lambda: sub.position >= 3, 20)
            assert REASON.encode() not in resumed.snapshot()
            assert resumed.count(policy="privacy") == 2
            assert b"u2's reason" in resumed.snapshot()


async def disk(store: EventStore, factory: StoreFactory) -> bytes:
    if factory.kind == "sqlite":
        return raw(Path(store.backend.path))  # type: ignore[attr-defined]
    if factory.kind == "jsonl":
        return tree_bytes(Path(factory.url.removeprefix("jsonl:///")))
    return await pg_raw(factory.pg_schema, "checkpoints", "data_keys")


# --- 3. the destroyed key leaves the files, deterministically -----------------------------


async def wrapped_key(store: EventStore, owner: str) -> bytes:
    record = (await store.backend.load_keys([owner]))[owner]
    assert record.wrapped is not None
    return record.wrapped


async def test_forget_leaves_no_wrapped_key_in_any_sqlite_file(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        for n in range(12):
            db = tmp_path / f"fresh{n}.db"
            async with EventStore.open(f"sqlite:///{db}", encryption=enc()) as store:
                await store.append(message("u1", DIAGNOSIS))
                key = await wrapped_key(store, "u1")
                with warnings.catch_warnings():
                    warnings.simplefilter("error", ErasurePendingWarning)
                    forgotten = await store.forget_user("u1")
                assert "pending" not in forgotten.data
                assert key not in raw(db), f"store {n}: the wrapped key is still on disk"
            assert key not in raw(db)


async def test_a_reader_holding_a_snapshot_leaves_the_erasure_pending_then_it_finishes(
        tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    with anyio.fail_after(60):
        async with EventStore.open(f"sqlite:///{db}", encryption=enc()) as store:
            await store.append(message("u1", DIAGNOSIS))
            key = await wrapped_key(store, "u1")
            reader = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            try:
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM data_keys").fetchone()
                with pytest.warns(ErasurePendingWarning, match="reader"):
                    forgotten = await store.forget_user("u1")
                assert "reader" in forgotten.data["pending"]
                assert store.backend.erasure_pending  # type: ignore[attr-defined]
                assert (await store.list_events()).events[0].data["content"] == ERASED
            finally:
                reader.execute("ROLLBACK")
                reader.close()
            await wait_for(lambda: not store.backend.erasure_pending  # type: ignore[attr-defined]
                           and key not in raw(db), 20)


# --- 4. every container the encoder accepts -----------------------------------------------


@dataclasses.dataclass
class Contact:
    email: str
    note: str


class Card(msgspec.Struct):
    number: str


class Kind(enum.Enum):
    OWNER = "owner-mail: mallory@example.net"


def containers() -> dict[str, Any]:
    return {
        "set": {"set-a@example.com"},
        "frozenset": frozenset({"frozen-b@example.com"}),
        "tuple": ("tuple-c@example.com", 1),
        "bytes": b"bytes-d@example.com",
        "bytearray": bytearray(b"bytearray-e@example.com"),
        "memoryview": memoryview(b"memoryview-f@example.com"),
        "dataclass": Contact(email="dataclass-g@example.com", note="hi"),
        "struct": Card(number="4111 1111 1111 1111"),
        "enum": Kind.OWNER,
        "keys": {"key-h@example.com": 1, 2: "int key, value i@example.com"},
        "nested": [{"deep": ({"deeper-j@example.com"},)}],
    }


PERSONAL = ["set-a@example.com", "frozen-b@example.com", "tuple-c@example.com",
            "bytes-d@example.com", "bytearray-e@example.com", "memoryview-f@example.com",
            "dataclass-g@example.com", "4111 1111 1111 1111", "mallory@example.net",
            "key-h@example.com", "i@example.com", "deeper-j@example.com"]


def encodings(text: str) -> Iterator[bytes]:
    """A personal string as it could appear in a stored document: itself, or base64."""
    yield text.encode()
    yield base64.b64encode(text.encode())
    yield base64.b64encode(text.encode())[:-4]  # a prefix survives in a longer blob


async def test_pii_redactor_redacts_inside_every_container(tmp_path: Path) -> None:
    db = tmp_path / "containers.db"
    with anyio.fail_after(30):
        async with EventStore.open(f"sqlite:///{db}", redact=[PIIRedactor()]) as store:
            rec = await store.append(Event(type="custom", data=containers(),
                                           metadata={"copy": containers()}))
            (stored,) = (await store.list_events()).events
        assert stored == rec
        for text in PERSONAL:
            for form in encodings(text):
                assert form not in raw(db), (text, form)
        assert stored.data["dataclass"] == {"email": "[EMAIL]", "note": "hi"}
        assert stored.data["struct"] == {"number": "[CARD]"}
        assert stored.data["keys"] == {"[EMAIL]": 1, "2": "int key, value [EMAIL]"}
        assert stored.data["enum"] == "owner-mail: [EMAIL]"
        assert stored.metadata["copy"]["set"] == ["[EMAIL]"]


def test_redacted_dict_keys_that_collide_lose_nothing() -> None:
    out = PIIRedactor()(Event(type="x", data={"a@b.io": 1, "c@d.io": 2, "[EMAIL]": 3}))
    assert sorted(out.data.values()) == [1, 2, 3]
    assert "a@b.io" not in repr(out.data) and "c@d.io" not in repr(out.data)


# --- 5. linear in the number of findings, large texts off the loop ------------------------


def _profiled_calls(redactor: PIIRedactor, text: str) -> tuple[int, int]:
    calls = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls[0] += 1

    sys.setprofile(profile)
    try:
        found = redactor.find(text)
    finally:
        sys.setprofile(None)
    return calls[0], len(found)


def mixed_findings(n: int) -> str:
    return " ".join(f"host 10.{i // 250 % 250}.{i % 250}.{i % 200 + 1} mail u{i}@example.com"
                    for i in range(n))


def test_pii_redactor_work_grows_linearly_with_findings() -> None:
    # Counted in Python calls, not seconds: the count is exact and machine-independent.
    # The old overlap check compared every finding with every earlier one (n squared).
    redactor = PIIRedactor()
    small, found_small = _profiled_calls(redactor, mixed_findings(500))
    large, found_large = _profiled_calls(redactor, mixed_findings(2_000))
    assert (found_small, found_large) == (1_000, 4_000)
    assert large / small < 6, (small, large)  # 4x the findings; quadratic would be ~16x


async def test_a_large_text_is_redacted_on_a_worker_thread() -> None:
    import threading

    redactor = PIIRedactor()
    threads: list[int] = []

    class Recording:
        copies_on_write = True

        def prefers_thread(self, event: Event) -> bool:
            return redactor.prefers_thread(event)

        def __call__(self, event: Event) -> Event:
            threads.append(threading.get_ident())
            return redactor(event)

    big = Event(type="custom", data={"paste": mixed_findings(3_000)})
    small = Event(type="custom", data={"text": "mail jane@example.com"})
    assert redactor.prefers_thread(big) and not redactor.prefers_thread(small)
    with anyio.fail_after(60):
        out = await run_hooks([Recording()], big)
        await run_hooks([Recording()], small)
    assert "@example.com" not in out.data["paste"]
    assert threads[0] != threading.get_ident() and threads[1] == threading.get_ident()


# --- 6. no password in URL errors ---------------------------------------------------------


BAD_URLS = [
    "postgresql://app:hunter2@127.0.0.1:5432/db?pool_size=lots",
    "postgresql://app:hunter2@127.0.0.1:5432/db?schema=bad-name",
    "postgressql://app:hunter2@127.0.0.1:5432/db",
    "postgresql://app:hunter2@127.0.0.1:5432/db?schema=ok&min_pool_size=9&pool_size=1",
    "sqlite://app:hunter2@host/x.db",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(UnsupportedURLError) as caught:
        backend_for_url(url)
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    result = cli("--db", url, "count")
    assert result.returncode == 2 and result.stderr.startswith("error:")
    assert "hunter2" not in result.stderr + result.stdout


# --- 7. file modes ------------------------------------------------------------------------


async def test_new_sqlite_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "modes.db"
    old = os.umask(0o022)
    try:
        with anyio.fail_after(30):
            async with EventStore.open(f"sqlite:///{db}") as store:
                await store.append(message("u1", "hello"))
                modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in sqlite_files(db)}
    finally:
        os.umask(old)
    assert modes == {"modes.db": 0o600, "modes.db-wal": 0o600, "modes.db-shm": 0o600}


# --- 8. keyed cursor digests --------------------------------------------------------------


async def test_a_cursor_does_not_confirm_guessed_filters_offline(
        open_store: StoreFactory) -> None:
    with anyio.fail_after(30):
        async with open_store() as store:
            await store.append_many([message("u1", str(i), conv="secret-conv") for i in range(3)])
            page = await store.list_events(conversation_id="secret-conv", limit=1)
            assert page.next_cursor is not None
            padded = page.next_cursor + "=" * (-len(page.next_cursor) % 4)
            body = base64.urlsafe_b64decode(padded)[:-16]
            _, _, digest = msgspec.msgpack.decode(body)
            fingerprint = build_query(conversation_id="secret-conv").fingerprint()
            for size in (8, 16):
                assert digest != hashlib.blake2b(fingerprint, digest_size=size).digest()[:8]
            second = await store.list_events(conversation_id="secret-conv", limit=1,
                                             cursor=page.next_cursor)
            assert len(second.events) == 1
            with pytest.raises(InvalidCursorError):
                await store.list_events(conversation_id="other", cursor=page.next_cursor)


# --- 9. the forget is always logged, consistently -----------------------------------------


def refuse_forgets(event: Event) -> Event:
    if event.type == USER_FORGOTTEN:
        raise ValueError("this hook does not know user_forgotten")
    return event


async def test_forget_is_logged_even_past_a_hook_that_rejects_it(
        open_store: StoreFactory) -> None:
    with anyio.fail_after(30):
        async with open_store(encryption=enc(), redact=[refuse_forgets]) as store:
            await store.append(message("u1", DIAGNOSIS))
            forgotten = await store.forget_user("u1")
            assert forgotten.type == USER_FORGOTTEN
            stored = [e async for e in store.read(type=USER_FORGOTTEN)]
            assert stored == [forgotten] and stored[0].data == {"user_id": "u1"}


async def test_the_forget_record_names_the_user_as_its_column_does(
        open_store: StoreFactory) -> None:
    email = "jane.doe@example.com"
    with anyio.fail_after(30):
        async with open_store(encryption=enc(), redact=[PIIRedactor()]) as store:
            await store.append(message(email, "hi"))
            forgotten = await store.forget_user(email)
            (stored,) = [e async for e in store.read(type=USER_FORGOTTEN)]
    assert stored.user_id == email and stored.data == {"user_id": email}
    assert forgotten == stored


# --- 10. PostgreSQL create=False ----------------------------------------------------------


async def test_postgres_create_false_refuses_a_typo_in_the_schema() -> None:
    require_pg()
    import asyncpg

    typo = f"es_typo_{os.urandom(6).hex()}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={typo}&create=false"
    try:
        with anyio.fail_after(30):
            with pytest.raises(BackendError, match=f"no eventstore in schema {typo}"):
                async with EventStore.open(url):
                    pass
        result = cli("--db", f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={typo}", "count")
        assert result.returncode == 1 and f"no eventstore in schema {typo}" in result.stderr
        conn = await asyncpg.connect(PG_URL)
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1", typo) == 0
        finally:
            await conn.close()
    finally:
        await drop_pg_schema(typo)


# --- issue 11 and 19 rows -----------------------------------------------------------------


def test_redactor_configuration_errors_are_eventstore_errors() -> None:
    for options in ({"detectors": ["dna"]}, {"action": "scramble"}, {"action": "hash"},
                    {"fields": ["nowhere.x"]}, {"default_region": "XX"}):
        with pytest.raises(RedactorConfigError) as caught:
            PIIRedactor(**options)
        assert isinstance(caught.value, EventStoreError | ValueError)


async def test_pii_action_none_detects_and_records_without_changing_the_text(
        tmp_path: Path) -> None:
    text = "mail jane@example.com or call +44 20 7946 0958, jane@example.com again"
    with anyio.fail_after(30):
        async with EventStore.open("memory://", redact=[PIIRedactor(action="none")]) as store:
            rec = await store.append(message("u1", text))
            clean = await store.append(message("u1", "nothing personal"))
    assert rec.data["content"] == text
    assert rec.metadata["pii_detected"] == {"email": 2, "phone": 1}
    assert "pii_detected" not in clean.metadata
    mixed = PIIRedactor(action="none", actions={"email": "redact"})(message("u1", text))
    assert mixed.data["content"].count("[EMAIL]") == 2 and "+44 20 7946 0958" in \
        mixed.data["content"]
    assert mixed.metadata["pii_detected"] == {"phone": 1}


async def test_reads_of_forgotten_events_after_the_forget_are_erased(
        open_store: StoreFactory) -> None:
    with anyio.fail_after(30):
        async with open_store(encryption=enc()) as store:
            await store.append(message("u1", DIAGNOSIS))
            await store.forget_user("u1")
            events: list[RecordedEvent] = [e async for e in store.read()]
    assert events[0].data["content"] == ERASED


# --- message digests name only what is stored ---------------------------------------------

CARD = {"role": "user", "content": "my card is 4111 1111 1111 1111"}
CARD_STORED = {"role": "user", "content": "my card is [CARD]"}


def sent_digest(item: Any) -> str:
    """How a message was named when the digest was of the message as sent."""
    return hashlib.sha256(msgspec.json.encode(item, order="sorted")).hexdigest()[:32]


async def log_bytes(store: EventStore, factory: StoreFactory) -> bytes:
    if factory.kind == "sqlite":
        return raw(Path(store.backend.path))  # type: ignore[attr-defined]
    if factory.kind == "jsonl":
        return tree_bytes(Path(factory.url.removeprefix("jsonl:///")))
    return await pg_raw(factory.pg_schema, "events")


async def call(store: EventStore, *messages: Any, user: str = "u1") -> RecordedEvent:
    return await store.record_llm_call(
        provider="openai", model="gpt-4o", request={"model": "gpt-4o", "messages": messages},
        response=None, error={"type": "timeout", "message": "no answer"}, latency_ms=1.0,
        conversation_id="chat", user_id=user)


async def stored_messages(store: EventStore) -> list[RecordedEvent]:
    return (await store.list_events(type="message_sent", limit=1000)).events


async def test_a_message_digest_keeps_nothing_the_redactor_removed(
        open_store: StoreFactory) -> None:
    # Calls name their messages by a digest, stored in clear beside the message. Were it
    # the digest of the message as sent, the card number the redactor removed could be
    # guessed back from it offline (a card number has about 10^9 candidates).
    thanks = {"role": "user", "content": "thanks"}
    with anyio.fail_after(60):
        async with open_store(redact=[PIIRedactor()]) as store:
            await call(store, CARD)
            await call(store, CARD, thanks)
            stored = await stored_messages(store)
            # ... and each message is still stored once, named by what is stored
            assert [m.data["content"] for m in stored] == ["my card is [CARD]", "thanks"]
            assert stored[0].data["hash"] == sent_digest(CARD_STORED)
            calls = await store.calls(conversation_id="chat")
            assert [c.request["messages"] for c in calls] == [[CARD_STORED],
                                                               [CARD_STORED, thanks]]
            if open_store.kind != "memory":
                assert sent_digest(CARD).encode() not in await log_bytes(store, open_store)
        if open_store.kind == "memory":
            return
        async with open_store(redact=[PIIRedactor()]) as again:
            # another process names the message alike: not stored a second time
            await call(again, CARD, thanks, {"role": "user", "content": "bye"})
            assert [m.data["content"] for m in await stored_messages(again)] == [
                "my card is [CARD]", "thanks", "bye"]
            assert sent_digest(CARD).encode() not in await log_bytes(again, open_store)


async def test_an_encrypted_message_digest_confirms_no_guess_after_forget(
        open_store: StoreFactory) -> None:
    said = {"role": "user", "content": DIAGNOSIS}
    with anyio.fail_after(60):
        async with open_store(encryption=enc()) as store:
            await call(store, said)
            await call(store, said, {"role": "user", "content": "and?"})
            first, _ = await stored_messages(store)
            assert first.data["content"] == DIAGNOSIS  # revealed to readers
            # keyed with u1's data key: knowing the text does not give the digest
            assert first.data["hash"] != sent_digest(said)
            await store.forget_user("u1")
            (erased, _) = await stored_messages(store)
            assert erased.data["content"] == ERASED
            # A call after the forget stores the message anew (under the new key), so its
            # request is rebuilt whole instead of pointing at the erased copy.
            await call(store, said)
            calls = await store.calls(conversation_id="chat")
            assert calls[-1].request["messages"] == [said]
            assert calls[0].request["messages"] == [{"role": "user", "content": ERASED}]
            if open_store.kind != "memory":
                assert sent_digest(said).encode() not in await log_bytes(store, open_store)
