"""Persona bias controls: weight normalisation and capping, diversity, band coverage, optimism.

Pure functions over plain numbers so each control can be tested on its own; `build_bias_report`
turns their outcomes into the `BiasReport` message that goes to overwatch. Every flag is a failed
control (so `passed == not flags`); flags are machine-readable `<control>:<finding>[:<subject>]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from smvm.v1 import market_pb2

DEFAULT_SEGMENT_CAP = 0.5
DEFAULT_MIN_ENTROPY = 0.7
# Required distinct bands = min(personas, bands with mass, ceil(fraction x bands with mass)).
DEFAULT_MIN_BAND_FRACTION = 0.5
_CAP_TOL = 1e-12


def normalise_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights scaled to sum to 1. Negative, non-finite or all-zero weights are a programming error."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError("weights must be a non-empty vector")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    total = math.fsum(w.tolist())
    if total <= 0:
        raise ValueError("weights sum to 0")
    return w / total


@dataclass(frozen=True)
class CapResult:
    weights: np.ndarray
    # The cap can be met only when n * cap >= 1; otherwise weights become uniform (the smallest possible max).
    feasible: bool
    # Indices whose weight was cut to the cap.
    capped: tuple[int, ...]


def cap_weights(weights: Sequence[float], cap: float = DEFAULT_SEGMENT_CAP) -> CapResult:
    """Normalise, then cut every weight above `cap` to `cap` and hand the excess to the others in
    proportion to their weights (repeated until no weight exceeds the cap).

    Order is preserved (a larger input weight never ends up smaller) and the ratios among uncapped
    weights are unchanged. When n * cap < 1 no assignment can respect the cap: the result is uniform
    and `feasible` is False.
    """
    if not (0 < cap <= 1):
        raise ValueError(f"cap must be in (0, 1], got {cap}")
    w = normalise_weights(weights)
    n = w.size
    if n * cap < 1 - 1e-12:
        return CapResult(np.full(n, 1.0 / n), False, tuple(i for i in range(n) if w[i] > 1.0 / n + _CAP_TOL))
    capped = np.zeros(n, dtype=bool)
    for _ in range(n + 1):
        over = (w > cap + _CAP_TOL) & ~capped
        if not over.any():
            break
        capped |= over
        free = ~capped
        budget = 1.0 - cap * capped.sum()
        free_total = math.fsum(w[free].tolist())
        w = np.where(capped, cap, w)
        if free.any():
            # free_total > 0 because weights are > 0 wherever uncapped mass remains
            w[free] = w[free] * (budget / free_total) if free_total > 0 else budget / free.sum()
    # Final tidy-up against rounding: clip to the cap, restore the exact sum on the uncapped part.
    w = np.minimum(w, cap)
    residual = 1.0 - math.fsum(w.tolist())
    free = w < cap - _CAP_TOL
    if abs(residual) > 0 and free.any():
        w[free] += residual * w[free] / math.fsum(w[free].tolist())
    return CapResult(w, True, tuple(int(i) for i in np.flatnonzero(capped)))


def normalised_entropy(weights: Sequence[float]) -> float:
    """Shannon entropy of the weights divided by log(n): 1 = uniform, 0 = one segment. n = 1 gives 0."""
    w = normalise_weights(weights)
    if w.size < 2:
        return 0.0
    nz = w[w > 0]
    return float(-np.sum(nz * np.log(nz)) / math.log(w.size))


def required_bands(n_personas: int, n_bands_with_mass: int, fraction: float = DEFAULT_MIN_BAND_FRACTION) -> int:
    return max(0, min(n_personas, n_bands_with_mass, math.ceil(fraction * n_bands_with_mass)))


def band_coverage(prefix: str, all_bands: Sequence[str], present: Iterable[str]) -> dict[str, bool]:
    seen = set(present)
    return {f"{prefix}:{b}": b in seen for b in all_bands}


@dataclass(frozen=True)
class PersonaCheck:
    """What the controls need to know of one persona."""

    id: str
    age_band: str
    income_band: str
    wtp_p90_usd: float


def build_bias_report(
    *,
    personas: Sequence[PersonaCheck],
    weights: Sequence[float],
    cap: CapResult,
    segment_cap: float,
    age_bands: Sequence[str],
    income_bands: Sequence[str],
    age_bands_with_mass: int,
    income_bands_with_mass: int,
    wtp_upper_range_usd: float,
    upper_range_source: str = "prior",
    min_entropy: float = DEFAULT_MIN_ENTROPY,
    min_band_fraction: float = DEFAULT_MIN_BAND_FRACTION,
) -> market_pb2.BiasReport:
    w = np.asarray(weights, dtype=float)
    flags: list[str] = []
    total = math.fsum(w.tolist())
    if abs(total - 1.0) > 1e-9:
        flags.append(f"weights:sum_not_one:{total:.12g}")
    if not cap.feasible:
        flags.append(f"segment_cap:infeasible:{len(w)}_segments_cannot_each_stay_under_{segment_cap:g}")
    elif w.max() > segment_cap + 1e-9:
        flags.append(f"segment_cap:exceeded:{w.max():.6g}")
    entropy = normalised_entropy(w)
    if entropy < min_entropy:
        flags.append(f"diversity:entropy_below_minimum:{entropy:.4f}<{min_entropy:g}")
    n = len(personas)
    need_age = required_bands(n, age_bands_with_mass, min_band_fraction)
    need_inc = required_bands(n, income_bands_with_mass, min_band_fraction)
    ages = {p.age_band for p in personas}
    incomes = {p.income_band for p in personas}
    if len(ages) < need_age:
        flags.append(f"coverage:age_bands_below_minimum:{len(ages)}<{need_age}")
    if len(incomes) < need_inc:
        flags.append(f"coverage:income_bands_below_minimum:{len(incomes)}<{need_inc}")
    for p in personas:
        if p.wtp_p90_usd > wtp_upper_range_usd:
            flags.append(f"optimism:wtp_p90_above_{upper_range_source}_upper_range:{p.id}")
    coverage: dict[str, bool] = {}
    coverage.update(band_coverage("age", age_bands, ages))
    coverage.update(band_coverage("income", income_bands, incomes))
    return market_pb2.BiasReport(
        passed=not flags,
        max_segment_weight=float(w.max()),
        segment_weight_cap=segment_cap,
        diversity_entropy=entropy,
        coverage=coverage,
        flags=flags,
        min_diversity_entropy=min_entropy,
        required_age_bands=need_age,
        required_income_bands=need_inc,
        wtp_upper_range_usd=wtp_upper_range_usd,
    )


def flags_by_control(report: market_pb2.BiasReport) -> Mapping[str, list[str]]:
    """Flags grouped by control name (the text before the first colon)."""
    out: dict[str, list[str]] = {}
    for f in report.flags:
        out.setdefault(f.split(":", 1)[0], []).append(f)
    return out
