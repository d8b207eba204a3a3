"""What the re-simulated swings add to a default validation, measured in one run.

Workload: the default validation shape (benchmarks/sim_kernel.default_config: 1,000 iterations x 64
customers, 5 personas, 10 competitors, 36 months, 20 price points), three ways, repeats interleaved
so a burst of load from other processes hits every side:

- base: no swings;
- tornado: the tornado's swings (services/orchestrator/simconfig.tornado_swings: Bass p, Bass q, churn
  and competitor prices, low and high: 8 re-simulations of the sampled chunks, here all 4);
- default: what the orchestrator asks for (simconfig.default_swings): the tornado's and the pivots'
  scenarios (feature parity, a segment focus), each a re-run of the whole kernel on those chunks.

Measured: the simulation (the servicer's work: run every chunk, merge, result proto), the result's
bytes, the orchestrator's simulation.result.json (MessageToDict + json.dumps) with the swing paths
left out as the pipeline writes it, and the decision (render_documents=False) on the re-simulated
swings against the same request without them (the old approximations). A dated row goes to
benchmarks/results/sensitivity_swings.tsv.

    .venv/bin/python benchmarks/sensitivity_swings.py [--repeats 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from common import append_row, machine

from google.protobuf import json_format

from sim_kernel import default_config
from services.analysis.decide import analyze
from services.orchestrator import simconfig
from services.orchestrator.pipeline import without_swing_paths
from services.simulation import convert
from services.simulation.engine import kernel, runner
from smvm.v1 import analysis_service_pb2, simulation_pb2


def simulate(config):
    """(result, wall seconds, CPU seconds of the whole process, all threads)."""
    spec = convert.spec_from_proto(config)
    cpu, started = time.process_time(), time.perf_counter()
    result = convert.output_to_proto(runner.merge(spec, [runner.run_chunks(spec, 0, spec.n_chunks)]))
    return result, time.perf_counter() - started, time.process_time() - cpu


def artifact_seconds(result) -> tuple[float, int]:
    started = time.perf_counter()
    text = json.dumps(json_format.MessageToDict(result, preserving_proto_field_name=True), indent=2)
    return time.perf_counter() - started, len(text)


def analysis_request(config, result):
    req = analysis_service_pb2.AnalyzeRequest(simulation=result, simulation_config=config)
    req.idea.price.amount, req.idea.price.currency, req.idea.price.billing_period = 49.0, "USD", "monthly"
    req.idea.market_size.tam_usd, req.idea.market_size.sam_usd = 5e7, 6e6
    return req


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json")
    args = ap.parse_args()
    kernel.warmup()
    base_config = default_config()
    tornado_config = default_config()
    tornado_config.swings.extend(simconfig.tornado_swings(with_competitors=True))
    swung_config = default_config()
    swung_config.swings.extend(simconfig.default_swings(swung_config))
    for config in (base_config, tornado_config, swung_config):  # warm: pools, caches
        simulate(config)
    base_s, tornado_s, swung_s, base_cpu, tornado_cpu, swung_cpu = [], [], [], [], [], []
    for _ in range(args.repeats):
        base, t, c = simulate(base_config)
        base_s.append(t)
        base_cpu.append(c)
        _, t, c = simulate(tornado_config)
        tornado_s.append(t)
        tornado_cpu.append(c)
        swung, t, c = simulate(swung_config)
        swung_s.append(t)
        swung_cpu.append(c)
    evaluations = [s.utility_evaluations for s in swung.swings]

    json_base, json_swung = [], []
    for _ in range(max(3, args.repeats // 3)):
        t, base_chars = artifact_seconds(base)
        json_base.append(t)
        t, swung_chars = artifact_seconds(without_swing_paths(swung))
        json_swung.append(t)

    with_swings = analysis_request(swung_config, swung)
    without = analysis_request(swung_config, without_swing_paths(swung))
    del without.simulation.swings[:]
    analyze(with_swings, render_documents=False)
    analysis_swung, analysis_old = [], []
    for _ in range(max(3, args.repeats // 3)):
        started = time.perf_counter()
        d = analyze(with_swings, render_documents=False).decision
        analysis_swung.append(time.perf_counter() - started)
        started = time.perf_counter()
        analyze(without, render_documents=False)
        analysis_old.append(time.perf_counter() - started)
    methods = sorted({(s.driver, s.method) for s in d.sensitivity})

    med = statistics.median
    out = {
        "machine": machine(), "swings": len(swung.swings), "swing_iterations_each": swung.swings[0].iterations,
        "swing_drivers": [simulation_pb2.SwingDriver.Name(s.swing.driver) for s in swung.swings],
        "simulation_base_ms_median": 1e3 * med(base_s), "simulation_tornado_ms_median": 1e3 * med(tornado_s),
        "simulation_with_swings_ms_median": 1e3 * med(swung_s),
        "simulation_base_ms_min": 1e3 * min(base_s), "simulation_tornado_ms_min": 1e3 * min(tornado_s),
        "simulation_with_swings_ms_min": 1e3 * min(swung_s),
        "swings_added_ms_median": 1e3 * (med(swung_s) - med(base_s)),
        "scenarios_added_ms_median": 1e3 * (med(swung_s) - med(tornado_s)),
        "simulation_base_cpu_ms_median": 1e3 * med(base_cpu), "simulation_tornado_cpu_ms_median": 1e3 * med(tornado_cpu),
        "simulation_with_swings_cpu_ms_median": 1e3 * med(swung_cpu),
        "swings_added_cpu_ms_median": 1e3 * (med(swung_cpu) - med(base_cpu)),
        "scenarios_added_cpu_ms_median": 1e3 * (med(swung_cpu) - med(tornado_cpu)),
        "load_average_1min": os.getloadavg()[0],
        "utility_evaluations_base": base.utility_evaluations, "utility_evaluations_with_swings": swung.utility_evaluations,
        "swing_evaluations": sum(evaluations),
        "result_bytes_base": base.ByteSize(), "result_bytes_with_swings": swung.ByteSize(),
        "artifact_json_ms_base": 1e3 * med(json_base), "artifact_json_ms_with_swing_summaries": 1e3 * med(json_swung),
        "artifact_json_chars_base": base_chars, "artifact_json_chars_with_swing_summaries": swung_chars,
        "analysis_ms_resimulated": 1e3 * med(analysis_swung), "analysis_ms_approximated": 1e3 * med(analysis_old),
        "analysis_ms_resimulated_min": 1e3 * min(analysis_swung), "analysis_ms_approximated_min": 1e3 * min(analysis_old),
        "tornado_methods": methods,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    print("| | base | tornado (8 swings) | default (tornado + scenarios) |\n|---|---|---|---|")
    for name, key in (("simulation wall, median", "ms_median"), ("simulation wall, fastest", "ms_min"),
                      ("simulation CPU, median", "cpu_ms_median")):
        print(f"| {name} | {out[f'simulation_base_{key}']:.1f} ms | {out[f'simulation_tornado_{key}']:.1f} ms | "
              f"{out[f'simulation_with_swings_{key}']:.1f} ms |")
    print(f"swings: +{out['swings_added_ms_median']:.1f} ms simulation wall (median {out['simulation_base_ms_median']:.1f} -> "
          f"{out['simulation_with_swings_ms_median']:.1f} ms; the scenarios +{out['scenarios_added_ms_median']:.1f}), "
          f"+{out['swings_added_cpu_ms_median']:.1f} ms CPU ({out['simulation_base_cpu_ms_median']:.1f} -> "
          f"{out['simulation_with_swings_cpu_ms_median']:.1f}; the scenarios +{out['scenarios_added_cpu_ms_median']:.1f}), "
          f"{len(swung.swings)} swings x {swung.swings[0].iterations} iterations, analysis "
          f"{out['analysis_ms_approximated']:.0f} -> {out['analysis_ms_resimulated']:.0f} ms, load {out['load_average_1min']:.2f}")
    path = append_row("sensitivity_swings", {
        "load_average_1min": f"{out['load_average_1min']:.2f}", "repeats": args.repeats, "swings": out["swings"],
        **{k: f"{out[k]:.1f}" for k in (
            "simulation_base_ms_median", "simulation_tornado_ms_median", "simulation_with_swings_ms_median",
            "simulation_base_cpu_ms_median", "simulation_tornado_cpu_ms_median", "simulation_with_swings_cpu_ms_median",
            "analysis_ms_approximated", "analysis_ms_resimulated")},
        "utility_evaluations_base": out["utility_evaluations_base"],
        "utility_evaluations_with_swings": out["utility_evaluations_with_swings"],
        "result_bytes_base": out["result_bytes_base"], "result_bytes_with_swings": out["result_bytes_with_swings"]})
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
