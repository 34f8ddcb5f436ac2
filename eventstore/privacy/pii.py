"""A ready-made redact hook that finds personal data and secrets in events, offline.

`PIIRedactor` is a redact hook: a callable that takes an `Event` and returns a copy
whose ``data`` and ``metadata`` no longer hold the personal data it found. The store
runs its redact hooks before persisting, so only the redacted form is stored and only
the redacted form reaches subscribers::

    from eventstore.privacy.pii import PIIRedactor

    redactor = PIIRedactor()                              # every detector, "redact" action
    redactor.redact_text("mail jane@example.com")         # 'mail [EMAIL]'

    redactor = PIIRedactor(
        actions={"card": "mask", "email": "hash"},        # the rest keep action="redact"
        secret=b"a long random key from your secret store",
        fields=["data.content", "metadata"],
        default_region="GB",
    )
    redacted_event = redactor(event)                      # the same object if nothing found
    redactor.find("call +44 20 7946 0958")                # [Finding(kind='phone', ...)]

Detectors (``detectors=``, default all), in the order they claim text; a later detector
never rewrites a span that overlaps one an earlier detector claimed, which is what keeps
the phone matcher off card numbers, IBANs and IP addresses:

- ``secret``: API keys by their known prefixes (OpenAI ``sk-``/``sk-proj-``, Anthropic
  ``sk-ant-``, GitHub ``ghp_``/``gho_``/``ghs_``/``ghu_``/``ghr_``/``github_pat_``, AWS
  ``AKIA``/``ASIA``, Slack ``xox[abprs]-``, Google ``AIza``, Stripe ``sk_live_``/
  ``rk_live_`` and their ``_test_`` forms), JWTs (``eyJ...``, three base64url segments),
  the token after ``Bearer`` (so ``Authorization: Bearer <token>`` keeps its scheme) and
  PEM private key blocks, including a block cut off before its END line.
- ``email``: addresses with a dotted domain.
- ``iban``: upper-case IBANs, compact or in groups of four, that pass the ISO 13616
  mod-97 check and have their country's registered length.
- ``card``: 13-19 digit payment card numbers, compact or grouped with spaces or dashes,
  starting with 2-6 (the card networks' ranges) and passing the Luhn check.
- ``ip``: IPv4 dotted quads and IPv6 addresses that the `ipaddress` module accepts. A
  quad right after ``v``, ``version``, ``release`` or ``build`` is taken for a version.
- ``phone``: numbers Google's libphonenumber (`phonenumbers`) judges valid. International
  numbers (``+44 20 7946 0958``) are found whatever the region; national ones
  (``(415) 555-2671``) only for ``default_region`` (an ISO 3166 code, default ``"US"``;
  ``None`` finds international numbers only).

Actions (``action=`` for every detector, default ``"redact"``; ``actions=`` per detector):

- ``redact``: a typed placeholder: ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``,
  ``[IP]``, ``[SECRET]``.
- ``mask``: keep a hint: ``j***@example.com``; cards and phones keep their punctuation
  and last four digits (``**** **** **** 4242``); IBANs their country code and last four
  characters (``DE** **** **** **** **30 00``); IPv4 its /24 (``192.168.1.*``), IPv6 its
  /48 (``2001:db8:85a3:*``); secrets their known prefix (``sk-proj-…``, ``ghp_…``).
- ``none``: leave the text as it is, and count what was found in the event's
  ``metadata["pii_detected"]`` (``{"email": 1, "phone": 2}``): detection for audit,
  without redaction.
- ``hash``: ``[EMAIL:3f9a1c0d2b4e5f60]``, the first ``hash_length`` hex digits of an
  HMAC-SHA256 under ``secret``. The same value gives the same token wherever the same
  secret is used, so events stay joinable, yet the token cannot be reversed without the
  secret. Values are normalised first so that formatting does not change the token:
  e-mail lower-cased, cards digits only, IBANs compact upper-case, phones E.164, IPs in
  canonical form. ``hash`` needs ``secret`` (bytes or str).

Fields (``fields=``): ``None`` (the default) scans every string in ``data`` and
``metadata`` at any depth. Otherwise give dotted paths that start with ``data`` or
``metadata``; each selects the value there and everything below it. ``*`` stands for any
one key, and lists are transparent (a step applies to every element), so
``"data.messages.content"`` selects the ``content`` of every dict in the
``data["messages"]`` list. Keys that contain a dot cannot be addressed.

Everything the store's encoder accepts is searched: strings in dicts (their keys too),
lists, tuples, sets and frozensets, msgspec Structs, dataclasses, enum values, and bytes,
bytearray and memoryview (read as UTF-8). A container in which something was redacted is
handed on in the shape it is stored in: a list for a set, a dict for a Struct or
dataclass, bytes for a memoryview; a redacted dict key that collides with another gets a
``#2`` suffix, so no value is lost. Numbers, times, Decimals and UUIDs are left alone.

Speed: a detector first looks for what C-speed string searches can find (an ``@``, a
digit, a colon, a run of 16 key characters) and runs its pattern only there, so a 1 KB
message without personal data costs a few microseconds. `phonenumbers` is by far the
slowest part (tens of microseconds per candidate); it only sees short windows around
numbers long enough for the region, and never dates. Findings are kept in sorted arrays,
so a text with thousands of them costs n log n; an event with more than ``thread_above``
characters of text (default 32,768) is redacted on a worker thread by the store.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, TypeAlias, get_args
from uuid import UUID

import msgspec
import phonenumbers

from ..errors import RedactorConfigError
from ..events import Event

__all__ = ["ACTIONS", "DETECTED_KEY", "DETECTORS", "Action", "Finding", "Kind", "PIIRedactor"]

DETECTED_KEY: Final = "pii_detected"  # metadata key of what the "none" action found
THREAD_ABOVE: Final = 32_768  # characters of text in an event redacted off the event loop

Kind: TypeAlias = Literal["secret", "email", "iban", "card", "ip", "phone"]
Action: TypeAlias = Literal["mask", "redact", "hash", "none"]

# Precedence order: a detector only gets text no earlier detector claimed. Secrets come
# first because tokens hold arbitrary digit runs; IBAN before card because an IBAN's
# digits can pass Luhn; card and IP before phone because libphonenumber would otherwise
# read some of their digits as a phone number.
DETECTORS: Final[tuple[Kind, ...]] = get_args(Kind)
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)

_LABELS: Final[dict[str, str]] = {
    "secret": "SECRET",
    "email": "EMAIL",
    "iban": "IBAN",
    "card": "CARD",
    "ip": "IP",
    "phone": "PHONE",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data in a text: ``text[start:end] == value``."""

    kind: Kind
    start: int
    end: int
    value: str


# --- patterns ------------------------------------------------------------------------
#
# A regex scan costs tens of nanoseconds per character, far too much to run a dozen of
# them over every 1 KB message. So each detector starts from something C-speed string
# methods can find (an "@", a digit, a run of 16 key characters, a literal such as
# "PRIVATE KEY") and runs its pattern anchored there, on a few characters only.

_PEM: Final = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
    r".*?(?:-----END (?P=label)-----|\Z)",
    re.DOTALL,
)
# Matched at the start of a run of [A-Za-z0-9_-]: every key begins where such a run
# does. Alternatives are tried in order, so sk-ant- and sk-proj- win over sk-. Minimum
# lengths keep words such as "sk-learn" out; none is under 16, the run length searched for.
_KEY: Final = re.compile(
    r"sk-ant-[A-Za-z0-9_-]{20,}"
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{30,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9_-])"
    r"|xox[abprs]-[A-Za-z0-9-]{20,}"
    r"|AIza[A-Za-z0-9_-]{35}"
    r"|eyJ[A-Za-z0-9_-]{13,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"
)
_KEY_RUN: Final = b"k" * 16
_KEY_CHARS: Final = bytes(
    0x6B if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "_-") else 0x20 for i in range(256)
)
_BEARER: Final = re.compile(r"(?<![A-Za-z])[Bb]earer[ \t]+([A-Za-z0-9._~+/-]{16,}=*)")
_SECRET_PREFIX: Final = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    r"|sk-ant-|sk-(?:proj|svcacct|admin)-|sk-|[sr]k_(?:live|test)_|gh[pousr]_|github_pat_"
    r"|AKIA|ASIA|xox[abprs]-|AIza|eyJ"
)

_EMAIL_LOCAL: Final = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}$")
_EMAIL_DOMAIN: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)

_IBAN: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
_IBAN_HEAD: Final = b"AA00"
_IBAN_CHARS: Final = bytes(
    0x41 if 0x41 <= i <= 0x5A else 0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256)
)
# ISO 13616 registry lengths; a country missing here is still accepted at 15-34 chars.
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip

# A number with its inner punctuation: where cards, IPv4 addresses and phone numbers can
# be. Seven characters is the shortest of them ("1.2.3.4"); the pattern starts with a
# plain character class, which the regex engine scans for quickly.
_NUMBER_SEPS: Final = " -./()\u00a0\u2010\u2011\u2012\u2013\u2014\u2015"
_NUMBER: Final = re.compile(f"[0-9][0-9{re.escape(_NUMBER_SEPS)}]{{5,}}[0-9]")
_DROP_SEPS: Final = str.maketrans("", "", _NUMBER_SEPS)

# A run of digit groups joined by single spaces or dashes, and what may not touch a card
# number found in one: a word or a hyphenated word before or after it ("INV-...", "...-A")
# and a decimal point (3.14159...).
_DIGIT_RUN: Final = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGIT_GROUPS: Final = re.compile(r"[0-9]+")
_CARD_GLUED_BEFORE: Final = re.compile(r"(?:[\w.]|\w-)$")
_CARD_GLUED_AFTER: Final = re.compile(r"\w|-\w|[.,][0-9]")

_IPV4: Final = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![\w]|\.\d)")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_VERSION_BEFORE: Final = re.compile(r"(?:version|ver\.?|release|build)\s*$", re.IGNORECASE)
_IPV6: Final = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?:%[0-9A-Za-z]{1,16})?(?![\w:]|\.\d)"
)

# libphonenumber sees a window around each number: enough before to reject a number glued
# to a letter, enough after for an extension and for the ":30" that marks "2024-01-15 10"
# as a date and time.
_PHONE_BEFORE: Final = 8
_PHONE_AFTER: Final = 16
_PHONE_REGION: Final = 2_048  # the longest text shown to libphonenumber at once
_PHONE_DATE: Final = re.compile(
    r"(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})(?: \d{1,2})?"
)
_PHONE_GLUED_BEFORE: Final = re.compile(r"(?:\d|\w[-_/])$")
_PHONE_GLUED_AFTER: Final = re.compile(r"\d|[-_/]\w")
_LENIENCY: Final = phonenumbers.Leniency.VALID
_E164: Final = phonenumbers.PhoneNumberFormat.E164


def _has_digit(text: str) -> bool:
    # Ten memchr scans beat one regex scan by an order of magnitude; unrolled, because a
    # generator expression would cost more than the scans.
    return (
        "0" in text or "1" in text or "2" in text or "3" in text or "4" in text
        or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text
    )  # fmt: skip


# --- validators ------------------------------------------------------------------------


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    # int(c, 36) maps A..Z to 10..35, exactly the ISO 13616 letter substitution.
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# --- detectors: each yields (start, end) spans -------------------------------------------


class _Text:
    """A text being scanned, with what several detectors need computed at most once.

    `found` holds what earlier detectors claimed, in order of position, no two
    overlapping; `starts` and `ends` mirror it so that every question about it is a binary
    search: thousands of findings in one text cost n log n, never n squared.
    """

    __slots__ = ("_latin1", "_numbers", "ends", "found", "has_digit", "starts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.found: list[Finding] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.has_digit = _has_digit(text)
        self._latin1: bytes | None = None
        self._numbers: list[tuple[int, int]] | None = None

    def claim(self, kind: Kind, start: int, end: int) -> None:
        """Record text[start:end] as a finding unless it overlaps one already claimed."""
        i = bisect.bisect_right(self.starts, start)
        if (i > 0 and self.ends[i - 1] > start) or (i < len(self.starts)
                                                      and self.starts[i] < end):
            return
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        self.found.insert(i, Finding(kind, start, end, self.text[start:end]))

    def covered(self, lo: int, hi: int) -> bool:
        """True if one claimed finding spans all of [lo, hi)."""
        i = bisect.bisect_right(self.starts, lo) - 1
        return i >= 0 and self.ends[i] >= hi

    def touching(self, lo: int, hi: int) -> list[Finding]:
        """The claimed findings that overlap [lo, hi)."""
        i = bisect.bisect_right(self.ends, lo)
        j = bisect.bisect_left(self.starts, hi, lo=i)
        return self.found[i:j]

    def classes(self, table: bytes) -> bytes:
        """The text with each character replaced by its class in table, one byte each.

        Characters beyond Latin-1 become "?" (one byte each), so an index into the result
        is an index into the text.
        """
        if self._latin1 is None:
            self._latin1 = self.text.encode("latin-1", "replace")
        return self._latin1.translate(table)

    def numbers(self) -> list[tuple[int, int]]:
        """(start, end) of every number of seven or more characters, with its punctuation."""
        if self._numbers is None:
            self._numbers = (
                [m.span() for m in _NUMBER.finditer(self.text)] if self.has_digit else []
            )
        return self._numbers


def _find_secrets(t: _Text) -> Iterator[tuple[int, int]]:
    text = t.text
    if len(text) < 16:
        return
    keys = t.classes(_KEY_CHARS)
    pos = keys.find(_KEY_RUN)
    # Every key, and every real PEM body line, is a run of 16 or more key characters;
    # only a bearer token with dots or slashes in it may lack one.
    if pos >= 0 and "PRIVATE KEY" in text:
        for pem in _PEM.finditer(text):
            yield pem.span()
    while pos >= 0:
        start = keys.rfind(b" ", 0, pos) + 1
        end = keys.find(b" ", pos)
        end = len(keys) if end < 0 else end
        key = _KEY.match(text, start)
        if key is not None:
            yield key.span()
        pos = keys.find(_KEY_RUN, end)
    pos = text.find("earer")
    while pos > 0:
        bearer = _BEARER.match(text, pos - 1)
        if bearer is not None:
            start, end = bearer.span(1)
            while text[end - 1] == ".":  # a sentence's full stop
                end -= 1
            # A word after "bearer" in prose has no digit; a token almost always has one.
            if end - start >= 16 and _has_digit(text[start:end]):
                yield start, end
        pos = text.find("earer", pos + 5)


def _find_emails(t: _Text) -> Iterator[tuple[int, int]]:
    text = t.text
    at = text.find("@")
    while at > 0:
        local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)
        domain = _EMAIL_DOMAIN.match(text, at + 1) if local is not None else None
        if local is not None and domain is not None:
            yield local.start(), domain.end()
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)


def _find_ibans(t: _Text) -> Iterator[tuple[int, int]]:
    if not t.has_digit:
        return
    text = t.text
    heads = t.classes(_IBAN_CHARS)
    pos = heads.find(_IBAN_HEAD)
    while pos >= 0:
        m = _IBAN.match(text, pos)
        span = _iban_span(m) if m is not None else None
        if span is not None:
            yield span
            pos = heads.find(_IBAN_HEAD, span[1])
        else:
            pos = heads.find(_IBAN_HEAD, pos + 1)


def _iban_span(m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span()
    raw = m.group()
    compact = raw.replace(" ", "")
    want = _IBAN_LENGTHS.get(compact[:2])
    if want is None:
        if not 15 <= len(compact) <= 34:
            return None
    elif len(compact) != want:
        # The group pattern may have swallowed an upper-case word after the IBAN
        # ("... 7034 EURO"): cut at the registered length if a group ends there.
        if len(compact) < want:
            return None
        cut = _nth_char_end(raw, want)
        if raw[cut] != " ":
            return None
        end = start + cut
        compact = compact[:want]
    return (start, end) if _iban_ok(compact) else None


def _nth_char_end(raw: str, n: int) -> int:
    """The index just after the n-th non-space character of raw."""
    seen = 0
    for i, ch in enumerate(raw):
        if ch != " ":
            seen += 1
            if seen == n:
                return i + 1
    return len(raw)


def _find_cards(t: _Text) -> Iterator[tuple[int, int]]:
    text = t.text
    for lo, hi in t.numbers():
        if hi - lo < 13:
            continue
        for run in _DIGIT_RUN.finditer(text, lo, hi):
            if run.end() - run.start() >= 13:
                yield from _card_spans(text, run)


def _card_spans(text: str, run: re.Match[str]) -> Iterator[tuple[int, int]]:
    """The card numbers in a run of digit groups, longest first from the left.

    A run can hold more than a card ("+44 20 7946 0958 4242 4242 4242 4242" is one run),
    so every stretch of whole groups with 13-19 digits is a candidate.
    """
    groups = [m.span() for m in _DIGIT_GROUPS.finditer(text, run.start(), run.end())]
    i = 0
    while i < len(groups):
        best = -1
        digits = 0
        for j in range(i, len(groups)):
            digits += groups[j][1] - groups[j][0]
            if digits > 19:
                break
            if digits >= 13 and _is_card(text, groups[i : j + 1]):
                start, end = groups[i][0], groups[j][1]
                if _CARD_GLUED_BEFORE.search(text, max(0, start - 2), start):
                    break  # no later end can fix the start
                if _CARD_GLUED_AFTER.match(text, end):
                    continue
                best = j
        if best < 0:
            i += 1
        else:
            yield groups[i][0], groups[best][1]
            i = best + 1


def _is_card(text: str, groups: list[tuple[int, int]]) -> bool:
    # Issuer ranges start with 2-6. Excluding 1 also keeps 13-digit millisecond
    # timestamps out, a tenth of which would pass Luhn.
    if text[groups[0][0]] not in "23456":
        return False
    # Printed cards group digits in threes to sixes; "1 2 3 4 ..." is a list.
    if len(groups) > 1 and any(not 3 <= e - s <= 6 for s, e in groups):
        return False
    return _luhn_ok("".join(text[s:e] for s, e in groups))


def _ipv6_span(text: str, start: int) -> tuple[int, int] | None:
    m = _IPV6.match(text, start)
    if m is None:
        return None
    raw = m.group()
    # Hex-only words around "::" are C++ or Rust paths far more often than IPs.
    if not _has_digit(raw):
        return None
    end = m.end()
    if raw.endswith(":") and not raw.endswith("::"):
        raw = raw.rstrip(":")  # "... at fe80::1: then"
        end = start + len(raw)
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return None
    return start, end


def _find_ips(t: _Text) -> Iterator[tuple[int, int]]:
    text = t.text
    # IPv6 first: its IPv4 tail (::ffff:192.0.2.1) must not be claimed on its own. Every
    # IPv6 address has two colons at most five characters apart, and its first colon
    # comes at most four hex digits after its start.
    pos = text.find(":")
    while pos >= 0:
        nxt = text.find(":", pos + 1)
        if nxt < 0:
            break
        if nxt - pos > 5:
            pos = nxt
            continue
        start = pos
        while start > 0 and pos - start < 4 and text[start - 1] in _HEX:
            start -= 1
        span = _ipv6_span(text, start)
        if span is None:
            pos = nxt
            continue
        yield span
        pos = text.find(":", span[1])
    for lo, hi in t.numbers():
        if text.count(".", lo, hi) < 3:
            continue
        for m in _IPV4.finditer(text, lo, hi + 1):
            start = m.start()
            if _VERSION_BEFORE.search(text, max(0, start - 12), start):
                continue
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            yield m.span()


# --- the hook ----------------------------------------------------------------------------


@dataclass(slots=True)
class _PathNode:
    """One step of the compiled ``fields`` paths."""

    whole: bool = False
    children: dict[str, _PathNode] = field(default_factory=dict)
    star: _PathNode | None = None


_Nodes: TypeAlias = tuple[_PathNode, ...]


class PIIRedactor:
    """A redact hook that replaces personal data and secrets in an event's strings.

    See the module docstring for the detectors, actions and the ``fields`` syntax.

    Args:
        detectors: the detectors to run (``"secret"``, ``"email"``, ``"iban"``,
            ``"card"``, ``"ip"``, ``"phone"``); default all.
        action: the action of every detector not named in ``actions``.
        actions: per-detector actions, e.g. ``{"card": "mask", "email": "hash"}``.
        secret: the HMAC key of the ``hash`` action (required if any action is ``hash``).
        fields: dotted paths to scan; default every string of ``data`` and ``metadata``.
        default_region: the region whose national phone formats are recognised.
        hash_length: hex digits kept of each HMAC (8-64).
        thread_above: events with more characters of text than this are redacted on a
            worker thread, so a long paste never stalls the event loop.

    Raises:
        RedactorConfigError: (an EventStoreError and a ValueError) on an unknown
            detector, action, field path or region, or ``hash`` without a secret.
    """

    # It returns a changed copy, never edits an event in place: the store may skip
    # re-validating an event it hands back unchanged (see eventstore.redaction).
    copies_on_write: Final = True

    def __init__(
        self,
        *,
        detectors: Collection[str] | None = None,
        action: Action = "redact",
        actions: Mapping[str, Action] | None = None,
        secret: bytes | str | None = None,
        fields: Iterable[str] | None = None,
        default_region: str | None = "US",
        hash_length: int = 16,
        thread_above: int = THREAD_ABOVE,
    ) -> None:
        enabled = set(DETECTORS if detectors is None else detectors)
        unknown = enabled - set(DETECTORS)
        if unknown:
            raise RedactorConfigError(
                f"unknown PII detector(s) {sorted(unknown)}; choose from {list(DETECTORS)}"
            )
        actions = dict(actions or {})
        unknown = set(actions) - set(DETECTORS)
        if unknown:
            raise RedactorConfigError(
                f"actions= names unknown detector(s) {sorted(unknown)}; "
                f"choose from {list(DETECTORS)}"
            )
        for name, act in [("action", action), *actions.items()]:
            if act not in ACTIONS:
                raise RedactorConfigError(
                    f"unknown action {act!r} for {name}; choose from {ACTIONS}")
        self._actions: dict[str, Action] = {k: actions.get(k, action) for k in DETECTORS}
        if "hash" in (action, *actions.values()):
            if not secret:
                raise RedactorConfigError(
                    "the 'hash' action needs secret= (bytes or str): the HMAC key that "
                    "makes tokens stable across stores and irreversible without it"
                )
        if not 8 <= hash_length <= 64:
            raise RedactorConfigError(f"hash_length must be between 8 and 64, not {hash_length}")
        self._hash_length = hash_length
        if not isinstance(thread_above, int) or thread_above < 0:
            raise RedactorConfigError(
                f"thread_above must be a number of characters >= 0, not {thread_above!r}")
        self.thread_above = thread_above
        key = secret.encode() if isinstance(secret, str) else secret
        # Keyed once here; each token copies this state instead of re-keying.
        self._hmac = hmac.new(key, digestmod=hashlib.sha256) if key else None

        if default_region is not None:
            default_region = default_region.upper()
            if default_region not in phonenumbers.SUPPORTED_REGIONS:
                raise RedactorConfigError(
                    f"default_region {default_region!r} is not a region phonenumbers "
                    "knows; pass an ISO 3166-1 alpha-2 code such as 'US' or 'DE', or None"
                )
        self._region = default_region or "ZZ"
        # Fewer digits than the region's shortest national number cannot be one unless
        # written with "+"; skipping them keeps dates and order numbers away from the
        # slow matcher. Without a region only "+" numbers are possible.
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(self._region)
        general = metadata.general_desc if metadata is not None else None
        lengths = general.possible_length if general is not None else None
        self._min_national = min(lengths) if lengths else 10**9

        table: dict[str, Callable[[_Text], Iterable[tuple[int, int]]]] = {
            "secret": _find_secrets,
            "email": _find_emails,
            "iban": _find_ibans,
            "card": _find_cards,
            "ip": _find_ips,
            "phone": self._find_phones,
        }
        self._detectors = [(kind, table[kind]) for kind in DETECTORS if kind in enabled]
        self._enabled = frozenset(enabled)

        self._data_root: _Nodes | None
        self._meta_root: _Nodes | None
        if fields is None:
            self._data_root = self._meta_root = (_PathNode(whole=True),)
        else:
            self._data_root, self._meta_root = _compile_fields(fields)

    def __repr__(self) -> str:
        # The secret stays out of reprs, and so out of logs and tracebacks.
        acts = {k: v for k, v in self._actions.items() if k in self._enabled}
        return f"PIIRedactor(actions={acts}, region={self._region!r})"

    # --- the hook ----------------------------------------------------------------------

    def __call__(self, event: Event) -> Event:
        """Return a copy of event with personal data replaced, or event itself if none.

        With the ``none`` action the text stays as it is and the kinds found are counted
        in ``metadata["pii_detected"]`` (e.g. ``{"email": 2}``), for audit.
        """
        seen: dict[str, int] = {}
        data = event.data
        metadata = event.metadata
        if self._data_root is not None:
            data = self._walk(data, self._data_root, seen)
        if self._meta_root is not None:
            metadata = self._walk(metadata, self._meta_root, seen)
        if seen:
            metadata = {**metadata, DETECTED_KEY: dict(sorted(seen.items()))}
        if data is event.data and metadata is event.metadata:
            return event
        return msgspec.structs.replace(event, data=data, metadata=metadata)

    def prefers_thread(self, event: Event) -> bool:
        """True when the event holds so much text that redacting it on the event loop
        would stall every other task: the store then runs this hook on a worker thread."""
        budget = [self.thread_above]
        return _exceeds(event.data, budget) or _exceeds(event.metadata, budget)

    def _walk(self, value: Any, nodes: _Nodes, seen: dict[str, int]) -> Any:
        """value with its selected strings redacted; value itself when nothing changed."""
        for node in nodes:
            if node.whole:
                return self._walk_all(value, seen)
        value = _expanded(value)
        if isinstance(value, dict):
            out: dict[Any, Any] | None = None
            for k, v in value.items():
                key = k if isinstance(k, str) else str(k)
                sub = tuple(
                    c for n in nodes for c in (n.children.get(key), n.star) if c is not None
                )
                if not sub:
                    continue
                nv = self._walk(v, sub, seen)
                if nv is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = nv
            return value if out is None else out
        if isinstance(value, list | tuple):
            return _walk_seq(value, lambda v: self._walk(v, nodes, seen))
        return value

    def _walk_all(self, value: Any, seen: dict[str, int]) -> Any:
        kind = type(value)
        if kind is str:
            return self._redact(value, seen)
        if kind is dict:
            return self._walk_dict(value, seen)
        if kind is list or kind is tuple:
            return _walk_seq(value, lambda v: self._walk_all(v, seen))
        if kind in _PLAIN:
            return value
        # What the encoder also accepts: every container is walked, so nothing reaches
        # storage that the detectors did not see. A changed one comes back in the JSON
        # shape it is stored in (a list for a set, a dict for a Struct or dataclass).
        if isinstance(value, str):  # a str subclass, e.g. a StrEnum member
            redacted = self._redact(value, seen)
            return value if redacted == value else redacted
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            text = raw.decode("utf-8", "surrogateescape")
            redacted = self._redact(text, seen)
            if redacted is text:
                return value
            return redacted.encode("utf-8", "surrogateescape")
        if isinstance(value, enum.Enum):
            inner = self._walk_all(value.value, seen)
            return value if inner is value.value else inner
        expanded = _expanded(value)
        if expanded is not value:
            walked = self._walk_all(expanded, seen)
            return value if walked is expanded else walked
        return value

    def _walk_dict(self, value: dict[Any, Any], seen: dict[str, int]) -> dict[Any, Any]:
        out: dict[Any, Any] | None = None
        for k, v in value.items():
            nv = self._walk_all(v, seen)
            nk = k if type(k) in _PLAIN else self._walk_all(k, seen)
            if nv is not v or nk is not k:
                if out is None:
                    out = {}
                    for done, done_value in value.items():  # the keys before this one
                        if done is k:
                            break
                        out[done] = done_value
                if nk is not k:
                    nk = _free_key(out, value, nk)
                out[nk] = nv
            elif out is not None:
                out[k] = v
        return value if out is None else out

    # --- text ------------------------------------------------------------------------

    def find(self, text: str) -> list[Finding]:
        """The personal data in text, in order of position, no two overlapping."""
        # The shortest finding of any kind but IPv6 ("::1") has six characters (a@b.io).
        if len(text) < 6 and (len(text) < 2 or ":" not in text):
            return []
        scan = _Text(text)
        for kind, detect in self._detectors:
            for start, end in detect(scan):
                scan.claim(kind, start, end)
        return scan.found

    def redact_text(self, text: str) -> str:
        """text with every finding replaced by its detector's action; text if none."""
        return self._redact(text, {})

    def _redact(self, text: str, seen: dict[str, int]) -> str:
        findings = self.find(text)
        if not findings:
            return text
        parts: list[str] = []
        pos = 0
        for f in findings:
            if self._actions[f.kind] == "none":
                seen[f.kind] = seen.get(f.kind, 0) + 1
                continue
            parts.append(text[pos : f.start])
            parts.append(self._render(f))
            pos = f.end
        if pos == 0:
            return text
        parts.append(text[pos:])
        return "".join(parts)

    def _find_phones(self, t: _Text) -> Iterator[tuple[int, int]]:
        text = t.text
        n = len(text)
        # Windows that overlap are merged so that libphonenumber never sees a number cut
        # in two; numbers that cannot be a phone number here are never shown to it.
        regions: list[tuple[int, int]] = []
        previous_end = 0  # where the last number shown to libphonenumber ends
        for lo, hi in t.numbers():
            # A card, IBAN or IP address found earlier is no phone number: libphonenumber
            # would only be shown underscores (see below), at the price of a full parse.
            if t.covered(lo, hi):
                continue
            # Without a "+" the number is in national format, so it must be long enough
            # for the region and not a date.
            if hi - lo < self._min_national and not text.endswith(("+", "+("), max(0, lo - 2), lo):
                continue
            if _PHONE_DATE.fullmatch(text, lo, hi) is not None:
                continue
            if len(text[lo:hi].translate(_DROP_SEPS)) < 7:
                continue
            number_start, number_end = lo, hi
            lo = max(0, lo - _PHONE_BEFORE)
            hi = min(n, hi + _PHONE_AFTER)
            while 0 < lo and text[lo].isdigit() and text[lo - 1].isdigit():
                lo -= 1
            while hi < n and text[hi - 1].isdigit() and text[hi].isdigit():
                hi += 1
            if regions and lo <= regions[-1][1]:
                if hi - regions[-1][0] <= _PHONE_REGION:
                    regions[-1] = (regions[-1][0], hi)
                    previous_end = number_end
                    continue
                # libphonenumber's matcher slows down more than linearly on long texts: a
                # long list of numbers is cut between two of them instead, so no number
                # is cut in two (the earlier region stops where this number begins).
                cut = number_start
                while cut > previous_end and text[cut - 1] in "+( ":  # its "+" goes with it
                    cut -= 1
                regions[-1] = (regions[-1][0], cut)
                lo = max(lo, cut)
            regions.append((lo, hi))
            previous_end = number_end
        for lo, hi in regions:
            # libphonenumber reads a number on into the digits of an adjacent card or IP
            # and then rejects the lot; it stops at underscores.
            pieces: list[str] = []
            at = lo
            for f in t.touching(lo, hi):
                a, b = max(f.start, lo), min(f.end, hi)
                pieces.append(text[at:a])
                pieces.append("_" * (b - a))
                at = b
            pieces.append(text[at:hi])
            window = "".join(pieces)
            for m in phonenumbers.PhoneNumberMatcher(window, self._region, _LENIENCY):
                start, end = lo + m.start, lo + m.end
                # A match that cuts a digit run in two is part of a longer number, and
                # one hyphenated to a word is part of an id ("INV-2024-000123").
                if _PHONE_GLUED_BEFORE.search(text, max(0, start - 2), start) or (
                    _PHONE_GLUED_AFTER.match(text, end)
                ):
                    continue
                # libphonenumber rejects "2024-01-15 10" only when it sees the ":30" next.
                if _PHONE_DATE.match(m.raw_string) is not None:
                    continue
                # A list of small numbers ("1 2 3 4 5 6 7 8 9 10") can spell a valid
                # number; real phone numbers rarely have more than two 1-digit groups.
                groups = _DIGIT_GROUPS.findall(m.raw_string)
                if sum(len(g) == 1 for g in groups) > 2:
                    continue
                yield start, end

    # --- rendering ---------------------------------------------------------------------

    def _render(self, f: Finding) -> str:
        act = self._actions[f.kind]
        if act == "redact":
            return f"[{_LABELS[f.kind]}]"
        if act == "hash":
            assert self._hmac is not None  # the constructor refuses hash without a secret
            mac = self._hmac.copy()
            mac.update(f"{f.kind}\0{self._normalise(f)}".encode())
            return f"[{_LABELS[f.kind]}:{mac.hexdigest()[: self._hash_length]}]"
        return _mask(f)

    def _normalise(self, f: Finding) -> str:
        value = f.value
        if f.kind == "email":
            return value.lower()
        if f.kind == "card":
            return "".join(c for c in value if c.isdigit())
        if f.kind == "iban":
            return value.replace(" ", "").upper()
        if f.kind == "phone":
            try:
                number = phonenumbers.parse(value, self._region)
            except phonenumbers.NumberParseException:
                return "".join(c for c in value if c.isdigit())
            return phonenumbers.format_number(number, _E164)
        if f.kind == "ip":
            return str(ipaddress.ip_address(value.split("%", 1)[0]))
        return value


_PLAIN: Final = frozenset({int, float, bool, type(None), Decimal, datetime, date, time,
                           timedelta, UUID})


def _expanded(value: Any) -> Any:
    """The JSON shape the encoder gives a set, Struct or dataclass; anything else as is."""
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, msgspec.Struct):
        return msgspec.structs.asdict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def _walk_seq(value: list[Any] | tuple[Any, ...], fn: Callable[[Any], Any]) -> Any:
    out: list[Any] | None = None
    for i, v in enumerate(value):
        nv = fn(v)
        if nv is not v:
            if out is None:
                out = list(value)
            out[i] = nv
    if out is None:
        return value
    return out if isinstance(value, list) else tuple(out)


def _free_key(out: dict[Any, Any], original: dict[Any, Any], key: Any) -> Any:
    """A redacted dict key that collides with another gets a suffix: nothing is lost."""
    if key not in out and key not in original:
        return key
    n = 2
    while f"{key}#{n}" in out or f"{key}#{n}" in original:
        n += 1
    return f"{key}#{n}"


def _exceeds(value: Any, budget: list[int]) -> bool:
    """Whether the strings in value are longer, together, than budget[0] characters."""
    if isinstance(value, str | bytes | bytearray):
        budget[0] -= len(value)
        return budget[0] < 0
    if isinstance(value, dict):
        return any(_exceeds(k, budget) or _exceeds(v, budget) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_exceeds(v, budget) for v in value)
    return False


def _mask(f: Finding) -> str:
    value = f.value
    if f.kind == "email":
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if f.kind in ("card", "phone"):
        return _mask_chars(value, str.isdigit, keep_head=0, keep_tail=4)
    if f.kind == "iban":
        return _mask_chars(value, str.isalnum, keep_head=2, keep_tail=4)
    if f.kind == "ip":
        if ":" not in value:
            return value.rsplit(".", 1)[0] + ".*"
        groups = ipaddress.IPv6Address(value.split("%", 1)[0]).exploded.split(":")[:3]
        return ":".join(g.lstrip("0") or "0" for g in groups) + ":*"
    m = _SECRET_PREFIX.match(value)
    return (m.group() if m else "") + "…"


def _mask_chars(value: str, pick: Callable[[str], bool], *, keep_head: int, keep_tail: int) -> str:
    total = sum(1 for c in value if pick(c))
    out: list[str] = []
    seen = 0
    for c in value:
        if pick(c):
            seen += 1
            if keep_head < seen <= total - keep_tail:
                c = "*"
        out.append(c)
    return "".join(out)


def _compile_fields(fields: Iterable[str]) -> tuple[_Nodes | None, _Nodes | None]:
    roots = {"data": _PathNode(), "metadata": _PathNode()}
    used: set[str] = set()
    for path in [fields] if isinstance(fields, str) else fields:
        parts = path.split(".")
        if parts[0] not in roots or any(not p for p in parts):
            raise RedactorConfigError(
                f"invalid field path {path!r}: use dotted keys starting with 'data' or "
                "'metadata', with '*' for any key (e.g. 'data.content', 'metadata.*')"
            )
        used.add(parts[0])
        node = roots[parts[0]]
        for part in parts[1:]:
            if node.whole:
                break
            if part == "*":
                node.star = node.star or _PathNode()
                node = node.star
            else:
                node = node.children.setdefault(part, _PathNode())
        node.whole = True
    if not used:
        raise RedactorConfigError("fields= is empty; pass None to scan all of data and metadata")
    data = (roots["data"],) if "data" in used else None
    meta = (roots["metadata"],) if "metadata" in used else None
    return data, meta
