"""Positioning matrix: where each offering sits on normalised price vs feature coverage.

- normalised_price = monthly USD / the highest monthly USD among the points (0 when all are free).
- feature_coverage = mean coverage over the taxonomy, or the importance-weighted mean when weights
  are given.
- Quadrants split at the competitors' medians (our own point never moves the split, so our quadrant
  says where we sit relative to the market). Price is "high" when strictly above the median price;
  coverage is "high" when at or above the median coverage:
    high price + high coverage = premium, low price + high coverage = value,
    high price + low coverage = overpriced, low price + low coverage = budget.
  Our offering without a price is "unpriced" and takes no part in either median.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

from smvm.v1 import competitor_service_pb2 as pb

UNPRICED = "unpriced"
DECIMALS = 6


@dataclass(frozen=True)
class Offering:
    id: str
    name: str
    monthly_price_usd: float
    feature_vector: Mapping[str, float]
    ours: bool = False
    # Only meaningful for ours: no price was proposed.
    unpriced: bool = False


def feature_coverage(vector: Mapping[str, float], taxonomy: Sequence[str], weights: Mapping[str, float] | None = None) -> float:
    """Mean (or importance-weighted mean) coverage over the taxonomy, in [0, 1]."""
    if not taxonomy:
        return 0.0
    w = [max(0.0, float(weights.get(f, 0.0))) if weights else 1.0 for f in taxonomy]
    total = math.fsum(w)
    if total <= 0:
        return 0.0
    return math.fsum(wi * min(1.0, max(0.0, float(vector.get(f, 0.0)))) for wi, f in zip(w, taxonomy)) / total


def quadrant(price: float, coverage: float, median_price: float, median_coverage: float) -> str:
    high_price = price > median_price
    high_coverage = coverage >= median_coverage
    if high_price:
        return "premium" if high_coverage else "overpriced"
    return "value" if high_coverage else "budget"


def positioning_matrix(
    offerings: Sequence[Offering], taxonomy: Sequence[str], weights: Mapping[str, float] | None = None
) -> list[pb.PositioningPoint]:
    """One point per offering, in the order given."""
    coverage = [feature_coverage(o.feature_vector, taxonomy, weights) for o in offerings]
    market = [(o.monthly_price_usd, c) for o, c in zip(offerings, coverage) if not o.ours and not o.unpriced]
    if not market:  # no competitors: split on every priced point instead
        market = [(o.monthly_price_usd, c) for o, c in zip(offerings, coverage) if not o.unpriced]
    median_price = statistics.median(p for p, _ in market) if market else 0.0
    median_coverage = statistics.median(c for _, c in market) if market else 0.0
    top = max((o.monthly_price_usd for o in offerings if not o.unpriced), default=0.0)
    points = []
    for o, c in zip(offerings, coverage):
        norm = o.monthly_price_usd / top if top > 0 and not o.unpriced else 0.0
        points.append(
            pb.PositioningPoint(
                id=o.id,
                name=o.name,
                monthly_price_usd=o.monthly_price_usd,
                normalised_price=round(norm, DECIMALS),
                feature_coverage=round(c, DECIMALS),
                quadrant=UNPRICED if o.unpriced else quadrant(o.monthly_price_usd, c, median_price, median_coverage),
                ours=o.ours,
            )
        )
    return points
