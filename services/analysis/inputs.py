"""Reading a SimulationResult into plain numpy arrays, with every structural check in one place.

Monte Carlo draws come from `samples` (one row per returned iteration, equal weights). When the
result carries no samples, five comonotone scenarios are built from the quantiles instead (P5, P10,
P50, P90, P95 of every month and every demand point, weighted 0.075 / 0.225 / 0.4 / 0.225 / 0.075,
the probability mass nearest each quantile) and a warning says so: intervals and confidence are then
coarse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.analysis.stats import normalise_weights
from smvm.errors import InvalidArgument

QUANTILE_LEVELS = ("p5", "p10", "p50", "p90", "p95")
QUANTILE_WEIGHTS = (0.075, 0.225, 0.4, 0.225, 0.075)


@dataclass
class Draws:
    weights: np.ndarray  # (n,), sums to 1
    market_size: np.ndarray  # (n,)
    bass_p: np.ndarray
    bass_q: np.ndarray
    churn: np.ndarray
    price_scale: np.ndarray
    customers: np.ndarray  # (n, T) at the simulated price
    revenue: np.ndarray  # (n, T) at the simulated price
    demand_share: np.ndarray  # (n, G) on the sorted price grid
    source: str  # "samples" | "quantiles"

    @property
    def n(self) -> int:
        return int(self.weights.size)


@dataclass
class SimInputs:
    prices: np.ndarray  # (G,) ascending
    mean_share: np.ndarray  # (G,)
    draws: Draws
    sim_price: float  # the price the simulated adoption paths were run at
    months: int
    iterations: int
    warnings: list[str] = field(default_factory=list)


def _clean(values, lo: float = 0.0, hi: float | None = None) -> np.ndarray:
    arr = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(arr, lo, hi) if hi is not None else np.clip(arr, lo, None)


def _demand_curve(sim) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sorted prices, mean share, order applied, kept original indices)."""
    if len(sim.demand_curve) == 0:
        raise InvalidArgument("simulation.demand_curve", "the demand curve is empty: no price can be analysed")
    raw_prices = np.array([pt.price_usd for pt in sim.demand_curve], dtype=float)
    for i, pt in enumerate(sim.demand_curve):
        if not np.isfinite(pt.price_usd) or pt.price_usd < 0:
            raise InvalidArgument(f"simulation.demand_curve[{i}].price_usd", f"price must be finite and >= 0, got {pt.price_usd}")
        for level in ("mean", "p50"):
            value = getattr(pt.share, level)
            if not np.isfinite(value) or value < -1e-9 or value > 1 + 1e-9:
                raise InvalidArgument(f"simulation.demand_curve[{i}].share.{level}", f"a share must lie in [0, 1], got {value}")
    keep = np.arange(raw_prices.size)
    prices = raw_prices[keep]
    order = np.argsort(prices, kind="stable")
    prices = prices[order]
    idx = keep[order]
    prices, first = np.unique(prices, return_index=True)
    idx = idx[first]
    mean = _clean([sim.demand_curve[i].share.mean for i in idx], 0.0, 1.0)
    p50 = _clean([sim.demand_curve[i].share.p50 for i in idx], 0.0, 1.0)
    if not mean.any() and p50.any():
        mean = p50
    return prices, mean, idx, keep


def _sim_price(sim, config, samples_rev, samples_cust, fallback: float, prices: np.ndarray) -> tuple[float, str | None]:
    if config is not None and config.our_offering.monthly_price_usd > 0:
        return float(config.our_offering.monthly_price_usd), None
    if samples_rev is not None:
        ok = samples_cust > 1e-9
        if ok.any():
            return float(np.median(samples_rev[ok] / samples_cust[ok])), "simulated price inferred as revenue / customers"
    ms = [(m.revenue_usd.p50, m.customers.p50) for m in sim.month_stats if m.customers.p50 > 1e-9]
    if ms:
        return float(np.median([r / c for r, c in ms])), "simulated price inferred from month_stats revenue / customers"
    if fallback > 0:
        return float(fallback), "simulated price unknown: assumed to be the proposed price"
    return float(np.sqrt(max(prices[0], 1e-9) * max(prices[-1], 1e-9))), "simulated price unknown: grid midpoint assumed"


def _rows(samples, name: str, width: int) -> np.ndarray:
    """(samples, width) matrix of a repeated field's first `width` values; a sample with fewer values
    leaves its row at zero. One conversion for all the samples, not one per sample."""
    out = np.zeros((len(samples), width))
    full = [k for k, s in enumerate(samples) if len(getattr(s, name)) >= width]
    if full and width:
        out[full] = np.array([getattr(samples[k], name)[:width] for k in full], dtype=float)
    return out


def _from_samples(sim, idx: np.ndarray, n_grid: int, warnings: list[str]):
    samples = [s for s in sim.samples if len(s.monthly_revenue_usd) > 0 or len(s.monthly_customers) > 0]
    if not samples:
        return None
    lengths = {max(len(s.monthly_revenue_usd), len(s.monthly_customers)) for s in samples}
    months = min(lengths)
    if len(lengths) > 1:
        warnings.append(f"samples have ragged monthly paths; truncated to {months} months")
    rev = _clean(_rows(samples, "monthly_revenue_usd", months))
    have_cust = all(len(s.monthly_customers) >= months for s in samples)
    cust = _clean(_rows(samples, "monthly_customers", months)) if have_cust else np.zeros((len(samples), months))
    shares = None
    total_grid = len(sim.demand_curve)
    if all(len(s.demand_share) == total_grid for s in samples):
        shares = _clean(_rows(samples, "demand_share", total_grid)[:, idx], 0.0, 1.0).reshape(len(samples), n_grid)
    else:
        warnings.append("samples' demand_share does not match the demand curve: per-iteration curves not used")

    def col(name: str) -> np.ndarray:
        return _clean([getattr(s, name) for s in samples])

    return dict(
        rev=rev, cust=cust, have_cust=have_cust, shares=shares, market_size=col("market_size"),
        bass_p=col("bass_p"), bass_q=col("bass_q"), churn=np.clip(col("churn"), 0.0, 1.0), price_scale=col("price_scale"),
    )


def _from_quantiles(sim, idx: np.ndarray, config) -> dict:
    if len(sim.month_stats) == 0:
        raise InvalidArgument("simulation.month_stats", "the result has neither samples nor monthly statistics")
    stats = sorted(sim.month_stats, key=lambda m: m.month)
    levels = list(QUANTILE_LEVELS)
    rev = _clean([[getattr(m.revenue_usd, lv) for m in stats] for lv in levels])
    cust = _clean([[getattr(m.customers, lv) for m in stats] for lv in levels])
    if not rev[2].any() and any(m.revenue_usd.mean > 0 for m in stats):  # only means given
        rev = _clean([[m.revenue_usd.mean for m in stats]] * len(levels))
        cust = _clean([[m.customers.mean for m in stats]] * len(levels))
    shares = _clean([[getattr(sim.demand_curve[i].share, lv) for i in idx] for lv in levels], 0.0, 1.0)
    if not shares[2].any():
        shares = _clean([[sim.demand_curve[i].share.mean for i in idx]] * len(levels), 0.0, 1.0)
    churn = market = 0.0
    if config is not None:
        churn = float(np.clip(config.priors.churn_mean, 0.0, 1.0))
        market = 0.5 * (config.priors.market_size_low + config.priors.market_size_high)
    n = len(levels)
    return dict(
        rev=rev, cust=cust, have_cust=True, shares=shares, market_size=np.full(n, max(market, 0.0)),
        bass_p=np.zeros(n), bass_q=np.zeros(n), churn=np.full(n, churn), price_scale=np.zeros(n),
    )


def read_simulation(request_simulation, config=None, proposed_price: float = 0.0) -> SimInputs:
    sim = request_simulation
    warnings: list[str] = []
    prices, mean_share, idx, _ = _demand_curve(sim)
    if prices.size == 1:
        warnings.append("the demand curve has a single price: elasticity and price optimisation are unavailable")
    parts = _from_samples(sim, idx, prices.size, warnings)
    source = "samples"
    if parts is None:
        parts = _from_quantiles(sim, idx, config)
        source = "quantiles"
        warnings.append(
            "no per-iteration samples: intervals and confidence come from 5 comonotone quantile scenarios (coarse)"
        )
    n = parts["rev"].shape[0]
    sim_price, note = _sim_price(
        sim, config, parts["rev"] if source == "samples" and parts["have_cust"] else None,
        parts["cust"] if source == "samples" else None, proposed_price, prices,
    )
    if note:
        warnings.append(note)
    cust = parts["cust"]
    if not parts["have_cust"]:
        cust = parts["rev"] / max(sim_price, 1e-9)
        warnings.append("samples lack monthly_customers: customers derived as revenue / simulated price")
    shares = parts["shares"]
    if shares is None:
        shares = np.tile(mean_share, (n, 1))
    weights = normalise_weights(np.array(QUANTILE_WEIGHTS) if source == "quantiles" else None, n)
    if source == "samples" and n < 30:
        warnings.append(f"only {n} Monte Carlo iteration(s) returned as samples: confidence and intervals are coarse")
    draws = Draws(
        weights=weights, market_size=parts["market_size"], bass_p=parts["bass_p"], bass_q=parts["bass_q"],
        churn=parts["churn"], price_scale=parts["price_scale"], customers=cust, revenue=parts["rev"],
        demand_share=shares, source=source,
    )
    months = cust.shape[1]
    if months == 0:
        raise InvalidArgument("simulation.samples", "the monthly paths are empty")
    return SimInputs(prices, mean_share, draws, sim_price, months, int(sim.iterations), warnings)
