"""How events become bytes and back.

An event is stored as one JSON document of the RecordedEvent. The writer prepares the
document of the event without its position, and splices `seq` and `recorded_at` in at
commit time, so a read decodes each row with a single msgspec call straight into a
RecordedEvent.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import msgspec

from .clock import to_micros
from .errors import InvalidEventError
from .events import BUILTIN_PAYLOADS, Event, RecordedEvent

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
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEventError(
            f"event {event.id} (type {event.type!r}) cannot be stored as JSON: {exc}. Keep "
            "data and metadata to JSON values (str, int, float, bool, None, Decimal, "
            "datetime, lists and dicts with string keys)."
        ) from exc


def digest_of(event: Event) -> bytes:
    """Content fingerprint: equal for an identical retry, different for other content."""
    material = _sorted_encoder.encode(
        [event.type, event.conversation_id, event.user_id, event.data, event.metadata,
         to_micros(event.occurred_at)]
    )
    return hashlib.blake2b(material, digest_size=16).digest()


def stamp(recorded_at: datetime) -> bytes:
    """recorded_at as the document carries it (formatted once per group, not per row)."""
    return recorded_at.isoformat().replace("+00:00", "Z").encode()


def place(body: bytes, seq: int, recorded_stamp: bytes) -> bytes:
    """The stored document: the prepared body with its position spliced in."""
    return b"%s,\"seq\":%d,\"recorded_at\":\"%s\"}" % (body[:-1], seq, recorded_stamp)


def decode_recorded(document: bytes | str) -> RecordedEvent:
    return _decoder.decode(document)


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


def validate(event: Any) -> Event:
    """Check an event before anything else touches it (msgspec does not type-check init)."""
    if not isinstance(event, Event):
        raise InvalidEventError(
            f"expected an eventstore.Event, got {type(event).__name__}; build one with "
            "Event(type=..., data={...})"
        )
    if not isinstance(event.id, str) or not event.id or len(event.id) > 200:
        raise InvalidEventError("event id must be a non-empty string of at most 200 characters")
    if not isinstance(event.type, str) or not event.type or len(event.type) > 200:
        raise InvalidEventError(
            f"event {event.id}: type must be a non-empty string of at most 200 characters, "
            f"got {event.type!r}"
        )
    for name in ("conversation_id", "user_id"):
        value = getattr(event, name)
        if value is not None and not isinstance(value, str):
            raise InvalidEventError(f"event {event.id}: {name} must be a string or None, got "
                                    f"{type(value).__name__}")
    _check_json_object("data", event.data, event.id)
    _check_json_object("metadata", event.metadata, event.id)
    moment = event.occurred_at
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidEventError(
            f"event {event.id}: occurred_at must be a timezone-aware datetime "
            "(e.g. datetime.now(UTC))"
        )
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
