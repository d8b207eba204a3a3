"""Data-quality rules of an import: outliers, coverage, the quality_warning alert and the quality score.

Stated rules (they go into every report verbatim, so a reader knows what was counted):
- Outliers: Tukey's far-out fences on the log scale, per column: a row is an outlier when the log of
  any of its judged values lies outside [Q1 - 3 IQR, Q3 + 3 IQR] of that column's logs (prices and
  market sizes are right-skewed, so the log scale; 3 IQR, so only gross outliers). Judged only with
  at least MIN_ROWS_FOR_OUTLIERS values. Outliers are kept and counted, not dropped.
- Coverage: the share of the adapter's `expected` columns (the informative ones; defaulted columns
  such as currency are not counted) present over accepted rows.
- quality_warning: rejected rows > 10 % of rows read, duplicates > 10 %, outliers > 10 % of
  accepted rows, coverage < 0.5, or fewer accepted rows than the kind's minimum.
- quality_score = accepted share x coverage x (1 - outlier share), in [0, 1].
- confidence_factor: 1 for an import without quality_warning; otherwise the lower of its quality
  score and 1 - CONFIDENCE_PENALTY_PER_FINDING per finding, never below MIN_CONFIDENCE_FACTOR.
  Idea.grounding.confidence_factor is the lowest over the idea's imports; analysis multiplies its
  decision confidence by it.
- A file is refused as a whole (nothing stored) when more than MAX_REJECTED_SHARE of its rows are
  rejected: a file that bad is the wrong file or the wrong kind, not a file with a few bad rows.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

OUTLIER_IQR_MULTIPLIER = 3.0
MIN_ROWS_FOR_OUTLIERS = 8
OUTLIER_RULE = (
    f"log-scale Tukey far-out fences per column: log(value) outside [Q1 - {OUTLIER_IQR_MULTIPLIER:g} IQR, "
    f"Q3 + {OUTLIER_IQR_MULTIPLIER:g} IQR] (judged with >= {MIN_ROWS_FOR_OUTLIERS} values; kept, counted)"
)
MAX_REJECTED_SHARE_FOR_WARNING = 0.10
MAX_DUPLICATE_SHARE_FOR_WARNING = 0.10
MAX_OUTLIER_SHARE_FOR_WARNING = 0.10
MIN_COVERAGE_FOR_WARNING = 0.5
MAX_REJECTED_SHARE = 0.5
CONFIDENCE_PENALTY_PER_FINDING = 0.1
MIN_CONFIDENCE_FACTOR = 0.25


def outlier_rows(values: Sequence[Mapping[str, float]]) -> set[int]:
    """Indices of rows with any value outside its column's log-scale far-out fences."""
    columns: dict[str, list[tuple[int, float]]] = {}
    for i, row in enumerate(values):
        for name, value in row.items():
            if value > 0 and math.isfinite(value):
                columns.setdefault(name, []).append((i, math.log(value)))
    out: set[int] = set()
    for entries in columns.values():
        if len(entries) < MIN_ROWS_FOR_OUTLIERS:
            continue
        logs = np.array([v for _, v in entries])
        q1, q3 = np.percentile(logs, [25, 75])
        iqr = q3 - q1
        low, high = q1 - OUTLIER_IQR_MULTIPLIER * iqr, q3 + OUTLIER_IQR_MULTIPLIER * iqr
        out.update(i for i, v in entries if v < low - 1e-12 or v > high + 1e-12)
    return out


def coverage(present: Sequence[set[str]], columns: Sequence[str]) -> float:
    if not present or not columns:
        return 0.0
    hits = sum(len(p & set(columns)) for p in present)
    return hits / (len(present) * len(columns))


def quality_findings(*, rows_read: int, accepted: int, rejected: int, duplicates: int, outliers: int,
                     coverage_share: float, min_rows: int) -> list[str]:
    """Why an import raises quality_warning (empty: it does not)."""
    out = []
    if rows_read and rejected / rows_read > MAX_REJECTED_SHARE_FOR_WARNING:
        out.append(f"quality:rejected_share: {rejected}/{rows_read} rows rejected "
                   f"(> {MAX_REJECTED_SHARE_FOR_WARNING:.0%})")
    if rows_read and duplicates / rows_read > MAX_DUPLICATE_SHARE_FOR_WARNING:
        out.append(f"quality:duplicate_share: {duplicates}/{rows_read} rows are duplicates "
                   f"(> {MAX_DUPLICATE_SHARE_FOR_WARNING:.0%})")
    if accepted and outliers / accepted > MAX_OUTLIER_SHARE_FOR_WARNING:
        out.append(f"quality:outlier_share: {outliers}/{accepted} accepted rows are outliers "
                   f"(> {MAX_OUTLIER_SHARE_FOR_WARNING:.0%})")
    if coverage_share < MIN_COVERAGE_FOR_WARNING:
        out.append(f"quality:low_coverage: {coverage_share:.2f} of the columns present (< {MIN_COVERAGE_FOR_WARNING:g})")
    if accepted < min_rows:
        out.append(f"quality:too_few_rows: {accepted} accepted row(s), fewer than {min_rows}")
    return out


def quality_score(*, rows_read: int, accepted: int, outliers: int, coverage_share: float) -> float:
    if rows_read <= 0 or accepted <= 0:
        return 0.0
    return round((accepted / rows_read) * coverage_share * (1.0 - outliers / accepted), 6)


def confidence_factor(findings: Sequence[str], score: float) -> float:
    if not findings:
        return 1.0
    return round(max(MIN_CONFIDENCE_FACTOR, min(score, 1.0 - CONFIDENCE_PENALTY_PER_FINDING * len(findings))), 6)
