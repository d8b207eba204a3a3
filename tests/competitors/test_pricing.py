"""Price normalisation: known answers for every rule, the FX table's derivation, field-named errors."""

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from services.competitors.pricing import normalise_idea_price, normalise_price
from services.ingestion.fx import load_fx_table
from smvm.errors import InvalidArgument
from smvm.v1 import idea_pb2

FX_PATH = Path(__file__).resolve().parents[2] / "data" / "fx_rates.yaml"
EUR_PER_USD = 0.960523
GBP_PER_USD = 0.793468


def test_annual_usd_is_divided_by_twelve():
    p = normalise_price(59.99, "USD", "annual")
    assert p.monthly_price_usd == pytest.approx(4.999, abs=1e-3)
    assert p.monthly_price_usd == round(59.99 / 12, 4) == 4.9992
    assert p.fx_rates_as_of == ""  # no conversion needed
    assert "/ 12" in p.normalisation


def test_eur_uses_the_dated_table_rate():
    p = normalise_price(6.99, "EUR", "monthly")
    assert p.monthly_price_usd == round(6.99 / EUR_PER_USD, 4) == 7.2773
    assert p.fx_rates_as_of == "2025-02-28"
    assert "0.960523 EUR per USD (2025-02-28)" in p.normalisation
    assert p.terms().fx_rates_as_of == "2025-02-28"


def test_one_off_licence_amortised_over_stated_or_default_life():
    assert normalise_price(249.0, "USD", "one_time", amortisation_months=12).monthly_price_usd == 20.75
    default = normalise_price(249.0, "USD", "one_time")
    assert default.monthly_price_usd == 10.375  # 24-month default life
    assert "24 months (default life)" in default.normalisation
    assert normalise_price(249.0, "USD", "lifetime").list_price.billing_period == "one_time"


def test_per_seat_times_seats_and_other_periods():
    seat = normalise_price(12.0, "USD", "monthly", per_seat=True, seats=10)
    assert seat.monthly_price_usd == 120.0 and seat.per_seat and seat.seats == 10
    assert normalise_price(240.0, "USD", "annual", per_seat=True, seats=10).monthly_price_usd == 200.0
    assert normalise_price(25.0, "GBP", "monthly", per_seat=True, seats=10).monthly_price_usd == round(250 / GBP_PER_USD, 4)
    assert normalise_price(60.0, "USD", "weekly").monthly_price_usd == 260.0
    assert normalise_price(4500.0, "USD", "quarterly").monthly_price_usd == 1500.0
    # A flat price ignores the seat count.
    flat = normalise_price(49.0, "USD", "monthly", seats=10)
    assert flat.monthly_price_usd == 49.0 and flat.seats == 1


def test_free_tier_is_recorded_not_priced():
    free_only = normalise_price(0.0, "USD", "monthly")
    assert free_only.monthly_price_usd == 0.0 and free_only.free_tier
    freemium = normalise_price(49.0, "USD", "monthly", free_tier=True)
    assert freemium.monthly_price_usd == 49.0 and freemium.free_tier
    assert "paid plan" in freemium.normalisation


def test_idea_price_message():
    p = normalise_idea_price(idea_pb2.Price(amount=99, currency="eur", billing_period="yearly"))
    assert p.monthly_price_usd == round(99 / 12 / EUR_PER_USD, 4)
    assert p.list_price.currency == "EUR" and p.list_price.billing_period == "annual"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(amount=-1.0), "idea.price.amount"),
        (dict(amount=float("nan")), "idea.price.amount"),
        (dict(amount=5.0, currency="XXX"), "idea.price.currency"),
        (dict(amount=5.0, billing_period="fortnightly"), "idea.price.billing_period"),
        (dict(amount=5.0, billing_period="one_time", amortisation_months=500), "idea.price.amortisation_months"),
        (dict(amount=5.0, per_seat=True, seats=0), "idea.price.seats"),
        (dict(amount=1e12), "idea.price.amount"),
    ],
)
def test_invalid_prices_name_the_field(kwargs, field):
    amount = kwargs.pop("amount")
    with pytest.raises(InvalidArgument) as err:
        normalise_price(amount, field="idea.price", **kwargs)
    assert err.value.field == field


def test_fx_table_is_the_ecb_table_rebased_to_usd():
    raw = yaml.safe_load(FX_PATH.read_text())
    ecb = raw["ecb_units_per_eur"]
    table = load_fx_table()
    assert table.as_of == raw["as_of"] == "2025-02-28"
    assert table.units_per_usd["EUR"] == pytest.approx(1 / ecb["USD"], rel=1e-5)
    for code, per_eur in ecb.items():
        assert table.units_per_usd[code] == pytest.approx(per_eur / ecb["USD"], rel=1e-5), code


@settings(max_examples=60, deadline=None)
@given(
    amount=st.floats(min_value=0.01, max_value=5000, allow_nan=False),
    currency=st.sampled_from(["USD", "EUR", "GBP", "JPY", "INR"]),
)
def test_periods_agree_on_the_same_yearly_spend(amount, currency):
    """12 monthly payments, 4 quarterly and 1 annual payment of the same yearly total normalise alike."""
    monthly = normalise_price(amount, currency, "monthly").monthly_price_usd
    quarterly = normalise_price(amount * 3, currency, "quarterly").monthly_price_usd
    annual = normalise_price(amount * 12, currency, "annual").monthly_price_usd
    assert math.isclose(monthly, quarterly, abs_tol=2e-4) and math.isclose(monthly, annual, abs_tol=2e-4)
    assert monthly == pytest.approx(amount / load_fx_table().units_per_usd[currency], abs=1e-4)
