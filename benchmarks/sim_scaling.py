"""Scaling of one large run over 1, 2 and 3 local simulation replicas, through the whole mesh.

For each replica count the local mesh is started with that many simulation replicas (the
orchestrator shards a run's chunks over them, one shard per replica, and merges). Each replica is
pinned, with all its threads, to its own CPU set of --cpus-per-replica CPUs (default: the CPUs
this process may use divided by the largest replica count, at least one) and runs that many engine
threads (SMVM_SIM_THREADS), so replicas do not oversubscribe; where the machine has fewer CPUs
than the replicas need, the sets wrap around and share CPUs (said in the output). The other
services run on the CPUs left over, or anywhere when none are.

Then the same large run (the example idea, --iterations Monte Carlo iterations, a fixed seed) is
submitted over REST --repeats times, each after the previous one is wholly done, timing
- the simulation stage: its stage.started -> stage.completed events in the run's events.jsonl
  (sharding, the kernels, the merge, the budget reservation and the commit), and
- end to end: from sending `POST /runs` to the first status that says DECISION_READY.
Every run uses the same seed, so every run at every replica count must give the same simulation
result bit for bit (compared on everything but its kernel_seconds timing); the script fails if not,
and also if a replica did not do its share of the work (CPU time of each replica process).

Prints a table with the speed-up over 1 replica and the parallel efficiency (speed-up / replicas)
of the medians, and appends a dated row to benchmarks/results/sim_scaling.tsv.

    .venv/bin/python benchmarks/sim_scaling.py [--iterations 300000] [--repeats 3] [--replicas 1,2,3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

from common import BENCH_TOKEN, REPO, append_row, local_mesh, machine, submit_and_wait

SEED = 20261125
# A replica must do at least this fraction of an even share of the replicas' CPU time in a run.
MIN_SHARE_OF_EVEN = 0.5
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_sets(cpus: list[int], replicas: int, per_replica: int) -> list[list[int]]:
    """Replica i gets CPUs i*k .. i*k+k-1 of `cpus` (k = per_replica), wrapping round when they run out."""
    return [[cpus[(i * per_replica + j) % len(cpus)] for j in range(per_replica)] for i in range(replicas)]


def pin(pid: int, cpus: list[int]) -> None:
    """Pin every thread of a process (threads it starts later inherit the pinning from their creator)."""
    for _ in range(2):  # a second pass catches a thread started during the first
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:
                pass  # the thread ended meanwhile
    if sorted(os.sched_getaffinity(pid)) != sorted(set(cpus)):
        raise SystemExit(f"could not pin process {pid} to CPUs {cpus}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def simulation_digest(simulation: dict) -> str:
    """SHA-256 of the simulation result as served, less its timing (kernel_seconds)."""
    kept = {k: v for k, v in simulation.items() if k != "kernel_seconds"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def _time(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def simulation_stage(events_file: Path) -> tuple[float, float]:
    """(wall seconds from stage.started to stage.completed of the simulation, its kernel_seconds)."""
    started = completed = None
    kernel = float("nan")
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        if event["payload"].get("stage") != "simulation":
            continue
        if event["type"] == "stage.started":
            started = _time(event["time"])
        elif event["type"] == "stage.completed":
            completed = _time(event["time"])
            kernel = float(event["payload"]["kernel_seconds"])
    if started is None or completed is None:
        raise SystemExit(f"no simulation stage.started / stage.completed in {events_file}")
    return completed - started, kernel


def one_run(client, mesh, payload: dict, replica_pids: list[int]) -> dict:
    """Submit one run, wait for its decision and its report; its timings, digest and replica CPU."""
    before = [cpu_seconds(pid) for pid in replica_pids]
    run_id, _, e2e = submit_and_wait(client, payload)
    replica_cpu = [cpu_seconds(pid) - b for pid, b in zip(replica_pids, before)]
    while client.get(f"/api/v1/validation/{run_id}/report").status_code == 409:
        time.sleep(0.05)  # the report is still being rendered; the next run should not compete with it
    run_dir = Path(mesh.settings.runs_dir) / payload["project_id"] / "validation" / run_id
    stage, kernel = simulation_stage(run_dir / "events.jsonl")
    simulation = client.get(f"/api/v1/validation/{run_id}/results").json()["simulation"]
    return {"e2e": e2e, "stage": stage, "kernel": kernel, "digest": simulation_digest(simulation),
            "chunks": int(simulation["chunks"]), "replica_cpu": replica_cpu}


def measure(replicas: int, sets: list[list[int]], rest: list[int], payload: dict, repeats: int) -> list[dict]:
    """Start a mesh with `replicas` pinned simulation replicas; one warm-up run, then `repeats` timed runs."""
    import httpx

    starting = time.perf_counter()
    with local_mesh(simulation_replicas=replicas, rate_limits="off") as mesh, httpx.Client(
        base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {BENCH_TOKEN}"}, timeout=120
    ) as client:
        print(f"  mesh started in {time.perf_counter() - starting:.1f} s", flush=True)
        pids = [mesh.processes[f"simulation-{i}"].pid for i in range(replicas)]
        for pid, cpus in zip(pids, sets):
            pin(pid, cpus)
        if rest:
            for key, proc in mesh.processes.items():
                if not key.startswith("simulation-"):
                    pin(proc.pid, rest)
        # Warm-up (default size): the first run of a mesh also loads the stages' lazy imports and caches.
        one_run(client, mesh, dict(payload, configuration=dict(payload["configuration"], simulation_iterations=1000)), pids)
        runs = []
        for _ in range(repeats):
            runs.append(one_run(client, mesh, payload, pids))
            print(f"  {replicas} replica(s): stage {runs[-1]['stage']:.2f} s, end to end {runs[-1]['e2e']:.2f} s, "
                  f"replica CPU {', '.join(f'{c:.1f}' for c in runs[-1]['replica_cpu'])} s", flush=True)
        return runs


def check_spread(replicas: int, runs: list[dict]) -> None:
    """Fail when a replica did less than MIN_SHARE_OF_EVEN of an even share of the work of a run."""
    for i, run in enumerate(runs):
        even = sum(run["replica_cpu"]) / replicas
        idle = [r for r, c in enumerate(run["replica_cpu"]) if c < MIN_SHARE_OF_EVEN * even]
        if idle:
            raise SystemExit(f"FAILED: with {replicas} replicas, run {i + 1} left replica(s) {idle} (almost) idle: "
                             f"CPU seconds per replica {run['replica_cpu']}; shards are not spread over the replicas")


def check_identical(results: dict[int, list[dict]]) -> str:
    """Every run at every replica count must give the same simulation bytes; return the digest."""
    digests = {(n, i): run["digest"] for n, runs in results.items() for i, run in enumerate(runs)}
    reference = next(iter(digests.values()))
    differing = [key for key, digest in digests.items() if digest != reference]
    if differing:
        raise SystemExit("FAILED: same seed, different simulation results: " + ", ".join(
            f"{n} replica(s) run {i + 1}: {digests[(n, i)][:16]}" for n, i in digests) + " -- not bit-identical")
    return reference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300_000, help="Monte Carlo iterations of the large run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per replica count")
    parser.add_argument("--replicas", default="1,2,3", help="comma list of replica counts; the first is the baseline")
    parser.add_argument("--cpus-per-replica", type=int, default=0, help="0: the CPUs / the largest replica count")
    args = parser.parse_args()
    began = time.perf_counter()
    counts = [int(n) for n in args.replicas.split(",")]
    cpus = sorted(os.sched_getaffinity(0))
    per_replica = args.cpus_per_replica or max(1, len(cpus) // max(counts))
    os.environ["SMVM_SIM_THREADS"] = str(per_replica)  # inherited by the mesh's processes; only the simulation reads it

    payload = json.loads((REPO / "examples" / "idea.json").read_text())
    payload.pop("run_id", None)
    payload["configuration"] = dict(payload["configuration"], simulation_iterations=args.iterations, seed=SEED)

    print(f"machine: {machine()}; {len(cpus)} CPUs usable ({','.join(map(str, cpus))}), "
          f"{per_replica} CPU(s) and {per_replica} engine thread(s) per replica")
    print(f"large run: {args.iterations:,} iterations x 64 customers, 5 personas, 10 competitors, 36 months, "
          f"20 price points, seed {SEED}; {args.repeats} runs per replica count after one warm-up run")
    results, layout = {}, {}
    for n in counts:
        sets = cpu_sets(cpus, n, per_replica)
        used = {c for s in sets for c in s}
        shared = len(used) < n * per_replica
        rest = [c for c in cpus if c not in used]
        layout[n] = " ".join("{" + ",".join(map(str, s)) + "}" for s in sets) + (" (shared)" if shared else "")
        print(f"{n} replica(s) on CPUs {layout[n]}, other services on "
              f"{'{' + ','.join(map(str, rest)) + '}' if rest else 'any CPU'}", flush=True)
        results[n] = measure(n, sets, rest, payload, args.repeats)
        check_spread(n, results[n])
    digest = check_identical(results)
    chunks = results[counts[0]][0]["chunks"]

    base = counts[0]
    for runs in results.values():
        for r in runs:
            r["cpu"] = sum(r["replica_cpu"])
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in ("stage", "e2e", "kernel", "cpu")} for n in counts}
    print()
    print(f"{'replicas':>8}  {'CPU sets':<22}{'sim stage s (min-max)':>24}{'speed-up':>10}{'eff.':>7}"
          f"{'end to end s':>14}{'speed-up':>10}{'eff.':>7}{'chunks s':>10}{'replica CPU s':>15}")
    row: dict[str, object] = {"iterations": args.iterations, "repeats": args.repeats, "cpus": len(cpus),
                              "cpus_per_replica": per_replica}
    summary = []
    for n in counts:
        stages = [r["stage"] for r in results[n]]
        s_up, e_up = med[base]["stage"] / med[n]["stage"], med[base]["e2e"] / med[n]["e2e"]
        s_eff, e_eff = s_up * base / n, e_up * base / n  # efficiency: speed-up per added replica's share
        print(f"{n:>8}  {layout[n]:<22}{med[n]['stage']:>9.2f} ({min(stages):.2f}-{max(stages):.2f})"
              f"{s_up:>9.2f}x{s_eff * 100:>6.0f}%{med[n]['e2e']:>14.2f}{e_up:>9.2f}x{e_eff * 100:>6.0f}%"
              f"{med[n]['kernel']:>10.2f}{med[n]['cpu']:>15.2f}")
        row.update({f"stage_s_{n}": round(med[n]["stage"], 3), f"e2e_s_{n}": round(med[n]["e2e"], 3),
                    f"stage_speedup_{n}": round(s_up, 2), f"e2e_speedup_{n}": round(e_up, 2),
                    f"replica_cpu_s_{n}": round(med[n]["cpu"], 2)})
        if n != base:
            summary.append(f"{n} replicas {s_up:.2f}x ({s_eff * 100:.0f} %)")
    row.update({"identical": "yes", "digest": digest[:16]})
    # The file's columns are those of the default replica counts; other counts are printed only.
    path = append_row("sim_scaling", row) if counts == [1, 2, 3] else None
    print(f"(medians of {args.repeats}; speed-up and efficiency against {base} replica(s); chunks s = the chunks' "
          f"compute time summed over replicas (the result's kernel_seconds, wall time per chunk); replica CPU s = "
          f"user + system CPU of all replica processes from POST to decision)")
    print(f"all {sum(len(r) for r in results.values())} runs bit-identical ({chunks} chunks, simulation result "
          f"sha256 {digest[:16]}...); " + (f"row appended to {path.relative_to(REPO)}" if path else "no row appended (replica "
          "counts other than 1,2,3)"))
    print(f"sim_scaling: simulation stage {', '.join(summary) or 'no comparison'} vs {base} replica(s); "
          f"{len(cpus)} CPUs, results bit-identical ({time.perf_counter() - began:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
