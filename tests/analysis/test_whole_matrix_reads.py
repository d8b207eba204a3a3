"""The analysis reads samples and takes per-column quantiles as whole matrices: the same numbers,
bit for bit, as the one-sample-at-a-time and one-column-at-a-time code it replaced."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from services.analysis.inputs import _clean, read_simulation
from services.analysis.stats import wquantile, wquantile_columns
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
