"""genai-prices' `calc_price`, with what depends only on the model's price done once.

`calc_price` takes about half a millisecond a call, nearly all of it re-deriving what
depends on the price alone: which units the price covers, that they are consistent
(ancestor and join coverage), the order its usage decomposes in, and, for every priced
key the usage leaves out, whether the reported keys imply it (they never change between
two calls with the same shape of usage). Here that is derived once per price (and per
shape of usage) and cached; each call still runs `calc_price`'s steps in its order on
the call's numbers: the model lookup (`find_provider_model`, on the current snapshot),
the price for the call's time and context (`get_prices`), the leaf decomposition (each
priced count less its priced descendants', in `compute_leaf_values`' order, on ints)
and the library's per-unit arithmetic (`calc_unit_price`), summed in the same order in
the same decimal context. So a cost is
the very Decimal `calc_price` gives; tests compare the two over every model of the
dataset.

Whatever is off that path goes to `calc_price` itself, which then gives its own answer
or its own error: a usage value that is not an int, a key or price the library would
warn about or reject, a usage it would refuse, groq's whisper minimum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from genai_prices import types as gp_types
    from genai_prices.units import UnitDef, UnitRegistry

__all__ = ["Calculated", "calculate"]

_LIMIT: Final = 4_096  # cached prices / usage shapes; cleared when full
_REQUESTS: Final = "requests"


@dataclass(frozen=True, slots=True)
class Calculated:
    """What eventstore keeps of a price calculation."""

    input_price: Decimal
    output_price: Decimal
    total_price: Decimal
    provider_id: str
    model_id: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """One model price, checked and ready: `calc_price`'s per-price work, done once."""

    price: Any  # the genai-prices ModelPrice, kept so the ids in its cache key stay valid
    # (usage key, price, per, direction) in the order calc_price sums them
    units: tuple[tuple[str, Any, int, str | None], ...]
    leaf_keys: frozenset[str]  # the priced usage keys that decompose (all but requests)
    # compute_leaf_values' order (most specific first) and each key's priced descendants
    leaves: tuple[tuple[str, tuple[str, ...]], ...]
    tiered: bool  # a tiered price needs the total input tokens


class _Calculator:
    def __init__(self) -> None:
        self._registry: UnitRegistry | None = None
        self._reported: frozenset[str] = frozenset()
        self._plans: dict[tuple[tuple[str, int], ...], _Plan | None] = {}
        # (usage key, the reported keys that are > 0) -> what the usage implies for it
        # (always 0 when it does not raise), or None when the library raises for it
        self._implied: dict[tuple[str, frozenset[str]], int | None] = {}
        # (provider id, model id) -> whether the model is one of the provider's own
        self._own: dict[tuple[int, int], bool] = {}

    def registry(self) -> UnitRegistry:
        if self._registry is None:
            from genai_prices.data_units import unit_data
            from genai_prices.units import UnitRegistry

            # the same registry genai-prices builds from the same bundled unit data
            self._registry = UnitRegistry(unit_data)
            self._reported = frozenset(k for k in self._registry.units if k != _REQUESTS)
        return self._registry

    def calculate(self, values: Mapping[str, int | Decimal], model_ref: str,
                  provider_id: str, at: datetime,
                  context: Mapping[str, str] | None) -> Calculated:
        """The cost `calc_price(Usage(**values), model_ref, provider_id=provider_id,
        genai_request_timestamp=at, price_context=context)` gives; its errors too."""
        fast = self._fast(values, model_ref, provider_id, at, context)
        if fast is not None:
            return fast
        import genai_prices

        calc = genai_prices.calc_price(
            genai_prices.Usage(**values), model_ref=model_ref, provider_id=provider_id,
            genai_request_timestamp=at, price_context=dict(context) if context else None)
        return Calculated(calc.input_price, calc.output_price, calc.total_price,
                          calc.provider.id, calc.model.id)

    def _fast(self, values: Mapping[str, int | Decimal], model_ref: str, provider_id: str,
              at: datetime, context: Mapping[str, str] | None) -> Calculated | None:
        registry = self.registry()
        for key, value in values.items():
            if type(value) is not int or value < 0 or key not in self._reported:
                return None
        from genai_prices import data_snapshot

        try:
            provider, model = data_snapshot.get_snapshot().find_provider_model(
                model_ref, None, provider_id, None)
        except LookupError:
            return None
        if provider.id == "groq" and model.id.startswith("whisper"):
            return None
        price_context = dict(context) if context else None
        if price_context and not self._is_own(provider, model):
            model_price = model.get_prices(at)
        else:
            model_price = model.get_prices(at, price_context)
        plan = self._plan(model_price, registry)
        if plan is None:
            return None

        positive = frozenset(k for k, v in values.items() if v > 0)
        view: dict[str, int] = {}
        needed = plan.leaf_keys | {"input_tokens"} if plan.tiered else plan.leaf_keys
        ints: Mapping[str, int] = values  # type: ignore[assignment]  # checked above
        for key in needed:
            count = ints.get(key)
            if count is None:
                count = self._implied_value(key, positive, ints)
                if count is None:
                    return None
            view[key] = count
        from genai_prices.types import calc_unit_price

        # compute_leaf_values on ints: each unit's count less its priced descendants'
        counts: dict[str, Any] = {}
        for key, descendants in plan.leaves:
            leaf = view[key] - sum(counts[d] for d in descendants)
            if leaf < 0:
                return None  # a usage the library refuses: let it say why
            counts[key] = leaf
        if any(key == _REQUESTS for key, _, _, _ in plan.units):
            counts[_REQUESTS] = 1
        total_input = view["input_tokens"] if plan.tiered else 0
        input_price = Decimal(0)
        output_price = Decimal(0)
        total_price = Decimal(0)
        for key, price, per, direction in plan.units:
            unit_price = calc_unit_price(price, counts[key], total_input, per)
            total_price += unit_price
            if direction == "input":
                input_price += unit_price
            elif direction == "output":
                output_price += unit_price
        return Calculated(input_price, output_price, total_price, provider.id, model.id)

    def _is_own(self, provider: gp_types.Provider, model: gp_types.ModelInfo) -> bool:
        key = (id(provider), id(model))
        own = self._own.get(key)
        if own is None:
            if len(self._own) >= _LIMIT:
                self._own.clear()
            own = self._own[key] = any(model is m for m in provider.models)
        return own

    def _implied_value(self, key: str, positive: frozenset[str],
                       values: Mapping[str, int]) -> int | None:
        cache_key = (key, positive)
        if cache_key in self._implied:
            return self._implied[cache_key]
        import genai_prices

        # What the library's Usage answers for a key it was not given depends only on
        # which keys were reported above zero: ask it once per such set.
        usage = genai_prices.Usage(**values)
        implied: int | None
        try:
            answer = getattr(usage, key)
        except ValueError:
            answer = None
        implied = answer if type(answer) is int else None
        if len(self._implied) >= _LIMIT:
            self._implied.clear()
        self._implied[cache_key] = implied
        return implied

    def _plan(self, model_price: Any, registry: UnitRegistry) -> _Plan | None:
        from genai_prices import types as gp

        if type(model_price) is not gp.ModelPrice:
            return None
        stored = [(k, v) for k, v in vars(model_price).items()
                  if not k.startswith("_") and v is not None]
        key = tuple((k, id(v)) for k, v in stored)
        if key in self._plans:
            plan = self._plans[key]
            # ids are only unique among live objects: the plan holds its price's values
            if plan is None or all(vars(plan.price).get(k) is v for k, v in stored):
                return plan
        plan = self._new_plan(model_price, stored, registry)
        if len(self._plans) >= _LIMIT:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    @staticmethod
    def _new_plan(model_price: Any, stored: list[tuple[str, Any]],
                  registry: UnitRegistry) -> _Plan | None:
        from genai_prices import types as gp
        from genai_prices.decompose import is_descendant_or_self
        from genai_prices.validation import validate_priced_units

        units: list[tuple[UnitDef, Any]] = []
        for price_key, value in stored:
            try:
                unit = registry.unit_for_price_key(price_key)
            except KeyError:
                return None  # the library warns about an unknown price key each call
            if isinstance(value, Decimal):
                if not value.is_finite() or value < 0:
                    return None
            elif not isinstance(value, gp.TieredPrices):
                return None
            units.append((unit, value))
        if any(isinstance(value, gp.TieredPrices) for _, value in units):
            # calc_price validates tiers on every call; a plan takes only sound ones
            for _, value in units:
                if isinstance(value, gp.TieredPrices) and not _sound_tiers(value):
                    return None
        try:
            validate_priced_units(tuple(unit for unit, _ in units), registry)
        except ValueError:
            return None
        by_key = {unit.usage_key: unit for unit, _ in units if unit.usage_key != _REQUESTS}
        # the order and descendants compute_leaf_values works with
        ordered = sorted(by_key.values(), key=lambda u: (-len(u.dimensions), u.usage_key))
        leaves = tuple((unit.usage_key, tuple(
            d.usage_key for d in ordered if d is not unit and is_descendant_or_self(unit, d)))
            for unit in ordered)
        return _Plan(
            price=model_price,
            units=tuple((unit.usage_key, value, unit.per, unit.dimensions.get("direction"))
                        for unit, value in units),
            leaf_keys=frozenset(by_key), leaves=leaves,
            tiered=any(isinstance(value, gp.TieredPrices) for _, value in units))


def _sound_tiers(prices: Any) -> bool:
    def ok(value: Any) -> bool:
        return isinstance(value, Decimal) and value.is_finite() and value >= 0

    previous = -1
    for tier in prices.tiers:
        if type(tier.start) is not int or tier.start < 0 or tier.start < previous \
                or not ok(tier.price):
            return False
        previous = tier.start
    return ok(prices.base)


_calculator = _Calculator()


def calculate(values: Mapping[str, int | Decimal], *, model_ref: str, provider_id: str,
              at: datetime, context: Mapping[str, str] | None = None) -> Calculated:
    """The cost genai-prices' `calc_price` gives for this usage (genai-prices usage keys),
    model, provider, time and price context, and its errors (LookupError, ValueError)."""
    return _calculator.calculate(values, model_ref, provider_id, at, context)
