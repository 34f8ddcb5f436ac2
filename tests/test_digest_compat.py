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
    assert same_content(old.digest, event, new) and same_content(new.digest, event, old)
    assert same_content(new.digest, event, new) and same_content(old.digest, event, old)
    assert not same_content(old.digest, event, prepare(other))
    assert not same_content(new.digest, event, legacy(other))
    assert not same_content(new.digest, event, prepare(other))
    # a digest of neither kind matches nothing
    assert not same_content(b"\x00" * 7, event, new)


def test_same_content_in_another_key_order_is_the_same_event() -> None:
    event = Event(type="t", data={"a": 1, "b": {"x": 1, "y": 2}}, metadata={"k": 1, "j": 2})
    reordered = Event(type="t", data={"b": {"y": 2, "x": 1}, "a": 1},
                      metadata={"j": 2, "k": 1}, id=event.id, occurred_at=event.occurred_at)
    first, retry = prepare(event), prepare(reordered)
    assert first.digest != retry.digest  # the premise: the body digest sees key order
    assert same_content(first.digest, event, retry)
    changed = Event(type="t", data={"b": {"y": 3, "x": 1}, "a": 1}, id=event.id,
                    metadata={"j": 2, "k": 1}, occurred_at=event.occurred_at)
    assert not same_content(first.digest, event, prepare(changed))


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


async def test_a_retry_built_in_another_key_order_matches(open_store: StoreFactory) -> None:
    async with open_store() as store:
        stored = await store.append(Event(type="t", data={"a": 1, "b": [{"x": 1, "y": 2}]},
                                          metadata={"k": "v", "j": "w"}))
        retry = Event(type="t", data={"b": [{"y": 2, "x": 1}], "a": 1},
                      metadata={"j": "w", "k": "v"}, id=stored.id,
                      occurred_at=stored.occurred_at)
        assert (await store.append(retry)).seq == stored.seq
        # ... in the group that writes it too
        first = Event(type="t", data={"p": 1, "q": 2})
        twice = await store.append_many([first, Event(type="t", data={"q": 2, "p": 1},
                                                      id=first.id,
                                                      occurred_at=first.occurred_at)])
        assert twice[0].seq == twice[1].seq == stored.seq + 1
        with pytest.raises(DuplicateEventError):
            await store.append(Event(type="t", data={"b": [{"y": 2, "x": 9}], "a": 1},
                                     metadata={"j": "w", "k": "v"}, id=stored.id,
                                     occurred_at=stored.occurred_at))
        assert await store.count_events() == 2
