"""Known-answer tests of the pricing, financial and market helpers the decision is built on."""

import math

import numpy as np
import pytest

from services.analysis import financials, market, pricing
from services.analysis.financials import CostAssumptions

A, B = 0.6, 0.012  # share(p) = A - B p
GRID = np.linspace(5.0, 45.0, 17)
SHARE = A - B * GRID


def test_linear_demand_revenue_maximising_price_is_a_over_2b():
    opt = pricing.revenue_maximising_price(GRID, SHARE)
    assert opt.price == pytest.approx(A / (2 * B), rel=1e-9)
    assert not opt.at_edge and not opt.no_demand


def test_revenue_optimum_between_grid_points_is_refined_exactly():
    grid = np.array([10.0, 20.0, 30.0, 40.0])
    opt = pricing.revenue_maximising_price(grid, A - B * grid)  # a/2b = 25, not a grid point
    assert opt.price == pytest.approx(25.0, rel=1e-9)


@pytest.mark.parametrize("price", [7.5, 15.0, 22.5, 30.0, 38.0])
def test_linear_demand_point_elasticity(price):
    expected = -B * price / (A - B * price)
    assert pricing.elasticity_at(GRID, SHARE, price) == pytest.approx(expected, rel=1e-9)


def test_arc_elasticity_of_linear_curve_equals_point_elasticity_at_midpoint():
    arc = pricing.arc_elasticities(GRID, SHARE)
    mid = 0.5 * (GRID[1:] + GRID[:-1])
    np.testing.assert_allclose(arc, -B * mid / (A - B * mid), rtol=1e-9)


def test_per_iteration_elasticities_give_interval_around_truth():
    bs = np.array([0.008, 0.010, 0.012, 0.014])
    rows = A - bs[:, None] * GRID[None, :]
    per = pricing.elasticities_at_rows(GRID, rows, 20.0)
    np.testing.assert_allclose(per, -bs * 20.0 / (A - bs * 20.0), rtol=1e-9)


def test_zero_demand_elasticity_is_finite_and_flagged():
    opt = pricing.revenue_maximising_price(GRID, np.zeros_like(GRID))
    assert opt.no_demand
    assert pricing.elasticity_at(GRID, np.zeros_like(GRID), 20.0) == 0.0


def test_npv_of_constant_cash_flow_is_the_annuity_formula():
    c, months, annual, invest = 1000.0, 36, 0.12, 5000.0
    rm = (1 + annual) ** (1 / 12) - 1
    expected = -invest + c * (1 - (1 + rm) ** -months) / rm
    assert financials.npv(np.full(months, c), annual, invest) == pytest.approx(expected, rel=1e-12)


def test_payback_of_constant_cash_flow():
    c, invest = 1000.0, 5500.0
    assert financials.payback_month(np.full((1, 24), c), invest)[0] == math.ceil(invest / c)
    assert financials.payback_month(np.full((1, 5), c), invest)[0] == 0  # never within the horizon


def test_summary_of_flat_business_matches_hand_calculation():
    # 100 customers from month 1, no churn: one month of acquisition, then constant margin.
    months, price = 24, 50.0
    cust = np.full((1, months), 100.0)
    rev = cust * price
    costs = CostAssumptions(cac_usd=200.0, gross_margin=0.8, fixed_costs_monthly_usd=1000.0,
                            initial_investment_usd=10000.0, discount_rate_annual=0.0)
    s = financials.summarise(rev, cust, np.zeros(1), np.ones(1), costs)
    cf = np.full(months, 0.8 * 5000 - 1000.0)
    cf[0] -= 200.0 * 100
    assert s.npv_p50 == pytest.approx(cf.sum() - 10000.0)
    assert s.payback_p50 == int(np.argmax(np.cumsum(cf) - 10000 >= 0) + 1)
    inflow, outflow = 0.8 * 5000 * months, 10000 + 20000 + 1000 * months
    assert s.roi_p50 == pytest.approx((inflow - outflow) / outflow)
    # break-even CAC makes NPV exactly zero
    assert s.break_even_cac_p50 == pytest.approx(200.0 + s.npv_p50 / 100.0)


def test_market_reconciliation_flags_large_disagreement():
    r = market.size_market(1e9, 1e8, 1e6, np.full(10, 1e6 / 12 * 5), np.full(10, 0.1), factor=3.0)
    assert r.som_bottom_up_usd == pytest.approx(5e6)
    assert r.ratio == pytest.approx(5.0) and r.disagreement
    ok = market.size_market(1e9, 1e8, 1e6, np.full(10, 1e6 / 12 * 2), np.full(10, 0.1), factor=3.0)
    assert not ok.disagreement
