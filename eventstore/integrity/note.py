"""C2SP signed notes and tlog checkpoints, with Ed25519 signatures.

The formats of c2sp.org/signed-note and c2sp.org/tlog-checkpoint, which Go's
`golang.org/x/mod/sumdb/note` implements; parsing follows that package's rules so a note
one accepts the other accepts too:

- a signed note is a text ending in a newline, a blank line, then one or more lines
  `— <key name> <base64(4-byte big-endian key id || signature)>` (em dash U+2014,
  space); the signed message is the text including its final newline;
- a note is valid UTF-8 with no control characters other than newline;
- a key name is non-empty and holds no Unicode space and no `+`;
- the key id of an Ed25519 key is the first 4 bytes of
  `SHA-256(name || 0x0A || 0x01 || 32-byte public key)`;
- a verifier key is `<name>+<8 hex digits of the key id>+<base64(0x01 || public key)>`;
- signatures by unknown keys are ignored (kept as unverified); a known key's signature
  that fails rejects the whole note; a note with no verified signature is rejected;
  more than 100 signature lines is malformed (Go's limit; C2SP asks for at least 16).

A checkpoint's text is: the origin line, the tree size in decimal (no leading zeroes),
the root in standard base64, then optional non-empty extension lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from eventstore.integrity.errors import MalformedNoteError, NoteVerificationError
from eventstore.integrity.keys import SigningKeyInput, load_signing_key, public_key_bytes

__all__ = [
    "ALG_ED25519",
    "Checkpoint",
    "Note",
    "NoteSignature",
    "Verifier",
    "format_checkpoint",
    "is_valid_key_name",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "parse_verifier_key",
    "sign_note",
    "split_note_text",
    "verifier_key",
]

ALG_ED25519 = 0x01
"""The C2SP signed-note signature type of Ed25519."""

MAX_SIGNATURES = 100

_SIG_PREFIX = "— ".encode()
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteSignature(msgspec.Struct, frozen=True):
    """One signature line of a note: the key's name and id, and the base64 as written."""

    name: str
    key_id: int
    base64: str


class Note(msgspec.Struct, frozen=True):
    """An opened note: its text (final newline included), the signatures that verified,
    and those by keys the caller did not give (ignored, as the spec requires)."""

    text: str
    sigs: list[NoteSignature]
    unverified_sigs: list[NoteSignature]


class Verifier(msgspec.Struct, frozen=True):
    """A parsed verifier key: who signs (`name`, `key_id`) and the Ed25519 public key."""

    name: str
    key_id: int
    public_key: bytes

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature of `message`."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Checkpoint(msgspec.Struct, frozen=True):
    """The body of a C2SP tlog checkpoint: the log's origin, its size and root."""

    origin: str
    size: int
    root: bytes
    extensions: list[str] = msgspec.field(default_factory=list)


def is_valid_key_name(name: str) -> bool:
    """Go's rule for key names: non-empty, no Unicode space, no `+`."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> int:
    """The 32-bit key id: the first 4 bytes (big-endian) of
    `SHA-256(name || 0x0A || alg || public_key)`."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def verifier_key(signing_key: SigningKeyInput, origin: str) -> str:
    """The verifier key string of `signing_key` for the log named `origin`:
    `<origin>+<hex key id>+<base64(0x01 || public key)>`, which Go's
    `note.NewVerifier` accepts. Give it to whoever checks your checkpoints."""
    key = load_signing_key(signing_key)
    if key is None:  # only when signing_key is an empty str
        raise MalformedNoteError("verifier_key needs a signing key")
    _check_name(origin)
    pub = public_key_bytes(key)
    encoded = base64.b64encode(bytes([ALG_ED25519]) + pub).decode()
    return f"{origin}+{key_id(origin, pub):08x}+{encoded}"


def parse_verifier_key(vkey: str) -> Verifier:
    """Parse a verifier key string by Go's `note.NewVerifier` rules.

    Raises `MalformedNoteError` for a malformed string, an unknown algorithm, or a key id
    that does not match the name and key."""
    name, _, rest = vkey.partition("+")
    hash16, _, key64 = rest.partition("+")
    try:
        key = base64.b64decode(key64, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not _HEX8.fullmatch(hash16) or not is_valid_key_name(name) or not key:
        raise MalformedNoteError(
            f"malformed verifier key {vkey!r}: want <name>+<8 hex digits>+<base64 key>"
        )
    kid = int(hash16, 16)
    if kid != key_id(name, key[1:], key[0]):
        raise MalformedNoteError(
            f"verifier key {vkey!r}: the key id does not match the name and key"
        )
    if key[0] != ALG_ED25519:
        raise MalformedNoteError(
            f"verifier key {vkey!r}: unknown algorithm {key[0]} (only Ed25519, 1, is known)"
        )
    if len(key) != 33:
        raise MalformedNoteError(
            f"verifier key {vkey!r}: an Ed25519 key is 32 bytes, this one is {len(key) - 1}"
        )
    return Verifier(name=name, key_id=kid, public_key=key[1:])


def _check_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise MalformedNoteError(
            f"{name!r} cannot name a key: a key name (the log's origin) must be non-empty "
            "and hold no spaces and no '+'"
        )


def _check_text(data: bytes, what: str) -> None:
    for ch in data.decode(errors="strict"):
        if ch < " " and ch != "\n":
            raise MalformedNoteError(
                f"malformed {what}: control character {ch!r} (only newline is allowed)"
            )


def sign_note(text: str, signing_key: SigningKeyInput, name: str) -> str:
    """`text` (ending in a newline) signed with Ed25519 by the key `name`, as a C2SP
    signed note: text, blank line, `— <name> <base64(key id || signature)>`."""
    key = load_signing_key(signing_key)
    if key is None:
        raise MalformedNoteError("sign_note needs a signing key")
    _check_name(name)
    if not text.endswith("\n"):
        raise MalformedNoteError("malformed note: the text must end with a newline")
    raw = text.encode()
    _check_text(raw, "note")
    kid = key_id(name, public_key_bytes(key))
    sig = kid.to_bytes(4, "big") + key.sign(raw)
    return f"{text}\n— {name} {base64.b64encode(sig).decode()}\n"


def _split(msg: bytes) -> tuple[bytes, list[tuple[bytes, str, int, str, bytes]]]:
    """The text and the parsed signature lines of a note, as Go's `note.Open` reads
    them: (line, name, key id, base64, signature) for each line."""
    try:
        _check_text(msg, "note")
    except UnicodeDecodeError:
        raise MalformedNoteError("malformed note: not valid UTF-8") from None
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise MalformedNoteError("malformed note: no blank line before the signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block or not block.endswith(b"\n"):
        raise MalformedNoteError("malformed note: the signature block must end with a newline")
    lines = block[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(
            f"malformed note: more than {MAX_SIGNATURES} signatures ({len(lines)})"
        )
    sigs = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError(
                f"malformed note: signature line {line.decode()!r} does not start with "
                "an em dash (U+2014) and a space"
            )
        name, _, b64 = line[len(_SIG_PREFIX) :].decode().partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if not is_valid_key_name(name) or not b64 or len(raw) < 5:
            raise MalformedNoteError(
                f"malformed note: bad signature line {line.decode()!r}: want "
                "'— <name> <base64 of key id and signature>'"
            )
        sigs.append((line, name, int.from_bytes(raw[:4], "big"), b64, raw[4:]))
    return text, sigs


def open_note(msg: str | bytes, verifiers: Sequence[str | Verifier]) -> Note:
    """Parse a signed note and check its signatures against the known `verifiers`
    (verifier key strings or `Verifier`s), as Go's `note.Open` does.

    Raises `MalformedNoteError` if the note is not in the format, and
    `NoteVerificationError` if a known key's signature fails or no known key signed."""
    raw = msg.encode() if isinstance(msg, str) else bytes(msg)
    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        parsed = parse_verifier_key(v) if isinstance(v, str) else v
        known.setdefault((parsed.name, parsed.key_id), []).append(parsed)
    text, lines = _split(raw)
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[bytes] = set()
    for line, name, kid, b64, sig in lines:
        candidates = known.get((name, kid))
        if candidates is None:
            if line not in seen_unverified:
                seen_unverified.add(line)
                unverified.append(NoteSignature(name=name, key_id=kid, base64=b64))
            continue
        if len(candidates) > 1:
            raise NoteVerificationError(
                f"ambiguous key {name}+{kid:08x}: given more than once among the verifiers"
            )
        if (name, kid) in seen:
            continue
        seen.add((name, kid))
        if not candidates[0].verify(text, sig):
            raise NoteVerificationError(
                f"invalid signature for key {name}+{kid:08x}: the note was altered "
                "after it was signed, or signed by another key with the same name and id"
            )
        verified.append(NoteSignature(name=name, key_id=kid, base64=b64))
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unverified)
        raise NoteVerificationError(
            f"note has no verifiable signatures: signed by {names}, none of them a key "
            "you gave"
        )
    return Note(text=text.decode(), sigs=verified, unverified_sigs=unverified)


def format_checkpoint(
    origin: str, size: int, root: bytes, extensions: Sequence[str] = ()
) -> str:
    """The text of a C2SP tlog checkpoint (newline-terminated, unsigned)."""
    if not origin or "\n" in origin:
        raise MalformedNoteError(f"a checkpoint origin must be one non-empty line: {origin!r}")
    if size < 0:
        raise MalformedNoteError(f"a tree size cannot be negative: {size}")
    if len(root) != 32:
        raise MalformedNoteError(f"a SHA-256 root is 32 bytes, not {len(root)}")
    for ext in extensions:
        if not ext or "\n" in ext:
            raise MalformedNoteError(f"an extension line must be non-empty, one line: {ext!r}")
    lines = [origin, str(size), base64.b64encode(root).decode(), *extensions]
    text = "\n".join(lines) + "\n"
    _check_text(text.encode(), "checkpoint")
    return text


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse the text of a checkpoint (the note text, not the signatures)."""
    if not text.endswith("\n"):
        raise MalformedNoteError("malformed checkpoint: the text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise MalformedNoteError(
            "malformed checkpoint: want at least three non-empty lines "
            "(origin, tree size, base64 root)"
        )
    origin, size_line, root_line, *extensions = lines
    if not _DECIMAL.fullmatch(size_line):
        raise MalformedNoteError(
            f"malformed checkpoint: tree size {size_line!r} is not a decimal number "
            "without leading zeroes"
        )
    try:
        root = base64.b64decode(root_line, validate=True)
    except (binascii.Error, ValueError):
        root = b""
    if len(root) != 32:
        raise MalformedNoteError(
            f"malformed checkpoint: root {root_line!r} is not the base64 of 32 bytes"
        )
    return Checkpoint(origin=origin, size=int(size_line), root=root, extensions=extensions)


def open_checkpoint(msg: str | bytes, verifiers: Sequence[str | Verifier]) -> Checkpoint:
    """Open a signed checkpoint (`open_note`) and parse its text (`parse_checkpoint`)."""
    return parse_checkpoint(open_note(msg, verifiers).text)


def split_note_text(msg: str) -> str:
    """The text of a note without checking its signatures (or all of `msg` if it has no
    signature block): for reading an unsigned checkpoint or one whose key you lack."""
    raw = msg.encode()
    if b"\n\n" not in raw:
        return msg
    return _split(raw)[0].decode()
