"""Where one default run's time goes: POST /runs -> DECISION_READY, segment by segment.

Starts the local mesh with metrics endpoints on the orchestrator, the simulation service and the
analysis service, then submits examples/idea.json N times, one after another (each once the previous
run's report is served, as benchmarks/e2e_latency.py does). Each process records the segments of a
run in `smvm_run_segment_seconds` (smvm/metrics.py):
- the orchestrator one per step of its pipeline (a stage's start, its call, its artifact, its commit;
  the simulation budget; the request for the analysis), as laps of one stopwatch, so its segments
  add up to the whole pipeline with no gap left out;
- the simulation service its engine's parts (chunks; merge; the result message; and the kernel's
  time inside the chunks, summed over the engine's threads, so it can exceed the chunks' wall time);
- the analysis service its decision (and, after DECISION_READY, the documents).
The scrape after a run minus the scrape before it gives that run's segments. What is left of the
client's figure is outside the pipeline: the POST (gateway, ingestion, run creation), the pipeline
task's start and the status poll that sees DECISION_READY.

Then the parts of the decision (services/analysis/decide.py: reading the simulation, the scenarios,
the tornado, ...) are timed in-process on the last run's own AnalyzeRequest, rebuilt from its
committed stage outputs, each part timed where it is entered from outside every other timed part.

Prints the median of each segment over the runs and appends a dated row to
benchmarks/results/run_breakdown.tsv.

    .venv/bin/python benchmarks/run_breakdown.py [--runs 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import types
from collections import defaultdict
from pathlib import Path

from common import BENCH_TOKEN, REPO, append_row, local_mesh, machine, percentile, submit_and_wait

SEGMENT_METRIC = "smvm_run_segment_seconds"
PROCESSES = ("orchestrator", "simulation", "analysis")  # the processes whose segments are scraped


def scrape(url: str) -> dict[str, tuple[float, float]]:
    """segment -> (sum of seconds, count) of a process's smvm_run_segment_seconds."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        if family.name != SEGMENT_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                totals[sample.labels["segment"]][0] = sample.value
            elif sample.name.endswith("_count"):
                totals[sample.labels["segment"]][1] = sample.value
    return {k: (v[0], v[1]) for k, v in totals.items()}


def delta(after: dict, before: dict) -> dict[str, float]:
    """Seconds per segment recorded between two scrapes (segments not entered are left out)."""
    return {k: s - before.get(k, (0.0, 0.0))[0] for k, (s, c) in after.items() if c > before.get(k, (0.0, 0.0))[1]}


# ------------------------------------------------------------------ the decision's parts, in-process
def decision_parts() -> list[tuple[object, str, str]]:
    """(module, function name, part) of decide.analyze's parts; a part missing after a refactor is skipped."""
    from services.analysis import decide, gate, precedent, pricing, report, risk

    parts = [
        (decide, "read_simulation", "read the simulation (samples -> arrays)"),
        (precedent, "memory_findings", "memory precedent"),
        (decide, "_scenario", "scenarios at the used and the best price"),
        (decide, "sensitivity", "tornado (every swing re-scored)"),
        (decide, "evppi", "value of information"),
        (risk, "assess", "risks"),
        (gate, "gate_decision", "gate"),
        (report, "render", "report Markdown"),
        (report, "summary_json", "summary JSON"),
    ]
    parts += [(pricing, name, "pricing (WTP, optimum, elasticity)") for name in
              ("wtp_quantiles", "revenue_maximising_price", "elasticity_at", "elasticities_at_rows", "elasticity_profile")]
    return [(m, name, part) for m, name, part in parts if callable(getattr(m, name, None))]


def time_decision_parts(request, repeats: int) -> tuple[dict[str, float], float]:
    """Median seconds of each part of analyze(request) over `repeats`, and of the whole."""
    from services.analysis.decide import analyze

    parts = decision_parts()
    spent: dict[str, float] = defaultdict(float)
    depth = [0]

    def timed(fn, part):
        def wrapper(*args, **kwargs):
            if depth[0]:  # inside another timed part: counted there
                return fn(*args, **kwargs)
            depth[0] += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - started
                depth[0] -= 1
        return wrapper

    originals = [(m, name, getattr(m, name)) for m, name, _ in parts]
    per_part: dict[str, list[float]] = defaultdict(list)
    wholes = []
    analyze(request, render_documents=False)  # warm-up (imports, policy)
    try:
        for m, name, part in parts:
            setattr(m, name, timed(getattr(m, name), part))
        for _ in range(repeats):
            spent.clear()
            started = time.perf_counter()
            analyze(request, render_documents=False)
            whole = time.perf_counter() - started
            wholes.append(whole)
            for part in dict.fromkeys(p for _, _, p in parts):
                per_part[part].append(spent.get(part, 0.0))
            per_part["the decision message and the rest"].append(whole - sum(spent.values()))
    finally:
        for m, name, fn in originals:
            setattr(m, name, fn)
    return {k: statistics.median(v) for k, v in per_part.items()}, statistics.median(wholes)


def analyze_request_of(runs_dir: Path, run_id: str):
    """The decision-only AnalyzeRequest the pipeline sent for `run_id`, rebuilt from its committed outputs."""
    from google.protobuf import json_format

    from services.orchestrator.pipeline import Pipeline
    from services.orchestrator.store import RunStore
    from smvm.v1 import (competitor_service_pb2, idea_pb2, memory_grounding_pb2, persona_service_pb2,
                         simulation_pb2)

    store = RunStore(runs_dir)
    try:
        def committed(stage, message_type):
            return message_type.FromString(store.stage_output(run_id, stage))

        config = json_format.ParseDict(store.rundir(run_id).read_json("outputs/simulation.config.json"),
                                       simulation_pb2.SimulationConfig())
        request = Pipeline._analyze_request(
            types.SimpleNamespace(idea=committed("ingestion", idea_pb2.Idea)),
            committed("personas", persona_service_pb2.GeneratePersonasResponse),
            committed("competitors", competitor_service_pb2.BuildLandscapeResponse), config,
            committed("simulation", simulation_pb2.SimulationResult),
            committed("memory", memory_grounding_pb2.MemoryGrounding))
    finally:
        store.db.close()
    request.skip_documents = True
    return request


# ------------------------------------------------------------------ report
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="runs before timing (connection, caches)")
    parser.add_argument("--decide-repeats", type=int, default=9, help="in-process repeats of the decision's parts")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--save-request", help="also write the last run's decision-only AnalyzeRequest (binary "
                        "protobuf) here, to profile the decision on a real request")
    args = parser.parse_args()

    import httpx

    from smvm.launcher import free_port

    payload = json.loads((REPO / "examples" / "idea.json").read_text())
    payload.pop("run_id", None)
    ports = {name: free_port() for name in PROCESSES}
    env = {f"SMVM_{name.upper()}_METRICS_ADDR": f"127.0.0.1:{port}" for name, port in ports.items()}
    urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
    load_start = os.getloadavg()
    decision, accept = [], []
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in PROCESSES}
    with local_mesh(rate_limits="off", extra_env=env) as mesh, httpx.Client(
        base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {BENCH_TOKEN}"}, timeout=60
    ) as client:
        for i in range(args.warmup + args.runs):
            before = {name: scrape(url) for name, url in urls.items()}
            run_id, accepted_s, decided_s = submit_and_wait(client, payload, poll_s=0.005)
            while client.get(f"/api/v1/validation/{run_id}/report").status_code == 409:
                time.sleep(0.02)  # the documents are still being rendered
            if i < args.warmup:
                continue
            accept.append(accepted_s)
            decision.append(decided_s)
            for name, url in urls.items():
                runs[name].append(delta(scrape(url), before[name]))
        request = analyze_request_of(Path(mesh.settings.runs_dir), run_id)
    if args.save_request:
        Path(args.save_request).write_bytes(request.SerializeToString())
    load_end = os.getloadavg()
    parts, whole = time_decision_parts(request, args.decide_repeats)

    def med(process: str, segment: str) -> float:
        return statistics.median(r.get(segment, 0.0) for r in runs[process])

    order = list(dict.fromkeys(k for r in runs["orchestrator"] for k in r))
    pipeline = [k for k in order if not k.startswith("documents.")]
    documents = [k for k in order if k.startswith("documents.")]
    pipeline_total = [sum(r.get(k, 0.0) for k in pipeline) for r in runs["orchestrator"]]
    outside = [d - p for d, p in zip(decision, pipeline_total)]
    ms = lambda s: f"{s * 1000:9.1f}"  # noqa: E731
    rows: list[tuple[str, float]] = []

    def row(label: str, seconds: float, indent: int) -> None:
        rows.append((label, seconds))
        print(f"{'  ' * indent}{label:<{58 - 2 * indent}}{ms(seconds)}")

    print(f"machine: {machine()}")
    print(f"load average at start {load_start[0]:.2f} / {load_start[1]:.2f}, at end {load_end[0]:.2f} / {load_end[1]:.2f} (1 / 5 min)")
    print(f"{args.runs} runs, default configuration (examples/idea.json), each after the previous run's report; "
          f"median ms per segment")
    print(f"{'segment':<58}{'p50 ms':>9}")
    row("POST -> DECISION_READY (client)", statistics.median(decision), 0)
    row("accept: the POST answered", statistics.median(accept), 1)
    row("outside the pipeline: POST, task start, status poll", statistics.median(outside), 1)
    row("orchestrator pipeline, first step to DECISION_READY", statistics.median(pipeline_total), 1)
    for stage in dict.fromkeys(k.split(".")[0] for k in pipeline):
        segments = [k for k in pipeline if k.split(".")[0] == stage]
        row(f"{stage} (stage total)", statistics.median(sum(r.get(k, 0.0) for k in segments) for r in runs["orchestrator"]), 2)
        for segment in segments:
            row(segment, med("orchestrator", segment), 3)
            service = {"simulation.run": "simulation", "analysis.call": "analysis"}.get(segment)
            if service is None:
                continue
            own = [k for k in dict.fromkeys(k for r in runs[service] for k in r) if not k.endswith(".documents")]
            for k in own:
                row(f"{k}{' (in chunks, summed over threads)' if k.endswith('.kernel') else ''}", med(service, k), 4)
            serial = [k for k in own if not k.endswith(".kernel")]
            row(f"{segment} less the above: gRPC, (de)serialisation, threads", statistics.median(
                o.get(segment, 0.0) - sum(s.get(k, 0.0) for k in serial) for o, s in zip(runs["orchestrator"], runs[service])), 4)
    print("after DECISION_READY (off the critical path)")
    for segment in documents:
        row(segment, med("orchestrator", segment), 1)
    row("analysis.service.documents", med("analysis", "analysis.service.documents"), 2)
    print(f"the decision's parts, in-process on the last run's request (median of {args.decide_repeats})")
    row("analyze(render_documents=False)", whole, 1)
    for part, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        row(part, seconds, 2)

    figures = dict(rows)
    path = append_row("run_breakdown", {
        "runs": args.runs, "load_start": round(load_start[0], 2), "load_end": round(load_end[0], 2),
        "decision_p50_ms": round(statistics.median(decision) * 1000, 1),
        "decision_p95_ms": round(percentile(decision, 95) * 1000, 1),
        "pipeline_p50_ms": round(statistics.median(pipeline_total) * 1000, 1),
        "simulation_stage_p50_ms": round(figures.get("simulation (stage total)", 0.0) * 1000, 1),
        "analysis_stage_p50_ms": round(figures.get("analysis (stage total)", 0.0) * 1000, 1),
        "segments_ms": json.dumps({k: round(v * 1000, 2) for k, v in rows}, separators=(",", ":")),
    })
    if args.json:
        Path(args.json).write_text(json.dumps({"load_start": load_start, "load_end": load_end,
                                               "segments_ms": {k: v * 1000 for k, v in rows},
                                               "runs": runs, "decision_s": decision}, indent=2))
    print(f"breakdown: p50 {statistics.median(decision) * 1000:.0f} ms, pipeline {statistics.median(pipeline_total) * 1000:.0f} ms; "
          f"row appended to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
