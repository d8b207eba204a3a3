"""Value of information: which uncertain driver is worth resolving first (EVPPI on NPV).

The decision "invest" pays NPV, "don't" pays 0. With perfect information on driver X one would
invest only where E[NPV | X] > 0, so EVPPI(X) = E_X[max(E[NPV | X], 0)] - max(E[NPV], 0), estimated
by binning the Monte Carlo samples on X's quantiles (the usual non-parametric estimator). The
driver value where E[NPV | X] changes sign is the result that would flip the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRIVER_LABELS = {
    "market_size": "reachable market size (customers)",
    "bass_p": "innovation rate (Bass p)",
    "bass_q": "word-of-mouth rate (Bass q)",
    "churn": "monthly churn",
    "price_scale": "price sensitivity multiplier",
}


@dataclass
class DriverValue:
    driver: str
    evppi_usd: float
    flip_value: float | None  # driver value where E[NPV | X] changes sign
    invest_above: bool | None  # True: NPV > 0 above flip_value


def evppi(npv: np.ndarray, drivers: dict[str, np.ndarray], weights: np.ndarray, bins: int) -> list[DriverValue]:
    npv = np.asarray(npv, dtype=float)
    w = np.asarray(weights, dtype=float)
    base = max(float(np.dot(npv, w)), 0.0)
    out = []
    for name, x in drivers.items():
        x = np.asarray(x, dtype=float)
        if x.size != npv.size or np.ptp(x) <= 0:
            continue
        edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(edges.size - 2, 0))
        value, centres, means = 0.0, [], []
        for b in range(max(edges.size - 1, 1)):
            m = which == b
            wb = float(w[m].sum())
            if wb <= 0:
                continue
            cond = float(np.dot(npv[m], w[m]) / wb)
            value += wb * max(cond, 0.0)
            centres.append(float(np.median(x[m])))
            means.append(cond)
        flip, above = None, None
        signs = np.sign(means)
        for i in range(len(means) - 1):
            if signs[i] != signs[i + 1] and signs[i] != 0:
                t = means[i] / (means[i] - means[i + 1])
                flip = centres[i] + t * (centres[i + 1] - centres[i])
                above = bool(means[i + 1] > 0)
                break
        out.append(DriverValue(name, max(value - base, 0.0), flip, above))
    return sorted(out, key=lambda d: -d.evppi_usd)
