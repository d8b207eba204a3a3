"""The competition evidence the matrix scores: final-month shares, feature coverage, competitors' prices.

Coverage is the mean feature coverage, ours against the competitors' (all of them, every feature),
from the request's feature vectors (canonical feature -> coverage), else from the simulation
config's feature arrays. `parity` moves ours the way the feature-parity scenario does in the
simulation (engine/swings.py): each feature where we trail the competitors' mean rises by that
fraction of the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.analysis.stats import finite


@dataclass(frozen=True)
class Coverage:
    ours: float
    theirs: float
    # Features where we trail the competitors' mean, largest gap first: (feature, gap).
    gaps: tuple[tuple[str, float], ...]


def coverage(request, parity: float = 0.0) -> Coverage | None:
    """Our and the competitors' mean coverage (ours after closing `parity` of each gap), or None
    when the request carries no feature vectors for both sides."""
    if request.our_offering.feature_vector and request.competitors:
        keys = set(request.our_offering.feature_vector)
        for c in request.competitors:
            keys |= set(c.feature_vector)
        keys = sorted(keys)
        ours = np.array([request.our_offering.feature_vector.get(k, 0.0) for k in keys])
        theirs = np.array([[c.feature_vector.get(k, 0.0) for k in keys] for c in request.competitors])
    elif (request.HasField("simulation_config") and request.simulation_config.competitors
          and request.simulation_config.our_offering.features):
        cfg = request.simulation_config
        keys = list(cfg.feature_taxonomy) or [f"feature {i + 1}" for i in range(len(cfg.our_offering.features))]
        ours = np.asarray(cfg.our_offering.features, dtype=float)
        theirs = np.array([list(c.features) if c.features else [0.0] * ours.size for c in cfg.competitors])
    else:
        return None
    gap = np.maximum(theirs.mean(axis=0) - ours, 0.0)
    order = sorted((k for k, g in zip(keys, gap) if g > 0), key=lambda k: -gap[keys.index(k)])
    return Coverage(float(np.mean(ours + parity * gap)), float(np.mean(theirs)),
                    tuple((k, float(gap[keys.index(k)])) for k in order))


def evidence(request, sim_result, our_name: str, parity: float = 0.0):
    """(our share, top competitor share, its name, response ratio, our coverage, their coverage,
    their median price)."""
    ours = top = None
    top_name = ""
    shares = [s for s in sim_result.offering_shares if s.name != "none"]
    if shares:
        mine = next((s for s in shares if our_name and s.name == our_name), shares[0])
        ours = finite(mine.share.mean)
        others = [s for s in shares if s is not mine]
        if others:
            best = max(others, key=lambda s: s.share.mean)
            top, top_name = finite(best.share.mean), best.name
    ratio = None
    cr = sim_result.competitive_response
    if cr.enabled and cr.share_without_response > 0:
        ratio = cr.share_with_response / cr.share_without_response
    cov = coverage(request, parity)
    our_cov, their_cov = (cov.ours, cov.theirs) if cov is not None else (None, None)
    prices = [c.monthly_price_usd for c in request.competitors if c.monthly_price_usd > 0]
    if not prices and request.HasField("simulation_config"):
        prices = [c.monthly_price_usd for c in request.simulation_config.competitors if c.monthly_price_usd > 0]
    median_price = float(np.median(prices)) if prices else None
    return ours, top, top_name, ratio, our_cov, their_cov, median_price
