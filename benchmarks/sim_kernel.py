"""Simulation kernel throughput: the numba kernel against the numpy reference, same workload, same run.

One utility evaluation = one simulated customer's utility for one offering at one price point,
with that customer's coefficients freshly drawn: per customer J (ours + competitors at list
prices) + G (ours at each price-grid point), + (T - 1)(J - 1) with competitive response (each
competitor again each later month, at its current price). This is the count of utilities each
engine actually computes and exponentiates; budget.py derives it from the config and a test
checks the engines report the same.

Engine throughput: every chunk of the workload run through one engine's `simulate` (chunk stream
creation, every random draw, the whole model), on the runner's thread count, wall time, best of
several repeats with the two engines' repeats interleaved (so a burst of load from other
processes hits both). The statistics (histograms, merge) are shared code, timed separately as the
whole run. Child processes measure the first call after a restart (warm numba cache) and peak RSS
for 10^3 and 10^6 iterations (chunks stream, so memory must not grow).

    .venv/bin/python benchmarks/sim_kernel.py [--json out.json] [--repeats 12] [--no-scale]
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
# Both engines get their parallelism from the runner's threads (one chunk per thread). OpenBLAS's
# own threads (the reference's one matrix product per chunk) would spin after each call and take
# the CPUs from whatever runs next; measured here they made the reference slower (CPU 125 ms vs
# 70 ms for the default workload), so numpy's BLAS runs single-threaded, to the reference's benefit.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from common import append_row  # noqa: E402
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


def _engine_wall(spec, simulate, threads: int) -> tuple[float, float, int]:
    """Wall and CPU seconds (all threads) to run every chunk through `simulate` on `threads`
    threads; evaluations."""

    def one(chunk: int) -> int:
        first, end = spec.chunk_range(chunk)
        return int(simulate(spec, runner.chunk_generator(spec.seed, chunk), end - first)[-1])

    cpu, started = time.process_time(), time.perf_counter()
    evaluations = sum(runner.pool(threads).map(one, range(spec.n_chunks)))  # the runner's persistent threads
    return time.perf_counter() - started, time.process_time() - cpu, evaluations


def _compare(spec, threads: int, repeats: int) -> dict:
    """Both engines on the same workload, repeats interleaved; best wall time of each (and best CPU
    time, which other processes' load disturbs far less than wall time)."""
    best = {name: [float("inf"), float("inf")] for name in ("kernel", "reference")}
    evaluations = {}
    for _ in range(repeats):  # the same number of tries for both: a best-of-N favours the larger N
        for name, simulate in (("kernel", kernel.simulate), ("reference", reference.simulate)):
            wall, cpu, evaluations[name] = _engine_wall(spec, simulate, threads)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    if evaluations["kernel"] != evaluations["reference"] or evaluations["kernel"] != spec.planned_utility_evaluations():
        raise SystemExit(f"evaluation counts differ: {evaluations} vs planned {spec.planned_utility_evaluations()}")
    n = evaluations["kernel"]
    (k_wall, k_cpu), (r_wall, r_cpu) = best["kernel"], best["reference"]
    return {"utility_evaluations": n, "kernel_wall_s": k_wall, "kernel_M_evals_per_s": n / k_wall / 1e6,
            "reference_wall_s": r_wall, "reference_M_evals_per_s": n / r_wall / 1e6, "ratio": r_wall / k_wall,
            "kernel_cpu_s": k_cpu, "reference_cpu_s": r_cpu, "cpu_ratio": r_cpu / k_cpu}


def _whole_run(spec, repeats: int) -> dict:
    """The service's path: run_chunks (kernel + chunk statistics) and merge; best of `repeats`."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        started = time.perf_counter()
        partial = runner.run_chunks(spec, 0, spec.n_chunks)
        runner.merge(spec, [partial])
        wall = time.perf_counter() - started
        best = min(best, (wall, partial.kernel_seconds))
    return {"wall_s": best[0], "kernel_compute_s": best[1]}


def _peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM, the high-water mark of its address space (reset by exec).

    getrusage's ru_maxrss is not used: Linux carries it over from the parent across fork + exec,
    so a child would report at least the benchmark process's own peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _first_call() -> None:
    """Child process: warm up (numba's cache already on disk), run one default simulation, print the
    wall-clock time.time() at each step; the parent subtracts the moment it spawned the process,
    so interpreter start-up and every import count too."""
    from services.simulation.engine import kernel as k, runner as r

    k.warmup()
    warm = time.time()
    spec = convert.spec_from_proto(default_config())
    r.merge(spec, [r.run_chunks(spec, 0, spec.n_chunks)])
    print(json.dumps({"warm_at": warm, "result_at": time.time()}))


def _first_call_after_restart() -> dict:
    spawned = time.time()
    child = _child("--first-call")
    return {"warmup_s": child["warm_at"] - spawned, "first_result_s": child["result_at"] - spawned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--repeats", type=int, default=12, help="tries per engine on the default workload (a third with competitive response)")
    parser.add_argument("--no-scale", action="store_true", help="skip the 10^3 / 10^6 iteration RSS runs")
    parser.add_argument("--rss-run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first-call", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.first_call:
        _first_call()
        return
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
    load = os.getloadavg()[0]
    figures = {"cpus": os.cpu_count(), "threads": threads, "warmup_s": warmup_s, "engine": kernel.ENGINE,
               "load_average_1min_at_start": load}
    for label, response in [("default", False), ("competitive_response", True)]:
        spec = convert.spec_from_proto(default_config(response=response))
        figures[label] = _compare(spec, threads, args.repeats if not response else max(2, args.repeats // 3))
        figures[label]["whole_run"] = _whole_run(spec, 5)
    figures["first_call"] = _first_call_after_restart()

    print(f"SMVM simulation kernel ({kernel.ENGINE}, {os.cpu_count()} CPUs, {threads} threads, "
          f"load average {load:.1f} at start)")
    print("engine only (all chunks, draws included), best wall time:")
    print(f"  {'workload':<22}{'evals':>12}{'kernel s':>10}{'M ev/s':>9}{'numpy s':>10}{'M ev/s':>9}{'ratio':>8}")
    for label in ("default", "competitive_response"):
        f = figures[label]
        print(f"  {label:<22}{f['utility_evaluations']:>12,}{f['kernel_wall_s']:>10.4f}{f['kernel_M_evals_per_s']:>9.1f}"
              f"{f['reference_wall_s']:>10.4f}{f['reference_M_evals_per_s']:>9.1f}{f['ratio']:>7.1f}x")
    print("  CPU time (all threads, best): " + ", ".join(
        f"{label} kernel {figures[label]['kernel_cpu_s'] * 1e3:.1f} ms / numpy {figures[label]['reference_cpu_s'] * 1e3:.1f} ms"
        f" = {figures[label]['cpu_ratio']:.1f}x" for label in ("default", "competitive_response")))
    whole = figures["default"]["whole_run"]
    print(f"default run through the runner (kernel + statistics + merge): {whole['wall_s'] * 1e3:.1f} ms wall, "
          f"kernel compute {whole['kernel_compute_s'] * 1e3:.1f} ms (sum over chunks)")
    first = figures["first_call"]
    print(f"first call after a restart (new process, warm numba cache): warmed up {first['warmup_s']:.2f} s, "
          f"first default result {first['first_result_s']:.2f} s after the process was spawned")
    if not args.no_scale:
        figures["rss"] = [_child("--rss-run", str(n)) for n in (1_000, 1_000_000)]
        for r in figures["rss"]:
            print(f"iterations {r['iterations']:>9,}: {r['seconds']:7.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
    figures["peak_rss_mib"] = _peak_rss_mib()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    head, response = figures["default"], figures["competitive_response"]
    path = append_row("sim_kernel", {
        "load_1min": round(load, 2), "threads": threads, "engine": kernel.ENGINE,
        "default_M_evals_s": round(head["kernel_M_evals_per_s"], 1), "default_ratio_wall": round(head["ratio"], 2),
        "default_ratio_cpu": round(head["cpu_ratio"], 2),
        "response_M_evals_s": round(response["kernel_M_evals_per_s"], 1), "response_ratio_wall": round(response["ratio"], 2),
        "whole_run_ms": round(head["whole_run"]["wall_s"] * 1e3, 1), "first_result_s": round(first["first_result_s"], 2),
        "peak_rss_mib": round(figures["peak_rss_mib"]),
    })
    print(f"kernel: {head['kernel_M_evals_per_s']:.0f} M evals/s, {head['ratio']:.1f}x numpy reference, "
          f"peak RSS {figures['peak_rss_mib']:.0f} MiB (row appended to {path.relative_to(REPO)})")


if __name__ == "__main__":
    main()
