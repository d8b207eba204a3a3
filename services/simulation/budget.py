"""The exact number of utility evaluations a simulation performs, computed from the config alone.

Pure Python (no numpy, no numba) so the orchestrator can ask the overwatch for budget before any
engine is imported. The engine counts what it actually evaluates; a test checks the two agree.

Per Monte Carlo iteration and customer (coefficients freshly drawn):
- the base market: one utility per offering (ours + competitors), J evaluations;
- the demand curve: our utility at each price_grid point, G evaluations (the competitors'
  utilities do not depend on our price and are reused);
- with competitive response (and at least one competitor): each competitor's utility again in
  months 2..T, after prices may have changed, (T - 1) x (J - 1) evaluations.
"""

from __future__ import annotations

DEFAULT_CUSTOMERS_PER_ITERATION = 64
DEFAULT_CHUNK_ITERATIONS = 256


def customers_per_iteration(config) -> int:
    return config.customers_per_iteration or DEFAULT_CUSTOMERS_PER_ITERATION


def evaluations_per_customer(offerings: int, grid_points: int, months: int, competitive_response: bool) -> int:
    competitors = offerings - 1
    response = (months - 1) * competitors if competitive_response and competitors > 0 and months > 1 else 0
    return offerings + grid_points + response


def planned_utility_evaluations(config) -> int:
    """Utility evaluations a completed run of `config` (a SimulationConfig) performs."""
    per_customer = evaluations_per_customer(
        1 + len(config.competitors), len(config.price_grid), config.months, config.competitive_response
    )
    return int(config.iterations) * customers_per_iteration(config) * per_customer
