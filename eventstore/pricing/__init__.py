"""Prices, money and cost records.

`prices` holds the per-token prices (`ModelPrice`, the `PricingProvider` protocol, the
genai-prices dataset adapter `GenAIPrices`, a user's `PriceTable`) and `compute_cost`;
`money` the one exact Decimal context; `records` turns a priced call into a
`cost_recorded` event.
"""

from ..errors import InvalidPriceError, InvalidUsageError
from .prices import (
    CostBreakdown,
    GenAIPrices,
    ModelPrice,
    PriceTable,
    PricingProvider,
    compute_cost,
    default_pricing,
)

__all__ = [
    "CostBreakdown",
    "GenAIPrices",
    "InvalidPriceError",
    "InvalidUsageError",
    "ModelPrice",
    "PriceTable",
    "PricingProvider",
    "compute_cost",
    "default_pricing",
]
