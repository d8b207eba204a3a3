"""The simulation's re-simulated swings (SimulationResult.swings) as analysis inputs.

The simulation service re-runs the market with one driver moved, or one pivot scenario applied
(feature parity, a segment focus), on the same seed (common random numbers), for the iterations it
returns as samples. Each swing here becomes the SimInputs of the swung market: the same iterations
and weights as the base, with that run's customer paths, churn and (where it moves) demand curve,
and for our-price swings our swung price, so the decision is re-scored on the worlds the simulator
itself produces. A swing whose paths do not line up with the samples is not used.

Shares are compared like for like: a swing covers only the sampled iterations, while the base's
offering shares and mean demand curve are means over every iteration, so a swing moves each of them
by its change over the sampled iterations (the base's final shares and demand curves on those same
iterations are in the samples), applied to the base's figure. A swing that changes nothing
therefore scores exactly like the base whatever the iteration count and sample limit.
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
OUR_PRICE = simulation_pb2.SWING_DRIVER_OUR_PRICE
FEATURE_PARITY = simulation_pb2.SWING_DRIVER_FEATURE_PARITY
SEGMENT_FOCUS = simulation_pb2.SWING_DRIVER_SEGMENT_FOCUS
# Swings whose runs move the choice shares (Bass p, q and churn do not: shares are those of aware
# customers, and competitors' re-pricing reacts to shares, not to adoption).
MOVES_SHARES = frozenset({COMPETITOR_PRICES, OUR_PRICE, FEATURE_PARITY, SEGMENT_FOCUS})


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


def low_and_high(request_simulation, driver: int) -> tuple[float, float] | None:
    """The driver's lowest and highest swing factors present in the result, or None."""
    factors = sorted({p.swing.factor for p in request_simulation.swings if p.swing.driver == driver})
    return (factors[0], factors[-1]) if factors else None


def adverse_and_favourable(request_simulation, driver: int) -> tuple[float, float] | None:
    """The driver's (adverse, favourable) swing factors present in the result, or None."""
    factors = low_and_high(request_simulation, driver)
    if factors is None:
        return None
    low, high = factors
    return (low, high) if DRIVERS[driver].higher_is_better else (high, low)


def find(request_simulation, driver: int, factor: float | None = None):
    """The result's SwingPaths for the driver (and factor, when given), or None."""
    return next((p for p in request_simulation.swings
                 if p.swing.driver == driver and (factor is None or p.swing.factor == factor)), None)


F64 = np.dtype("<f8")  # SwingPaths' packed arrays: little-endian float64, row-major


def _rows(raw: bytes, n: int) -> np.ndarray | None:
    """A packed f64 array as n rows, or None when its size is not a whole number of rows."""
    if n < 1 or not raw or len(raw) % (8 * n):
        return None
    return np.frombuffer(raw, dtype=F64).reshape(n, -1)


def swung_inputs(request_simulation, sim: SimInputs, driver: int, factor: float) -> SimInputs | None:
    """The base inputs with the swing's re-simulated paths, or None when they cannot be aligned
    (no such swing, quantile scenarios only, or paths that do not cover the sampled iterations)."""
    return paths_inputs(find(request_simulation, driver, factor), request_simulation, sim)


def paths_inputs(paths, request_simulation, sim: SimInputs) -> SimInputs | None:
    """SimInputs of one SwingPaths message (see swung_inputs)."""
    d = sim.draws
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
        mean_share = np.clip(sim.mean_share + (demand.T @ d.weights - d.demand_share.T @ d.weights), 0.0, 1.0)
    price = sim.sim_price * (paths.swing.factor if paths.swing.driver == OUR_PRICE else 1.0)
    draws = dataclasses.replace(d, customers=customers, revenue=customers * price,
                                churn=np.clip(_clean(churn.ravel()), 0.0, 1.0), demand_share=demand)
    return dataclasses.replace(sim, draws=draws, mean_share=mean_share, sim_price=price, warnings=[])


def _sampled_base_shares(request_simulation, n: int, width: int) -> np.ndarray | None:
    """The base's mean final share of each offering over its first n samples (the swings'
    iterations), or None when the samples do not carry them (an output stored before they did)."""
    samples = request_simulation.samples[:n]
    if len(samples) < n or any(len(s.final_share) != width for s in samples):
        return None
    return np.array([list(s.final_share) for s in samples]).mean(axis=0)


def swung_competition(competition: tuple, request_simulation, driver: int, factor: float, our_name: str) -> tuple:
    """The competition evidence on the swung market (see paths_competition)."""
    return paths_competition(competition, request_simulation, find(request_simulation, driver, factor), our_name)


def paths_competition(competition: tuple, request_simulation, paths, our_name: str) -> tuple:
    """The competition evidence on the market of one swing: for a swing that moves choice shares,
    each offering's final-month share moved by the swing's change on the sampled iterations (the
    module doc: like for like), ours and the strongest competitor's read from there; competitors'
    median price moved by a competitor-price factor. Bass p, q and churn leave it as it is."""
    ours, top, top_name, ratio, our_cov, their_cov, median_price = competition
    if paths is None or paths.swing.driver not in MOVES_SHARES:
        return competition
    names = [s.name for s in request_simulation.offering_shares]
    rows = _rows(paths.final_share_f64, paths.iterations)
    if rows is not None and names and rows.shape[1] == len(names):
        swung = rows.mean(axis=0)
        base = _sampled_base_shares(request_simulation, paths.iterations, len(names))
        if base is not None:  # like for like: the change on the same iterations, onto the base's figure
            swung = np.clip(np.array([s.share.mean for s in request_simulation.offering_shares]) + (swung - base), 0.0, 1.0)
        shares = {name: float(m) for name, m in zip(names, swung) if name != "none"}
        if shares:
            mine = our_name if our_name in shares else next(iter(shares))
            ours = shares.pop(mine)
            if shares:
                top_name = max(shares, key=shares.get)
                top = shares[top_name]
    if median_price is not None and paths.swing.driver == COMPETITOR_PRICES:
        median_price *= paths.swing.factor
    return ours, top, top_name, ratio, our_cov, their_cov, median_price
