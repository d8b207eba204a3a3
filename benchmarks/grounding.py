"""Grounding benchmarks: import throughput of the adapters and the time of a WTP calibration fit.

    .venv/bin/python benchmarks/grounding.py [--rows 20000] [--respondents 5000]

Workloads are generated from a fixed seed: a Van Westendorp CSV (respondent id, four prices, segment)
and a Gabor-Granger CSV (5 price points per respondent), imported by the same run_import the
IngestionService calls (parse, validate, PII-mask, deduplicate, outliers, report); then the
interval-censored lognormal fit with held-out fidelity (services.personas.calibration.calibrate).
Best of 3 runs, wall time.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from common import append_row  # puts the repository on sys.path
from services.ingestion.importer import run_import
from services.personas.calibration import calibrate


def _vw_csv(n: int, rng: np.random.Generator) -> bytes:
    w = np.exp(math.log(30) + 0.6 * rng.standard_normal(n))
    lines = ["respondent_id,too_cheap,cheap,expensive,too_expensive,segment"]
    lines += [f"R{i},{x / 2:.2f},{x / 1.3:.2f},{x * 1.3:.2f},{x * 2:.2f},smb" for i, x in enumerate(w)]
    return ("\n".join(lines) + "\n").encode()


def _gg_csv(n: int, rng: np.random.Generator) -> bytes:
    w = np.exp(math.log(30) + 0.6 * rng.standard_normal(n))
    lines = ["respondent_id,price,purchase_intent"]
    lines += [f"G{i},{p},{float(x >= p):.0f}" for i, x in enumerate(w) for p in (10, 20, 30, 45, 60)]
    return ("\n".join(lines) + "\n").encode()


def _best(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--respondents", type=int, default=5_000)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    vw, gg = _vw_csv(args.rows, rng), _gg_csv(args.respondents, rng)
    t_vw, r_vw = _best(lambda: run_import("van_westendorp", "csv", vw))
    t_gg, r_gg = _best(lambda: run_import("gabor_granger", "csv", gg))
    print(f"import van_westendorp: {args.rows} rows in {t_vw:.3f} s = {args.rows / t_vw:,.0f} rows/s "
          f"({len(vw) / t_vw / 1e6:.2f} MB/s)")
    n_gg = args.respondents * 5
    print(f"import gabor_granger:  {n_gg} rows in {t_gg:.3f} s = {n_gg / t_gg:,.0f} rows/s")
    t_fit_vw, fit_vw = _best(lambda: calibrate(r_vw.grounding))
    print(f"calibrate VW ({args.rows} respondents): {t_fit_vw * 1000:.1f} ms; mu {fit_vw.mu:.4f} (truth {math.log(30):.4f}), "
          f"sigma {fit_vw.sigma:.4f}, KS (interval bounds) {fit_vw.ks_distance:.4f}, "
          f"KS (midpoints) {fit_vw.ks_midpoint_distance:.4f}")
    t_fit_gg, fit_gg = _best(lambda: calibrate(r_gg.grounding))
    print(f"calibrate GG ({args.respondents} respondents x 5 points): {t_fit_gg * 1000:.1f} ms; mu {fit_gg.mu:.4f}, "
          f"sigma {fit_gg.sigma:.4f}, intent MAE {fit_gg.intent_mae:.4f}")
    path = append_row("grounding", {"load_1min": round(os.getloadavg()[0], 2),
        "vw_rows": args.rows, "vw_rows_s": round(args.rows / t_vw), "gg_rows": n_gg, "gg_rows_s": round(n_gg / t_gg),
        "calibrate_vw_ms": round(t_fit_vw * 1e3, 1), "calibrate_gg_ms": round(t_fit_gg * 1e3, 1)})
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
