"""Loading the Ed25519 key a store signs its checkpoints with.

Accepted: the raw 32-byte private key (the RFC 8032 seed), a PEM private key (PKCS#8,
as `openssl genpkey -algorithm ed25519` writes it) as bytes or str, an
`Ed25519PrivateKey`, or, when none is given, the `EVENTSTORE_SIGNING_KEY` environment
variable holding PEM text or the standard base64 of the raw 32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eventstore.integrity.errors import SigningKeyError

__all__ = ["SIGNING_KEY_ENV", "SigningKeyInput", "load_signing_key", "public_key_bytes"]

SIGNING_KEY_ENV = "EVENTSTORE_SIGNING_KEY"

SigningKeyInput = Ed25519PrivateKey | bytes | str
"""What `signing_key=` takes: a key object, raw 32 bytes, or PEM (bytes or str); a str
that is not PEM is read as the base64 of the raw 32 bytes."""

_PEM_MARK = b"-----BEGIN"
_HOWTO = (
    "give an unencrypted Ed25519 private key: the raw 32 bytes, PEM "
    "(`openssl genpkey -algorithm ed25519`), or the base64 of the raw 32 bytes"
)


def load_signing_key(
    key: SigningKeyInput | None = None, *, environ: Mapping[str, str] | None = None
) -> Ed25519PrivateKey | None:
    """The signing key from `key`, else from `EVENTSTORE_SIGNING_KEY` (read from `environ`,
    default `os.environ`); None when neither is set (checkpoints are then unsigned).

    Raises `SigningKeyError` for anything that is not an unencrypted Ed25519 private key.
    """
    if key is None:
        env = os.environ if environ is None else environ
        text = env.get(SIGNING_KEY_ENV, "").strip()
        if not text:
            return None
        return _from_text(text, source=f"${SIGNING_KEY_ENV}")
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, str):
        return _from_text(key.strip(), source="signing_key")
    if isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
        if raw.lstrip().startswith(_PEM_MARK):
            return _from_pem(raw, source="signing_key")
        if len(raw) == 32:
            return Ed25519PrivateKey.from_private_bytes(raw)
        raise SigningKeyError(
            f"signing_key is {len(raw)} bytes, neither PEM nor a raw 32-byte Ed25519 "
            f"key; {_HOWTO}"
        )
    raise SigningKeyError(f"signing_key is a {type(key).__name__}; {_HOWTO}")


def _from_text(text: str, *, source: str) -> Ed25519PrivateKey:
    if text.startswith(_PEM_MARK.decode()):
        return _from_pem(text.encode(), source=source)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError(f"{source} is neither PEM nor base64; {_HOWTO}") from None
    if len(raw) != 32:
        raise SigningKeyError(
            f"{source} decodes from base64 to {len(raw)} bytes, not the 32 of a raw "
            f"Ed25519 key; {_HOWTO}"
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def _from_pem(data: bytes, *, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(
            f"{source} is an encrypted PEM key; decrypt it first "
            "(`openssl pkey -in key.pem -out plain.pem`) and keep the plain key secret"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"{source} is not a readable PEM private key ({exc}); {_HOWTO}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"{source} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key: "
            f"checkpoints are signed with Ed25519 only (C2SP signed-note type 0x01); {_HOWTO}"
        )
    return key


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte RFC 8032 encoding of the key's public half."""
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
