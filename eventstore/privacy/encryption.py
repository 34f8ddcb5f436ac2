"""Crypto-shredding: the right to be forgotten in an append-only log.

Nothing in the log is ever rewritten, so erasing a person's messages means making them
unreadable: the fields marked personal (`fields`, by default `data.content`) are encrypted
with a data key of their own user before they are stored, and `forget_user` destroys that
key. Every read path then shows those fields as `ERASED`, while everything else (seq,
type, ids, times, token counts, costs) stays as it was, so projections still add up.

    enc = Encryption(fields=("data.content", "data.prompt", "metadata.email"))
    async with EventStore.open("sqlite:///audit.db", encryption=enc) as store:
        await store.append(Event(type="message_sent", user_id="u1", data={...}))
        await store.forget_user("u1")

Rules:
- Only events with a `user_id` are encrypted: a key belongs to a person, and an event of
  nobody cannot be forgotten by anybody. Put personal data of anonymous sessions under a
  user_id (a session id will do) if it must be erasable.
- A personal field holds any JSON value; in storage it becomes the string
  `enc:v1:<generation>:<base64(nonce + AES-256-GCM ciphertext and tag)>`. The associated data
  binds the event id and the field path, so a ciphertext moved to another event or field
  does not decrypt. Fields are dotted paths into `data` or `metadata` (nested dicts); an
  absent field is left absent.
- Once forgotten, a field reads as the string `ERASED` ("[ERASED]"), whatever its type.
  Do not mark fields that projections need (token counts, costs) as personal.
- A user seen again after being forgotten gets a new key generation: their new events are
  readable, the old ones stay erased.
- A stored ciphertext that does not authenticate (tampered or corrupted), or one whose key
  the key table does not know, raises EncryptionError rather than returning garbage or
  passing off damage as erasure.
- The idempotency digest of an encrypted event is keyed with the user's data key, so no
  fingerprint of forgotten content survives. The flip side: once the user is forgotten,
  retrying one of their old encrypted events raises DuplicateEventError (nobody can tell
  any more whether it had the same content).
- What was stored in plaintext before encryption was turned on stays plaintext, and a
  store opened without encryption shows the stored envelopes as they are.
- Erasure covers the live database. On PostgreSQL the old row version of a destroyed key
  stays in the table's heap until VACUUM, and in WAL archives; backups of any backend hold
  the keys they were taken with. Expire backups on the schedule erasure promises.

Keys. Each user's data key (32 random bytes) is stored in the backend's key table wrapped
with AES-256-GCM under a key derived (HKDF) from the master key, the user id and the
generation bound as associated data. Forgetting overwrites the wrapped key (SQLite:
secure_delete and a WAL checkpoint, so no copy is left in the file) and keeps a tombstone
row with the time, so the user stays forgotten and the erasure is auditable; the store also
appends a `user_forgotten` event. The master key (32 bytes) comes from `master_key=`,
else `key_file=`, else the environment variable `env` (default EVENTSTORE_MASTER_KEY), as
base64 or hex. A key-check value (an HMAC of a fixed label) in the store's metadata makes a
wrong master key an EncryptionError at `store.start()` instead of a store full of errors.

Caching and other processes. Unwrapped keys are cached in memory (at most `cache_size`).
Reads ask the key table once per page for the users on it, so a forget made by any
process shows on the next page read everywhere: reads have no staleness. Appends use a
cached key for up to `key_ttl` seconds (default 1) before asking again, and concurrent
appends share one key-table query; so for up to `key_ttl` after another process forgets
a user, this process may still encrypt that user's new events under the destroyed key.
Those events then read as erased: the window errs toward erasure, never toward keeping.
In the process that forgets, the cache is dropped at once.

One Encryption serves one store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, cast

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..backends.protocols import KeyLister, KeyStore
from ..errors import EncryptionError, InvalidEventError
from ..events import Event, RecordedEvent

if TYPE_CHECKING:
    from ..backends.base import Backend, KeyRecord

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_FIELDS",
    "ENVELOPE_PREFIX",
    "ERASED",
    "Encryption",
    "EncryptionError",
    "generate_master_key",
]

ERASED: Final = "[ERASED]"
ENCRYPTED: Final = "[ENCRYPTED]"  # what a store opened without its master key shows
ENVELOPE_PREFIX: Final = "enc:v1:"  # per-user keys: enc:v1:<generation>:<blob>
PERIOD_PREFIX: Final = "enc:v2:"  # per user and period: enc:v2:<period>:<generation>:<blob>
ANY_ENVELOPE: Final = "enc:v"
OWNER_SEP: Final = "\x1f"  # between the user id and the period in a key's owner
SNAPSHOT_OWNER: Final = "\x1esnapshots"  # the owner of the projection snapshots' key
SNAPSHOT_MAGIC: Final = b"esnap1:"
DEFAULT_FIELDS: Final = ("data.content",)
DEFAULT_ENV: Final = "EVENTSTORE_MASTER_KEY"
CHECK_META_KEY: Final = "encryption_key_check"
PERIOD_META_KEY: Final = "encryption_key_period"

Period: TypeAlias = Literal["month", "day"]
_PERIOD = re.compile(r"[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?")
_CHECK_LABEL = b"eventstore master key check v1"
_NONCE = 12
_NONCE_POOL = 256
_MAX_RIDERS = 2_000
_MISSING: Any = object()
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


# The plaintext inside an envelope: b"s" + UTF-8 for a string (the common case, and JSON
# escaping a kilobyte of text costs as much as encrypting it), b"j" + JSON otherwise.
def _pack(value: Any) -> bytes:
    if type(value) is str:
        return b"s" + value.encode()
    return b"j" + _json_encode(value)


def _unpack(plaintext: bytes) -> Any:
    if plaintext[:1] == b"s":
        return plaintext[1:].decode()
    return _json_decode(plaintext[1:])

_HOW_TO_MAKE = (
    'make one with: python -c "import base64, os; '
    'print(base64.b64encode(os.urandom(32)).decode())"'
)


def generate_master_key() -> str:
    """A new random master key, base64 (what EVENTSTORE_MASTER_KEY expects)."""
    return base64.b64encode(os.urandom(32)).decode()


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


def _decode_master_key(raw: bytes | str, source: str) -> bytes:
    if isinstance(raw, bytes) and len(raw) == 32:
        return raw
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        text = ""
    text = text.strip()
    key: bytes | None = None
    if len(text) == 64:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = None
    if key is None:
        try:
            text64 = text.replace("-", "+").replace("_", "/").rstrip("=")
            key = base64.b64decode(text64 + "=" * (-len(text64) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != 32:
        raise EncryptionError(
            f"the master key from {source} is not 32 bytes as base64 or hex (nor 32 raw "
            f"bytes); {_HOW_TO_MAKE}"
        )
    return key


def _parse_field(path: str) -> tuple[str, tuple[str, ...]]:
    if not isinstance(path, str):
        raise EncryptionError(f"a personal field is a dotted path string, got {path!r}")
    root, *keys = path.split(".")
    if root not in ("data", "metadata") or not keys or not all(keys):
        raise EncryptionError(
            f"personal field {path!r} must be a dotted path into data or metadata, e.g. "
            "'data.content' or 'metadata.email'"
        )
    return root, tuple(keys)


def _get(tree: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict):
            return _MISSING
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _with(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `tree` with `value` at `keys`, copying only the dicts along the path (the
    caller's event is frozen, and its dicts may be shared with what callers hold)."""
    top = dict(tree)
    node = top
    for key in keys[:-1]:
        child = dict(node[key])
        node[key] = child
        node = child
    node[keys[-1]] = value
    return top


@dataclass(slots=True)
class _Key:
    generation: int
    aead: AESGCM
    digest_key: bytes
    checked_at: float  # monotonic time the key table last said this key is live


@dataclass(slots=True)
class _Field:
    path: str
    root: str
    keys: tuple[str, ...]
    aad_tail: bytes


class Encryption:
    """Per-user encryption of personal fields; see the module docstring."""

    def __init__(
        self,
        master_key: bytes | str | None = None,
        *,
        fields: Iterable[str] = DEFAULT_FIELDS,
        key_file: str | os.PathLike[str] | None = None,
        env: str | None = DEFAULT_ENV,
        key_ttl: float = 1.0,
        cache_size: int = 10_000,
        discover: bool = False,
    ) -> None:
        if isinstance(fields, str):
            fields = (fields,)
        paths = list(dict.fromkeys(fields))
        if not paths:
            raise EncryptionError("fields= names no personal field; give at least one path")
        parsed = [(path, *_parse_field(path)) for path in paths]
        for path, root, keys in parsed:
            for other, other_root, other_keys in parsed:
                if (other != path and root == other_root
                        and other_keys[: len(keys)] == keys):
                    raise EncryptionError(
                        f"personal fields {path!r} and {other!r} overlap; list only {path!r}"
                    )
        self.fields: tuple[str, ...] = tuple(paths)
        self._fields = [_Field(path, root, keys, b"\0" + path.encode())
                        for path, root, keys in parsed]
        if key_ttl < 0 or cache_size < 1:
            raise EncryptionError("key_ttl must be >= 0 and cache_size >= 1")
        self.key_ttl = key_ttl
        self.cache_size = cache_size
        # Reads find envelopes wherever they are instead of only at `fields` (tools such as
        # the CLI, which do not know the fields the writing app encrypted).
        self.discover = discover
        self._found_fields: dict[tuple[str, tuple[str, ...]], _Field] = {}
        # None: one key per user (enc:v1). A period kind: one key per user and period of
        # occurred_at (enc:v2), so that retention can destroy whole old periods.
        self.period: Period | None = None
        self._master_key_arg = master_key
        self._key_file = key_file
        self._env = env
        if master_key is not None:  # fail at construction for a malformed literal key
            _decode_master_key(master_key, "master_key=")
        self._wrap: AESGCM | None = None
        self._backend: KeyStore | None = None
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        # Bumped by every forget: a key-table answer read before a forget finished must not
        # be cached after it.
        self._epoch = 0
        # Users forgotten by this process (see forget): a set, since a live delivery asks
        # "was this user forgotten?" for every event, and the answer is almost always no.
        self.forgotten_here: set[str] = set()
        self._wanted: dict[str, asyncio.Future[_Key]] = {}
        self._nonces = b""
        self._nonce_at = 0
        self._flusher: asyncio.Task[None] | None = None
        self._snapshot_key: _Key | None = None

    def __repr__(self) -> str:  # never the key
        return f"Encryption(fields={self.fields!r})"

    # --- master key --------------------------------------------------------------------

    def _master_key(self) -> bytes:
        if self._master_key_arg is not None:
            return _decode_master_key(self._master_key_arg, "master_key=")
        if self._key_file is not None:
            path = Path(self._key_file)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise EncryptionError(
                    f"cannot read the master key file {path}: {exc.strerror or exc}; check "
                    "key_file="
                ) from exc
            return _decode_master_key(raw, f"key file {path}")
        value = os.environ.get(self._env) if self._env else None
        if not value:
            where = f"set {self._env}, " if self._env else ""
            raise EncryptionError(
                f"encryption is on but there is no master key: {where}pass "
                f"Encryption(master_key=...) or key_file=; 32 bytes as base64 or hex ("
                f"{_HOW_TO_MAKE}). Keep it safe: without it nothing encrypted can be read"
            )
        return _decode_master_key(value, f"environment variable {self._env}")

    async def bind(self, backend: Backend, *, period: Period | None = None) -> None:
        """At store start: check the master key against the store's key-check value
        (recorded by the first start) and keep the backend to load keys from."""
        if self._backend is not None and self._backend is not cast(object, backend):
            raise EncryptionError(
                "this Encryption is already used by another store; create one Encryption per "
                "store (its key cache belongs to one store's key table)"
            )
        if not isinstance(backend, KeyStore):
            raise EncryptionError(
                f"the {type(backend).__name__} backend cannot store encryption keys"
            )
        master = self._master_key()
        check = hmac.new(_derive(master, b"eventstore/v1/key-check"), _CHECK_LABEL,
                         hashlib.sha256).digest()
        stored = await backend.get_meta(CHECK_META_KEY)
        if stored is None and self.discover:
            stored = check  # a reader of a store that was never encrypted marks nothing
        elif stored is None:
            stored = await backend.set_meta_if_absent(CHECK_META_KEY, check)
        if not hmac.compare_digest(stored, check):
            raise EncryptionError(
                "the master key does not match the one this store's keys were made with "
                "(key check failed); supply the original master key (the master key of a "
                "store cannot be changed; without it nothing encrypted can be read)"
            )
        # Once a store has per-period keys (retention), every writer keeps making them,
        # or content appended by a process without retention= would never expire.
        if period is not None and not isinstance(backend, KeyLister):
            raise EncryptionError(
                f"the {type(backend).__name__} backend cannot list its keys (key_owners), "
                "which retention needs")
        if period is not None:
            await backend.set_meta_if_absent(PERIOD_META_KEY, period.encode())
        else:
            recorded = await backend.get_meta(PERIOD_META_KEY)
            if recorded is not None and recorded.decode() in ("month", "day"):
                period = "day" if recorded == b"day" else "month"
        self._wrap = AESGCM(_derive(master, b"eventstore/v1/key-wrap"))
        self._backend = backend
        self.period = period

    # --- data keys ---------------------------------------------------------------------

    def _wrap_aad(self, user_id: str, generation: int) -> bytes:
        return b"eventstore/v1/data-key\0%s\0%d" % (user_id.encode(), generation)

    def _unwrap(self, record: KeyRecord) -> _Key:
        assert self._wrap is not None and record.wrapped is not None
        wrapped = record.wrapped
        try:
            secret = self._wrap.decrypt(wrapped[:_NONCE], wrapped[_NONCE:],
                                        self._wrap_aad(record.user_id, record.generation))
        except InvalidTag:
            raise EncryptionError(
                f"the stored key of user {record.user_id!r} (generation {record.generation}) "
                "does not authenticate under the master key: the key table was altered or "
                "damaged; restore it from a backup"
            ) from None
        return _Key(record.generation, AESGCM(secret),
                    _derive(secret, b"eventstore/v1/digest"), time.monotonic())

    def _backend_or_fail(self) -> KeyStore:
        if self._backend is None or self._wrap is None:
            raise EncryptionError("encryption is not bound to an open store")
        return self._backend

    def _remember(self, user_id: str, key: _Key) -> None:
        self._keys[user_id] = key
        self._keys.move_to_end(user_id)
        while len(self._keys) > self.cache_size:
            self._keys.popitem(last=False)

    def _live_key(self, user_id: str, record: KeyRecord | None, epoch: int) -> _Key | None:
        """The key a key-table answer says is live (None if there is none), cached if no
        forget ran meanwhile."""
        if record is None or record.wrapped is None:
            self._keys.pop(user_id, None)
            return None
        cached = self._keys.get(user_id)
        if cached is not None and cached.generation == record.generation:
            key = cached  # a generation's key never changes, only disappears
            key.checked_at = time.monotonic()
        else:
            key = self._unwrap(record)
        if epoch == self._epoch:
            self._remember(user_id, key)
        return key

    async def _current_key(self, user_id: str) -> _Key:
        """The key to encrypt this user's new events with (created on first use)."""
        key = self._keys.get(user_id)
        if key is not None and time.monotonic() - key.checked_at < self.key_ttl:
            return key
        future = self._wanted.get(user_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._wanted[user_id] = future
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush(), name="eventstore-keys")
        # shield: one caller's cancellation must not cancel the answer the others wait for
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        """Load (or create) the keys the concurrent appends asked for, one query a round."""
        while self._wanted:
            await asyncio.sleep(0)  # let the other appends of this round add their users
            wanted, self._wanted = self._wanted, {}
            # Cached keys past half their ttl ride along: their users' next appends then
            # find them fresh, instead of each waiting for a query of its own (as appends
            # of one append_many, prepared one after another, would).
            now = time.monotonic()
            riders = [user for user, key in self._keys.items()
                      if user not in wanted and now - key.checked_at >= self.key_ttl / 2]
            try:
                backend = self._backend_or_fail()
                epoch = self._epoch
                records = await backend.load_keys([*wanted, *riders[:_MAX_RIDERS]])
                for user_id in riders[:_MAX_RIDERS]:
                    self._live_key(user_id, records.get(user_id), epoch)
                for user_id, future in wanted.items():
                    key = self._live_key(user_id, records.get(user_id), epoch)
                    if key is None:
                        key = await self._create_key(backend, user_id, records.get(user_id))
                    if not future.done():
                        future.set_result(key)
            except Exception as exc:
                for future in wanted.values():
                    if not future.done():
                        future.set_exception(exc)
            except BaseException:
                for future in [*wanted.values(), *self._wanted.values()]:
                    future.cancel()
                self._wanted = {}
                raise

    async def _create_key(self, backend: KeyStore, user_id: str,
                          newest: KeyRecord | None) -> _Key:
        assert self._wrap is not None
        for _ in range(10):
            epoch = self._epoch
            generation = newest.generation + 1 if newest is not None else 1
            secret = AESGCM.generate_key(bit_length=256)
            nonce = os.urandom(_NONCE)
            wrapped = nonce + self._wrap.encrypt(nonce, secret,
                                                 self._wrap_aad(user_id, generation))
            # Insert-if-absent: of stores creating this generation at once, one key wins and
            # every store uses the winner.
            newest = await backend.create_key(user_id, generation, wrapped)
            key = self._live_key(user_id, newest, epoch)
            if key is not None:
                return key
            # The generation was created and forgotten meanwhile: go one further.
        raise EncryptionError(
            f"could not create a key for user {user_id!r}: it keeps being forgotten while "
            "being created"
        )

    # --- sealing -----------------------------------------------------------------------

    def _nonce(self) -> bytes:
        """A random 96-bit nonce, drawn from a pool filled by one urandom call per
        _NONCE_POOL nonces instead of one system call each."""
        if self._nonce_at >= len(self._nonces):
            self._nonces = os.urandom(_NONCE * _NONCE_POOL)
            self._nonce_at = 0
        at = self._nonce_at
        self._nonce_at = at + _NONCE
        return self._nonces[at : at + _NONCE]

    def _aad(self, event_id: str, field: _Field) -> bytes:
        return event_id.encode() + field.aad_tail

    def _to_seal(self, event: Event) -> tuple[list[tuple[_Field, Any]], str, str] | None:
        """The event's personal fields with their values, the owner of the key that seals
        them and the envelope prefix; None when nothing of the event is sealed."""
        user_id = event.user_id
        if user_id is None and self.period is None:
            return None
        found = []
        for field in self._fields:
            value = _get(event.data if field.root == "data" else event.metadata, field.keys)
            if value is not _MISSING:
                found.append((field, value))
        if not found:  # no key is made for a user until there is something to protect
            return None
        if self.period is None:
            assert user_id is not None
            return found, user_id, ENVELOPE_PREFIX
        # with retention, content of nobody expires too, under a key of nobody
        period = period_of(event.occurred_at, self.period)
        return found, owner_of(user_id, period), f"{PERIOD_PREFIX}{period}:"

    async def keyed_digest(self, event: Event, digest: bytes) -> bytes:
        """`digest` keyed with the data key that seals this event's personal fields, so a
        digest of content stored beside its ciphertext confirms no guess of that content
        once forget_user destroyed the key; `digest` itself when nothing is sealed."""
        sealing = self._to_seal(event)
        if sealing is None:
            return digest
        return _keyed(await self._current_key(sealing[1]), digest)

    async def _seal(self, event: Event) -> tuple[Event, _Key | None]:
        sealing = self._to_seal(event)
        if sealing is None:
            return event, None
        found, owner, prefix = sealing
        key = await self._current_key(owner)
        data, metadata = event.data, event.metadata
        prefix = f"{prefix}{key.generation}:"
        for field, value in found:
            nonce = self._nonce()
            blob = nonce + key.aead.encrypt(nonce, _pack(value),
                                            self._aad(event.id, field))
            envelope = prefix + binascii.b2a_base64(blob, newline=False).decode("ascii")
            if field.root == "data":
                data = _with(data, field.keys, envelope)
            else:
                metadata = _with(metadata, field.keys, envelope)
        return msgspec.structs.replace(event, data=data, metadata=metadata), key

    async def seal_with_digest(self, event: Event, digest: bytes) -> tuple[Event, bytes]:
        """`seal`, and the idempotency digest keyed with the user's data key when anything
        was encrypted (a plain digest would let anyone confirm a guess of erased content)."""
        sealed, key = await self._seal(event)
        if key is None:
            return sealed, digest
        return sealed, _keyed(key, digest)

    # --- opening -----------------------------------------------------------------------

    def _decrypt(self, event: RecordedEvent, field: _Field, envelope: str,
                 key: _Key | None, newest: int | None) -> Any:
        _, rest = _owner_of_envelope(event.user_id, envelope)
        generation_text, _, blob_text = rest.partition(":")
        try:
            generation = int(generation_text)
            blob = binascii.a2b_base64(blob_text)  # a stray character fails the tag check
        except (ValueError, binascii.Error):
            generation, blob = -1, b""
        if generation < 1 or len(blob) < _NONCE + 16:
            raise EncryptionError(
                f"field {field.path} of event {event.id} (seq {event.seq}) holds a malformed "
                "encrypted value: the stored event was altered or damaged"
            )
        if newest is None or generation > newest:
            raise EncryptionError(
                f"field {field.path} of event {event.id} (seq {event.seq}) is encrypted with "
                f"key generation {generation} of {_describe(envelope, event.user_id)}, "
                "which the key table "
                "does not hold: were events restored without their key table? Restore both "
                "from the same backup"
            )
        if key is None or generation != key.generation:
            return ERASED  # that generation was destroyed by forget_user
        try:
            plaintext = key.aead.decrypt(blob[:_NONCE], blob[_NONCE:], self._aad(event.id, field))
        except InvalidTag:
            raise EncryptionError(
                f"field {field.path} of event {event.id} (seq {event.seq}) does not "
                "authenticate: the stored ciphertext was altered, damaged or copied from "
                "another event"
            ) from None
        return _unpack(plaintext)

    def _sealed(self, event: RecordedEvent) -> list[tuple[_Field, str]]:
        """The (field, envelope) pairs of an event as stored."""
        if self.discover:
            found = []
            for root, tree in (("data", event.data), ("metadata", event.metadata)):
                for keys, value in envelopes(tree):
                    field = self._found_fields.get((root, keys))
                    if field is None:
                        path = ".".join((root, *keys))
                        field = _Field(path, root, keys, b"\0" + path.encode())
                        self._found_fields[(root, keys)] = field
                    found.append((field, value))
            return found
        sealed = []
        for field in self._fields:
            value = _get(event.data if field.root == "data" else event.metadata, field.keys)
            if isinstance(value, str) and value.startswith(ANY_ENVELOPE):
                sealed.append((field, value))
        return sealed

    async def open_events(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """The events as callers see them: personal fields decrypted, or ERASED once their
        user was forgotten (or their period expired). One key-table query for the page."""
        todo: list[tuple[int, list[tuple[_Field, str, str]]]] = []
        owners: set[str] = set()
        for index, event in enumerate(events):
            sealed = []
            for field, value in self._sealed(event):
                owner, _ = _owner_of_envelope(event.user_id, value)
                if owner is None:
                    continue  # "enc:v1:..." text of nobody: never sealed, shown as it is
                sealed.append((field, value, owner))
                owners.add(owner)
            if sealed:
                todo.append((index, sealed))
        if not todo:
            return events
        backend = self._backend_or_fail()
        epoch = self._epoch
        records = await backend.load_keys(sorted(owners))
        keys = {owner: self._live_key(owner, records.get(owner), epoch) for owner in owners}
        out = list(events)
        for index, sealed in todo:
            event = events[index]
            data, metadata = event.data, event.metadata
            for field, envelope, owner in sealed:
                record = records.get(owner)
                newest = record.generation if record is not None else None
                value = self._decrypt(event, field, envelope, keys[owner], newest)
                if field.root == "data":
                    data = _with(data, field.keys, value)
                else:
                    metadata = _with(metadata, field.keys, value)
            out[index] = msgspec.structs.replace(event, data=data, metadata=metadata)
        return out

    # --- projection snapshots ----------------------------------------------------------

    async def load_snapshot_key(self) -> None:
        """Make sure a snapshot key is at hand for seal_snapshot (created on first use)."""
        self._snapshot_key = await self._current_key(SNAPSHOT_OWNER)

    def seal_snapshot(self, state: bytes) -> bytes:
        """A projection snapshot as stored: encrypted under the store's snapshot key, which
        every forget and retention run destroys and replaces. Snapshots hold decrypted
        fields, and old row versions of them may outlive any delete (PostgreSQL keeps dead
        tuples while other transactions run): encrypted, every old version dies with the
        key."""
        key = self._snapshot_key
        if key is None:
            raise EncryptionError("no snapshot key: call load_snapshot_key() first")
        nonce = self._nonce()
        return (SNAPSHOT_MAGIC + b"%d:" % key.generation + nonce
                + key.aead.encrypt(nonce, state, SNAPSHOT_MAGIC))

    async def open_snapshot(self, blob: bytes) -> bytes | None:
        """The state inside a sealed snapshot; None when it cannot be used (sealed under a
        destroyed key, damaged, or a plaintext snapshot from before encryption, which may
        hold what was since erased): the projection is then rebuilt from the log."""
        if not blob.startswith(SNAPSHOT_MAGIC):
            return None
        generation_text, _, rest = blob[len(SNAPSHOT_MAGIC):].partition(b":")
        backend = self._backend_or_fail()
        epoch = self._epoch
        record = (await backend.load_keys([SNAPSHOT_OWNER])).get(SNAPSHOT_OWNER)
        key = self._live_key(SNAPSHOT_OWNER, record, epoch)
        if key is None or generation_text != b"%d" % key.generation or len(rest) < _NONCE:
            return None
        try:
            return key.aead.decrypt(rest[:_NONCE], rest[_NONCE:], SNAPSHOT_MAGIC)
        except InvalidTag:
            return None

    async def renew_snapshot_key(self) -> None:
        """Destroy the snapshot key (every stored snapshot, and every old version of one,
        becomes unreadable) and make a new one for the snapshots to come."""
        await self.destroy([SNAPSHOT_OWNER])
        self._snapshot_key = None
        await self.load_snapshot_key()

    # --- forgetting --------------------------------------------------------------------

    async def forget(self, user_id: str) -> list[str]:
        """Destroy every key of the user, of every period (keeping tombstones): their
        encrypted fields are unreadable from now on, in every process (see the module
        docstring for appends). Returns the key owners destroyed."""
        if not isinstance(user_id, str) or not user_id:
            raise InvalidEventError("forget_user() takes a user id (a non-empty string)")
        backend = self._backend_or_fail()
        periods = [owner for owner in await _key_owners(backend, user_id + OWNER_SEP)
                   if split_owner(owner)[0] == user_id]
        # Events of this user already revealed in memory (on their way to a subscriber)
        # are revealed again from storage before delivery: see WritePipeline.reveal_live.
        self.forgotten_here.add(user_id)
        return await self.destroy([user_id, *periods])

    async def expire(self, before: datetime) -> list[str]:
        """Destroy the keys of every period that ended at or before `before` (retention);
        returns the key owners destroyed."""
        return await self.destroy(await self.expired(before))

    async def expired(self, before: datetime) -> list[str]:
        """The key owners `expire(before)` would destroy (a dry run)."""
        backend = self._backend_or_fail()
        return [owner for owner in await _key_owners(backend, None)
                if (period := split_owner(owner)[1]) is not None
                and period_end(period) <= before]

    async def legacy_owners(self) -> list[str]:
        """Owners of per-user keys (no period): what retention cannot expire."""
        backend = self._backend_or_fail()
        return [owner for owner in await _key_owners(backend, None)
                if split_owner(owner)[1] is None and owner != SNAPSHOT_OWNER]

    def period_of(self, event: RecordedEvent | Event) -> str | None:
        """The key period of an event's content (None without per-period keys)."""
        return None if self.period is None else period_of(event.occurred_at, self.period)

    async def destroy(self, owners: list[str]) -> list[str]:
        backend = self._backend_or_fail()
        self._epoch += 1
        for owner in owners:
            self._keys.pop(owner, None)
        try:
            for owner in owners:
                await backend.destroy_keys(owner)
        finally:
            self._epoch += 1
            for owner in owners:
                self._keys.pop(owner, None)
        return owners


async def is_encrypted(backend: Backend) -> bool:
    """Whether a store was ever opened with encryption (it holds a key-check value)."""
    return await backend.get_meta(CHECK_META_KEY) is not None


def _keyed(key: _Key, digest: bytes) -> bytes:
    """`digest` under the key's digest key. Keyed BLAKE2b is a MAC in one call (HMAC
    re-keys SHA-256 on every use)."""
    return hashlib.blake2b(digest, key=key.digest_key, digest_size=16).digest()


def owner_of(user_id: str | None, period: str) -> str:
    return f"{user_id or ''}{OWNER_SEP}{period}"


def split_owner(owner: str) -> tuple[str | None, str | None]:
    """(user id, period) of a key owner; a per-user key has no period."""
    user, sep, period = owner.rpartition(OWNER_SEP)
    if not sep or not _PERIOD.fullmatch(period):
        return owner, None
    return user or None, period


def period_of(moment: datetime, kind: Period) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d" if kind == "day" else "%Y-%m")


def period_end(period: str) -> datetime:
    """The first instant after a period ("2026-11" or "2026-11-05"), UTC."""
    if len(period) == 7:
        year, month = int(period[:4]), int(period[5:7])
        return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return datetime.fromisoformat(period).replace(tzinfo=UTC) + timedelta(days=1)


def envelopes(tree: Any, keys: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, envelope) of every stored envelope in a dict tree, at any depth."""
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if isinstance(value, str):
            if value.startswith(ANY_ENVELOPE) and isinstance(key, str):
                yield (*keys, key), value
        elif isinstance(value, dict):
            yield from envelopes(value, (*keys, key))


def mask_envelopes(event: RecordedEvent) -> RecordedEvent:
    """The event with every envelope shown as ENCRYPTED (a store opened without its key)."""
    data, metadata = event.data, event.metadata
    for keys, _ in list(envelopes(data)):
        data = _with(data, keys, ENCRYPTED)
    for keys, _ in list(envelopes(metadata)):
        metadata = _with(metadata, keys, ENCRYPTED)
    if data is event.data and metadata is event.metadata:
        return event
    return msgspec.structs.replace(event, data=data, metadata=metadata)


def _owner_of_envelope(user_id: str | None, envelope: str) -> tuple[str | None, str]:
    """The key owner an envelope was sealed for, and what follows its prefix."""
    if envelope.startswith(PERIOD_PREFIX):
        period, _, rest = envelope[len(PERIOD_PREFIX):].partition(":")
        if _PERIOD.fullmatch(period):
            return owner_of(user_id, period), rest
        return None, rest
    rest = envelope[len(ENVELOPE_PREFIX):]
    if not envelope.startswith(ENVELOPE_PREFIX):
        return None, rest
    return user_id, rest


def _describe(envelope: str, user_id: str | None) -> str:
    owner, _ = _owner_of_envelope(user_id, envelope)
    user, period = split_owner(owner) if owner is not None else (user_id, None)
    return f"user {user!r}" + (f" for period {period}" if period else "")


async def _key_owners(backend: KeyStore, prefix: str | None) -> list[str]:
    if not isinstance(backend, KeyLister):
        if prefix is not None:
            return []  # forget: without per-period keys (which need key_owners) none to find
        raise EncryptionError(
            f"the {type(backend).__name__} backend cannot list its keys (key_owners), which "
            "forgetting by period and retention need"
        )
    return await backend.key_owners(prefix)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A failed key load whose waiters were all cancelled must not log "exception never
    # retrieved".
    if not future.cancelled():
        future.exception()
