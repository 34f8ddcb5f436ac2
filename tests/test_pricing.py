"""Prices, price lookups and exact cost arithmetic (eventstore.pricing)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from genai_prices import __version__ as VERSION
from genai_prices import types as gp
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.errors import EventStoreError, UnknownModelError
from eventstore.pricing import (
    CostBreakdown,
    GenAIPrices,
    InvalidPriceError,
    InvalidUsageError,
    ModelPrice,
    PriceTable,
    PricingProvider,
    compute_cost,
    default_pricing,
)

D = Decimal
MILLION = D(1_000_000)
GP = f"genai-prices {VERSION}"  # how GenAIPrices labels its source


def dataset_model(provider: str, model: str) -> tuple[gp.Provider, gp.ModelInfo]:
    """The genai-prices dataset entry for a model, read straight from the library."""
    return get_snapshot().find_provider_model(model, None, provider, None)


def dataset_price(provider: str, model: str) -> gp.ModelPrice:
    _, info = dataset_model(provider, model)
    assert isinstance(info.prices, gp.ModelPrice), "test expects an unconditional price"
    return info.prices


# --- ModelPrice ---------------------------------------------------------------------------


def test_model_price_keeps_decimals_and_defaults() -> None:
    price = ModelPrice(input=D("0.000005"), output=D("0.000015"))
    assert price.input == D("0.000005")
    assert price.output == D("0.000015")
    assert price.cache_read is None
    assert price.cache_write is None
    assert price.source is None


def test_model_price_converts_int_and_str_to_decimal() -> None:
    price = ModelPrice(input="0.000005", output=0, cache_read=" 0.0000005 ", cache_write=1)
    assert type(price.input) is Decimal and price.input == D("0.000005")
    assert type(price.output) is Decimal and price.output == 0
    assert price.cache_read == D("0.0000005")
    assert price.cache_write == D(1)


def test_model_price_per_million() -> None:
    price = ModelPrice.per_million(
        input="2.5", output=10, cache_read=D("1.25"), cache_write="3.75", source="contract"
    )
    assert price == ModelPrice(
        input=D("0.0000025"),
        output=D("0.00001"),
        cache_read=D("0.00000125"),
        cache_write=D("0.00000375"),
        source="contract",
    )


@pytest.mark.parametrize("field", ["input", "output", "cache_read", "cache_write"])
def test_model_price_rejects_float(field: str) -> None:
    kwargs: dict[str, Any] = {"input": D("0.000005"), "output": D("0.000015"), field: 0.000005}
    with pytest.raises(InvalidPriceError, match=rf"{field}=5e-06 is a float.*floats lose cents"):
        ModelPrice(**kwargs)


def test_model_price_per_million_rejects_float() -> None:
    with pytest.raises(InvalidPriceError, match="float"):
        ModelPrice.per_million(input=2.5, output="10")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (D("-0.000001"), "negative"),
        (-1, "negative"),
        ("-0.5", "negative"),
        (D("NaN"), "not finite"),
        (D("Infinity"), "not finite"),
        ("inf", "not finite"),
        ("five cents", "not a decimal number"),
        (True, "bool"),
        (None, "NoneType"),
        ([1], "list"),
    ],
)
def test_model_price_rejects_bad_values(value: object, message: str) -> None:
    with pytest.raises(InvalidPriceError, match=message):
        ModelPrice(input=value, output=D(0))  # type: ignore[arg-type]


def test_invalid_price_error_is_a_value_error_and_an_eventstore_error() -> None:
    with pytest.raises(ValueError):
        ModelPrice(input=0.1, output=0)  # type: ignore[arg-type]
    with pytest.raises(EventStoreError):
        ModelPrice(input=0.1, output=0)  # type: ignore[arg-type]


def test_model_price_is_frozen_and_hashable() -> None:
    price = ModelPrice(input=D(1), output=D(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        price.input = D(3)  # type: ignore[misc]
    assert hash(price) == hash(ModelPrice(input=1, output="2"))
    assert dataclasses.replace(price, source="x").source == "x"


# --- compute_cost -------------------------------------------------------------------------


def test_compute_cost_plain() -> None:
    price = ModelPrice(input=D("0.000005"), output=D("0.000015"))
    cost = compute_cost(price, input_tokens=1200, output_tokens=300)
    # 1200 * 0.000005 = 0.006 ; 300 * 0.000015 = 0.0045
    assert cost.input_cost == D("0.006")
    assert cost.output_cost == D("0.0045")
    assert cost.total_cost == D("0.0105")
    assert (cost.input_tokens, cost.output_tokens) == (1200, 300)
    assert (cost.cache_read_tokens, cost.cache_write_tokens) == (0, 0)
    assert cost.price_source is None


def test_compute_cost_with_cache_prices() -> None:
    price = ModelPrice.per_million(
        input="3", output="15", cache_read="0.3", cache_write="3.75", source="s"
    )
    cost = compute_cost(
        price,
        input_tokens=10_000,
        output_tokens=500,
        cache_read_tokens=6000,
        cache_write_tokens=2000,
    )
    # uncached 2000 * 0.000003 = 0.006 ; reads 6000 * 0.0000003 = 0.0018 ;
    # writes 2000 * 0.00000375 = 0.0075 ; output 500 * 0.000015 = 0.0075
    assert cost.input_cost == D("0.0153")
    assert cost.output_cost == D("0.0075")
    assert cost.total_cost == D("0.0228")
    assert cost.price_source == "s"


def test_compute_cost_cache_tokens_without_cache_prices_cost_the_input_price() -> None:
    price = ModelPrice(input=D("0.000005"), output=D("0.000015"))
    cost = compute_cost(
        price, input_tokens=1000, output_tokens=0, cache_read_tokens=300, cache_write_tokens=200
    )
    assert cost.input_cost == D("0.005")  # all 1000 input tokens at 0.000005
    assert cost.output_cost == 0
    assert cost.total_cost == D("0.005")


def test_compute_cost_with_only_a_cache_read_price() -> None:
    price = ModelPrice(input=D("0.0000025"), output=D("0.00001"), cache_read=D("0.00000125"))
    cost = compute_cost(
        price,
        input_tokens=10_000,
        output_tokens=500,
        cache_read_tokens=4000,
        cache_write_tokens=1000,
    )
    # 5000 * 0.0000025 + 4000 * 0.00000125 + 1000 * 0.0000025 = 0.0125 + 0.005 + 0.0025
    assert cost.input_cost == D("0.02")
    assert cost.output_cost == D("0.005")
    assert cost.total_cost == D("0.025")


def test_compute_cost_keeps_every_digit() -> None:
    # 32 significant digits: the default 28-digit context would round this product.
    price = ModelPrice(input=D("0.0000033333333333333333333333333"), output=D("0.00001"))
    cost = compute_cost(price, input_tokens=987_654_321, output_tokens=3)
    # 33333333333333333333333333 * 987654321 = 32921810699999999999999999670781893, 31 decimals
    assert str(cost.input_cost) == "3292.1810699999999999999999670781893"
    assert cost.output_cost == D("0.00003")
    assert str(cost.total_cost) == "3292.1810999999999999999999670781893"


def test_to_data_uses_positional_notation() -> None:
    assert str(D("0.0000025") * 3) == "0.0000075"
    assert str(D("0.00000025") * 3) == "7.5E-7"  # why to_data does not use str()
    price = ModelPrice(input=D("0.00000025"), output=D("0.000000001"), source="src")
    cost = compute_cost(price, input_tokens=3, output_tokens=2)
    assert cost.to_data() == {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "input_cost": "0.00000075",
        "output_cost": "0.000000002",
        "total_cost": "0.000000752",
        "price_source": "src",
    }
    for key in ("input_cost", "output_cost", "total_cost"):
        assert D(cost.to_data()[key]) == getattr(cost, key)


def test_to_data_large_and_zero_values() -> None:
    price = ModelPrice(input=D("1E+3"), output=D(0))
    cost = compute_cost(price, input_tokens=2, output_tokens=5)
    data = cost.to_data()
    assert data["input_cost"] == "2000"
    assert D(data["output_cost"]) == 0 and "E" not in data["output_cost"]
    assert "price_source" not in data  # the price had no source; the caller supplies one


def test_cost_breakdown_is_frozen() -> None:
    cost = compute_cost(ModelPrice(input=1, output=1), input_tokens=1, output_tokens=1)
    assert isinstance(cost, CostBreakdown)
    with pytest.raises(AttributeError):
        cost.total_cost = D(0)  # type: ignore[misc]


@pytest.mark.parametrize(
    "field", ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]
)
@pytest.mark.parametrize(
    ("value", "message"),
    [(-1, "negative"), (1.0, "float"), (True, "bool"), ("10", "str"), (None, "NoneType")],
)
def test_compute_cost_rejects_bad_token_counts(field: str, value: object, message: str) -> None:
    kwargs: dict[str, Any] = {"input_tokens": 10, "output_tokens": 10, field: value}
    with pytest.raises(InvalidUsageError, match=rf"{field}=.*{message}"):
        compute_cost(ModelPrice(input=1, output=1), **kwargs)


def test_compute_cost_rejects_cache_tokens_exceeding_input() -> None:
    price = ModelPrice(input=1, output=1)
    with pytest.raises(InvalidUsageError, match=r"exceed input_tokens \(10\)"):
        compute_cost(
            price, input_tokens=10, output_tokens=0, cache_read_tokens=6, cache_write_tokens=5
        )
    with pytest.raises(InvalidUsageError):
        compute_cost(price, input_tokens=0, output_tokens=0, cache_read_tokens=1)
    # exactly equal is fine: every input token came from the cache
    cost = compute_cost(
        price, input_tokens=11, output_tokens=0, cache_read_tokens=6, cache_write_tokens=5
    )
    assert cost.input_cost == 11


def test_invalid_usage_error_is_a_value_error_and_an_eventstore_error() -> None:
    assert issubclass(InvalidUsageError, ValueError)
    assert issubclass(InvalidUsageError, EventStoreError)


def test_compute_cost_rejects_a_non_model_price() -> None:
    with pytest.raises(TypeError, match="pass a ModelPrice"):
        compute_cost(dataset_price("openai", "gpt-4o"), input_tokens=1, output_tokens=1)  # type: ignore[arg-type]


# --- GenAIPrices --------------------------------------------------------------------------

AT = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)


def test_gpt_4o_hard_values() -> None:
    # OpenAI's gpt-4o list price: $2.50 input, $1.25 cached input, $10 output per million.
    price = GenAIPrices().price_for("openai", "gpt-4o")
    assert price.input == D("0.0000025")
    assert price.cache_read == D("0.00000125")
    assert price.output == D("0.00001")
    assert price.cache_write is None
    assert price.source == f"{GP} openai/gpt-4o"


def test_claude_3_5_sonnet_hard_values() -> None:
    # $3 input, $15 output, $0.30 cache read, $3.75 (5-minute) cache write per million.
    price = GenAIPrices().price_for("anthropic", "claude-3-5-sonnet-20241022")
    assert price == ModelPrice(
        input=D("0.000003"),
        output=D("0.000015"),
        cache_read=D("0.0000003"),
        cache_write=D("0.00000375"),
        source=f"{GP} anthropic/claude-3-5-sonnet",
    )


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-3-5-sonnet-latest"),
        ("anthropic", "claude-3-haiku-20240307"),
    ],
)
def test_prices_match_the_library_data(provider: str, model: str) -> None:
    data = dataset_price(provider, model)
    price = GenAIPrices().price_for(provider, model)
    assert price.input * MILLION == data.input_mtok
    assert price.output * MILLION == data.output_mtok
    for ours, theirs in [
        (price.cache_read, data.cache_read_mtok),
        (price.cache_write, data.cache_write_mtok),
    ]:
        if theirs is None:
            assert ours is None
        else:
            assert isinstance(theirs, Decimal)  # these models have no context tiers
            assert ours is not None and ours * MILLION == theirs


@settings(max_examples=60, deadline=None)
@given(
    model=st.sampled_from(
        [("openai", "gpt-4o"), ("anthropic", "claude-3-5-sonnet"), ("openai", "gpt-4o-mini")]
    ),
    uncached=st.integers(0, 150_000),
    cache_read=st.integers(0, 50_000),
    cache_write=st.integers(0, 50_000),
    output=st.integers(0, 100_000),
)
def test_compute_cost_agrees_with_genai_prices_calc_price(
    model: tuple[str, str], uncached: int, cache_read: int, cache_write: int, output: int
) -> None:
    # Both use OpenTelemetry semantics (input includes cached tokens), so the totals
    # must agree to the last digit on non-tiered models.
    provider, ref = model
    total_input = uncached + cache_read + cache_write
    expected = calc_price(
        Usage(
            input_tokens=total_input,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            output_tokens=output,
        ),
        ref,
        provider_id=provider,
        genai_request_timestamp=AT,
    )
    cost = compute_cost(
        GenAIPrices(at=AT).price_for(provider, ref),
        input_tokens=total_input,
        output_tokens=output,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    assert cost.input_cost == expected.input_price
    assert cost.output_cost == expected.output_price
    assert cost.total_cost == expected.total_price


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("OpenAI", "GPT-4o"),
        (" openai ", "gpt-4o"),
        ("openai", "gpt-4o-2024-08-06"),
        ("openai", "gpt-4o-20240806"),
        ("litellm", "openai/gpt-4o"),
    ],
)
def test_provider_and_model_aliases(provider: str, model: str) -> None:
    pricing = GenAIPrices()
    assert pricing.price_for(provider, model) == pricing.price_for("openai", "gpt-4o")


@pytest.mark.parametrize(
    ("provider", "expected_provider_id"),
    [
        ("google", "google"),
        ("gemini", "google"),
        ("gcp.gemini", "google"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gen_ai", "google"),
    ],
)
def test_google_provider_names(provider: str, expected_provider_id: str) -> None:
    price = GenAIPrices().price_for(provider, "gemini-1.5-flash")
    assert price.source is not None
    assert price.source.startswith(f"{GP} {expected_provider_id}/gemini-1.5-flash")


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("azure.ai.openai", "gpt-4o", "azure/gpt-4o"),
        ("azure", "gpt-4o", "azure/gpt-4o"),
        ("x_ai", "grok-3", "x-ai/grok-3"),
        ("xai", "grok-3", "x-ai/grok-3"),
        ("aws.bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0", "aws/"),
        ("mistral_ai", "mistral-large-latest", "mistral/mistral-large"),
    ],
)
def test_opentelemetry_provider_names(provider: str, model: str, expected: str) -> None:
    price = GenAIPrices().price_for(provider, model)
    assert price.source is not None
    assert price.source.startswith(f"{GP} {expected}")


def test_tiered_model_takes_the_base_tier_and_says_so() -> None:
    _, info = dataset_model("google", "gemini-2.5-pro")
    assert isinstance(info.prices, gp.ModelPrice)
    tiered_input = info.prices.input_mtok
    assert isinstance(tiered_input, gp.TieredPrices)
    price = GenAIPrices().price_for("google", "gemini-2.5-pro")
    assert price.input * MILLION == tiered_input.base
    assert price.input == D("0.00000125")
    assert price.source == (
        f"{GP} google/gemini-2.5-pro (base tier, prompts up to 200000 input tokens)"
    )


def test_prices_follow_the_request_date() -> None:
    # OpenAI cut o3 from $10/$40 to $2/$8 per million on 2025-06-10.
    before = datetime(2025, 6, 9, 23, 59, tzinfo=UTC)
    after = datetime(2025, 6, 10, 0, 1, tzinfo=UTC)
    assert GenAIPrices(at=before).price_for("openai", "o3").input == D("0.00001")
    assert GenAIPrices(at=after).price_for("openai", "o3").input == D("0.000002")
    pricing = GenAIPrices(at=after)
    assert pricing.price_for("openai", "o3", at=before).output == D("0.00004")
    assert pricing.price_for("openai", "o3").output == D("0.000008")


def test_time_of_day_prices() -> None:
    _, info = dataset_model("deepseek", "deepseek-chat")
    assert isinstance(info.prices, list)
    day = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
    night = datetime(2025, 7, 1, 20, 0, tzinfo=UTC)
    pricing = GenAIPrices()
    for moment in (day, night):
        expected = info.get_prices(moment).input_mtok
        assert isinstance(expected, Decimal)
        assert pricing.price_for("deepseek", "deepseek-chat", at=moment).input * MILLION == expected
    # an aware non-UTC time means the same instant
    day_in_tokyo = day.astimezone(timezone(timedelta(hours=9)))
    assert pricing.price_for("deepseek", "deepseek-chat", at=day_in_tokyo) == pricing.price_for(
        "deepseek", "deepseek-chat", at=day
    )
    assert pricing.price_for("deepseek", "deepseek-chat", at=day) != pricing.price_for(
        "deepseek", "deepseek-chat", at=night
    )


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        GenAIPrices(at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        GenAIPrices().price_for("openai", "gpt-4o", at=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("provider", "model", "detail"),
    [
        ("openai", "gpt-nonexistent-9", "Unable to find model"),
        ("no-such-provider", "gpt-4o", "Unable to find provider"),
        ("", "gpt-4o", "provider name is empty"),
        ("openai", "", "model name is empty"),
    ],
)
def test_unknown_model_or_provider_raises(provider: str, model: str, detail: str) -> None:
    pricing = GenAIPrices()
    for _ in range(2):  # the second call is answered from the negative cache
        with pytest.raises(UnknownModelError) as info:
            pricing.price_for(provider, model)
        assert info.value.provider == provider
        assert info.value.model == model
        assert repr(model) in str(info.value)
        assert repr(provider) in str(info.value)
        assert detail in str(info.value)
        assert isinstance(info.value, LookupError)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openrouter", "deepseek/deepseek-r1:free"),  # listed with no price at all
        ("github-copilot", "gpt-4o"),  # subscription
        ("openai", "whisper-1"),  # billed per audio hour
    ],
)
def test_models_without_a_token_price_raise_instead_of_costing_zero(
    provider: str, model: str
) -> None:
    with pytest.raises(UnknownModelError, match="no per-token input price"):
        GenAIPrices().price_for(provider, model)


def test_input_only_models_get_zero_output_and_say_so() -> None:
    price = GenAIPrices().price_for("openai", "text-embedding-3-small")
    assert price.input == D("0.00000002")
    assert price.output == 0
    assert price.source == f"{GP} openai/text-embedding-3-small (no output price listed)"


def test_lookups_are_cached() -> None:
    pricing = GenAIPrices()
    assert pricing.price_for("openai", "gpt-4o") is pricing.price_for("openai", "gpt-4o")


@contextlib.contextmanager
def fetched_snapshot() -> Iterator[None]:
    """Stand in for data fetched by genai-prices' UpdatePrices, without any network."""
    model = gp.ModelInfo(
        id="gpt-4o",
        match=gp.ClauseEquals(equals="gpt-4o"),
        prices=gp.ModelPrice(input_mtok=D("1"), output_mtok=D("2")),
    )
    provider = gp.Provider(id="openai", name="OpenAI", api_pattern="x", models=[model])
    snapshot = DataSnapshot(
        providers=[provider], from_auto_update=True, timestamp=datetime(2026, 1, 2, 3, 4, 5)
    )
    set_custom_snapshot(snapshot)
    try:
        yield
    finally:
        set_custom_snapshot(None)


def test_a_replaced_snapshot_invalidates_the_cache() -> None:
    pricing = GenAIPrices()
    assert pricing.price_for("openai", "gpt-4o").input == D("0.0000025")
    with fetched_snapshot():
        price = pricing.price_for("openai", "gpt-4o")
        assert price.input == D("0.000001")
        assert price.source == f"{GP} (data fetched 2026-01-02T03:04:05) openai/gpt-4o"
    assert pricing.price_for("openai", "gpt-4o").input == D("0.0000025")


def test_no_network_and_no_updater_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pricing touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    threads_before = {t.ident for t in threading.enumerate()}

    pricing = GenAIPrices()
    for provider, model in [
        ("openai", "gpt-4o"),
        ("anthropic", "claude-3-5-sonnet"),
        ("google", "gemini-2.5-pro"),
        ("deepseek", "deepseek-chat"),
    ]:
        pricing.price_for(provider, model)
    with pytest.raises(UnknownModelError):
        pricing.price_for("openai", "gpt-nonexistent-9")

    assert {t.ident for t in threading.enumerate()} <= threads_before
    assert get_snapshot().from_auto_update is False


def test_importing_pricing_does_not_import_genai_prices() -> None:
    code = (
        "import sys, eventstore.pricing\n"
        "assert 'genai_prices' not in sys.modules, 'genai_prices imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_pricing_is_shared() -> None:
    assert default_pricing() is default_pricing()
    assert isinstance(default_pricing(), GenAIPrices)
    assert isinstance(default_pricing(), PricingProvider)


def test_any_object_with_price_for_is_a_pricing_provider() -> None:
    class MyPricing:
        def price_for(self, provider: str, model: str) -> ModelPrice:
            return ModelPrice(input=D("0.000005"), output=D("0.000015"))

    assert isinstance(MyPricing(), PricingProvider)
    assert not isinstance(object(), PricingProvider)


# --- PriceTable ---------------------------------------------------------------------------

NEGOTIATED = ModelPrice(input=D("0.000002"), output=D("0.000008"))
ACME = ModelPrice(input=D("0.000001"), output=D("0.000001"), source="acme contract 2026")


def test_price_table_exact_match_with_tuple_and_string_keys() -> None:
    table = PriceTable({("openai", "gpt-4o"): NEGOTIATED, "anthropic/claude-3-5-sonnet": ACME})
    assert table.price_for("openai", "gpt-4o") == dataclasses.replace(NEGOTIATED, source="override")
    assert table.price_for("OpenAI", " GPT-4o ").input == D("0.000002")
    assert table.price_for("anthropic", "claude-3-5-sonnet").source == "acme contract 2026"


def test_price_table_string_key_splits_at_the_first_slash() -> None:
    table = PriceTable({"openrouter/meta-llama/llama-3-70b": NEGOTIATED})
    assert table.price_for("openrouter", "meta-llama/llama-3-70b").input == D("0.000002")


def test_price_table_wildcard_and_exact_precedence() -> None:
    table = PriceTable({("acme", "*"): ACME, "acme/big-model": NEGOTIATED})
    assert table.price_for("acme", "anything") is ACME
    assert table.price_for("ACME", "other") is ACME
    assert table.price_for("acme", "big-model").input == D("0.000002")
    with pytest.raises(UnknownModelError, match="'other-provider'"):
        table.price_for("other-provider", "anything")


def test_price_table_falls_back() -> None:
    table = PriceTable({"openai/gpt-4o": NEGOTIATED}, fallback=GenAIPrices())
    assert table.price_for("openai", "gpt-4o").source == "override"
    fallen = table.price_for("openai", "gpt-4o-mini")
    assert fallen.source == f"{GP} openai/gpt-4o-mini"
    assert fallen.input == D("0.00000015")
    with pytest.raises(UnknownModelError, match="gpt-nonexistent-9"):
        table.price_for("openai", "gpt-nonexistent-9")


def test_price_table_without_fallback_raises() -> None:
    table = PriceTable({"openai/gpt-4o": NEGOTIATED})
    assert table.fallback is None
    with pytest.raises(UnknownModelError) as info:
        table.price_for("openai", "gpt-4o-mini")
    assert "'gpt-4o-mini'" in str(info.value)
    assert "'openai'" in str(info.value)
    assert "no fallback" in str(info.value)


def test_price_table_is_a_pricing_provider_and_chains() -> None:
    inner = PriceTable({"acme/*": ACME})
    outer = PriceTable({"openai/gpt-4o": NEGOTIATED}, fallback=inner)
    assert isinstance(outer, PricingProvider)
    assert outer.price_for("acme", "x") is ACME


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("gpt-4o", "has no '/'"),
        ("openai/", "needs both"),
        (("openai", ""), "needs both"),
        (("openai", "gpt-4o", "x"), "must be"),
        (("openai", 4), "must be"),
        ("*/gpt-4o", "cannot be '\\*'"),
        (("*", "*"), "cannot be '\\*'"),
    ],
)
def test_price_table_rejects_bad_keys(key: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable({key: NEGOTIATED})


def test_price_table_rejects_conflicting_duplicates_and_bad_values() -> None:
    with pytest.raises(ValueError, match="two different prices"):
        PriceTable({"openai/gpt-4o": NEGOTIATED, ("OpenAI", "GPT-4o"): ACME})
    # the same price under two spellings is harmless
    PriceTable({"openai/gpt-4o": NEGOTIATED, ("OpenAI", "GPT-4o"): NEGOTIATED})
    with pytest.raises(TypeError, match="pass a ModelPrice"):
        PriceTable({"openai/gpt-4o": {"input": "0.000001"}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="no price_for"):
        PriceTable({}, fallback=object())  # type: ignore[arg-type]
