"""Simulation kernel throughput: the numba kernel against the numpy reference, same workload, same run.

One utility evaluation = one simulated customer's utility for one offering at one price point,
with that customer's coefficients freshly drawn (random draws are included in the timings).
Both engines run through runner.run_chunks (same chunks, same threads, same statistics code), so
the ratio compares the engines alone. Peak RSS for 10^3 and 10^6 iterations is measured in child
processes to show that memory does not grow with the iteration count (chunks stream).

    .venv/bin/python benchmarks/sim_kernel.py [--json out.json] [--repeats 5] [--no-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

import numpy as np  # noqa: E402

from smvm.v1 import simulation_pb2  # noqa: E402
from services.simulation import convert  # noqa: E402
from services.simulation.engine import kernel, reference, runner  # noqa: E402


def default_config(iterations: int = 1000, response: bool = False) -> simulation_pb2.SimulationConfig:
    """The default validation's shape: 5 personas, 10 competitors, 8 features, 36 months, 20 prices."""
    rng = np.random.default_rng(2026)
    features = 8
    taxonomy = [f"feature_{i}" for i in range(features)]

    def offering(name, price, brand):
        return simulation_pb2.OfferingSpec(name=name, monthly_price_usd=price, brand=brand,
                                           features=rng.uniform(0, 1, features).tolist())

    return simulation_pb2.SimulationConfig(
        seed=42, iterations=iterations, months=36, customers_per_iteration=64, feature_taxonomy=taxonomy,
        our_offering=offering("ours", 49.0, 0.0),
        competitors=[offering(f"competitor_{i}", float(rng.uniform(20, 120)), float(rng.uniform(0, 1))) for i in range(10)],
        segments=[simulation_pb2.SegmentSpec(
            name=f"persona_{i}", weight=float(rng.uniform(0.5, 2)), wtp_median_usd=float(rng.uniform(30, 90)),
            wtp_sigma=0.5, price_sensitivity=float(rng.uniform(1, 3)), brand_affinity=0.5,
            feature_importance=rng.uniform(0, 2, features).tolist(), innovation=1.0, imitation=1.0, churn_monthly=0.03)
            for i in range(5)],
        priors=simulation_pb2.MarketPriors(market_size_low=7500, market_size_high=12500, bass_p_mean=0.03,
                                           bass_p_log_sd=0.3, bass_q_mean=0.38, bass_q_log_sd=0.3, churn_mean=0.03,
                                           churn_log_sd=0.3, price_scale_log_sd=0.2),
        price_grid=np.geomspace(0.25 * 49, 3 * 49, 20).tolist(), competitive_response=response,
        competitor_reprice_step=0.02, sample_limit=1000, chunk_iterations=256,
    )


def _time(spec, simulate, repeats: int) -> tuple[float, float, int]:
    """Best wall seconds of a whole run (chunks + statistics), its kernel seconds, evaluations."""
    best = (float("inf"), 0.0, 0)
    for _ in range(repeats):
        started = time.perf_counter()
        partial = runner.run_chunks(spec, 0, spec.n_chunks, simulate=simulate)
        runner.merge(spec, [partial])
        wall = time.perf_counter() - started
        if wall < best[0]:
            best = (wall, partial.kernel_seconds, partial.utility_evaluations)
    return best


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_child(iterations: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-run", str(iterations)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-scale", action="store_true", help="skip the 10^3 / 10^6 iteration RSS runs")
    parser.add_argument("--rss-run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.rss_run:
        spec = convert.spec_from_proto(default_config(args.rss_run))
        started = time.perf_counter()
        runner.merge(spec, [runner.run_chunks(spec, 0, spec.n_chunks)])
        print(json.dumps({"iterations": args.rss_run, "seconds": time.perf_counter() - started,
                          "peak_rss_mib": _peak_rss_mib()}))
        return

    started = time.perf_counter()
    kernel.warmup()
    warmup_s = time.perf_counter() - started
    threads = runner.default_threads()
    rows, figures = [], {"cpus": os.cpu_count(), "threads": threads, "warmup_s": warmup_s, "engine": kernel.ENGINE}
    for label, response in [("default", False), ("competitive_response", True)]:
        spec = convert.spec_from_proto(default_config(response=response))
        k_wall, k_kernel, evals = _time(spec, kernel.simulate, args.repeats)
        r_wall, r_kernel, _ = _time(spec, reference.simulate, max(1, args.repeats // 2))
        rows.append((label, evals, k_wall, k_kernel, evals / k_wall / 1e6, r_wall, evals / r_wall / 1e6, r_wall / k_wall))
        figures[label] = {"utility_evaluations": evals, "kernel_wall_s": k_wall, "kernel_compute_s": k_kernel,
                          "kernel_M_evals_per_s": evals / k_wall / 1e6, "reference_wall_s": r_wall,
                          "reference_M_evals_per_s": evals / r_wall / 1e6, "ratio": r_wall / k_wall}

    print(f"SMVM simulation kernel ({kernel.ENGINE}, {os.cpu_count()} CPUs, {threads} threads, warm-up {warmup_s:.2f} s)")
    print(f"{'workload':<22}{'evals':>12}{'kernel s':>10}{'M ev/s':>9}{'numpy s':>10}{'M ev/s':>9}{'ratio':>8}")
    for label, evals, k_wall, _, k_rate, r_wall, r_rate, ratio in rows:
        print(f"{label:<22}{evals:>12,}{k_wall:>10.4f}{k_rate:>9.1f}{r_wall:>10.4f}{r_rate:>9.1f}{ratio:>7.1f}x")
    if not args.no_scale:
        figures["rss"] = [_rss_child(n) for n in (1_000, 1_000_000)]
        for r in figures["rss"]:
            print(f"iterations {r['iterations']:>9,}: {r['seconds']:7.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
    figures["peak_rss_mib"] = _peak_rss_mib()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    head = figures["default"]
    print(f"kernel: {head['kernel_M_evals_per_s']:.0f} M evals/s, {head['ratio']:.1f}x numpy reference, "
          f"peak RSS {figures['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
