"""How events become bytes and back.

An event is stored as one JSON document of the RecordedEvent. The writer prepares the
document of the event without its position, and splices `seq` and `recorded_at` in at
commit time, so a read decodes each row with a single msgspec call straight into a
RecordedEvent.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from .clock import to_micros
from .errors import CorruptEventError, InvalidEventError
from .events import BUILTIN_PAYLOADS, Event, RecordedEvent
from .rollup import CALL_TYPES

_encoder = msgspec.json.Encoder(decimal_format="string")
_sorted_encoder = msgspec.json.Encoder(order="sorted", decimal_format="string")
_decoder = msgspec.json.Decoder(RecordedEvent)
_event_decoder = msgspec.json.Decoder(Event)


class PreparedEvent(msgspec.Struct, frozen=True):
    """An event ready to commit.

    `visible` is the redacted event callers and subscribers see; `body` is the JSON of the
    event as stored (redacted and, with encryption on, with personal fields encrypted),
    still without `seq` and `recorded_at`; `digest` fingerprints the visible content for
    the idempotency check.
    """

    visible: Event
    body: bytes
    digest: bytes


def encode_event(event: Event) -> bytes:
    try:
        return _encoder.encode(event)
    except RecursionError:
        raise InvalidEventError(
            f"event {event.id} (type {event.type!r}) nests data too deeply to be stored; "
            "flatten it (a few hundred levels at most)"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEventError(
            f"event {event.id} (type {event.type!r}) cannot be stored as JSON: {exc}. Keep "
            "data and metadata to JSON values (str, int, float, bool, None, Decimal, "
            "datetime, lists and dicts with string keys)."
        ) from exc


LEGACY_DIGEST_SIZE = 16
BODY_DIGEST_SIZE = 20


def digest_of(event: Event) -> bytes:
    """The content fingerprint of the first versions (16 bytes): a second, key-sorted
    encoding of the visible content. Stored events keep the digest they were written
    with, so `same_content` still compares a retry of one against it; encrypted events
    keep it for good (their stored digest is this one keyed with the user's data key)."""
    material = _sorted_encoder.encode(
        [event.type, event.conversation_id, event.user_id, event.data, event.metadata,
         to_micros(event.occurred_at)]
    )
    return hashlib.blake2b(material, digest_size=LEGACY_DIGEST_SIZE).digest()


def body_digest(body: bytes) -> bytes:
    """The content fingerprint (20 bytes; the length tells it from `digest_of`'s): a hash
    of the prepared body, the JSON already encoded, instead of a second encoding. Equal
    for a retry of the same event (same fields, same key order), different otherwise."""
    return hashlib.blake2b(body, digest_size=BODY_DIGEST_SIZE).digest()


def same_content(stored_digest: bytes, stored: Event, prepared: PreparedEvent) -> bool:
    """Whether an event stored with `stored_digest` (`stored`: the event as read back) and
    the retry `prepared` under its id have the same content. The two may have been
    fingerprinted by different versions (a log written before `body_digest`): the retry's
    digest of the stored one's kind is then computed, only here, on the rare path of a
    retry. A body digest sees the order of keys; a retry whose dicts were built in
    another order is the same content, so unequal body digests are settled by the
    key-sorted digest of both."""
    if stored_digest == prepared.digest:
        return True
    if len(stored_digest) == BODY_DIGEST_SIZE == len(prepared.digest):
        return digest_of(stored) == digest_of(prepared.visible)
    if len(stored_digest) == LEGACY_DIGEST_SIZE and len(prepared.digest) == BODY_DIGEST_SIZE:
        return stored_digest == digest_of(prepared.visible)
    if len(stored_digest) == BODY_DIGEST_SIZE and len(prepared.digest) == LEGACY_DIGEST_SIZE:
        # an encrypting store retrying an event a plain one wrote (nothing to seal in it)
        return stored_digest == body_digest(encode_event(prepared.visible))
    return False


def stamp(recorded_at: datetime) -> bytes:
    """recorded_at as the document carries it (formatted once per group, not per row)."""
    return recorded_at.isoformat().replace("+00:00", "Z").encode()


def place(body: bytes, seq: int, recorded_stamp: bytes) -> bytes:
    """The stored document: the prepared body with its position spliced in."""
    return b"%s,\"seq\":%d,\"recorded_at\":\"%s\"}" % (body[:-1], seq, recorded_stamp)


def decode_recorded(document: bytes | str) -> RecordedEvent:
    return _decoder.decode(document)


def decode_stored(seq: int, document: bytes | str) -> RecordedEvent:
    """A stored row's event; a row that does not decode (or names another seq) raises
    CorruptEventError with its seq, never a raw decoding error."""
    try:
        event = _decoder.decode(document)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CorruptEventError(seq, str(exc)) from None
    if event.seq != seq:
        raise CorruptEventError(seq, f"its document says seq {event.seq}")
    return event


def encode_visible(event: Event) -> tuple[bytes, Event]:
    """The stored JSON of an event and the event as a read gives it back (Decimal and
    datetime values become strings, tuples lists). JSON has no NaN or infinity: msgspec
    would store them as null, silently changing what was recorded, so they are refused."""
    body = encode_event(event)
    visible = decode_event(body)
    if visible.data != event.data or visible.metadata != event.metadata:
        _refuse_non_finite(event)  # only a changed payload can hide one
    return body, visible


def _refuse_non_finite(event: Event) -> None:
    stack: list[Any] = [event.data, event.metadata]
    while stack:
        value = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidEventError(
                    f"event {event.id} (type {event.type!r}) holds {value!r}, which JSON "
                    "cannot represent; store None or a string instead"
                )
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


def recorded(event: Event, seq: int, recorded_at: datetime) -> RecordedEvent:
    return RecordedEvent(
        type=event.type,
        data=event.data,
        conversation_id=event.conversation_id,
        user_id=event.user_id,
        metadata=event.metadata,
        id=event.id,
        occurred_at=event.occurred_at,
        seq=seq,
        recorded_at=recorded_at,
    )


def _check_json_object(name: str, value: Any, event_id: str) -> None:
    if not isinstance(value, dict):
        raise InvalidEventError(f"event {event_id}: {name} must be a dict, got "
                                f"{type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidEventError(f"event {event_id}: {name} keys must be strings, got "
                                    f"{key!r}")


MAX_ID = 200  # characters of an event id or type
MAX_SCOPE_ID = 500  # characters of a conversation_id or user_id (indexed on every backend)


def _clean(value: str) -> str | None:
    """Why `value` cannot be an indexed text column anywhere, or None if it can. The same
    rule on every backend: PostgreSQL refuses NUL in text and lone surrogates in UTF-8."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text ({exc.reason})"
    return None


def _plain(value: Any, limit: int) -> bool:
    """The common case, checked fast: a short non-empty ASCII string with no NUL."""
    return type(value) is str and 0 < len(value) <= limit and value.isascii() \
        and "\x00" not in value


def _check_text(event_id: str, name: str, value: Any, limit: int, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or (not value and not optional):
        kind = "a string or None" if optional else "a non-empty string"
        got = repr(value) if isinstance(value, str) else type(value).__name__
        raise InvalidEventError(f"event {event_id}: {name} must be {kind}, got {got}")
    if len(value) > limit:
        raise InvalidEventError(f"event {event_id}: {name} has {len(value)} characters; at "
                                f"most {limit} are allowed")
    problem = _clean(value)
    if problem is not None:
        raise InvalidEventError(f"event {event_id}: {name} {problem}")


def validate(event: Any) -> Event:
    """Check an event before anything else touches it (msgspec does not type-check init).

    Every backend gets the same rules, so a value one database would refuse fails alone,
    here, instead of failing the group it was committed with."""
    if not isinstance(event, Event):
        raise InvalidEventError(
            f"expected an eventstore.Event, got {type(event).__name__}; build one with "
            "Event(type=..., data={...})"
        )
    if not _plain(event.id, MAX_ID):
        if not isinstance(event.id, str) or not event.id or len(event.id) > MAX_ID:
            raise InvalidEventError(
                f"event id must be a non-empty string of at most {MAX_ID} characters")
        problem = _clean(event.id)
        if problem is not None:
            raise InvalidEventError(f"event id {event.id!r} {problem}")
    if not _plain(event.type, MAX_ID):
        if not isinstance(event.type, str) or not event.type or len(event.type) > MAX_ID:
            raise InvalidEventError(
                f"event {event.id}: type must be a non-empty string of at most {MAX_ID} "
                f"characters, got {event.type!r}"
            )
        _check_text(event.id, "type", event.type, MAX_ID, optional=False)
    for name, scope in (("conversation_id", event.conversation_id),
                        ("user_id", event.user_id)):
        if scope is not None and not _plain(scope, MAX_SCOPE_ID):
            _check_text(event.id, name, scope, MAX_SCOPE_ID, optional=True)
    for name, mapping in (("data", event.data), ("metadata", event.metadata)):
        if type(mapping) is dict:  # the common case, inline: a plain dict of str keys
            for key in mapping:
                if type(key) is not str:
                    _check_json_object(name, mapping, event.id)
                    break
        else:
            _check_json_object(name, mapping, event.id)
    moment = event.occurred_at
    # datetime.now(UTC), the default, needs no utcoffset() call (twice per event otherwise)
    if type(moment) is not datetime or moment.tzinfo is not UTC:
        if not isinstance(moment, datetime) or moment.tzinfo is None \
                or moment.utcoffset() is None:
            raise InvalidEventError(
                f"event {event.id}: occurred_at must be a timezone-aware datetime "
                "(e.g. datetime.now(UTC))"
            )
        try:
            if moment.utcoffset():
                moment.astimezone(UTC)
        except OverflowError:
            raise InvalidEventError(
                f"event {event.id}: occurred_at {moment.isoformat()} is out of range in UTC"
            ) from None
    if event.type in CALL_TYPES:
        for name in ("provider", "model"):
            value = event.data.get(name)
            if isinstance(value, str):
                _check_text(event.id, f"data[{name!r}]", value, MAX_ID, optional=False)
    payload_type = BUILTIN_PAYLOADS.get(event.type)
    if payload_type is not None:
        try:
            msgspec.convert(event.data, payload_type)
        except msgspec.ValidationError as exc:
            raise InvalidEventError(
                f"event {event.id}: data of a {event.type!r} event is invalid: {exc}"
            ) from exc
    return event


def decode_event(document: bytes) -> Event:
    """An event as it reads back from the log (Decimal and datetime values become strings)."""
    return _event_decoder.decode(document)


def prepare(event: Event) -> PreparedEvent:
    """An event ready for `Backend.commit_group` as it is, with no hooks and no encryption
    (what backend tests and tools commit; the store's write path adds those steps)."""
    body, visible = encode_visible(validate(event))
    return PreparedEvent(visible=visible, body=body, digest=body_digest(body))
