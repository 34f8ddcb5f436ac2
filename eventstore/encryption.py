"""Public import path of crypto-shredding (`eventstore.privacy.encryption`)."""

from .privacy.encryption import (
    DEFAULT_ENV,
    DEFAULT_FIELDS,
    ENVELOPE_PREFIX,
    ERASED,
    Encryption,
    EncryptionError,
    generate_master_key,
)

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_FIELDS",
    "ENVELOPE_PREFIX",
    "ERASED",
    "Encryption",
    "EncryptionError",
    "generate_master_key",
]
