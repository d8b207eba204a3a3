"""Sensitivity swings: the same market re-simulated with one driver moved (common random numbers).

A swing multiplies one driver by a factor and runs the kernel again on the same chunks with the
same seeds. Every random number the kernel draws depends only on (seed, chunk) and the chunk's
size, never on a parameter's value (the uniforms are one block per chunk, the normals a fixed
count per iteration, and the ziggurat's extra words depend on the words alone), so a swung run
has the same customers, the same coefficients and the same market draws; only the driver moves:

- Bass p / Bass q: every iteration's drawn p (q) x factor;
- churn: every iteration's drawn churn x factor, capped at 0.5 like the draw;
- competitor prices: every competitor's list price x factor (competitive response, when on,
  re-prices from there).

Two ways to run a swing, the same model:
- re-run the whole kernel on the swung spec (`run_chunk`): competitor prices, and every driver when
  competitive response is on. Its utility evaluations are counted (budget.py);
- Bass p, q and churn without competitive response enter only the months' adoption recurrence:
  customers' utilities and choice shares do not depend on them, so the kernel's own recurrence
  (kernel.adoption_paths) runs again on the base chunk's draws and shares with the driver moved
  (`from_base`, no utility evaluated). A test checks it against the whole re-run (to rounding:
  the full run moves the prior mean, which is p x factor up to the last bit).

At factor 1.0 the swing's paths are the base run's, bit for bit, either way. Only the chunks that
hold the sampled iterations are swung (the analysis scores the decision on those iterations); the
result carries, per swing, the paths the analysis re-scores: monthly customers (revenue is
customers x our price), churn, final-month shares and, for the one driver that moves the demand
curve (competitor prices), the curve.
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
}
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
    """Whether the driver changes the steady-state demand curve (Bass p, q and churn do not: the
    curve is the choice share of aware customers, before any diffusion)."""
    return driver == simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES


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


def swung_spec(spec, driver: int, factor: float):
    """The spec with one driver multiplied by `factor` (and no swings of its own)."""
    market = spec.market.copy()
    off_price = spec.off_price.copy()
    if driver in _MARKET_INDEX:
        market[_MARKET_INDEX[driver]] *= factor
    elif driver == simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES:
        off_price[1:] *= factor
    else:
        raise InvalidArgument("config.swings.driver", f"unknown swing driver {driver}")
    return dataclasses.replace(spec, market=market, off_price=off_price, swings=[])


def run_chunk(spec, swing: int, chunk: int, simulate) -> SwingPart:
    """Swing number `swing` of the spec on one of the sampled chunks."""
    from services.simulation.engine.runner import chunk_generator  # runner imports this module

    driver, factor = spec.swings[swing]
    swung = swung_spec(spec, driver, factor)
    first, end = spec.chunk_range(chunk)
    started = time.perf_counter()
    market, customers, _, _, final_shares, _, _, demand, _, evaluations = simulate(swung, chunk_generator(spec.seed, chunk), end - first)
    seconds = time.perf_counter() - started
    kept = min(end, spec.sampled_iterations) - first
    return SwingPart(
        driver=driver, factor=factor, first_iteration=first, iterations=kept,
        customers=customers[:kept].copy(), churn=market[:kept, 3].copy(),
        demand=demand[:kept].copy() if moves_demand(driver) else None,
        final_share=final_shares[:kept].copy(), utility_evaluations=int(evaluations), kernel_seconds=seconds,
    )


def from_base(spec, swing: int, first: int, draws: np.ndarray, base_share: np.ndarray,
              final_shares: np.ndarray) -> SwingPart:
    """A Bass p, q or churn swing (no competitive response) of the base chunk starting at
    iteration `first`, for its sampled iterations: the adoption recurrence with the driver moved."""
    from services.simulation.engine.kernel import adoption_paths

    driver, factor = spec.swings[swing]
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
        driver=first.driver, factor=first.factor, first_iteration=first.first_iteration,
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
            if (part.driver, part.factor) != spec.swings[s]:
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
