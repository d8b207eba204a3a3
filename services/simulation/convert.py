"""Protobuf <-> engine: validate a SimulationConfig into a SimSpec; results and shards to/from proto.

Validation names the offending field with its dotted path ("config.segments[2].weight") so the
error interceptor can return a BadRequest field violation.
"""

from __future__ import annotations

import math

import numpy as np

from smvm.errors import InvalidArgument
from smvm.v1 import simulation_pb2

from services.simulation import budget
from services.simulation.engine import runner, swings
from services.simulation.spec import NONE_OPTION, TASTE_SD_PER_WTP_SIGMA, SimSpec, Swing

MAX_MONTHS = 600
MAX_CUSTOMERS = 100_000
MAX_CHUNK_ITERATIONS = 1_000_000
MAX_PRICE_POINTS = 1_000
MAX_LOG_SD = 5.0
MAX_SWING_FACTOR = 10.0
MAX_SWINGS = 16


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number")
    return float(value)


def _at_least(field: str, value: float, low: float) -> float:
    if _finite(field, value) < low:
        raise InvalidArgument(field, f"must be >= {low:g}")
    return float(value)


def _between(field: str, value: float, low: float, high: float) -> float:
    if not low <= _finite(field, value) <= high:
        raise InvalidArgument(field, f"must be in [{low:g}, {high:g}]")
    return float(value)


def _offering(field: str, offering: simulation_pb2.OfferingSpec, n_features: int) -> tuple[list[float], float, float]:
    price = _at_least(f"{field}.monthly_price_usd", offering.monthly_price_usd, 0.0)
    if len(offering.features) != n_features:
        raise InvalidArgument(f"{field}.features", f"must have {n_features} values (one per feature_taxonomy entry)")
    features = [_between(f"{field}.features[{i}]", v, 0.0, 1.0) for i, v in enumerate(offering.features)]
    brand = _finite(f"{field}.brand", offering.brand)
    return features, brand, price


def spec_from_proto(config: simulation_pb2.SimulationConfig) -> SimSpec:
    """Validate `config` and convert it to the engine's arrays."""
    if config.iterations < 1:
        raise InvalidArgument("config.iterations", "must be at least 1")
    if not 1 <= config.months <= MAX_MONTHS:
        raise InvalidArgument("config.months", f"must be in [1, {MAX_MONTHS}]")
    if not 0 <= config.customers_per_iteration <= MAX_CUSTOMERS:
        raise InvalidArgument("config.customers_per_iteration", f"must be in [0, {MAX_CUSTOMERS}] (0 = default)")
    if not 0 <= config.chunk_iterations <= MAX_CHUNK_ITERATIONS:
        raise InvalidArgument("config.chunk_iterations", f"must be in [0, {MAX_CHUNK_ITERATIONS}] (0 = default)")
    if config.sample_limit < 0:
        raise InvalidArgument("config.sample_limit", "must be >= 0")
    if config.max_utility_evaluations < 0:
        raise InvalidArgument("config.max_utility_evaluations", "must be >= 0 (0 = no budget)")
    step = _between("config.competitor_reprice_step", config.competitor_reprice_step, 0.0, 0.99)
    n_features = len(config.feature_taxonomy)
    if len(set(config.feature_taxonomy)) != n_features:
        raise InvalidArgument("config.feature_taxonomy", "feature names must be unique")

    if not config.HasField("our_offering"):
        raise InvalidArgument("config.our_offering", "is required")
    offerings = [_offering("config.our_offering", config.our_offering, n_features)]
    offerings += [_offering(f"config.competitors[{i}]", c, n_features) for i, c in enumerate(config.competitors)]
    names = [config.our_offering.name or "our_product"] + [c.name or f"competitor_{i}" for i, c in enumerate(config.competitors)]

    if not config.segments:
        raise InvalidArgument("config.segments", "at least one segment is required")
    weights, wtp_median, wtp_sigma, beta, brand_aff, importance, innovation, imitation, churn = ([] for _ in range(9))
    for i, seg in enumerate(config.segments):
        f = f"config.segments[{i}]"
        weights.append(_at_least(f"{f}.weight", seg.weight, 0.0))
        median = _finite(f"{f}.wtp_median_usd", seg.wtp_median_usd)
        if median <= 0:
            raise InvalidArgument(f"{f}.wtp_median_usd", "must be > 0")
        wtp_median.append(median)
        wtp_sigma.append(_between(f"{f}.wtp_sigma", seg.wtp_sigma, 0.0, MAX_LOG_SD))
        beta.append(_at_least(f"{f}.price_sensitivity", seg.price_sensitivity, 0.0))
        if len(seg.feature_importance) != n_features:
            raise InvalidArgument(f"{f}.feature_importance", f"must have {n_features} values (one per feature_taxonomy entry)")
        importance.append([_finite(f"{f}.feature_importance[{j}]", v) for j, v in enumerate(seg.feature_importance)])
        brand_aff.append(_finite(f"{f}.brand_affinity", seg.brand_affinity))
        innovation.append(_at_least(f"{f}.innovation", seg.innovation, 0.0) or 1.0)  # 0 = unset = the prior
        imitation.append(_at_least(f"{f}.imitation", seg.imitation, 0.0) or 1.0)
        churn.append(_between(f"{f}.churn_monthly", seg.churn_monthly, 0.0, 1.0))
    w = np.array(weights)
    if w.sum() <= 0:
        raise InvalidArgument("config.segments", "segment weights must sum to more than 0")
    w = w / w.sum()
    cumw = np.cumsum(w)
    cumw[-1] = 1.0

    pr = config.priors
    low = _at_least("config.priors.market_size_low", pr.market_size_low, 0.0)
    high = _finite("config.priors.market_size_high", pr.market_size_high)
    if high <= 0 or high < low:
        raise InvalidArgument("config.priors.market_size_high", "must be > 0 and >= market_size_low")
    p_mean = _finite("config.priors.bass_p_mean", pr.bass_p_mean)
    if p_mean <= 0:
        raise InvalidArgument("config.priors.bass_p_mean", "must be > 0")
    q_mean = _at_least("config.priors.bass_q_mean", pr.bass_q_mean, 0.0)
    market = np.array([
        low, high,
        p_mean * float(np.dot(w, innovation)), _between("config.priors.bass_p_log_sd", pr.bass_p_log_sd, 0.0, MAX_LOG_SD),
        q_mean * float(np.dot(w, imitation)), _between("config.priors.bass_q_log_sd", pr.bass_q_log_sd, 0.0, MAX_LOG_SD),
        _between("config.priors.churn_mean", pr.churn_mean, 0.0, 0.5),
        _between("config.priors.churn_log_sd", pr.churn_log_sd, 0.0, MAX_LOG_SD),
        _between("config.priors.price_scale_log_sd", pr.price_scale_log_sd, 0.0, MAX_LOG_SD),
        step,
    ])

    if not 1 <= len(config.price_grid) <= MAX_PRICE_POINTS:
        raise InvalidArgument("config.price_grid", f"must have 1 to {MAX_PRICE_POINTS} prices")
    grid = np.array([_finite(f"config.price_grid[{i}]", v) for i, v in enumerate(config.price_grid)])
    if grid[0] <= 0 or np.any(np.diff(grid) <= 0):
        raise InvalidArgument("config.price_grid", "prices must be > 0 and strictly increasing")

    driver_swings = _swings(config)

    features = np.array([o[0] for o in offerings], dtype=np.float64).reshape(len(offerings), n_features)
    c = np.ascontiguousarray
    spec = SimSpec(
        seed=int(config.seed),
        iterations=int(config.iterations),
        months=int(config.months),
        customers=budget.customers_per_iteration(config),
        chunk_iterations=config.chunk_iterations or budget.DEFAULT_CHUNK_ITERATIONS,
        sample_limit=int(config.sample_limit),
        competitive_response=bool(config.competitive_response),
        max_utility_evaluations=int(config.max_utility_evaluations),
        offering_names=names + [NONE_OPTION],
        seg_cumw=c(cumw, dtype=np.float64),
        seg_wtp_median=c(wtp_median, dtype=np.float64),
        seg_wtp_sigma=c(wtp_sigma, dtype=np.float64),
        seg_taste_sd=c(np.array(wtp_sigma) * TASTE_SD_PER_WTP_SIGMA, dtype=np.float64),
        seg_beta=c(beta, dtype=np.float64),
        seg_brand=c(brand_aff, dtype=np.float64),
        seg_importance=c(np.array(importance, dtype=np.float64).reshape(len(weights), n_features)),
        off_features=c(features),
        off_brand=c([o[1] for o in offerings], dtype=np.float64),
        off_price=c([o[2] for o in offerings], dtype=np.float64),
        price_grid=c(grid, dtype=np.float64),
        market=c(market, dtype=np.float64),
        swings=driver_swings,
        seg_weight=c(w, dtype=np.float64),
        seg_innovation=c(innovation, dtype=np.float64),
        seg_imitation=c(imitation, dtype=np.float64),
        seg_churn=c(churn, dtype=np.float64),
    )
    return spec


def _swings(config: simulation_pb2.SimulationConfig) -> list[Swing]:
    if len(config.swings) > MAX_SWINGS:
        raise InvalidArgument("config.swings", f"at most {MAX_SWINGS} swings")
    if config.swings and config.sample_limit < 1:
        raise InvalidArgument("config.sample_limit", "swings are run for the sampled iterations: sample_limit must be >= 1")
    out = []
    for i, sw in enumerate(config.swings):
        field = f"config.swings[{i}]"
        if sw.driver not in swings.DRIVERS:
            raise InvalidArgument(f"{field}.driver", "must name a driver (SWING_DRIVER_BASS_P, ...)")
        if sw.driver in swings.NEEDS_COMPETITORS and not config.competitors:
            raise InvalidArgument(f"{field}.driver", f"a {swings.DRIVERS[sw.driver]} swing needs at least one competitor")
        if sw.driver == simulation_pb2.SWING_DRIVER_OUR_PRICE and config.our_offering.monthly_price_usd <= 0:
            raise InvalidArgument(f"{field}.driver", "an our-price swing needs config.our_offering.monthly_price_usd > 0")
        factor = _finite(f"{field}.factor", sw.factor)
        high = {simulation_pb2.SWING_DRIVER_FEATURE_PARITY: 1.0}.get(sw.driver, MAX_SWING_FACTOR)
        if not 0.0 < factor <= high:
            raise InvalidArgument(f"{field}.factor", f"must be in (0, {high:g}]")
        if sw.driver == simulation_pb2.SWING_DRIVER_SEGMENT_FOCUS:
            if factor != 1.0:
                raise InvalidArgument(f"{field}.factor", "a segment focus takes factor 1")
            if not 0 <= sw.segment < len(config.segments):
                raise InvalidArgument(f"{field}.segment", f"must index config.segments [0, {len(config.segments)})")
            if config.segments[sw.segment].weight <= 0:
                raise InvalidArgument(f"{field}.segment", "the segment's weight must be > 0")
        elif sw.segment:
            raise InvalidArgument(f"{field}.segment", "only a segment-focus swing names a segment")
        out.append(Swing(int(sw.driver), factor, int(sw.segment)))
    return out


def _q(row) -> simulation_pb2.Quantiles:
    return simulation_pb2.Quantiles(mean=row[0], p5=row[1], p10=row[2], p50=row[3], p90=row[4], p95=row[5])


def _sample_to_proto(s: runner.Sample) -> simulation_pb2.IterationSample:
    return simulation_pb2.IterationSample(
        iteration=s.iteration, market_size=s.market_size, bass_p=s.bass_p, bass_q=s.bass_q, churn=s.churn,
        price_scale=s.price_scale, monthly_customers=s.monthly_customers.tolist(),
        monthly_revenue_usd=s.monthly_revenue.tolist(), demand_share=s.demand_share.tolist(),
        final_share=s.final_share.tolist(),
    )


def _sample_from_proto(s: simulation_pb2.IterationSample) -> runner.Sample:
    return runner.Sample(
        s.iteration, s.market_size, s.bass_p, s.bass_q, s.churn, s.price_scale,
        np.array(s.monthly_customers), np.array(s.monthly_revenue_usd), np.array(s.demand_share),
        np.array(s.final_share),
    )


F64 = np.dtype("<f8")  # SwingPaths' packed arrays


def _f64(array: np.ndarray | None) -> bytes:
    return b"" if array is None else np.ascontiguousarray(array, dtype=F64).tobytes()


def _swing_to_proto(part: swings.SwingPart) -> simulation_pb2.SwingPaths:
    return simulation_pb2.SwingPaths(
        swing=simulation_pb2.DriverSwing(driver=part.driver, factor=part.factor, segment=part.segment),
        first_iteration=part.first_iteration, iterations=part.iterations, months=part.customers.shape[1],
        monthly_customers_f64=_f64(part.customers), churn_f64=_f64(part.churn), demand_share_f64=_f64(part.demand),
        final_share_f64=_f64(part.final_share), utility_evaluations=part.utility_evaluations,
    )


def swing_rows(paths: simulation_pb2.SwingPaths, name: str, field: str) -> np.ndarray:
    """One of SwingPaths' packed arrays as (iterations, width) float64 rows; InvalidArgument naming
    the field when its size is not a whole number of rows."""
    raw = getattr(paths, name)
    n = paths.iterations
    if n < 1 or len(raw) % (8 * n):
        raise InvalidArgument(f"{field}.{name}", f"must hold {n} rows of float64 values")
    return np.frombuffer(raw, dtype=F64).reshape(n, -1).astype(np.float64)


def _swing_from_proto(paths: simulation_pb2.SwingPaths, field: str) -> swings.SwingPart:
    """Arrays shaped by the message's own counts; runner.merge checks them against the config."""
    if paths.iterations < 1 or paths.months < 1:
        raise InvalidArgument(f"{field}.iterations", "a swing's paths need at least one iteration and one month")
    customers = swing_rows(paths, "monthly_customers_f64", field)
    if customers.shape[1] != paths.months:
        raise InvalidArgument(f"{field}.monthly_customers_f64", f"must hold {paths.iterations} x {paths.months} values")
    return swings.SwingPart(
        driver=paths.swing.driver, factor=paths.swing.factor, segment=paths.swing.segment,
        first_iteration=paths.first_iteration,
        iterations=paths.iterations, customers=customers, churn=swing_rows(paths, "churn_f64", field).ravel(),
        demand=swing_rows(paths, "demand_share_f64", field) if paths.demand_share_f64 else None,
        final_share=swing_rows(paths, "final_share_f64", field),
        utility_evaluations=paths.utility_evaluations, kernel_seconds=0.0,  # in the shard's kernel_seconds
    )


def output_to_proto(output: runner.Output) -> simulation_pb2.SimulationResult:
    return simulation_pb2.SimulationResult(
        seed=output.seed,
        iterations=output.iterations,
        months=output.months,
        month_stats=[
            simulation_pb2.MonthStats(month=t + 1, customers=_q(output.customers[t]), share=_q(output.share[t]),
                                      revenue_usd=_q(output.revenue[t]))
            for t in range(output.months)
        ],
        offering_shares=[
            simulation_pb2.OfferingShare(name=name, share=_q(output.offering_share[j]), final_price_usd=output.final_price[j])
            for j, name in enumerate(output.offering_names)
        ],
        demand_curve=[
            simulation_pb2.DemandPoint(price_usd=price, share=_q(output.demand_share[g]), revenue_usd=_q(output.demand_revenue[g]))
            for g, price in enumerate(output.price_grid)
        ],
        wtp_usd=_q(output.wtp),
        utility_evaluations=output.utility_evaluations,
        kernel_seconds=output.kernel_seconds,
        samples=[_sample_to_proto(s) for s in output.samples],
        competitive_response=simulation_pb2.CompetitiveResponseEffect(
            enabled=output.response_enabled, share_with_response=output.share_with_response,
            share_without_response=output.share_without_response, mean_price_change=output.mean_price_change,
        ),
        chunks=output.chunks,
        engine=output.engine,
        swings=[_swing_to_proto(part) for part in output.swings],
    )


def deterministic_bytes(result: simulation_pb2.SimulationResult) -> bytes:
    """The result's bytes without kernel_seconds (a wall-clock measurement): equal for equal seeds."""
    copy = simulation_pb2.SimulationResult()
    copy.CopyFrom(result)
    copy.kernel_seconds = 0.0
    return copy.SerializeToString(deterministic=True)


def shard_to_proto(partial: runner.Partial) -> simulation_pb2.SimulationShard:
    chunks = []
    for n, chunk in enumerate(partial.chunks):
        stats = simulation_pb2.ChunkStats(chunk_index=chunk.index, iterations=chunk.iterations, sums=chunk.sums.tolist(),
                                          level=chunk.level)
        if n == 0:
            stats.histogram_counts.extend(partial.histogram.tolist())
        chunks.append(stats)
    return simulation_pb2.SimulationShard(
        chunk_start=partial.chunk_start, chunk_count=partial.chunk_count, chunks=chunks,
        samples=[_sample_to_proto(s) for s in partial.samples], utility_evaluations=partial.utility_evaluations,
        layout=partial.layout, kernel_seconds=partial.kernel_seconds,
        swings=[_swing_to_proto(part) for part in partial.swings],
    )


def shard_from_proto(shard: simulation_pb2.SimulationShard) -> runner.Partial:
    if not shard.chunks:
        raise InvalidArgument("shards.chunks", "a shard must carry at least one chunk")
    histogram = np.array(shard.chunks[0].histogram_counts, dtype=np.int64)
    if any(len(c.histogram_counts) for c in shard.chunks[1:]):
        raise InvalidArgument("shards.chunks.histogram_counts", "only a shard's first chunk carries the histogram")
    return runner.Partial(
        chunk_start=shard.chunk_start, chunk_count=shard.chunk_count,
        chunks=[runner.ChunkSums(c.chunk_index, c.iterations, np.array(c.sums, dtype=np.float64), c.level)
                for c in shard.chunks],
        histogram=histogram, samples=[_sample_from_proto(s) for s in shard.samples],
        utility_evaluations=shard.utility_evaluations, kernel_seconds=shard.kernel_seconds, layout=shard.layout,
        swings=[_swing_from_proto(p, f"shards.swings[{i}]") for i, p in enumerate(shard.swings)],
    )
