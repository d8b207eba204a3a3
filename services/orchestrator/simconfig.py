"""From the synthesised market to a SimulationConfig: the assumptions, stated in one place.

- Reachable customers come from SAM (USD/year) divided by the annual spend of a typical customer
  (12 x the weight-averaged persona WTP median); the prior is uniform on +/-25 % of that figure.
- Bass diffusion priors are the classic cross-industry means (p = 0.03, q = 0.38; Sultan, Farley &
  Lehmann 1990) scaled by the segments' innovation / imitation multipliers, with a log-sd of 0.3.
- Churn's prior is centred on the weight-averaged persona churn.
- When the founder gave no price, the simulation evaluates the weight-averaged WTP median; the
  analysis then recommends a price from the demand curve.
- The demand-curve price grid spans 0.25x to 3x the evaluated price, geometrically spaced.
- The sensitivity tornado's market drivers are re-simulated beside the base run (same seed, common
  random numbers): Bass p and q -25 % / +25 %, churn +25 % / -25 %, competitor prices -20 % / +20 %
  (when there are competitors), and with competitive response on our price -20 % / +20 % (so the
  competitors' re-pricing reacts to it); the analysis scores each swing.
- So are the pivots' scenarios, on the same draws: feature parity (our coverage raised to the
  competitors' mean on every feature where it is below; when there is such a gap) and a segment
  focus on the segment most likely to accept our price (highest P(WTP >= price) under its lognormal
  WTP; when there are two segments or more). The analysis states by how much each helps.
"""

from __future__ import annotations

import hashlib

import numpy as np

from smvm.v1 import competitor_service_pb2, persona_service_pb2, run_pb2, simulation_pb2

BASS_P = 0.03
BASS_Q = 0.38
BASS_LOG_SD = 0.3
CHURN_LOG_SD = 0.3
PRICE_SCALE_LOG_SD = 0.2
MARKET_SIZE_SPREAD = 0.25
GRID_LOW, GRID_HIGH = 0.25, 3.0
CHUNK_ITERATIONS = 256
# Customers sampled per iteration, each with freshly drawn coefficients.
CUSTOMERS_PER_ITERATION = 64
SAMPLE_LIMIT = 1000

# (driver, factors) of the tornado's re-simulated swings; see the module doc.
SWINGS = (
    (simulation_pb2.SWING_DRIVER_BASS_P, (0.75, 1.25)),
    (simulation_pb2.SWING_DRIVER_BASS_Q, (0.75, 1.25)),
    (simulation_pb2.SWING_DRIVER_CHURN, (1.25, 0.75)),
    (simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES, (0.8, 1.2)),
)
# Our price's swing (the tornado's "price"), re-simulated only with competitive response on: without
# it the analysis re-prices the same paths exactly at grid prices (decide.sensitivity).
OUR_PRICE_FACTORS = (0.8, 1.2)

DEFAULTS = {
    "simulation_iterations": 1000,
    "persona_count": 5,
    "competitor_count": 10,
    "max_tokens_per_run": 10000,
    "timeout_seconds": 3600,
    "months": 36,
    "price_points": 20,
}


def stage_seed(root_seed: int, stage: str) -> int:
    """An independent 63-bit seed per stage, derived from the run's root seed."""
    digest = hashlib.sha256(f"{root_seed}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def root_seed(project_id: str, run_id: str) -> int:
    digest = hashlib.sha256(f"{project_id}/{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _weighted(values: list[float], weights: list[float]) -> float:
    w = np.asarray(weights, dtype=float)
    return float(np.dot(np.asarray(values, dtype=float), w / w.sum()))


def build_simulation_config(
    *,
    sam_usd: float,
    personas: persona_service_pb2.GeneratePersonasResponse,
    landscape: competitor_service_pb2.BuildLandscapeResponse,
    configuration: run_pb2.RunConfiguration,
    seed: int,
    max_utility_evaluations: int,
) -> simulation_pb2.SimulationConfig:
    taxonomy = list(landscape.feature_taxonomy)
    segments = list(personas.personas)
    weights = [p.weight for p in segments]
    wtp_median = _weighted([p.wtp.median_usd for p in segments], weights)

    ours = landscape.our_offering
    price = ours.monthly_price_usd if ours.monthly_price_usd > 0 else wtp_median
    customers = max(sam_usd / (12.0 * wtp_median), 1.0)

    def vector(mapping) -> list[float]:
        return [float(mapping.get(name, 0.0)) for name in taxonomy]

    config = simulation_pb2.SimulationConfig(
        seed=seed,
        iterations=configuration.simulation_iterations or DEFAULTS["simulation_iterations"],
        months=configuration.months or DEFAULTS["months"],
        customers_per_iteration=CUSTOMERS_PER_ITERATION,
        feature_taxonomy=taxonomy,
        our_offering=simulation_pb2.OfferingSpec(
            name=ours.name or "our_product",
            monthly_price_usd=price,
            features=vector(ours.feature_vector),
            brand=ours.brand_strength,
        ),
        competitors=[
            simulation_pb2.OfferingSpec(
                name=c.name, monthly_price_usd=c.monthly_price_usd, features=vector(c.feature_vector), brand=c.brand_strength
            )
            for c in landscape.competitors
        ],
        segments=[
            simulation_pb2.SegmentSpec(
                name=p.segment or p.name,
                weight=p.weight,
                wtp_median_usd=p.wtp.median_usd,
                wtp_sigma=p.wtp.sigma,
                price_sensitivity=p.price_sensitivity,
                feature_importance=vector(p.feature_importance),
                brand_affinity=p.brand_affinity,
                innovation=p.innovation,
                imitation=p.imitation,
                churn_monthly=p.churn_monthly,
            )
            for p in segments
        ],
        priors=simulation_pb2.MarketPriors(
            market_size_low=customers * (1 - MARKET_SIZE_SPREAD),
            market_size_high=customers * (1 + MARKET_SIZE_SPREAD),
            bass_p_mean=BASS_P,
            bass_p_log_sd=BASS_LOG_SD,
            bass_q_mean=BASS_Q,
            bass_q_log_sd=BASS_LOG_SD,
            churn_mean=_weighted([p.churn_monthly for p in segments], weights),
            churn_log_sd=CHURN_LOG_SD,
            price_scale_log_sd=PRICE_SCALE_LOG_SD,
        ),
        price_grid=[float(x) for x in np.geomspace(GRID_LOW * price, GRID_HIGH * price, configuration.price_points or DEFAULTS["price_points"])],
        competitive_response=configuration.competitive_response,
        competitor_reprice_step=0.02,
        max_utility_evaluations=max_utility_evaluations,
        sample_limit=SAMPLE_LIMIT,
        chunk_iterations=CHUNK_ITERATIONS,
    )
    config.swings.extend(default_swings(config))
    return config


def default_swings(config: simulation_pb2.SimulationConfig) -> list[simulation_pb2.DriverSwing]:
    """The tornado's swings and the pivots' scenarios the analysis scores (the module doc says which)."""
    return tornado_swings(bool(config.competitors), config.competitive_response) + scenario_swings(config)


def tornado_swings(with_competitors: bool, competitive_response: bool = False) -> list[simulation_pb2.DriverSwing]:
    out = [simulation_pb2.DriverSwing(driver=driver, factor=f) for driver, factors in SWINGS for f in factors
           if with_competitors or driver != simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES]
    if competitive_response and with_competitors:
        out += [simulation_pb2.DriverSwing(driver=simulation_pb2.SWING_DRIVER_OUR_PRICE, factor=f) for f in OUR_PRICE_FACTORS]
    return out


def scenario_swings(config: simulation_pb2.SimulationConfig) -> list[simulation_pb2.DriverSwing]:
    """Feature parity when we trail the competitors' mean on some feature; a segment focus on
    `focus_segment` when there are two segments or more."""
    out = []
    if config.competitors and config.our_offering.features:
        mean = np.mean([list(c.features) for c in config.competitors], axis=0)
        if np.any(mean > np.asarray(config.our_offering.features)):
            out.append(simulation_pb2.DriverSwing(driver=simulation_pb2.SWING_DRIVER_FEATURE_PARITY, factor=1.0))
    segment = focus_segment(config)
    if segment is not None:
        out.append(simulation_pb2.DriverSwing(driver=simulation_pb2.SWING_DRIVER_SEGMENT_FOCUS, factor=1.0, segment=segment))
    return out


def focus_segment(config: simulation_pb2.SimulationConfig) -> int | None:
    """The segment most likely to accept our price: highest P(WTP >= price) under its lognormal
    WTP (median, log-sd), ties to the larger weight; None with fewer than two weighted segments."""
    price = config.our_offering.monthly_price_usd
    candidates = [(i, s) for i, s in enumerate(config.segments) if s.weight > 0 and s.wtp_median_usd > 0]
    if len(candidates) < 2 or price <= 0:
        return None

    from services.analysis.stats import lognormal_survival  # plain numbers: no analysis service imported

    return max(candidates, key=lambda c: (lognormal_survival(price, c[1].wtp_median_usd, c[1].wtp_sigma),
                                          c[1].weight, -c[0]))[0]


def customers_per_iteration(config: simulation_pb2.SimulationConfig) -> int:
    return config.customers_per_iteration or CUSTOMERS_PER_ITERATION


def swing_iterations(config: simulation_pb2.SimulationConfig) -> int:
    """Iterations the sensitivity swings re-simulate through the whole kernel, all together (the
    simulation's own budget rule; Bass and churn swings without competitive response re-run only
    the adoption recurrence and evaluate no utility)."""
    from services.simulation.budget import swing_rerun_iterations  # pure Python: no engine imported

    return swing_rerun_iterations(config)
