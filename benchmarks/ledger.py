"""Budget ledger throughput: reserve + commit pairs per second, in-process (1 and 8 threads) and
over loopback gRPC (concurrent grpc.aio calls to one overwatch server), all on one SQLite file.

Every reservation is a serialised write transaction (BEGIN IMMEDIATE), so threads do not add
throughput; they show that contention costs little and that nothing is lost. The last line checks
the ledger's totals against what was granted.

    .venv/bin/python benchmarks/ledger.py [--pairs 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from smvm.config import Settings  # noqa: E402
from smvm.v1 import overwatch_service_pb2 as pb, overwatch_service_pb2_grpc as pb_grpc  # noqa: E402
from services.overwatch.budget import BudgetDefaults  # noqa: E402
from services.overwatch.ledger import Amounts, Ledger  # noqa: E402
from services.overwatch.ledger_store import LedgerStore  # noqa: E402
from services.overwatch.policy import load_policy  # noqa: E402
from services.overwatch.servicer import build_host  # noqa: E402

POLICY = load_policy({"budget": {"project": {"max_utility_evaluations": 0, "max_tokens": 0, "max_cpu_seconds": 0}}})


def in_process(folder: Path, pairs: int, threads: int) -> dict:
    ledger = Ledger(LedgerStore(folder / f"bench-{threads}.db"), BudgetDefaults(10**12, 10**6), POLICY)

    def one(i: int) -> None:
        held = ledger.reserve(run_id=f"RUN-{i}", project_id="bench", requested=Amounts(1_000))
        ledger.commit(held.reservation_id, Amounts(1_000, 0, 0.01))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(pairs)))
    seconds = time.perf_counter() - started
    _, usage = ledger.usage(project_id="bench")
    assert usage.committed.utility_evaluations == pairs * 1_000, usage
    return {"mode": f"in-process, {threads} thread(s)", "pairs": pairs, "seconds": round(seconds, 3),
            "pairs_per_s": round(pairs / seconds, 1)}


async def over_grpc(folder: Path, pairs: int, concurrency: int) -> dict:
    host = build_host(Settings(profile="test", runs_dir=folder / "grpc", grace_period_s=1), "127.0.0.1:0", policy=POLICY)
    port = await host.start()
    await host.ready.wait()
    semaphore = asyncio.Semaphore(concurrency)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.OverwatchServiceStub(channel)

            async def one(i: int) -> None:
                async with semaphore:
                    held = await stub.ReserveBudget(pb.ReserveBudgetRequest(
                        run_id=f"RUN-{i}", project_id="bench", requested=pb.ResourceAmounts(utility_evaluations=1_000)),
                        timeout=30)
                    await stub.CommitBudget(pb.CommitBudgetRequest(
                        reservation_id=held.reservation_id, actual=pb.ResourceAmounts(utility_evaluations=1_000)),
                        timeout=30)

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(pairs)))
            seconds = time.perf_counter() - started
            usage = await stub.GetUsage(pb.GetUsageRequest(project_id="bench"), timeout=10)
            assert usage.project_usage.committed.utility_evaluations == pairs * 1_000
    finally:
        await host.stop(0)
    return {"mode": f"gRPC, {concurrency} concurrent calls", "pairs": pairs, "seconds": round(seconds, 3),
            "pairs_per_s": round(pairs / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [in_process(folder, args.pairs, 1), in_process(folder, args.pairs, 8),
                asyncio.run(over_grpc(folder, args.pairs, 32))]
    for row in rows:
        print(f"{row['mode']:<32} {row['pairs']:>6} reserve+commit pairs in {row['seconds']:>7.3f} s = "
              f"{row['pairs_per_s']:>8.1f} pairs/s")
    print("totals checked: every committed amount is in the ledger, nothing lost or double-counted")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
