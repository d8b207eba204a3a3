"""What a rate-limit bucket shared by every gateway replica would cost per request, against the
per-process bucket the gateway uses (docs/integration.md, "Rate limits across gateway replicas").

A shared bucket needs, per limited request, one transaction on the store's database: read the
token's bucket row under a lock, refill, take one, write it back, commit durably. This measures that
transaction alone (no gRPC hop: add the gateway's measured hop from benchmarks/gateway_load.py) on
SQLite (the default file: WAL, synchronous=FULL) and PostgreSQL (a throwaway local cluster, fsync on,
loopback TCP), one connection, one token, and `RateLimiter.acquire` in memory for comparison.
Appends a dated row to benchmarks/results/ratelimit_shared.tsv.

    .venv/bin/python benchmarks/ratelimit_shared.py [--ops 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import append_row, percentile

from smvm.db import Database
from smvm.db.pgcluster import PgCluster, create_database
from services.gateway.ratelimit import RateLimiter

LIMIT_PER_MINUTE = 1000  # the guide's GET /status limit


def shared_bucket_latencies(db: Database, ops: int) -> list[float]:
    """Seconds per durable bucket update (take one request from token t's status bucket)."""
    with db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS bench_buckets (client TEXT, endpoint TEXT, tokens DOUBLE PRECISION, "
                   "updated DOUBLE PRECISION, PRIMARY KEY (client, endpoint))")
        tx.execute("DELETE FROM bench_buckets")
        tx.execute("INSERT INTO bench_buckets VALUES (?, ?, ?, ?)", ("t", "status", 1e9, time.time()))
    rate = LIMIT_PER_MINUTE / 60.0
    latencies = []
    for _ in range(ops):
        started = time.perf_counter()
        with db.transaction() as tx:
            tokens, updated = tx.one(f"SELECT tokens, updated FROM bench_buckets WHERE client = ? AND endpoint = ?"
                                     f"{tx.for_update()}", ("t", "status"))
            now = time.time()
            tokens = min(1e9, float(tokens) + (now - float(updated)) * rate) - 1.0
            tx.execute("UPDATE bench_buckets SET tokens = ?, updated = ? WHERE client = ? AND endpoint = ?",
                       (tokens, now, "t", "status"))
        latencies.append(time.perf_counter() - started)
    return latencies


def in_memory_latencies(ops: int) -> list[float]:
    limiter = RateLimiter({"status": 10**9})
    latencies = []
    for _ in range(ops):
        started = time.perf_counter()
        limiter.acquire("t", "status")
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=500)
    args = parser.parse_args()
    results = {"in-memory (shipped)": in_memory_latencies(args.ops)}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        results["shared, SQLite"] = shared_bucket_latencies(sqlite, args.ops)
        sqlite.close()
        cluster = PgCluster(fsync=True).init().start()
        try:
            pg = Database(create_database(cluster.url(), "bench"))
            results["shared, PostgreSQL"] = shared_bucket_latencies(pg, args.ops)
            pg.close()
        finally:
            cluster.destroy()
    print(f"{'bucket':<22} {'ops/s':>10} {'p50 us':>10} {'p99 us':>10}")
    row: dict[str, object] = {"ops": args.ops}
    for name, latencies in results.items():
        rate = len(latencies) / sum(latencies)
        p50, p99 = percentile(latencies, 50) * 1e6, percentile(latencies, 99) * 1e6
        print(f"{name:<22} {rate:>10.0f} {p50:>10.1f} {p99:>10.1f}")
        key = name.split(",")[-1].strip().split(" ")[0].lower()
        row.update({f"{key}_ops_s": round(rate), f"{key}_p50_us": round(p50, 1), f"{key}_p99_us": round(p99, 1)})
    path = append_row("ratelimit_shared", row)
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
