"""Money: one exact Decimal context and one parser of stored cost fields.

Costs are `decimal.Decimal` end to end. Every sum and product of money goes through
`EXACT`, whatever decimal context the calling task has set (a display-oriented
`getcontext().prec = 6` elsewhere in the app must not make a live projection disagree
with a rebuilt one, nor a price lose a digit). With the maximum precision and Inexact
trapped, an operation either is exact or raises: no digit is ever dropped silently (the
default context keeps only 28).
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any, Final

__all__ = ["EXACT", "ZERO", "add_money", "cost_or_none", "parse_money"]

EXACT: Final = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow],
)
ZERO: Final = Decimal(0)
add_money = EXACT.add

# A cost above 1e30 is garbage, and refusing it keeps every sum far from overflow.
_MAX_ADJUSTED = 30

# Several projections read the same cost field of the same event one after the other; a
# one-entry memo turns the second parse (a third of a microsecond) into a string compare.
# Decimals are immutable, and the entry is replaced as one tuple, so sharing it is safe.
_last_money: tuple[str, Decimal] = ("0", ZERO)


def parse_money(value: Any) -> Decimal:
    """A finite Decimal from a stored cost field (a decimal string; a Decimal is taken as
    is). Anything else raises TypeError or ValueError: the one policy for a malformed
    cost, which callers turn into "skipped" (projections) or "not a cost" (displays)."""
    global _last_money
    if type(value) is str:
        last = _last_money
        if value == last[0]:
            return last[1]
        try:
            money = Decimal(value)
        except decimal.InvalidOperation:
            raise ValueError(f"cost {value!r} is not a decimal number") from None
    elif type(value) is Decimal:
        money = value
    else:
        # A float would carry binary rounding into money sums; an int is not what the
        # cost_recorded contract writes either.
        raise TypeError(f"a cost must be a decimal string, not {type(value).__name__}")
    if not money.is_finite() or money.adjusted() > _MAX_ADJUSTED:
        raise ValueError(f"cost {value!r} is not a sensible finite amount")
    if type(value) is str:
        _last_money = (value, money)
    return money


def cost_or_none(value: Any) -> Decimal | None:
    """`parse_money(value)`, or None where the value is not a cost."""
    try:
        return parse_money(value)
    except (TypeError, ValueError):
        return None
