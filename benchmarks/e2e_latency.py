"""End-to-end latency: `POST /runs` to DECISION_READY on the local mesh, default configuration.

Starts every service as its own process on free loopback ports, then submits the example idea N
times one after another (each a new run, default configuration: 1,000 iterations, 5 personas,
10 competitors) and polls its status every 5 ms (rate limits off: 200 polls a second would be 429s), timing
- accept: the POST's own round trip (the guide's T0 answer), and
- decision: from sending the POST to the first status that says DECISION_READY.
Each run starts once the previous one is wholly done (its HTML/PDF report, rendered after
DECISION_READY, served), so a figure is one run's latency on an otherwise idle mesh; with
--back-to-back the next run is submitted at once and overlaps the previous run's rendering.
Prints p50 / p95 / max and appends a dated row to benchmarks/results/e2e_latency.tsv.

    .venv/bin/python benchmarks/e2e_latency.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import time

from common import BENCH_TOKEN, REPO, append_row, local_mesh, machine, percentile, submit_and_wait

TARGET_P50_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3, help="runs before timing (connection, caches)")
    parser.add_argument("--back-to-back", action="store_true", help="do not wait for the previous run's report")
    args = parser.parse_args()

    import httpx

    payload = json.loads((REPO / "examples" / "idea.json").read_text())
    payload.pop("run_id", None)
    accept, decision = [], []
    with local_mesh(rate_limits="off") as mesh, httpx.Client(
        base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {BENCH_TOKEN}"}, timeout=60
    ) as client:
        for i in range(args.warmup + args.runs):
            run_id, accepted_s, decided_s = submit_and_wait(client, payload, poll_s=0.005)
            while not args.back_to_back and client.get(f"/api/v1/validation/{run_id}/report").status_code == 409:
                time.sleep(0.02)  # the report is still being rendered
            if i >= args.warmup:
                accept.append(accepted_s)
                decision.append(decided_s)

    p50, p95 = percentile(decision, 50), percentile(decision, 95)
    print(f"machine: {machine()}")
    mode = "back to back" if args.back_to_back else "each after the previous run's report"
    print(f"{args.runs} runs ({mode}), default configuration (examples/idea.json), status polled every 5 ms")
    print(f"{'':24}{'p50':>10}{'p95':>10}{'max':>10}")
    print(f"{'accept (POST /runs)':24}{percentile(accept, 50) * 1000:>8.1f}ms{percentile(accept, 95) * 1000:>8.1f}ms{max(accept) * 1000:>8.1f}ms")
    print(f"{'POST -> DECISION_READY':24}{p50 * 1000:>8.1f}ms{p95 * 1000:>8.1f}ms{max(decision) * 1000:>8.1f}ms")
    path = append_row("e2e_latency", {
        "runs": args.runs, "mode": "back-to-back" if args.back_to_back else "sequential", "accept_p50_ms": round(percentile(accept, 50) * 1000, 1),
        "accept_p95_ms": round(percentile(accept, 95) * 1000, 1), "decision_p50_ms": round(p50 * 1000, 1),
        "decision_p95_ms": round(p95 * 1000, 1), "decision_max_ms": round(max(decision) * 1000, 1),
    })
    verdict = "meets" if p50 < TARGET_P50_S else "MISSES"
    print(f"e2e: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms ({verdict} the {TARGET_P50_S:.0f} s p50 target); row appended to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
