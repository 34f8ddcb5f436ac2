"""Property test of erasure (issue 14): random events with personal data in random
containers, random forget_user and apply_retention calls; afterwards a raw-byte search of
every file of the SQLite store finds no personal string of a forgotten user or an expired
period (nor any e-mail address the redactor should have removed), every read shows them
erased, and every cost total equals a replay of the log."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Event, EventStore, PIIRedactor, Retention
from eventstore.pricing import ModelPrice, PriceTable
from eventstore.privacy.encryption import ERASED, Encryption, generate_master_key
from eventstore.projections import ConversationCosts

from .test_encryption import Contents

KEY = generate_master_key()
PRICING = PriceTable({"openai/gpt-4o": ModelPrice.per_million(input="2.5", output="10")})
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
RETENTION = Retention(content_after=timedelta(days=45))
USERS = ("u0", "u1", "u2")
MONTHS_AGO = (0, 1, 3, 5)  # 3 and 5 months ago expire at NOW; 0 and 1 do not


@dataclasses.dataclass
class Note:
    text: str


class Holder(msgspec.Struct):
    inner: Any


CONTAINERS = ("str", "list", "set", "tuple", "dict", "dataclass", "struct", "nested")


def wrap(kind: str, text: str) -> Any:
    """`text` inside a container of the given kind."""
    return {"str": text, "list": [text, 1], "set": {text}, "tuple": (text, None),
            "dict": {"k": text}, "dataclass": Note(text), "struct": Holder(text),
            "nested": {"a": [{"b": (frozenset({text}),)}]}}[kind]


def when(months_ago: int) -> datetime:
    return NOW - timedelta(days=30 * months_ago + 1)


class Notes(Contents):
    """Every note's content as the projection saw it: a live projection that holds
    personal data in memory and in its snapshots."""

    name = "notes"
    types = frozenset({"note_taken"})


op = st.one_of(
    st.tuples(st.just("message"), st.sampled_from(USERS), st.sampled_from(MONTHS_AGO),
              st.sampled_from(CONTAINERS), st.sampled_from(CONTAINERS)),
    st.tuples(st.just("cost"), st.sampled_from(USERS), st.sampled_from(MONTHS_AGO),
              st.integers(0, 5_000), st.integers(0, 500)),
    st.tuples(st.just("forget"), st.sampled_from(USERS)),
    st.tuples(st.just("retention")),
)


def files(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
                    if p.exists())


def forms(text: str) -> list[bytes]:
    raw = text.encode()
    return [raw, base64.b64encode(raw), base64.b64encode(raw)[:-4]]


async def scenario(db: Path, ops: list[tuple[Any, ...]]) -> None:
    erased: set[str] = set()    # personal tokens that must be gone
    kept: dict[str, str] = {}   # event id -> token that must still read back
    emails: set[str] = set()
    tokens: dict[str, tuple[str, int]] = {}  # token -> (user, months ago)
    costs = Decimal(0)
    with anyio.fail_after(120):
        async with EventStore.open(
                f"sqlite:///{db}", encryption=Encryption(KEY, fields=("data.content",)),
                retention=RETENTION, redact=[PIIRedactor(fields=["metadata"])],
                pricing=PRICING) as store:
            contents, live_costs = Notes(), ConversationCosts()
            subs = [await store.project(contents, snapshot_every=1),
                    await store.project(live_costs, snapshot_every=1)]
            for n, step in enumerate(ops):
                if step[0] == "message":
                    _, user, ago, kind, mail_kind = step
                    token = f"PERSONAL-{user}-{ago}-{n}-{uuid.uuid4().hex[:6]}"
                    email = f"{user}.n{n}@example.com"
                    tokens[token] = (user, ago)
                    emails.add(email)
                    rec = await store.append(Event(
                        type="note_taken", conversation_id=f"c-{user}", user_id=user,
                        data={"role": "user", "content": wrap(kind, token)},
                        metadata={"note": wrap(mail_kind, f"mail {email}")},
                        occurred_at=when(ago)))
                    kept[rec.id] = token
                elif step[0] == "cost":
                    _, user, ago, tokens_in, tokens_out = step
                    rec = await store.record_cost(
                        conversation_id=f"c-{user}", user_id=user, provider="openai",
                        model="gpt-4o", input_tokens=tokens_in, output_tokens=tokens_out,
                        occurred_at=when(ago))
                    costs += Decimal(rec.data["total_cost"])
                elif step[0] == "forget":
                    await store.forget_user(step[1])
                    for event_id, token in list(kept.items()):
                        if tokens[token][0] == step[1]:
                            erased.add(kept.pop(event_id))
                else:
                    await store.apply_retention(now=NOW)
                    for event_id, token in list(kept.items()):
                        if tokens[token][1] >= 3:  # its month ended before NOW - 45 days
                            erased.add(kept.pop(event_id))
            for sub in subs:
                await sub.caught_up(timeout=60)

            # Reads: erased content is erased, the rest reads back.
            by_id = {e.id: e async for e in store.read(type="note_taken")}
            for event_id, token in kept.items():
                assert token in msgspec.json.encode(by_id[event_id].data).decode()
            for event in by_id.values():
                if event.id not in kept:
                    assert event.data["content"] == ERASED
                assert "@example.com" not in repr(event.metadata)
            assert not any(token in repr(contents.seen) for token in erased)

            # Costs: what was recorded, what a replay gives and the live projection agree.
            replayed = await store.rebuild(ConversationCosts())
            assert await store.sum_cost() == replayed.total() == live_costs.total() == costs
        on_disk = files(db)
        for token in erased:
            for form in forms(token):
                assert form not in on_disk, token
        for email in emails:
            for form in forms(email):
                assert form not in on_disk, email


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=12))
def test_no_personal_string_of_an_erased_user_or_period_survives_on_disk(
        tmp_path: Path, ops: list[tuple[Any, ...]]) -> None:
    db = tmp_path / f"{uuid.uuid4().hex}.db"
    asyncio.run(scenario(db, ops))
