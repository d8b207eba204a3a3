"""The simulation's re-simulated swings (SimulationResult.swings) as analysis inputs.

The simulation service re-runs the market with one driver moved, on the same seed (common random
numbers), for the iterations it returns as samples. Each swing here becomes the SimInputs of the
swung market: the same iterations, weights and price as the base, with that run's customer paths,
churn and (for competitor prices) demand curve, so the decision is re-scored on the worlds the
simulator itself produces. A swing whose paths do not line up with the samples is not used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from services.analysis.inputs import SimInputs, _clean, _demand_curve
from smvm.v1 import simulation_pb2

BASS_P = simulation_pb2.SWING_DRIVER_BASS_P
BASS_Q = simulation_pb2.SWING_DRIVER_BASS_Q
CHURN = simulation_pb2.SWING_DRIVER_CHURN
COMPETITOR_PRICES = simulation_pb2.SWING_DRIVER_COMPETITOR_PRICES


@dataclass(frozen=True)
class DriverInfo:
    label: str
    higher_is_better: bool  # for our NPV: the tornado's "low" side is the adverse one


DRIVERS = {
    BASS_P: DriverInfo("Bass p (innovation)", True),
    BASS_Q: DriverInfo("Bass q (word of mouth)", True),
    CHURN: DriverInfo("churn", False),
    COMPETITOR_PRICES: DriverInfo("competitor prices", True),
}


def factor_label(factor: float) -> str:
    return f"{(factor - 1.0) * 100:+.0f}%"


def adverse_and_favourable(request_simulation, driver: int) -> tuple[float, float] | None:
    """The driver's (adverse, favourable) swing factors present in the result, or None."""
    factors = sorted({p.swing.factor for p in request_simulation.swings if p.swing.driver == driver})
    if not factors:
        return None
    low, high = factors[0], factors[-1]
    return (low, high) if DRIVERS[driver].higher_is_better else (high, low)


F64 = np.dtype("<f8")  # SwingPaths' packed arrays: little-endian float64, row-major


def _rows(raw: bytes, n: int) -> np.ndarray | None:
    """A packed f64 array as n rows, or None when its size is not a whole number of rows."""
    if n < 1 or not raw or len(raw) % (8 * n):
        return None
    return np.frombuffer(raw, dtype=F64).reshape(n, -1)


def swung_inputs(request_simulation, sim: SimInputs, driver: int, factor: float) -> SimInputs | None:
    """The base inputs with the swing's re-simulated paths, or None when they cannot be aligned
    (no such swing, quantile scenarios only, or paths that do not cover the sampled iterations)."""
    d = sim.draws
    paths = next((p for p in request_simulation.swings if p.swing.driver == driver and p.swing.factor == factor), None)
    if paths is None or d.source != "samples":
        return None
    used = [s.iteration for s in request_simulation.samples if len(s.monthly_revenue_usd) or len(s.monthly_customers)]
    n, months = d.n, sim.months
    customers, churn = _rows(paths.monthly_customers_f64, n), _rows(paths.churn_f64, n)
    if (paths.first_iteration != 0 or paths.iterations != n or used != list(range(n)) or customers is None
            or customers.shape[1] != paths.months or paths.months < months or churn is None or churn.shape[1] != 1):
        return None
    customers = _clean(customers[:, :months])
    demand, mean_share = d.demand_share, sim.mean_share
    if paths.demand_share_f64:
        _, _, idx, _ = _demand_curve(request_simulation)
        rows = _rows(paths.demand_share_f64, n)
        if rows is None or rows.shape[1] != len(request_simulation.demand_curve):
            return None
        demand = _clean(rows[:, idx], 0.0, 1.0)
        mean_share = demand.T @ d.weights
    draws = dataclasses.replace(d, customers=customers, revenue=customers * sim.sim_price,
                                churn=np.clip(_clean(churn.ravel()), 0.0, 1.0), demand_share=demand)
    return dataclasses.replace(sim, draws=draws, mean_share=mean_share, warnings=[])


def swung_competition(competition: tuple, request_simulation, driver: int, factor: float, our_name: str) -> tuple:
    """The competition evidence on the market with competitors' prices swung: final-month shares
    from the swing's run (ours and the strongest competitor's; the mean over the sampled
    iterations, which are all of them in a default run), their median price moved by the factor.
    Other drivers leave it as it is: choice shares do not depend on Bass p, q or churn (the
    competitors' re-pricing reacts to shares, not to adoption), so their runs' shares are the base's."""
    ours, top, top_name, ratio, our_cov, their_cov, median_price = competition
    if driver != COMPETITOR_PRICES:
        return competition
    paths = next((p for p in request_simulation.swings if p.swing.driver == driver and p.swing.factor == factor), None)
    names = [s.name for s in request_simulation.offering_shares]
    rows = _rows(paths.final_share_f64, paths.iterations) if paths is not None else None
    if rows is not None and names and rows.shape[1] == len(names):
        mean = rows.mean(axis=0)
        shares = {name: float(m) for name, m in zip(names, mean) if name != "none"}
        if shares:
            mine = our_name if our_name in shares else next(iter(shares))
            ours = shares.pop(mine)
            if shares:
                top_name = max(shares, key=shares.get)
                top = shares[top_name]
    if median_price is not None:
        median_price *= factor
    return ours, top, top_name, ratio, our_cov, their_cov, median_price
