"""SimSpec: a validated SimulationConfig as the numpy arrays the engine consumes.

Built only by `convert.spec_from_proto`, which validates first; the engine trusts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from smvm.errors import ResourceExhausted
from services.simulation import budget

# Customers' taste coefficients (price sensitivity, brand affinity, feature importances) are
# lognormal around their segment's value with this fraction of the segment's WTP log-sd: a segment
# that disagrees about what the product is worth also disagrees about why.
TASTE_SD_PER_WTP_SIGMA = 0.5

# Offering names as reported; the outside option is the last offering share.
NONE_OPTION = "none"


class Swing(NamedTuple):
    """One config swing: SwingDriver value, factor, and the segment index of a segment focus."""

    driver: int
    factor: float
    segment: int = 0


@dataclass
class SimSpec:
    seed: int
    iterations: int
    months: int
    customers: int
    chunk_iterations: int
    sample_limit: int
    competitive_response: bool
    max_utility_evaluations: int
    offering_names: list[str]
    # Segments (S) and features (F)
    seg_cumw: np.ndarray  # (S,) cumulative normalised weights, last == 1
    seg_wtp_median: np.ndarray
    seg_wtp_sigma: np.ndarray
    seg_taste_sd: np.ndarray
    seg_beta: np.ndarray  # price sensitivity
    seg_brand: np.ndarray  # brand affinity
    seg_importance: np.ndarray  # (S, F)
    # Offerings (J = ours + competitors), ours first
    off_features: np.ndarray  # (J, F)
    off_brand: np.ndarray
    off_price: np.ndarray
    price_grid: np.ndarray  # (G,) strictly increasing
    # [low, high, p_mean, p_sd, q_mean, q_sd, churn_mean, churn_sd, scale_sd, reprice_step]
    market: np.ndarray = field(default_factory=lambda: np.zeros(10))
    # Sensitivity swings, re-simulated for the sampled chunks.
    swings: list[Swing] = field(default_factory=list)
    # What a segment-focus swing needs besides the segment's own arrays: normalised weights and the
    # segments' innovation / imitation multipliers and churn (the priors above are their weighted
    # means' multiples).
    seg_weight: np.ndarray = field(default_factory=lambda: np.ones(1))
    seg_innovation: np.ndarray = field(default_factory=lambda: np.ones(1))
    seg_imitation: np.ndarray = field(default_factory=lambda: np.ones(1))
    seg_churn: np.ndarray = field(default_factory=lambda: np.zeros(1))

    @property
    def n_offerings(self) -> int:
        return int(self.off_price.shape[0])

    @property
    def n_grid(self) -> int:
        return int(self.price_grid.shape[0])

    @property
    def n_chunks(self) -> int:
        return -(-self.iterations // self.chunk_iterations)

    @property
    def market_size_high(self) -> float:
        return float(self.market[1])

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        """Global [first, end) iterations of a chunk."""
        first = chunk * self.chunk_iterations
        return first, min(first + self.chunk_iterations, self.iterations)

    @property
    def swing_chunks(self) -> int:
        """Chunks each swing re-runs: those holding the sampled iterations (0 without swings)."""
        return budget.swing_chunks(self.iterations, self.sample_limit, self.chunk_iterations) if self.swings else 0

    @property
    def sampled_iterations(self) -> int:
        return min(self.iterations, self.sample_limit)

    def evaluations_per_iteration(self) -> int:
        return self.customers * budget.evaluations_per_customer(
            self.n_offerings, self.n_grid, self.months, self.competitive_response
        )

    def planned_utility_evaluations(self) -> int:
        swing_iterations = min(self.iterations, self.swing_chunks * self.chunk_iterations)
        reruns = sum(1 for swing in self.swings if budget.reruns_kernel(swing.driver, self.competitive_response))
        return (self.iterations + reruns * swing_iterations) * self.evaluations_per_iteration()

    def check_budget(self) -> None:
        """Refuse before any work when the run would exceed max_utility_evaluations (0 = none)."""
        planned = self.planned_utility_evaluations()
        if self.max_utility_evaluations > 0 and planned > self.max_utility_evaluations:
            raise ResourceExhausted(
                f"simulation needs {planned} utility evaluations, budget is {self.max_utility_evaluations}",
                field="config.max_utility_evaluations",
                reason="UTILITY_EVALUATION_BUDGET",
            )
