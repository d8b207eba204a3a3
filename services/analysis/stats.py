"""Small numeric helpers shared by the analysis modules: weighted quantiles, safe division, finiteness."""

from __future__ import annotations

import math

import numpy as np

Z90 = 1.2815515655446004  # standard normal quantile at 0.90


def money(x: float) -> str:
    """USD for text: whole dollars from $100 up, cents below, the sign before the $."""
    sign = "-" if x < 0 else ""
    return f"{sign}${abs(x):,.0f}" if abs(x) >= 100 else f"{sign}${abs(x):,.2f}"


def finite(x: float, default: float = 0.0) -> float:
    """`x` as a float when finite, else `default` (proto doubles must be finite)."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def clip01(x: float) -> float:
    return min(max(finite(x), 0.0), 1.0)


def safe_div(num, den, default: float = 0.0):
    """num / den elementwise, `default` where den is 0 or the result is not finite."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den != 0.0, num / np.where(den != 0.0, den, 1.0), default)
    out = np.where(np.isfinite(out), out, default)
    return out if out.ndim else float(out)


def normalise_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0)
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.clip(np.nan_to_num(np.asarray(weights, dtype=float), nan=0.0, posinf=0.0), 0.0, None)
    total = w.sum()
    return w / total if total > 0 else np.full(n, 1.0 / n)


def wmean(x, w) -> float:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return 0.0
    return finite(float(np.dot(x, w)))


def wprob(mask, w) -> float:
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return 0.0
    return clip01(float(np.dot(mask.astype(float), w)))


def equal_weights(w: np.ndarray) -> bool:
    """`np.allclose(w, w[0])` (default tolerances) from two reductions instead of five temporaries:
    every |w_i - w_0| <= 1e-8 + 1e-5 |w_0| holds exactly when it holds for the largest and the smallest w_i."""
    if w.size == 0:
        return True
    lo, hi, first = float(w.min()), float(w.max()), float(w[0])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return bool(np.allclose(w, first))
    return max(hi - first, first - lo) <= 1e-8 + 1e-5 * abs(first)


def wquantile(x, w, q):
    """Weighted quantile(s) of finite values `x`; numpy's linear rule when the weights are equal.

    Non-finite values are allowed only as +inf (e.g. "never paid back"): they sort last, and a
    quantile that lands on them is returned as +inf for the caller to interpret.
    """
    x = np.asarray(x, dtype=float)
    w = np.asarray(w, dtype=float)
    q_arr = np.atleast_1d(np.asarray(q, dtype=float))
    if x.size == 0:
        out = np.zeros_like(q_arr)
    elif np.isinf(x).any():  # step (inverted-CDF) rule: never interpolate into infinity
        order = np.argsort(x, kind="stable")
        xs, cum = x[order], np.cumsum(w[order]) / max(float(w.sum()), 1e-300)
        out = xs[np.clip(np.searchsorted(cum, q_arr - 1e-12, side="left"), 0, xs.size - 1)]
    elif equal_weights(w):
        out = np.quantile(x, q_arr)
    else:
        order = np.argsort(x, kind="stable")
        xs, ws = x[order], w[order]
        cum = (np.cumsum(ws) - 0.5 * ws) / max(float(ws.sum()), 1e-300)
        out = np.interp(q_arr, cum, xs)
    return out if np.ndim(q) else float(out[0])


def wquantile_columns(x, w, q):
    """`[wquantile(x[:, j], w, q) for j in columns]` as one array ((columns,) for a scalar q, else
    (columns, len(q))): one numpy call when the weights are equal and nothing is infinite (numpy's
    linear rule column by column, the same numbers), else column by column."""
    x = np.asarray(x, dtype=float)
    w = np.asarray(w, dtype=float)
    q_arr = np.atleast_1d(np.asarray(q, dtype=float))
    if x.ndim == 2 and x.shape[0] and x.shape[1] and not np.isinf(x).any() and equal_weights(w):
        out = np.quantile(x, q_arr, axis=0).T
    else:
        out = np.array([wquantile(x[:, j], w, q_arr) for j in range(x.shape[1])]).reshape(x.shape[1], q_arr.size)
    return out if np.ndim(q) else out[:, 0]


def lognormal_sigma(p10: float, p50: float, p90: float, default: float) -> float:
    """Log-sd of a lognormal from its P10/P50/P90 (either side alone will do)."""
    sides = []
    if p50 > 0 and p90 > p50:
        sides.append(math.log(p90 / p50) / Z90)
    if p50 > 0 and 0 < p10 < p50:
        sides.append(math.log(p50 / p10) / Z90)
    return float(np.mean(sides)) if sides else float(default)


def lognormal_survival(x: float, median: float, sigma: float) -> float:
    """P(X >= x) for a lognormal with this median and log-sd."""
    if median <= 0:
        return 0.0
    if x <= 0:
        return 1.0
    if sigma <= 0:
        return 1.0 if x <= median else 0.0
    z = (math.log(x) - math.log(median)) / sigma
    return clip01(0.5 * math.erfc(z / math.sqrt(2.0)))


def log_scale(x, lo: float, hi: float):
    """0-100 on a log scale: 0 at or below lo, 100 at or above hi (elementwise)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (np.log10(np.maximum(x, 1e-300)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = 100.0 * np.clip(np.nan_to_num(frac, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    out = np.where(x > 0, out, 0.0)
    return out if out.ndim else float(out)


def linear_scale(x, lo: float, hi: float):
    """0-100 linear: 0 at lo, 100 at hi (hi may be below lo for 'smaller is better')."""
    x = np.asarray(x, dtype=float)
    frac = safe_div(x - lo, hi - lo, 0.0)
    out = 100.0 * np.clip(frac, 0.0, 1.0)
    return out if np.ndim(out) else float(out)


def interp_rows(matrix: np.ndarray, grid: np.ndarray, x: float) -> np.ndarray:
    """Row-wise linear interpolation of `matrix` (n, G) over ascending `grid` at scalar x (clamped)."""
    g = grid.size
    if g == 1:
        return matrix[:, 0].copy()
    x = min(max(x, grid[0]), grid[-1])
    j = int(np.clip(np.searchsorted(grid, x, side="right") - 1, 0, g - 2))
    span = grid[j + 1] - grid[j]
    t = 0.0 if span <= 0 else (x - grid[j]) / span
    return matrix[:, j] * (1.0 - t) + matrix[:, j + 1] * t
