"""Sensitivity swings: the same market re-simulated with one driver moved (common random numbers).

A swing multiplies one driver by a factor and runs the kernel again on the same chunks with the
same seeds. Every random number the kernel draws depends only on (seed, chunk) and the chunk's
size, never on a parameter's value (the uniforms are one block per chunk, the normals a fixed
count per iteration, and the ziggurat's extra words depend on the words alone), so a swung run
has the same customers, the same coefficients and the same market draws; only the driver moves:

- Bass p / Bass q: every iteration's drawn p (q) x factor;
- churn: every iteration's drawn churn x factor, capped at 0.5 like the draw;
- competitor prices: every competitor's list price x factor (competitive response, when on,
  re-prices from there);
- our price: our list price x factor (with competitive response on, competitors' re-pricing reacts
  to the share our swung price takes from them);
- feature parity (the positioning scenario): our coverage of each feature raised towards the
  competitors' mean coverage where it is below, by `factor` of the gap;
- segment focus (the segment scenario): the market restricted to one segment. Every customer is
  drawn from it (the same uniforms and normals: a customer's coefficients are the segment's
  medians x the same lognormal draws), reachable customers are the market's x the segment's weight,
  and the Bass p, q and churn priors move by the segment's innovation, imitation and churn relative
  to the weighted means the base priors carry. The base run's customers hold about weight x N
  customers of the segment per iteration and share one market-wide diffusion, so its paths cannot
  be split by segment; this re-run has N customers of the segment and its own diffusion.

Two ways to run a swing, the same model:
- re-run the whole kernel on the swung spec (`run_chunk`): competitor prices, our price, feature
  parity, segment focus, and every driver when competitive response is on. Its utility evaluations
  are counted (budget.py);
- Bass p, q and churn without competitive response enter only the months' adoption recurrence:
  customers' utilities and choice shares do not depend on them, so the kernel's own recurrence
  (kernel.adoption_paths) runs again on the base chunk's draws and shares with the driver moved
  (`from_base`, no utility evaluated). A test checks it against the whole re-run (to rounding:
  the full run moves the prior mean, which is p x factor up to the last bit).

At factor 1.0 a driver's swing reproduces the base run's paths bit for bit, either way (a segment
focus on the only segment of a one-segment market does too). Only the chunks that hold the sampled
iterations are swung (the analysis scores the decision on those iterations); the result carries,
per swing, the paths the analysis re-scores: monthly customers (revenue is customers x our price,
swung for an our-price swing), churn, final-month shares and, for the swings that move the demand
curve (competitor prices, feature parity, segment focus), the curve.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from services.simulation import budget
from smvm.errors import InvalidArgument
from smvm.v1 import simulation_pb2

# SwingDriver value -> the name used in messages.
DRIVERS = {
    simulation_pb2.SWING_DRIVER_BASS_P: "Bass p",
    simulation_pb2.SWING_DRIVER_BASS_Q: "Bass q",
    simulation_pb2.SWING_DRIVER_CHURN: "churn",
    simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES: "competitor prices",
    simulation_pb2.SWING_DRIVER_OUR_PRICE: "our price",
    simulation_pb2.SWING_DRIVER_FEATURE_PARITY: "feature parity",
    simulation_pb2.SWING_DRIVER_SEGMENT_FOCUS: "segment focus",
}
# Swings that compare us with the competitors.
NEEDS_COMPETITORS = frozenset({simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES, simulation_pb2.SWING_DRIVER_FEATURE_PARITY})
# Swings that change the steady-state demand curve (Bass p, q and churn do not: the curve is the
# choice share of aware customers, before any diffusion; nor does our list price: the curve is
# evaluated at the grid's prices against the competitors' list prices).
_MOVES_DEMAND = frozenset({simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES, simulation_pb2.SWING_DRIVER_FEATURE_PARITY,
                           simulation_pb2.SWING_DRIVER_SEGMENT_FOCUS})
# Offsets of the prior means in SimSpec.market.
_MARKET_INDEX = {
    simulation_pb2.SWING_DRIVER_BASS_P: 2,
    simulation_pb2.SWING_DRIVER_BASS_Q: 4,
    simulation_pb2.SWING_DRIVER_CHURN: 6,
}


def reruns_kernel(driver: int, competitive_response: bool) -> bool:
    """Whether the swing re-runs the whole kernel (and evaluates utilities) rather than only the
    adoption recurrence on the base run's draws (the budget's rule, budget.reruns_kernel)."""
    return budget.reruns_kernel(driver, competitive_response)


def moves_demand(driver: int) -> bool:
    """Whether the swing changes the steady-state demand curve (see _MOVES_DEMAND)."""
    return driver in _MOVES_DEMAND


@dataclass
class SwingPart:
    """One swing's paths for a contiguous range of sampled iterations."""

    driver: int
    factor: float
    first_iteration: int
    iterations: int
    customers: np.ndarray  # (n, T)
    churn: np.ndarray  # (n,)
    demand: np.ndarray | None  # (n, G), only when the driver moves the demand curve
    final_share: np.ndarray  # (n, J + 1)
    utility_evaluations: int
    kernel_seconds: float
    segment: int = 0  # a segment focus's segment index


def _segment_focus(spec, segment: int, market: np.ndarray) -> dict:
    """The spec fields of the market restricted to one segment (the module doc says how)."""
    w = spec.seg_weight
    market[0] *= w[segment]
    market[1] *= w[segment]
    market[2] *= spec.seg_innovation[segment] / float(np.dot(w, spec.seg_innovation))
    market[4] *= spec.seg_imitation[segment] / float(np.dot(w, spec.seg_imitation))
    mean_churn = float(np.dot(w, spec.seg_churn))
    if mean_churn > 0:
        market[6] = min(market[6] * spec.seg_churn[segment] / mean_churn, 0.5)
    one = slice(segment, segment + 1)
    fields = {name: np.ascontiguousarray(getattr(spec, name)[one]) for name in (
        "seg_wtp_median", "seg_wtp_sigma", "seg_taste_sd", "seg_beta", "seg_brand", "seg_importance",
        "seg_innovation", "seg_imitation", "seg_churn")}
    return dict(fields, seg_cumw=np.ones(1), seg_weight=np.ones(1))


def swung_spec(spec, swing):
    """The spec with one driver moved or one scenario applied (and no swings of its own)."""
    driver, factor, segment = swing
    market = spec.market.copy()
    off_price = spec.off_price.copy()
    fields = {}
    if driver in _MARKET_INDEX:
        market[_MARKET_INDEX[driver]] *= factor
    elif driver == simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES:
        off_price[1:] *= factor
    elif driver == simulation_pb2.SWING_DRIVER_OUR_PRICE:
        off_price[0] *= factor
    elif driver == simulation_pb2.SWING_DRIVER_FEATURE_PARITY:
        features = spec.off_features.copy()
        gap = np.maximum(features[1:].mean(axis=0) - features[0], 0.0)
        features[0] += factor * gap
        fields["off_features"] = features
    elif driver == simulation_pb2.SWING_DRIVER_SEGMENT_FOCUS:
        fields = _segment_focus(spec, segment, market)
    else:
        raise InvalidArgument("config.swings.driver", f"unknown swing driver {driver}")
    return dataclasses.replace(spec, market=market, off_price=off_price, swings=[], **fields)


def run_chunk(spec, swing: int, chunk: int, simulate) -> SwingPart:
    """Swing number `swing` of the spec on one of the sampled chunks."""
    from services.simulation.engine.runner import chunk_generator  # runner imports this module

    driver, factor, segment = spec.swings[swing]
    swung = swung_spec(spec, spec.swings[swing])
    first, end = spec.chunk_range(chunk)
    started = time.perf_counter()
    market, customers, _, _, final_shares, _, _, demand, _, evaluations = simulate(swung, chunk_generator(spec.seed, chunk), end - first)
    seconds = time.perf_counter() - started
    kept = min(end, spec.sampled_iterations) - first
    return SwingPart(
        driver=driver, factor=factor, segment=segment, first_iteration=first, iterations=kept,
        customers=customers[:kept].copy(), churn=market[:kept, 3].copy(),
        demand=demand[:kept].copy() if moves_demand(driver) else None,
        final_share=final_shares[:kept].copy(), utility_evaluations=int(evaluations), kernel_seconds=seconds,
    )


def from_base(spec, swing: int, first: int, draws: np.ndarray, base_share: np.ndarray,
              final_shares: np.ndarray) -> SwingPart:
    """A Bass p, q or churn swing (no competitive response) of the base chunk starting at
    iteration `first`, for its sampled iterations: the adoption recurrence with the driver moved."""
    from services.simulation.engine.kernel import adoption_paths

    driver, factor, _ = spec.swings[swing]
    kept = min(first + draws.shape[0], spec.sampled_iterations) - first
    started = time.perf_counter()
    moved = draws[:kept].copy()
    column = {simulation_pb2.SWING_DRIVER_BASS_P: 1, simulation_pb2.SWING_DRIVER_BASS_Q: 2,
              simulation_pb2.SWING_DRIVER_CHURN: 3}[driver]
    moved[:, column] *= factor
    if driver == simulation_pb2.SWING_DRIVER_CHURN:
        np.minimum(moved[:, 3], 0.5, out=moved[:, 3])
    customers, share, revenue = (np.empty((kept, spec.months)) for _ in range(3))
    adoption_paths(moved, np.ascontiguousarray(base_share[:kept]), spec.off_price[0], customers, share, revenue)
    return SwingPart(
        driver=driver, factor=factor, first_iteration=first, iterations=kept, customers=customers,
        churn=moved[:, 3].copy(), demand=None, final_share=final_shares[:kept].copy(), utility_evaluations=0,
        kernel_seconds=time.perf_counter() - started,
    )


def concatenate(parts: list[SwingPart]) -> SwingPart:
    """Parts of one swing over adjacent iteration ranges, in order, as one part."""
    parts = sorted(parts, key=lambda p: p.first_iteration)
    first = parts[0]
    return SwingPart(
        driver=first.driver, factor=first.factor, segment=first.segment, first_iteration=first.first_iteration,
        iterations=sum(p.iterations for p in parts),
        customers=np.concatenate([p.customers for p in parts]), churn=np.concatenate([p.churn for p in parts]),
        demand=np.concatenate([p.demand for p in parts]) if first.demand is not None else None,
        final_share=np.concatenate([p.final_share for p in parts]),
        utility_evaluations=sum(p.utility_evaluations for p in parts),
        kernel_seconds=sum(p.kernel_seconds for p in parts),
    )


def merge(spec, parts_by_shard: list[list[SwingPart]]) -> list[SwingPart]:
    """Each config swing's paths over the sampled iterations [0, n), from the shards' parts.

    Checks that every swing is covered exactly once with the config's shapes; raises
    InvalidArgument naming the shard field otherwise.
    """
    if not spec.swings:
        if any(parts_by_shard):
            raise InvalidArgument("shards.swings", "the config has no swings")
        return []
    months, grid, offerings = spec.months, spec.n_grid, spec.n_offerings + 1
    collected: list[list[SwingPart]] = [[] for _ in spec.swings]
    for n, parts in enumerate(parts_by_shard):
        if parts and len(parts) != len(spec.swings):
            raise InvalidArgument(f"shards[{n}].swings", f"must hold all {len(spec.swings)} swings of the config or none")
        for s, part in enumerate(parts):
            field = f"shards[{n}].swings[{s}]"
            if (part.driver, part.factor, part.segment) != tuple(spec.swings[s]):
                raise InvalidArgument(field, "does not match the config's swing")
            shapes_ok = (part.customers.shape == (part.iterations, months) and part.churn.shape == (part.iterations,)
                         and part.final_share.shape == (part.iterations, offerings)
                         and (part.demand is None) != moves_demand(part.driver)
                         and (part.demand is None or part.demand.shape == (part.iterations, grid)))
            if not shapes_ok:
                raise InvalidArgument(field, "paths do not match the config's months, price grid or offerings")
            collected[s].append(part)
    out = []
    for s, parts in enumerate(collected):
        parts.sort(key=lambda p: p.first_iteration)
        at = 0
        for part in parts:
            if part.first_iteration != at:
                raise InvalidArgument("shards.swings", f"swing {s}: iterations from {at} missing or duplicated")
            at += part.iterations
        if at != spec.sampled_iterations:
            raise InvalidArgument("shards.swings", f"swing {s}: covers {at} of {spec.sampled_iterations} sampled iterations")
        out.append(concatenate(parts))
    return out
