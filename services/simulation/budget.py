"""The exact number of utility evaluations a simulation performs, computed from the config alone.

Pure Python (no numpy, no numba) so the orchestrator can ask the overwatch for budget before any
engine is imported. The engine counts what it actually evaluates; a test checks the two agree.

Per Monte Carlo iteration and customer (coefficients freshly drawn):
- the base market: one utility per offering (ours + competitors), J evaluations;
- the demand curve: our utility at each price_grid point, G evaluations (the competitors'
  utilities do not depend on our price and are reused);
- with competitive response (and at least one competitor): each competitor's utility again in
  months 2..T, after prices may have changed, (T - 1) x (J - 1) evaluations.

Each sensitivity swing (config.swings) that re-runs the kernel (competitor prices, our price,
the feature-parity and segment-focus scenarios; every driver with competitive response) re-runs,
with its driver moved, the whole chunks that hold the iterations returned as samples (a chunk's
draws depend on its size, so it cannot be cut short): the same evaluations per iteration again for
those chunks' iterations (a segment focus has the same offerings and grid, so the same count). A
Bass p, q or churn swing without competitive response re-runs only the adoption recurrence and
evaluates no utility.
"""

from __future__ import annotations

# smvm.v1.SwingDriver values (no protobuf import here) of the swings that move choice shares:
# competitor prices, our price, feature parity, segment focus.
KERNEL_DRIVERS = frozenset({4, 5, 6, 7})

DEFAULT_CUSTOMERS_PER_ITERATION = 64
DEFAULT_CHUNK_ITERATIONS = 256


def customers_per_iteration(config) -> int:
    return config.customers_per_iteration or DEFAULT_CUSTOMERS_PER_ITERATION


def evaluations_per_customer(offerings: int, grid_points: int, months: int, competitive_response: bool) -> int:
    competitors = offerings - 1
    response = (months - 1) * competitors if competitive_response and competitors > 0 and months > 1 else 0
    return offerings + grid_points + response


def swing_chunks(iterations: int, sample_limit: int, chunk_iterations: int) -> int:
    """Chunks holding the first `sample_limit` iterations: the chunks each swing re-runs."""
    return -(-min(iterations, sample_limit) // chunk_iterations)


def swing_iterations(config) -> int:
    """Iterations each swing of `config` re-simulates (whole chunks, the run's last one possibly short)."""
    chunk = config.chunk_iterations or DEFAULT_CHUNK_ITERATIONS
    return min(int(config.iterations), swing_chunks(int(config.iterations), int(config.sample_limit), chunk) * chunk)


def reruns_kernel(driver: int, competitive_response: bool) -> bool:
    """Whether a swing re-runs the whole kernel (engine/swings.py says why)."""
    return bool(competitive_response) or driver in KERNEL_DRIVERS


def swing_rerun_iterations(config) -> int:
    """Iterations the config's swings re-simulate through the whole kernel, all swings together."""
    reruns = sum(1 for s in config.swings if reruns_kernel(s.driver, config.competitive_response))
    return reruns * swing_iterations(config) if reruns else 0


def planned_utility_evaluations(config) -> int:
    """Utility evaluations a completed run of `config` (a SimulationConfig) performs, swings included."""
    per_customer = evaluations_per_customer(
        1 + len(config.competitors), len(config.price_grid), config.months, config.competitive_response
    )
    iterations = int(config.iterations) + swing_rerun_iterations(config)
    return iterations * customers_per_iteration(config) * per_customer
