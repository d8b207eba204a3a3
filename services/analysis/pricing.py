"""Pricing on plain numbers: WTP quantiles, Gabor-Granger optimum, elasticities with Monte Carlo CIs.

The demand curve is q(p): the probability that an aware customer picks us at price p, on an
ascending price grid. Definitions used throughout:

- point elasticity at a grid point: e = q'(p) * p / q(p), with q' from `numpy.gradient` (second
  order in the interior on uneven grids, one-sided at the ends; exact for a linear curve);
- arc (midpoint) elasticity between neighbours: (dq / mean q) / (dp / mean p); for a linear curve it
  equals the point elasticity at the midpoint price;
- elasticity at an arbitrary price: slope and q linearly interpolated between grid points (the price
  is clamped to the grid, and the caller is told);
- Gabor-Granger revenue-maximising price: argmax of p * q(p) over the grid, refined by the vertex
  of the parabola through the best point and its neighbours (exact for a linear curve);
- where q is ~0 elasticity is undefined: it is reported as 0 (and counted in `undefined`), and every
  elasticity is clipped to +/- cap so that no output is infinite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.analysis.stats import interp_rows, safe_div, wquantile_columns

Q_EPS = 1e-12


def _elasticity(slope, price, share, cap: float):
    slope = np.asarray(slope, dtype=float)
    price = np.asarray(price, dtype=float)
    share = np.asarray(share, dtype=float)
    e = safe_div(slope * price, share, 0.0)
    e = np.where(share > Q_EPS, e, 0.0)
    return np.clip(e, -cap, cap)


def slopes(prices, shares) -> np.ndarray:
    """dq/dp at each grid point (rows of a 2-D `shares` are separate curves)."""
    p = np.asarray(prices, dtype=float)
    q = np.asarray(shares, dtype=float)
    if p.size < 2:
        return np.zeros_like(q)
    return np.gradient(q, p, axis=-1)


def point_elasticities(prices, shares, cap: float = 50.0) -> np.ndarray:
    """Point elasticity at every grid point (works row-wise on a 2-D array of curves)."""
    p = np.asarray(prices, dtype=float)
    return _elasticity(slopes(p, shares), p, shares, cap)


def arc_elasticities(prices, shares, cap: float = 50.0) -> np.ndarray:
    """Midpoint arc elasticity between consecutive grid points; length G-1 (row-wise on 2-D input)."""
    p = np.asarray(prices, dtype=float)
    q = np.asarray(shares, dtype=float)
    if p.size < 2:
        return np.zeros(q.shape[:-1] + (0,))
    dq = np.diff(q, axis=-1)
    mq = 0.5 * (q[..., 1:] + q[..., :-1])
    dp = np.diff(p)
    mp = 0.5 * (p[1:] + p[:-1])
    rel_q = safe_div(dq, mq, 0.0)
    rel_p = safe_div(dp, mp, 0.0)
    e = safe_div(rel_q, rel_p, 0.0)
    e = np.where(mq > Q_EPS, e, 0.0)
    return np.clip(e, -cap, cap)


def share_at(prices, shares, price: float) -> float:
    p = np.asarray(prices, dtype=float)
    return float(np.interp(price, p, np.asarray(shares, dtype=float)))


def elasticity_at(prices, shares, price: float, cap: float = 50.0) -> float:
    """Elasticity at `price` (clamped to the grid) from interpolated slope and share."""
    p = np.asarray(prices, dtype=float)
    q = np.asarray(shares, dtype=float)
    if p.size < 2:
        return 0.0
    x = min(max(price, p[0]), p[-1])
    slope = float(np.interp(x, p, slopes(p, q)))
    return float(_elasticity(slope, x, float(np.interp(x, p, q)), cap))


def elasticities_at_rows(prices, share_matrix, price: float, cap: float = 50.0) -> np.ndarray:
    """Per-iteration elasticity at `price` from per-iteration curves (n, G)."""
    p = np.asarray(prices, dtype=float)
    m = np.asarray(share_matrix, dtype=float)
    if p.size < 2 or m.size == 0:
        return np.zeros(m.shape[0])
    x = min(max(price, p[0]), p[-1])
    s = interp_rows(slopes(p, m), p, x)
    q = interp_rows(m, p, x)
    return _elasticity(s, x, q, cap)


@dataclass
class RevenueOptimum:
    price: float
    revenue_index: float  # p * q(p) at the optimum (revenue per aware customer per month)
    grid_index: int
    at_edge: bool  # the optimum is the lowest or highest grid price: the true optimum may lie beyond
    no_demand: bool  # q is ~0 at every price


def revenue_maximising_price(prices, shares) -> RevenueOptimum:
    p = np.asarray(prices, dtype=float)
    q = np.asarray(shares, dtype=float)
    r = p * q
    i = int(np.argmax(r))
    if r[i] <= Q_EPS:
        return RevenueOptimum(float(p[0]), 0.0, 0, False, True)
    best, best_r = float(p[i]), float(r[i])
    at_edge = p.size > 1 and (i == 0 or i == p.size - 1)
    if 0 < i < p.size - 1:
        x0, x1, x2 = p[i - 1], p[i], p[i + 1]
        y0, y1, y2 = r[i - 1], r[i], r[i + 1]
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        if denom != 0:
            a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
            b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
            c = y1 - a * x1 * x1 - b * x1
            if a < 0:
                vertex = -b / (2 * a)
                if x0 <= vertex <= x2 and np.isfinite(vertex):
                    best = float(vertex)
                    best_r = float(max(a * vertex * vertex + b * vertex + c, y1))
    return RevenueOptimum(best, best_r, i, bool(at_edge), False)


def revenue_maximising_prices_rows(prices, share_matrix) -> np.ndarray:
    """Per-iteration grid argmax of p * q (no refinement), for an interval on the optimum."""
    p = np.asarray(prices, dtype=float)
    m = np.asarray(share_matrix, dtype=float)
    if m.size == 0:
        return np.zeros(0)
    return p[np.argmax(m * p[None, :], axis=1)]


@dataclass
class WtpQuantiles:
    p10: float
    p50: float
    p90: float
    source: str  # "simulation.wtp_usd" | "demand-implied" | "none"
    notes: list[str] = field(default_factory=list)


def demand_implied_wtp(prices, shares, levels=(0.9, 0.5, 0.1)) -> tuple[list[float], list[bool]]:
    """Prices where retention q(p)/q(p_min) falls to each level (survival of WTP), clamped to the grid.

    Returns the prices and, for each, whether it was clamped (the level was never reached).
    """
    p = np.asarray(prices, dtype=float)
    q = np.asarray(shares, dtype=float)
    if p.size == 0 or q[0] <= Q_EPS:
        return [0.0 for _ in levels], [True for _ in levels]
    retention = np.minimum.accumulate(np.clip(q / q[0], 0.0, 1.0))
    out, clamped = [], []
    for level in levels:
        below = np.nonzero(retention <= level)[0]
        if below.size == 0:
            out.append(float(p[-1]))
            clamped.append(True)
            continue
        j = int(below[0])
        if j == 0:
            out.append(float(p[0]))
            clamped.append(True)
            continue
        r0, r1 = retention[j - 1], retention[j]
        t = 0.0 if r0 == r1 else (r0 - level) / (r0 - r1)
        out.append(float(p[j - 1] + t * (p[j] - p[j - 1])))
        clamped.append(False)
    return out, clamped


def wtp_quantiles(wtp_p10: float, wtp_p50: float, wtp_p90: float, prices, shares) -> WtpQuantiles:
    """WTP P10/P50/P90: the simulation's wtp_usd when it has a median, else demand-implied."""
    if wtp_p50 > 0:
        p10 = wtp_p10 if 0 < wtp_p10 <= wtp_p50 else wtp_p50
        p90 = wtp_p90 if wtp_p90 >= wtp_p50 else wtp_p50
        return WtpQuantiles(float(p10), float(wtp_p50), float(p90), "simulation.wtp_usd")
    implied, clamped = demand_implied_wtp(prices, shares)
    if implied[1] <= 0:
        return WtpQuantiles(0.0, 0.0, 0.0, "none", ["no WTP distribution and no demand to infer one from"])
    notes = ["WTP inferred from demand retention q(p)/q(lowest grid price)"]
    if any(clamped):
        notes.append("some WTP quantiles lie beyond the simulated price grid (clamped to its edge)")
    return WtpQuantiles(implied[0], implied[1], implied[2], "demand-implied", notes)


def retention_rows(prices, share_matrix, price: float) -> np.ndarray:
    """Per-iteration q(price) / q(lowest grid price), in [0, 1]."""
    p = np.asarray(prices, dtype=float)
    m = np.asarray(share_matrix, dtype=float)
    if m.size == 0:
        return np.zeros(m.shape[0])
    q = interp_rows(m, p, price)
    return np.clip(safe_div(q, m[:, 0], 0.0), 0.0, 1.0)


def adoption_multipliers(prices, share_matrix, mean_shares, price_from: float, price_to: float) -> np.ndarray:
    """Per-iteration factor on customers when our price moves from `price_from` to `price_to`.

    Under Bass diffusion whose market potential is proportional to our steady-state share, every
    month's customers scale with q(price_to) / q(price_from) of the same iteration (common random
    numbers). Where an iteration's own q(price_from) is ~0 the mean curve's ratio is used; where that
    is ~0 too the factor is 0 (no adoption path to scale from).
    """
    m = np.asarray(share_matrix, dtype=float)
    n = m.shape[0]
    if abs(price_to - price_from) <= 1e-9 * max(abs(price_from), 1.0):
        return np.ones(n)
    p = np.asarray(prices, dtype=float)
    mean = np.asarray(mean_shares, dtype=float)
    q_from_mean = float(np.interp(price_from, p, mean))
    fallback = float(np.interp(price_to, p, mean)) / q_from_mean if q_from_mean > Q_EPS else 0.0
    if m.size == 0:
        return np.full(n, fallback)
    q_from = interp_rows(m, p, price_from)
    q_to = interp_rows(m, p, price_to)
    return np.where(q_from > Q_EPS, safe_div(q_to, q_from, 0.0), fallback)


@dataclass
class ElasticityProfile:
    prices: np.ndarray
    point: np.ndarray
    point_low: np.ndarray
    point_high: np.ndarray
    arc: np.ndarray
    arc_low: np.ndarray
    arc_high: np.ndarray
    undefined_points: int


def elasticity_profile(prices, mean_shares, share_matrix, weights, level: float, cap: float) -> ElasticityProfile:
    """Point and arc elasticities along the curve, each with a central Monte Carlo interval."""
    p = np.asarray(prices, dtype=float)
    point = point_elasticities(p, mean_shares, cap)
    arc = arc_elasticities(p, mean_shares, cap)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    m = np.asarray(share_matrix, dtype=float)
    if m.size and m.shape[0] > 0:
        per_point = point_elasticities(p, m, cap)
        per_arc = arc_elasticities(p, m, cap)
        pl, ph = wquantile_columns(per_point, weights, [lo_q, hi_q]).T
        al, ah = wquantile_columns(per_arc, weights, [lo_q, hi_q]).T
    else:
        pl, ph, al, ah = point.copy(), point.copy(), arc.copy(), arc.copy()
    undefined = int(np.sum(np.asarray(mean_shares) <= Q_EPS))
    return ElasticityProfile(p, point, pl, ph, arc, al, ah, undefined)
