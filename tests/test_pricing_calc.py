"""eventstore.pricing.calc: genai-prices' calc_price with its per-price work cached must
give the very same Decimals (and the same errors) as calc_price itself."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from genai_prices import types as gp
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.pricing.calc import calculate

USAGES: list[dict[str, int]] = [
    {"input_tokens": 1200, "output_tokens": 300},
    {"input_tokens": 250_000, "output_tokens": 10, "cache_read_tokens": 1000},
    {"input_tokens": 500, "output_tokens": 50, "cache_read_tokens": 100,
     "cache_write_tokens": 50, "output_reasoning_tokens": 20},
    {"input_tokens": 10, "cache_read_tokens": 20, "output_tokens": 1},  # refused: reads > input
    {"input_tokens": 1000, "output_tokens": 10, "cache_write_tokens": 100,
     "cache_write_1h_tokens": 100, "input_audio_tokens": 30},
    {"input_tokens": 0, "output_tokens": 0},
]
TIMES = [datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 6, 1, 3, 0, tzinfo=UTC),
         datetime.now(UTC)]
CONTEXTS: list[dict[str, str] | None] = [None, {"service_tier": "flex"},
                                         {"processing": "batch"}]


def both(values: Mapping[str, int], model: str, provider: str, at: datetime,
         context: dict[str, str] | None) -> tuple[Any, Any]:
    try:
        c = calc_price(Usage(**values), model_ref=model, provider_id=provider,
                       genai_request_timestamp=at, price_context=context)
        expected: Any = (c.input_price, c.output_price, c.total_price, c.provider.id,
                         c.model.id)
    except (LookupError, ValueError) as exc:
        expected = (type(exc), str(exc))
    try:
        f = calculate(values, model_ref=model, provider_id=provider, at=at, context=context)
        got: Any = (f.input_price, f.output_price, f.total_price, f.provider_id, f.model_id)
    except (LookupError, ValueError) as exc:
        got = (type(exc), str(exc))
    return expected, got


def same(expected: Any, got: Any) -> bool:
    # equal and spelled alike: Decimal("1.50") == Decimal("1.5"), but the log keeps digits
    return expected == got and [str(x) for x in expected] == [str(x) for x in got]


def test_every_model_of_the_dataset_costs_what_calc_price_says() -> None:
    mismatches = []
    cases = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for provider in get_snapshot().providers:
            for model in provider.models:
                for values, at, context in itertools.product(
                        USAGES[1:5], TIMES[::2], CONTEXTS[:2]):
                    cases += 1
                    expected, got = both(values, model.id, provider.id, at, context)
                    if not same(expected, got):
                        mismatches.append((provider.id, model.id, values, at, context,
                                           expected, got))
    assert cases > 10_000
    assert mismatches == []


USAGE_KEYS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
              "output_reasoning_tokens", "input_audio_tokens", "cache_write_1h_tokens",
              "input_image_tokens", "output_audio_tokens"]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"),
          ("anthropic", "claude-3-5-haiku-latest"), ("google", "gemini-2.5-pro"),
          ("google", "gemini-2.0-flash"), ("openai", "gpt-5"), ("deepseek", "deepseek-chat"),
          ("openai", "gpt-4o-audio-preview"), ("openai", "no-such-model")]


@settings(max_examples=300, deadline=None)
@given(values=st.dictionaries(st.sampled_from(USAGE_KEYS),
                              st.integers(min_value=0, max_value=2_000_000), max_size=6),
       model=st.sampled_from(MODELS), at=st.sampled_from(TIMES),
       context=st.sampled_from([*CONTEXTS, {"service_tier": "priority"}]))
def test_random_usage_costs_what_calc_price_says(values: dict[str, int],
                                                 model: tuple[str, str], at: datetime,
                                                 context: dict[str, str] | None) -> None:
    expected, got = both(values, model[1], model[0], at, context)
    assert same(expected, got), (expected, got)


def test_a_swapped_snapshot_prices_with_its_own_data() -> None:
    # an application's UpdatePrices swaps the snapshot: cached prices must not outlive it
    at = datetime(2025, 6, 1, tzinfo=UTC)
    values = {"input_tokens": 1000, "output_tokens": 100}
    before = calculate(values, model_ref="gpt-4o", provider_id="openai", at=at)
    provider = gp.Provider(id="openai", name="OpenAI", api_pattern="x", models=[gp.ModelInfo(
        id="gpt-4o", match=gp.ClauseEquals(equals="gpt-4o"),
        prices=gp.ModelPrice(input_mtok=Decimal("1"), output_mtok=Decimal("2")))])
    set_custom_snapshot(DataSnapshot(providers=[provider], from_auto_update=True))
    try:
        after = calculate(values, model_ref="gpt-4o", provider_id="openai", at=at)
        assert after.total_price == calc_price(
            Usage(**values), model_ref="gpt-4o", provider_id="openai",
            genai_request_timestamp=at).total_price
        assert str(after.total_price) == "0.0012"
    finally:
        set_custom_snapshot(None)
    assert calculate(values, model_ref="gpt-4o", provider_id="openai",
                     at=at).total_price == before.total_price


def test_a_usage_the_library_refuses_raises_its_error() -> None:
    with pytest.raises(ValueError, match="cache_read_tokens"):
        calculate({"input_tokens": 10, "cache_read_tokens": 20}, model_ref="gpt-4o",
                  provider_id="openai", at=TIMES[-1])
    with pytest.raises(LookupError):
        calculate({"input_tokens": 10}, model_ref="no-such-model", provider_id="openai",
                  at=TIMES[-1])
