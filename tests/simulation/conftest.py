"""Config factory for the simulation tests: small, valid SimulationConfigs."""

from __future__ import annotations

import numpy as np
import pytest

from smvm.v1 import simulation_pb2


def make_config(
    *, iterations=40, months=12, customers=16, competitors=3, segments=2, features=3, grid=5, seed=7,
    chunk_iterations=16, response=False, sample_limit=5, wtp_sigma=0.4, price=30.0,
) -> simulation_pb2.SimulationConfig:
    rng = np.random.default_rng(1234)
    taxonomy = [f"f{i}" for i in range(features)]

    def offering(name, price, brand):
        return simulation_pb2.OfferingSpec(name=name, monthly_price_usd=price,
                                           features=rng.uniform(0, 1, features).tolist(), brand=brand)

    return simulation_pb2.SimulationConfig(
        seed=seed, iterations=iterations, months=months, customers_per_iteration=customers,
        feature_taxonomy=taxonomy,
        our_offering=offering("ours", price, 0.0),
        competitors=[offering(f"c{i}", 20.0 + 10 * i, 0.3 + 0.1 * i) for i in range(competitors)],
        segments=[
            simulation_pb2.SegmentSpec(
                name=f"s{i}", weight=1.0 + i, wtp_median_usd=25.0 + 15 * i, wtp_sigma=wtp_sigma,
                price_sensitivity=1.5 + 0.5 * i, feature_importance=rng.uniform(0, 2, features).tolist(),
                brand_affinity=0.5, innovation=1.0, imitation=1.0, churn_monthly=0.03,
            )
            for i in range(segments)
        ],
        priors=simulation_pb2.MarketPriors(
            market_size_low=8000, market_size_high=12000, bass_p_mean=0.03, bass_p_log_sd=0.3,
            bass_q_mean=0.38, bass_q_log_sd=0.3, churn_mean=0.03, churn_log_sd=0.3, price_scale_log_sd=0.2,
        ),
        price_grid=np.geomspace(0.25 * price, 3 * price, grid).tolist() if grid else [],
        competitive_response=response, competitor_reprice_step=0.02, sample_limit=sample_limit,
        chunk_iterations=chunk_iterations,
    )


@pytest.fixture
def config_factory():
    return make_config
