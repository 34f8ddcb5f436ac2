"""Public import path of the redaction hooks (`eventstore.privacy.hooks`) and the
`PIIRedactor` (`eventstore.privacy.pii`)."""

from .privacy.hooks import RedactHook
from .privacy.pii import PIIRedactor

__all__ = ["PIIRedactor", "RedactHook"]
