"""Soak: a bounded, fixed-rate loopback load on the real mesh, with the rate limits on.

For --seconds at a fixed schedule (open loop: requests are sent on time whether or not earlier ones
answered), one token does what TractionBuild does: submits runs and polls their status. Then a burst
of GET /results past the guide's limit (100/min per token) must be answered 429 with Retry-After for
the excess, and nothing else may fail. Every accepted run must reach a decision. RSS of every mesh
process is sampled every --sample-every seconds; memory must stay flat: the median of the last
third's samples within --max-growth of the median of the middle third's (after warm-up; medians,
because a process's RSS swings by 10-20 % with the work in flight, and one sample at a trough and
one at a peak made a plateau look like growth).

Prints what it tried and what was lost (must be nothing), appends a dated row to
benchmarks/results/soak.tsv, and exits non-zero when any check fails.

    .venv/bin/python benchmarks/soak.py [--seconds 60] [--submit-rate 1.0] [--status-rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import time
from pathlib import Path

from common import BENCH_TOKEN, REPO, append_row, local_mesh, machine

TERMINAL = {"DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"}
RESULTS_LIMIT_PER_MINUTE = 100
BURST = 150


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def soak(mesh, seconds: float, submit_rate: float, status_rate: float, sample_every: float) -> dict:
    import httpx

    payload = json.loads((REPO / "examples" / "idea.json").read_text())
    payload.pop("run_id", None)
    payload["configuration"]["simulation_iterations"] = 300
    counts: collections.Counter[str] = collections.Counter()
    accepted: list[str] = []
    unexpected: list[str] = []
    rss = {}
    timeline: list[tuple[float, dict[str, float]]] = []  # (seconds since start, process -> RSS MiB)
    # Idle connections are dropped by the client before uvicorn's 5 s keep-alive timeout closes them:
    # with equal timeouts a request could go out on a connection the server was closing (a
    # "server disconnected" that is the client's race, not an answer of SMVM's).
    limits = httpx.Limits(max_connections=64, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {BENCH_TOKEN}"},
                                 timeout=30, limits=limits) as client:

        async def submit() -> None:
            r = await client.post("/api/v1/validation/runs", json=payload)
            counts[f"POST /runs {r.status_code}"] += 1
            if r.status_code == 201:
                accepted.append(r.json()["run_id"])
            elif r.status_code == 429:
                if "retry-after" not in r.headers:
                    unexpected.append("429 without Retry-After")
            else:
                unexpected.append(f"POST /runs {r.status_code}: {r.text[:200]}")

        async def poll() -> None:
            if not accepted:
                return
            run_id = accepted[counts["polls"] % len(accepted)]
            counts["polls"] += 1
            r = await client.get(f"/api/v1/validation/{run_id}/status")
            counts[f"GET /status {r.status_code}"] += 1
            if r.status_code not in (200, 429):
                unexpected.append(f"GET /status {r.status_code}: {r.text[:200]}")

        async def schedule(rate: float, action, tasks: list) -> None:
            start = time.monotonic()
            n = 0
            while (now := time.monotonic()) - start < seconds:
                due = start + n / rate
                if due > now:
                    await asyncio.sleep(due - now)
                tasks.append(asyncio.create_task(action()))
                n += 1

        async def sample_rss() -> None:
            pids = {k: p.pid for k, p in mesh.processes.items()}
            marks = {1.0: "start", seconds / 2: "middle", seconds: "end"}
            at = 1.0
            while at < seconds:
                marks.setdefault(at, "")
                at += sample_every
            for at in sorted(marks):
                await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
                sample = {k: round(rss_mib(pid), 1) for k, pid in pids.items()}
                timeline.append((at, sample))
                if marks[at]:
                    rss[marks[at]] = sample

        started = time.monotonic()
        tasks: list[asyncio.Task] = []
        await asyncio.gather(schedule(submit_rate, submit, tasks), schedule(status_rate, poll, tasks), sample_rss())
        await asyncio.gather(*tasks)

        # A burst past the guide's results limit (100/min per token): the excess must be 429 with Retry-After.
        burst_started = time.monotonic()
        burst = await asyncio.gather(*(client.get(f"/api/v1/validation/{accepted[0]}/results") for _ in range(BURST)))
        counts["burst ms"] = round((time.monotonic() - burst_started) * 1000)
        for r in burst:
            counts[f"burst GET /results {r.status_code}"] += 1
            if r.status_code == 429 and "retry-after" not in r.headers:
                unexpected.append("429 without Retry-After")
            elif r.status_code not in (200, 429):
                unexpected.append(f"GET /results {r.status_code}: {r.text[:200]}")

        # Every accepted run ends, with a decision.
        deadline = time.monotonic() + 300
        outcomes: collections.Counter[str] = collections.Counter()
        for run_id in accepted:
            while True:
                r = await client.get(f"/api/v1/validation/{run_id}/status")
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                status = r.json()["status"]
                if status in TERMINAL or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            outcomes[status] += 1
    return {"counts": counts, "accepted": len(accepted), "outcomes": outcomes, "unexpected": unexpected, "rss": rss,
            "timeline": timeline}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--submit-rate", type=float, default=1.0, help="POST /runs per second")
    parser.add_argument("--status-rate", type=float, default=20.0, help="GET /status per second")
    parser.add_argument("--max-growth", type=float, default=0.15, help="allowed RSS growth, middle -> end")
    parser.add_argument("--sample-every", type=float, default=0.0,
                        help="also sample RSS every this many seconds and print the timeline (default: seconds / 20)")
    args = parser.parse_args()

    with local_mesh() as mesh:
        result = asyncio.run(soak(mesh, args.seconds, args.submit_rate, args.status_rate,
                                  args.sample_every or args.seconds / 20))

    counts, rss = result["counts"], result["rss"]
    decided = result["outcomes"]["DECISION_READY"] + result["outcomes"]["COMPLETED"]
    middle_third = [sample for at, sample in result["timeline"] if args.seconds / 3 <= at <= 2 * args.seconds / 3]
    last_third = [sample for at, sample in result["timeline"] if at > 2 * args.seconds / 3]
    window = {k: (statistics.median(s[k] for s in middle_third), statistics.median(s[k] for s in last_third))
              for k in rss["end"]}
    growth = {k: (end - middle) / middle for k, (middle, end) in window.items()}
    worst = max(growth, key=growth.get)
    print(f"machine: {machine()}")
    print(f"tried: {sum(v for k, v in counts.items() if k not in ('polls', 'burst ms'))} requests in {args.seconds:.0f} s "
          f"({args.submit_rate}/s POST /runs, {args.status_rate}/s GET /status): {dict(sorted(counts.items()))}")
    print(f"runs accepted {result['accepted']}, ended with a decision {decided}, other outcomes "
          f"{dict(result['outcomes'] - collections.Counter({'DECISION_READY': decided}))}")
    print(f"unexpected answers: {len(result['unexpected'])} {result['unexpected'][:5]}")
    print(f"{'process':16}{'start MiB':>10}{'middle':>10}{'end':>10}{'median 2nd third':>18}{'median 3rd third':>18}{'growth':>8}")
    for k in rss["start"]:
        print(f"{k:16}{rss['start'][k]:>10.1f}{rss['middle'][k]:>10.1f}{rss['end'][k]:>10.1f}"
              f"{window[k][0]:>18.1f}{window[k][1]:>18.1f}{growth[k]:>+8.1%}")
    grew = [k for k in rss["start"] if rss["end"][k] - rss["start"][k] >= 5.0]
    if grew:
        print("RSS timeline of the processes that grew 5 MiB or more (MiB):")
        print(f"{'t s':>6}" + "".join(f"{k:>14}" for k in grew))
        for at, sample in result["timeline"]:
            print(f"{at:>6.0f}" + "".join(f"{sample[k]:>14.1f}" for k in grew))
    lost = result["accepted"] - decided
    limited = counts["burst GET /results 429"]
    # The bucket holds 100 and refills 100/min: while the burst is being answered, 100/60 more per
    # second of it may pass (a slow, loaded machine takes seconds to answer 150 requests), plus one.
    refilled = int(counts["burst ms"] / 1000 * RESULTS_LIMIT_PER_MINUTE / 60) + 1
    allowed = RESULTS_LIMIT_PER_MINUTE + refilled
    limit_held = counts["burst GET /results 200"] <= allowed and limited >= BURST - allowed
    print(f"rate limit: burst of {BURST} GET /results in {counts['burst ms']} ms -> {counts['burst GET /results 200']} x 200, "
          f"{limited} x 429, at most {allowed} may pass ({'held' if limit_held else 'NOT HELD'})")
    ok = not result["unexpected"] and lost == 0 and growth[worst] <= args.max_growth and limit_held
    path = append_row("soak", {
        "seconds": args.seconds, "submit_rate": args.submit_rate, "status_rate": args.status_rate,
        "requests": sum(v for k, v in counts.items() if k not in ("polls", "burst ms")), "accepted": result["accepted"],
        "rate_limited": counts["POST /runs 429"] + counts["GET /status 429"] + limited, "unexpected": len(result["unexpected"]),
        "lost": lost, "worst_rss_growth": f"{worst}:{growth[worst]:+.1%}",
    })
    print(f"soak: {'PASS' if ok else 'FAIL'}: lost {lost} runs, {len(result['unexpected'])} unexpected answers, "
          f"worst RSS growth (median of the last third vs the middle third) {worst} {growth[worst]:+.1%}; row appended to {path.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
