"""Fixed-bin histogram counts of a chunk's per-iteration outputs, in numba.

Binning every chunk's outputs (about 150 rows x the chunk's iterations, plus every customer's WTP)
took longer in numpy than the kernel itself; one compiled pass over the values does it in a
fraction. Bins per row: linear on [lo, hi], or bin 0 = [0, lo) and then BINS - 1 log-spaced bins
up to hi. NaN goes to bin 0 and values outside the range to the end bins (the exact min and max
are kept in the chunk sums, so quantiles are clamped to them).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def _bin(v, is_log, lo, hi, bins):
    if v != v:
        return 0
    if is_log:
        if v < lo:
            return 0
        b = 1.0 + math.floor((bins - 1) * math.log(v / lo) / math.log(hi / lo))
    else:
        b = math.floor(bins * (v - lo) / (hi - lo))
    return int(min(max(b, 0.0), bins - 1.0))


@njit(cache=True, nogil=True, error_model="numpy")
def counts(per_iteration, last_row_values, is_log, lo, hi, bins):
    """int64 counts, rows x bins flattened: column r of `per_iteration` (iterations x rows-1) into
    row r; every value of `last_row_values` (1-d) into the last row."""
    n_rows = is_log.shape[0]
    out = np.zeros(n_rows * bins, np.int64)
    n_iter, n_cols = per_iteration.shape
    for it in range(n_iter):
        for r in range(n_cols):
            out[r * bins + _bin(per_iteration[it, r], is_log[r], lo[r], hi[r], bins)] += 1
    last = n_rows - 1
    for i in range(last_row_values.shape[0]):
        out[last * bins + _bin(last_row_values[i], is_log[last], lo[last], hi[last], bins)] += 1
    return out
