"""Known answers: the analytic logit share and the closed-form Bass curve."""

from __future__ import annotations

import math

import numpy as np

from smvm.v1 import simulation_pb2
from services.simulation import convert
from services.simulation.engine import runner


def _degenerate_config(*, price, importance, features, brand_affinity, brand, beta, wtp, grid, months=6,
                       market=5000.0, p=0.03, q=0.38, churn=0.0) -> simulation_pb2.SimulationConfig:
    """One segment, no heterogeneity, no competitors, no market-level uncertainty."""
    return simulation_pb2.SimulationConfig(
        seed=3, iterations=20, months=months, customers_per_iteration=8, chunk_iterations=8, sample_limit=3,
        feature_taxonomy=[f"f{i}" for i in range(len(features))],
        our_offering=simulation_pb2.OfferingSpec(name="ours", monthly_price_usd=price, features=features, brand=brand),
        segments=[simulation_pb2.SegmentSpec(name="only", weight=1.0, wtp_median_usd=wtp, wtp_sigma=0.0,
                                             price_sensitivity=beta, feature_importance=importance,
                                             brand_affinity=brand_affinity)],
        priors=simulation_pb2.MarketPriors(market_size_low=market, market_size_high=market, bass_p_mean=p,
                                           bass_q_mean=q, churn_mean=churn),
        price_grid=grid,
    )


def _run(config):
    spec = convert.spec_from_proto(config)
    return convert.output_to_proto(runner.merge(spec, [runner.run_chunks(spec, 0, spec.n_chunks)]))


def test_share_is_the_analytic_logit():
    importance, features = [1.2, -0.4], [0.8, 0.5]
    price, beta, wtp, brand_affinity, brand = 40.0, 2.0, 50.0, 0.7, 0.3
    grid = [10.0, 40.0, 90.0]
    result = _run(_degenerate_config(price=price, importance=importance, features=features,
                                     brand_affinity=brand_affinity, brand=brand, beta=beta, wtp=wtp, grid=grid))

    def logit(p):
        u = float(np.dot(importance, features)) + brand_affinity * brand - beta * p / wtp
        return 1.0 / (1.0 + math.exp(-u))

    ours = result.offering_shares[0].share
    for value in (ours.mean, ours.p5, ours.p50, ours.p95):
        assert abs(value - logit(price)) < 1e-12
    none = result.offering_shares[-1]
    assert none.name == "none" and abs(none.share.mean - (1 - logit(price))) < 1e-12
    for point in result.demand_curve:
        assert abs(point.share.mean - logit(point.price_usd)) < 1e-12
        assert abs(point.revenue_usd.mean - logit(point.price_usd) * 5000.0 * point.price_usd) < 1e-6
    assert abs(result.wtp_usd.p50 - wtp) < 1e-9


def test_bass_closed_form_with_share_one_and_no_churn():
    p, q, market, months = 0.03, 0.38, 5000.0, 24
    # Brand utility 60 makes our share 1 - e^-60, i.e. 1 in double precision.
    result = _run(_degenerate_config(price=10.0, importance=[0.0], features=[0.0], brand_affinity=60.0, brand=1.0,
                                     beta=1.0, wtp=10.0, grid=[10.0], months=months, market=market, p=p, q=q))
    for stats in result.month_stats:
        t = stats.month
        decay = math.exp(-(p + q) * t)
        closed = (1 - decay) / (1 + (q / p) * decay)
        assert abs(stats.customers.mean / market - closed) < 1e-9
        assert abs(stats.customers.p50 / market - closed) < 0.02 * closed  # histogram bin width
        assert abs(stats.revenue_usd.mean - 10.0 * market * closed) < 1e-5
        assert abs(stats.share.mean - 1.0) < 1e-12
    assert list(result.samples[0].monthly_customers)[-1] == result.month_stats[-1].customers.mean


def test_churn_lowers_customers_below_the_closed_form():
    kwargs = dict(price=10.0, importance=[0.0], features=[0.0], brand_affinity=60.0, brand=1.0, beta=1.0, wtp=10.0,
                  grid=[10.0], months=12)
    without = _run(_degenerate_config(**kwargs))
    with_churn = _run(_degenerate_config(**kwargs, churn=0.05))
    assert with_churn.month_stats[-1].customers.mean < 0.95 * without.month_stats[-1].customers.mean
