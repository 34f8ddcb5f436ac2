"""Idempotency digests across versions: events stored with the first versions' digest
(`digest_of`, 16 bytes) are still matched by a retry fingerprinted with `body_digest`
(20 bytes), on every backend, and other content under their id still conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from eventstore import DuplicateEventError, Event, EventStore
from eventstore.codec import (
    BODY_DIGEST_SIZE,
    LEGACY_DIGEST_SIZE,
    PreparedEvent,
    body_digest,
    digest_of,
    encode_event,
    prepare,
    same_content,
)

from .conftest import StoreFactory


def msg(content: str = "hi", **kw: Any) -> Event:
    return Event(type="message_sent", conversation_id="c1", user_id="u1",
                 data={"role": "user", "content": content}, **kw)


def legacy(event: Event) -> PreparedEvent:
    """What an earlier eventstore prepared for `event`: the same body, the old digest."""
    new = prepare(event)
    return PreparedEvent(visible=new.visible, body=new.body, digest=digest_of(new.visible))


def test_digest_kinds_are_told_apart_by_length() -> None:
    event = msg()
    assert len(prepare(event).digest) == BODY_DIGEST_SIZE
    assert len(legacy(event).digest) == LEGACY_DIGEST_SIZE
    assert prepare(event).digest == body_digest(encode_event(event))


def test_same_content_across_digest_kinds() -> None:
    event = msg()
    other = msg(content="other", id=event.id)
    new, old = prepare(event), legacy(event)
    assert same_content(old.digest, new) and same_content(new.digest, old)
    assert same_content(new.digest, new) and same_content(old.digest, old)
    assert not same_content(old.digest, prepare(other))
    assert not same_content(new.digest, legacy(other))
    assert not same_content(b"\x00" * 7, new)  # a digest of neither kind matches nothing


async def test_retry_of_an_event_stored_with_the_old_digest(open_store: StoreFactory) -> None:
    async with open_store() as store:
        first = msg()
        # the event as an earlier version committed it, straight through the backend
        _, committed = await store.backend.commit_group([[legacy(first)]])
        assert [e.id for e in committed] == [first.id]
        again = await store.append(first)
        assert again.seq == committed[0].seq and again.data == first.data
        retried, fresh = await store.append_many([first, msg("next")])
        assert retried.seq == again.seq and fresh.seq == again.seq + 1
        with pytest.raises(DuplicateEventError):
            await store.append(msg(content="changed", id=first.id))
        assert await store.count_events() == 2


async def test_digest_of_new_events_is_the_body_digest(open_store: StoreFactory) -> None:
    async with open_store() as store:
        stored = await store.append(msg())
        # a retry matches, other content under the id does not
        assert (await store.append(msg(id=stored.id, occurred_at=stored.occurred_at))).seq == \
            stored.seq
        with pytest.raises(DuplicateEventError):
            await store.append(msg(content="other", id=stored.id,
                                   occurred_at=stored.occurred_at))
        assert isinstance(store, EventStore) and await store.count_events() == 1
