"""Budget ledger throughput: reserve + commit pairs per second, in-process (1 thread, 8 threads on one
connection, 8 threads with a connection each, as replicas have) and over loopback gRPC (concurrent
grpc.aio calls to one overwatch server), on the store's SQLite file and on a throwaway PostgreSQL
cluster (initdb + pg_ctl, fsync off) in the same run.

Every reservation of one project period is serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: the
period's totals row FOR UPDATE and the run's advisory lock), so threads do not add throughput for
one project; the 8-connection mode spreads the runs over 8 projects, where PostgreSQL's row locks
let them proceed side by side. Every mode checks the ledger's totals against what was granted.

    .venv/bin/python benchmarks/ledger.py [--pairs 2000] [--backends sqlite,postgresql] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from common import append_row  # noqa: E402

from smvm.config import Settings  # noqa: E402
from smvm.db.pgcluster import PgCluster, create_database  # noqa: E402
from smvm.v1 import overwatch_service_pb2 as pb, overwatch_service_pb2_grpc as pb_grpc  # noqa: E402
from services.overwatch.budget import BudgetDefaults  # noqa: E402
from services.overwatch.ledger import Amounts, Ledger  # noqa: E402
from services.overwatch.ledger_store import LedgerStore  # noqa: E402
from services.overwatch.policy import load_policy  # noqa: E402
from services.overwatch.servicer import build_host  # noqa: E402

POLICY = load_policy({"budget": {"project": {"max_utility_evaluations": 0, "max_tokens": 0, "max_cpu_seconds": 0}}})


def in_process(url: str, pairs: int, threads: int, connections: int = 1) -> dict:
    """`threads` threads over `connections` ledgers; with several connections, one project each."""
    ledgers = [Ledger(LedgerStore(url), BudgetDefaults(10**12, 10**6), POLICY) for _ in range(connections)]
    tag = f"{threads}t{connections}c"

    def one(i: int) -> None:
        k = i % connections
        held = ledgers[k].reserve(run_id=f"RUN-{tag}-{i}", project_id=f"bench-{tag}-{k}", requested=Amounts(1_000))
        ledgers[k].commit(held.reservation_id, Amounts(1_000, 0, 0.01))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(pairs)))
    seconds = time.perf_counter() - started
    committed = sum(ledgers[0].usage(project_id=f"bench-{tag}-{k}")[1].committed.utility_evaluations
                    for k in range(connections))
    assert committed == pairs * 1_000, committed
    for ledger in ledgers:
        ledger.store.close()
    mode = f"in-process, {threads} thread(s), {connections} connection(s)"
    return {"mode": mode, "pairs": pairs, "seconds": round(seconds, 3), "pairs_per_s": round(pairs / seconds, 1)}


async def over_grpc(folder: Path, url: str, pairs: int, concurrency: int) -> dict:
    settings = Settings(profile="test", runs_dir=folder / "grpc", database_url=url, grace_period_s=1)
    host = build_host(settings, "127.0.0.1:0", policy=POLICY)
    port = await host.start()
    await host.ready.wait()
    semaphore = asyncio.Semaphore(concurrency)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.OverwatchServiceStub(channel)

            async def one(i: int) -> None:
                async with semaphore:
                    held = await stub.ReserveBudget(pb.ReserveBudgetRequest(
                        run_id=f"RUN-grpc-{i}", project_id="bench-grpc", requested=pb.ResourceAmounts(utility_evaluations=1_000)),
                        timeout=30)
                    await stub.CommitBudget(pb.CommitBudgetRequest(
                        reservation_id=held.reservation_id, actual=pb.ResourceAmounts(utility_evaluations=1_000)),
                        timeout=30)

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(pairs)))
            seconds = time.perf_counter() - started
            usage = await stub.GetUsage(pb.GetUsageRequest(project_id="bench-grpc"), timeout=10)
            assert usage.project_usage.committed.utility_evaluations == pairs * 1_000
    finally:
        await host.stop(0)
    return {"mode": f"gRPC, {concurrency} concurrent calls", "pairs": pairs, "seconds": round(seconds, 3),
            "pairs_per_s": round(pairs / seconds, 1)}


def run_backend(folder: Path, url: str, pairs: int) -> list[dict]:
    return [in_process(url, pairs, 1), in_process(url, pairs, 8), in_process(url, pairs, 8, connections=8),
            asyncio.run(over_grpc(folder, url, pairs, 32))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{folder / 'smvm.db'}"
                rows += [dict(r, backend="sqlite") for r in run_backend(folder, url, args.pairs)]
            elif backend == "postgresql":
                cluster = PgCluster().init().start()
                try:
                    url = create_database(cluster.url(), "smvm_bench")
                    rows += [dict(r, backend="postgresql") for r in run_backend(folder, url, args.pairs)]
                finally:
                    cluster.destroy()
            else:
                parser.error(f"backends: unknown back end {backend!r} (sqlite, postgresql)")
    for row in rows:
        print(f"{row['backend']:<10} {row['mode']:<44} {row['pairs']:>6} reserve+commit pairs in "
              f"{row['seconds']:>7.3f} s = {row['pairs_per_s']:>8.1f} pairs/s")
    print("totals checked: every committed amount is in the ledger, nothing lost or double-counted")
    path = append_row("ledger", {"load_1min": round(os.getloadavg()[0], 2), "pairs": args.pairs,
                                 **{f"{r['backend']}: {r['mode']}": r["pairs_per_s"] for r in rows}})
    print(f"row appended to {path}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
