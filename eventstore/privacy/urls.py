"""Store URLs as they may appear in messages: never with a password in them.

Error messages end up in logs, terminals and bug reports, so every message that quotes a
store URL quotes `safe_url(url)`: the password of the user-info part and the values of
query options that carry credentials are replaced by `***`. It works on the text alone, so
a URL too malformed to parse (a typo in the scheme, an unbalanced bracket) is masked too.
"""

from __future__ import annotations

import re

__all__ = ["safe_url"]

MASK = "***"
# From "://" to the last "@" before the query: a password may hold "@" and even "/".
_USERINFO = re.compile(r"(?<=://)([^?#]*)@")
# libpq / asyncpg connection options whose values are credentials
_SECRET_OPTION = re.compile(r"([?&](?:password|passfile|sslpassword|sslkey|token)=)[^&#]*",
                            re.IGNORECASE)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match.group(1).partition(":")
    return f"{user}:{MASK}@" if colon else match.group(0)


def safe_url(url: object) -> str:
    """`url` with its password and credential options masked (a repr for non-strings)."""
    if not isinstance(url, str):
        return repr(url)
    return _SECRET_OPTION.sub(rf"\1{MASK}", _USERINFO.sub(_mask_userinfo, url, count=1))
