"""Imported price surveys (Idea.grounding): Van Westendorp price points and a Gabor-Granger optimum.

Van Westendorp: each respondent names four monthly prices (too cheap, cheap, expensive, too
expensive). Over price p the cumulative curves are

    too_cheap(p)     = share with too_cheap >= p       (falls with p)
    not_cheap(p)     = share with cheap < p            (= 1 - "cheap"; rises)
    cheap(p)         = share with cheap >= p           (falls)
    not_expensive(p) = share with expensive > p        (= 1 - "expensive"; falls)
    expensive(p)     = share with expensive <= p       (rises)
    too_expensive(p) = share with too_expensive <= p   (rises)

and the four points are crossings: PMC = too_cheap x not_cheap, PME = too_expensive x
not_expensive, OPP = too_cheap x too_expensive, IPP = cheap x expensive. The curves are step
functions, so a crossing is where (falling - rising) changes sign on a fine grid; where the two
curves coincide over an interval, the interval's midpoint is reported. Answers whose thresholds are
out of order are dropped and counted.

Gabor-Granger: mean purchase intent at each surveyed price is the demand curve; the
revenue-maximising price is argmax p * intent(p), refined as for the simulated curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.analysis.pricing import RevenueOptimum, revenue_maximising_price

GRID_POINTS = 20001


@dataclass
class VanWestendorp:
    respondents: int
    pmc: float
    pme: float
    opp: float
    ipp: float
    dropped: int
    # the answers kept, for the acceptable-share score and the chart
    too_cheap: np.ndarray
    cheap: np.ndarray
    expensive: np.ndarray
    too_expensive: np.ndarray

    def curves(self, prices: np.ndarray) -> dict[str, np.ndarray]:
        """The six cumulative curves at `prices` (shares in [0, 1])."""
        p = np.asarray(prices, dtype=float)
        n = max(self.respondents, 1)

        def at_least(values):  # share with value >= p
            return (values.size - np.searchsorted(np.sort(values), p, side="left")) / n

        def at_most(values):  # share with value <= p
            return np.searchsorted(np.sort(values), p, side="right") / n

        return {
            "too_cheap": at_least(self.too_cheap),
            "not_cheap": 1.0 - at_least(self.cheap),
            "cheap": at_least(self.cheap),
            "not_expensive": 1.0 - at_most(self.expensive),
            "expensive": at_most(self.expensive),
            "too_expensive": at_most(self.too_expensive),
        }

    def acceptable_share(self, price: float) -> float:
        """Share of respondents for whom `price` is neither too cheap nor too expensive."""
        if self.respondents == 0:
            return 0.0
        ok = (self.too_cheap < price) & (price < self.too_expensive)
        return float(ok.mean())


def _crossing(prices: np.ndarray, falling: np.ndarray, rising: np.ndarray) -> float:
    diff = falling - rising
    nonpos = np.nonzero(diff <= 0)[0]
    if nonpos.size == 0:
        return float(prices[-1])
    i0 = int(nonpos[0])
    neg = np.nonzero(diff < 0)[0]
    i1 = int(neg[0]) if neg.size else prices.size
    if i1 > i0:  # the curves coincide on [prices[i0], prices[i1 - 1]]
        return float(0.5 * (prices[i0] + prices[i1 - 1]))
    return float(prices[i0]) if i0 == 0 else float(0.5 * (prices[i0 - 1] + prices[i0]))


def van_westendorp(answers) -> VanWestendorp | None:
    """Price points from VanWestendorpAnswer messages (or objects with the same fields); None if none usable."""
    rows = [(a.too_cheap, a.cheap, a.expensive, a.too_expensive) for a in answers]
    arr = np.asarray(rows, dtype=float).reshape(-1, 4)
    ok = np.all(np.isfinite(arr), axis=1) & np.all(arr >= 0, axis=1) & np.all(np.diff(arr, axis=1) >= 0, axis=1)
    kept = arr[ok]
    dropped = int(arr.shape[0] - kept.shape[0])
    if kept.shape[0] == 0:
        return None
    tc, c, e, te = (kept[:, i] for i in range(4))
    vw = VanWestendorp(int(kept.shape[0]), 0.0, 0.0, 0.0, 0.0, dropped, tc, c, e, te)
    lo, hi = float(kept.min()), float(kept.max())
    if hi <= lo:
        vw.pmc = vw.pme = vw.opp = vw.ipp = lo
        return vw
    grid = np.linspace(lo, hi, GRID_POINTS)
    cv = vw.curves(grid)
    vw.pmc = _crossing(grid, cv["too_cheap"], cv["not_cheap"])
    vw.pme = _crossing(grid, cv["not_expensive"], cv["too_expensive"])
    vw.opp = _crossing(grid, cv["too_cheap"], cv["too_expensive"])
    vw.ipp = _crossing(grid, cv["cheap"], cv["expensive"])
    return vw


@dataclass
class GaborGranger:
    respondents: int
    prices: np.ndarray
    intent: np.ndarray  # mean purchase intent at each price
    optimum: RevenueOptimum

    def intent_at(self, price: float) -> float:
        return float(np.interp(price, self.prices, self.intent))


def gabor_granger(answers) -> GaborGranger | None:
    """Demand curve and revenue-maximising price from GaborGrangerAnswer messages; None if none usable."""
    rows = [(a.price, a.purchase_intent, a.respondent_id) for a in answers
            if np.isfinite(a.price) and a.price >= 0 and np.isfinite(a.purchase_intent)]
    if not rows:
        return None
    prices = np.array([r[0] for r in rows], dtype=float)
    intent = np.clip(np.array([r[1] for r in rows], dtype=float), 0.0, 1.0)
    grid = np.unique(prices)
    mean = np.array([intent[prices == p].mean() for p in grid])
    respondents = len({r[2] for r in rows}) or len(rows)
    return GaborGranger(respondents, grid, mean, revenue_maximising_price(grid, mean))
