"""The analysis reads samples and takes per-column quantiles as whole matrices: the same numbers,
bit for bit, as the one-sample-at-a-time and one-column-at-a-time code it replaced."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from services.analysis.inputs import _clean, read_simulation
from services.analysis import financials
from services.analysis.stats import equal_weights, wquantile, wquantile_columns
from smvm.v1 import simulation_pb2

VALUES = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from([0.0, -0.0, 1.0, 1e300])
FINITE = st.floats(min_value=-1e6, max_value=1e6)


@st.composite
def matrices_and_weights(draw):
    rows, cols = draw(st.integers(0, 30)), draw(st.integers(0, 6))
    elements = VALUES if draw(st.booleans()) else FINITE
    x = draw(hnp.arrays(np.float64, (rows, cols), elements=elements))
    if draw(st.booleans()) or rows == 0:
        w = np.full(rows, 1.0 / max(rows, 1))
    else:
        w = draw(hnp.arrays(np.float64, rows, elements=st.floats(0.01, 1.0)))
        w = w / w.sum()
    return x, w


@settings(max_examples=300, deadline=None)
@given(matrices_and_weights(), st.sampled_from([0.5, [0.1, 0.5, 0.9], [0.025, 0.975]]))
def test_quantile_columns_are_the_column_by_column_quantiles(xw, q):
    x, w = xw
    expected = np.array([wquantile(x[:, j], w, q) for j in range(x.shape[1])])
    got = wquantile_columns(x, w, q)
    assert got.shape == ((x.shape[1],) if np.ndim(q) == 0 else (x.shape[1], len(q)))
    np.testing.assert_array_equal(got, expected.reshape(got.shape))


@settings(max_examples=500, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 12), elements=VALUES | st.floats(0.0, 1.0)),
       st.sampled_from([0.0, 1e-9, 1e-6, 1e-5, 1e-3]))
def test_equal_weights_is_numpys_allclose_to_the_first(w, jitter):
    w = w.copy()
    if w.size > 1 and np.isfinite(w[0]):
        w[1:] = np.where(np.isfinite(w[1:]), w[0] + jitter * np.arange(1, w.size), w[1:])
    assert equal_weights(w) == (w.size == 0 or bool(np.allclose(w, w[0])))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20), st.integers(1, 8), st.floats(0.0, 0.5), st.booleans(), st.randoms(use_true_random=False))
def test_summary_shares_gross_adds_and_computes_the_fan_on_first_use(n, months, churn, equal, rnd):
    """The summary computes gross adds once for cash flows, ROI and break-even CAC, and the monthly fan
    only when read: the same figures as the functions taken one by one."""
    rng = np.random.default_rng(rnd.randrange(2**32))
    rev = rng.gamma(2.0, 100.0, (n, months)) * (rng.random((n, months)) > 0.1)
    cust = np.cumsum(rng.integers(0, 5, (n, months)), axis=1).astype(float)
    churn_k = np.full(n, churn)
    w = np.full(n, 1.0 / n) if equal else rng.dirichlet(np.ones(n))
    costs = financials.CostAssumptions(cac_usd=40.0, gross_margin=0.7, fixed_costs_monthly_usd=300.0,
                                       initial_investment_usd=5_000.0, discount_rate_annual=0.1)
    summary = financials.summarise(rev, cust, churn_k, w, costs)
    cf = financials.cash_flows(rev, cust, churn_k, costs)
    np.testing.assert_array_equal(summary.npv, financials.npv(cf, 0.1, 5_000.0))
    np.testing.assert_array_equal(summary.roi, financials.roi(rev, cust, churn_k, costs))
    assert "_monthly" not in vars(summary)  # not computed until read
    fan = wquantile_columns(rev, w, [0.1, 0.5, 0.9])
    rev[:] = 0.0  # the caller's array changing before the fan is read does not move it
    np.testing.assert_array_equal(summary.monthly_p10, fan[:, 0])
    np.testing.assert_array_equal(summary.monthly_p50, fan[:, 1])
    np.testing.assert_array_equal(summary.monthly_p90, fan[:, 2])


def one_sample_at_a_time(sim, idx, n_grid):
    """The former per-sample reading (inputs._from_samples before whole-matrix reads)."""
    samples = [s for s in sim.samples if len(s.monthly_revenue_usd) > 0 or len(s.monthly_customers) > 0]
    months = min(max(len(s.monthly_revenue_usd), len(s.monthly_customers)) for s in samples)
    rev = np.zeros((len(samples), months))
    cust = np.zeros((len(samples), months))
    have_cust = all(len(s.monthly_customers) >= months for s in samples)
    for k, s in enumerate(samples):
        if len(s.monthly_revenue_usd) >= months:
            rev[k] = _clean(list(s.monthly_revenue_usd)[:months])
        if have_cust:
            cust[k] = _clean(list(s.monthly_customers)[:months])
    shares = None
    if all(len(s.demand_share) == len(sim.demand_curve) for s in samples):
        shares = _clean([[s.demand_share[i] for i in idx] for s in samples], 0.0, 1.0).reshape(len(samples), n_grid)
    return rev, cust, shares


@st.composite
def simulations(draw):
    grid = draw(st.lists(st.floats(1.0, 100.0), min_size=1, max_size=6))
    sim = simulation_pb2.SimulationResult(iterations=5)
    for p in grid:  # unsorted, with duplicates: the reader sorts and drops them
        sim.demand_curve.add(price_usd=p, share=simulation_pb2.Quantiles(mean=0.2, p50=0.2))
    months = draw(st.integers(1, 8))
    for k in range(draw(st.integers(1, 8))):
        ragged = lambda: draw(st.sampled_from([months, months, months + 2, max(0, months - 3)]))  # noqa: E731
        sim.samples.add(
            iteration=k, market_size=draw(FINITE), churn=0.02,
            monthly_revenue_usd=draw(st.lists(VALUES, min_size=ragged(), max_size=months + 2)),
            monthly_customers=draw(st.lists(VALUES, min_size=ragged(), max_size=months + 2)),
            demand_share=draw(st.lists(VALUES, min_size=len(grid) - draw(st.integers(0, 1)), max_size=len(grid))))
    return sim


@settings(max_examples=120, deadline=None)
@given(simulations())
def test_samples_read_as_a_matrix_are_the_samples_read_one_by_one(sim):
    kept = [s for s in sim.samples if len(s.monthly_revenue_usd) > 0 or len(s.monthly_customers) > 0]
    if not kept or min(max(len(s.monthly_revenue_usd), len(s.monthly_customers)) for s in kept) == 0:
        return
    priced = simulation_pb2.SimulationConfig(our_offering=simulation_pb2.OfferingSpec(monthly_price_usd=10.0))
    inputs = read_simulation(sim, priced, proposed_price=10.0)
    prices = np.array([pt.price_usd for pt in sim.demand_curve])
    _, first = np.unique(prices[np.argsort(prices, kind="stable")], return_index=True)
    idx = np.argsort(prices, kind="stable")[first]
    rev, cust, shares = one_sample_at_a_time(sim, idx, idx.size)
    np.testing.assert_array_equal(inputs.draws.revenue, rev)
    if all(len(s.monthly_customers) >= rev.shape[1] for s in kept):
        np.testing.assert_array_equal(inputs.draws.customers, cust)
    if shares is not None:
        np.testing.assert_array_equal(inputs.draws.demand_share, shares)
    assert not any(math.isnan(v) for v in inputs.draws.revenue.ravel())
