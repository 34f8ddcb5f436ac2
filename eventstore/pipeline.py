"""The write path, top to bottom, and its exact inverse for reads.

    app ─▶ validate ─▶ redact hooks ─▶ validate again ─▶ encode ─▶ (visible event)
        ─▶ encrypt personal fields ─▶ encode as stored ─▶ PreparedEvent ─▶ writer

Reading undoes only the last steps: stored events are *revealed* (personal fields
decrypted, or `[ERASED]` once their key was destroyed). Redaction is never undone: the
redacted form is what is stored and what everyone sees.

Reveal has one rule for every path an event leaves the store by, so that forgetting a
user cannot be outrun by an event already on its way: appends return the caller's own
visible event (never a decryption of what was just sealed), reads and catch-ups reveal
what is stored, and live deliveries (`reveal_live`) are revealed again from storage when
their user was forgotten in this process after the event was prepared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

import msgspec

from .backends.protocols import KeyStore
from .codec import (
    PreparedEvent,
    body_digest,
    digest_of,
    encode_event,
    encode_visible,
    recorded,
    validate,
)
from .errors import DuplicateEventError, EncryptionError, InvalidEventError, RedactionError
from .events import Event, RecordedEvent
from .privacy.hooks import RedactHook, copies_on_write, run_hooks
from .query import Query
from .scope import merge_metadata

if TYPE_CHECKING:
    from .backends.base import Backend
    from .privacy.encryption import Encryption

__all__ = ["WritePipeline"]


class WritePipeline:
    """Turns what an application appends into what is stored, and stored events back into
    what callers may see."""

    def __init__(self, backend: Backend, hooks: Sequence[RedactHook] = (),
                 encryption: Encryption | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        self._backend = backend
        # the store's own metadata, under every event's (AITracer's global set_metadata)
        self._metadata = dict(metadata or {})
        self._hooks = tuple(hooks)
        # hooks that copy on write and found nothing hand back the very event, validated
        # already: no second validation
        self._hooks_copy = copies_on_write(self._hooks)
        self.encryption = encryption
        # An encrypted store opened without its master key: appends are refused (they would
        # store personal fields in plaintext that no forget could erase), reads show
        # envelopes as [ENCRYPTED].
        self.sealed_without_key = False

    async def check_sealed(self) -> None:
        """At start, without encryption: is the store encrypted all the same?"""
        from .privacy.encryption import is_encrypted

        self.sealed_without_key = await is_encrypted(self._backend)

    def add_metadata(self, metadata: Mapping[str, Any]) -> None:
        """More store-wide metadata, for the events prepared from now on."""
        self._metadata = merge_metadata(self._metadata, metadata)

    # --- the way in ----------------------------------------------------------------------

    async def prepare(self, event: Any, *, audit: bool = False) -> PreparedEvent:
        """Validate, redact, encode and (with encryption) seal one event. An `audit` event
        (the store's own record of a forget or a retention run) is neither redacted nor
        sealed."""
        if self.sealed_without_key:
            raise EncryptionError(
                "this store is encrypted (its metadata holds a master key check) but was "
                "opened without encryption=: appends are refused, since they would store "
                "personal fields in plaintext that forget_user could never erase. Open it "
                "with encryption=Encryption(...) (or set EVENTSTORE_MASTER_KEY)"
            )
        event = await self._redacted(event, hooks=not audit)
        body, visible = encode_visible(event)  # visible: what a read gives back
        if self.encryption is not None and not audit:  # stored differs from what is seen
            # the keyed digest of encrypted events stays the one of the stored ones
            sealed, digest = await self.encryption.seal_with_digest(visible, digest_of(visible))
            body = encode_event(sealed)
        else:
            digest = body_digest(body)
        return PreparedEvent(visible=visible, body=body, digest=digest)

    async def _redacted(self, given: Any, *, hooks: bool = True) -> Event:
        """The event validated, in UTC, under the store's metadata and through the redact
        hooks (unless `hooks` is False): what is stored of it, before encryption."""
        event = validate(given)
        if type(event) is not Event:  # a RecordedEvent or subclass: keep the Event fields
            event = Event(**{f: getattr(event, f) for f in Event.__struct_fields__})
        if event.occurred_at.tzinfo is not UTC and event.occurred_at.utcoffset():
            event = msgspec.structs.replace(event, occurred_at=event.occurred_at.astimezone(UTC))
        if self._metadata:
            event = msgspec.structs.replace(
                event, metadata=merge_metadata(self._metadata, event.metadata))
        if self._hooks and hooks:
            original = event
            event = await run_hooks(self._hooks, event)
            try:
                unchanged = event is original and self._hooks_copy
                event = event if unchanged else validate(event)
            except InvalidEventError as exc:
                raise RedactionError(
                    f"a redact hook produced an invalid event ({exc}); nothing was written"
                ) from exc
        return event

    # Records that name content by a digest (calls name their messages so) must name it
    # as stored: a digest of the content as given would keep what the redact hooks remove
    # (a card number is guessed back from its hash in seconds) and outlive forget_user.

    @property
    def redacts(self) -> bool:
        """Whether redact hooks may change what is stored of an event."""
        return bool(self._hooks)

    async def redacted_digest(self, event: Event, digest: Callable[[Event], bytes]) -> bytes:
        """`digest` of the event as the redact hooks leave it. Nothing is written; the
        event is prepared anew when it is appended."""
        return digest(await self._redacted(event))

    async def keyed_digest(self, event: Event, digest: bytes) -> bytes:
        """A digest of the event's content keyed with the data key that seals its personal
        fields (so it confirms no guess once forget_user destroyed that key), or the
        digest itself when nothing of the event is encrypted."""
        if self.encryption is None:
            return digest
        return await self.encryption.keyed_digest(event, digest)

    async def prepare_many(self, events: Sequence[Any]) -> list[PreparedEvent]:
        return [await self.prepare(event) for event in events]

    def returned(self, prepared: Sequence[PreparedEvent],
                 committed: list[RecordedEvent]) -> list[RecordedEvent]:
        """What an append returns: the caller's own visible events at their positions. An
        idempotent retry matched the stored event's digest, so its content is the caller's;
        nothing stored needs decrypting."""
        out = committed
        for i, (p, r) in enumerate(zip(prepared, committed, strict=True)):
            if r.data is not p.visible.data:  # a retry: the stored copy came back
                if out is committed:
                    out = list(committed)
                out[i] = recorded(p.visible, r.seq, r.recorded_at)
        return out

    async def explain_duplicate(self, exc: DuplicateEventError,
                                prepared: Sequence[PreparedEvent]) -> DuplicateEventError:
        """With encryption, a retry of a forgotten user's event cannot match what is stored:
        its fingerprint was keyed with the destroyed key. Say so rather than "different
        content"; the stored copy stays erased either way."""
        if self.encryption is None or not isinstance(self._backend, KeyStore):
            return exc
        user_id = next((p.visible.user_id for p in prepared
                        if p.visible.id == exc.event_id), None)
        if user_id is None:
            return exc
        newest = (await self._backend.load_keys([user_id])).get(user_id)
        # generations after the first only exist because an earlier one was forgotten
        if newest is None or (newest.wrapped is not None and newest.generation == 1):
            return exc
        return DuplicateEventError(
            exc.event_id,
            f"event id {exc.event_id!r} is already stored, for user {user_id!r}, whose "
            "personal data forget_user() erased: a retry cannot be matched against the "
            "erased copy, which stays as it is (or this is other content under a used id). "
            "To store the event again, give it a new id (omit id= for a fresh UUIDv7).",
        )

    # --- the way out ---------------------------------------------------------------------

    async def reveal(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Stored events as callers see them: personal fields decrypted, or erased once
        their user was forgotten. Without encryption, the stored events as they are."""
        if self.encryption is None or not events:
            if self.sealed_without_key and events:
                from .privacy.encryption import mask_envelopes

                return [mask_envelopes(event) for event in events]
            return events
        return await self.encryption.open_events(events)

    async def reveal_live(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Events about to be delivered live (they were revealed when prepared). Those of a
        user forgotten in this process are revealed again from storage, so an event
        prepared before `forget_user` and delivered after it comes out `[ERASED]`, exactly
        as a read of the log shows it."""
        encryption = self.encryption
        if encryption is None or not events:
            return events
        forgotten = encryption.forgotten_here
        stale = [e.seq for e in events if e.user_id is not None and e.user_id in forgotten]
        if not stale:
            return events
        fresh: dict[int, RecordedEvent] = {}
        for seq in stale:
            stored = await self._backend.query(Query(), after_seq=seq - 1, limit=1)
            if stored and stored[0].seq == seq:
                (fresh[seq],) = await self.reveal(stored)
        return [fresh.get(e.seq, e) if e.user_id in forgotten else e for e in events]
