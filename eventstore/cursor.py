"""Opaque pagination cursors.

A cursor is `base64url(msgpack([version, last_seq, filter_digest]) + mac)`, where the MAC
is a truncated HMAC-SHA256 under the store's secret (kept in the backend, so cursors survive
a restart and work across processes). It names a seq, not an offset, so it keeps working
while new events are appended, and it is refused when tampered with, made by another store
or replayed under other filters.

The filter digest is keyed too (BLAKE2b under a key derived from the same secret): cursors
travel in URLs and logs, and an unkeyed digest of the filters would let anyone holding one
confirm a guessed conversation or user id offline. Version 1 cursors carried the unkeyed
digest and are refused as an unknown layout.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

from .errors import InvalidCursorError
from .query import Query

_VERSION = 2
_MAC_BYTES = 16
_FILTER_DIGEST_BYTES = 8
_FILTER_KEY_LABEL = b"eventstore/v1/cursor-filters"


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a cursor secret needs at least 16 bytes")
        self._secret = secret
        self._filter_key = hmac.new(secret, _FILTER_KEY_LABEL, hashlib.sha256).digest()

    def _filter_digest(self, query: Query) -> bytes:
        return hashlib.blake2b(query.fingerprint(), key=self._filter_key,
                               digest_size=_FILTER_DIGEST_BYTES).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, last_seq: int, query: Query) -> str:
        body = msgspec.msgpack.encode([_VERSION, last_seq, self._filter_digest(query)])
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode("ascii")

    def decode(self, cursor: object, query: Query) -> int:
        """The last seq the cursor names; InvalidCursorError if it is not ours for `query`."""
        if not isinstance(cursor, str) or not cursor or len(cursor) > 200:
            raise InvalidCursorError("cursor= must be a next_cursor string from a previous page")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursorError("cursor is malformed (not URL-safe base64)") from exc
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != cursor:
            # Base64's last character can carry unused bits: insist on the one spelling we
            # issue, so no two strings are the same cursor.
            raise InvalidCursorError("cursor is malformed (not in canonical form)")
        if len(raw) <= _MAC_BYTES:
            raise InvalidCursorError("cursor is malformed (too short to be a next_cursor)")
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidCursorError(
                "cursor was altered or made by another store; start again without cursor="
            )
        try:
            version, last_seq, digest = msgspec.msgpack.decode(body, type=tuple[int, int, bytes])
        except msgspec.DecodeError as exc:  # a valid MAC over a foreign layout
            raise InvalidCursorError("cursor has an unknown layout") from exc
        if version != _VERSION or last_seq < 0:
            raise InvalidCursorError("cursor has an unknown layout")
        if not hmac.compare_digest(digest, self._filter_digest(query)):
            raise InvalidCursorError(
                "cursor was made with other filters; pass the same conversation_id, user_id, "
                "type, after and before as the call that returned it"
            )
        return last_seq
