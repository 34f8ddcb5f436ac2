"""Privacy: what never reaches the disk, and what can be erased from it.

`hooks` runs the redact hooks of the write path (fail closed); `pii` is the ready
`PIIRedactor`; `encryption` seals personal fields under per-user keys so that
`forget_user` can erase them from an append-only log (crypto-shredding); `retention`
expires them by period; `erasure` removes what was derived from erased content
(queued events, projection snapshots, overwritten pages); `urls` keeps passwords out of
messages.
"""

from .encryption import Encryption, generate_master_key
from .hooks import RedactHook
from .pii import PIIRedactor
from .retention import Retention, RetentionReport

__all__ = ["Encryption", "PIIRedactor", "RedactHook", "Retention", "RetentionReport",
           "generate_master_key"]
