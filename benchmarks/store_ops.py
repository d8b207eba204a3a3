"""Run-store operations per second on each back end: what one orchestrator replica can write and read.

Each back end gets the same workload through `RunStore`: create N runs (row + run.initiated event +
ingestion output + lease, one transaction each, plus the run-directory mirrors), then 5 state changes
per run (row + event, then the events.jsonl append and meta.json rewrite), then N status reads and
N event-log reads. SQLite is the default file in WAL mode with synchronous=FULL; PostgreSQL is a
throwaway local cluster with fsync ON (durable commits, as in production), over loopback TCP.

    .venv/bin/python benchmarks/store_ops.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import append_row  # noqa: E402
from smvm.db.pgcluster import PgCluster, create_database  # noqa: E402
from services.orchestrator.rundir import RunDirectory  # noqa: E402
from services.orchestrator.store import RunRecord, RunStore  # noqa: E402


def record(i: int) -> RunRecord:
    return RunRecord(run_id=f"RUN-{i:06d}", project_id="PROJ-BENCH", state="INITIATED", created_at="2026-11-25T00:00:00Z",
                     updated_at="2026-11-25T00:00:00Z", estimated_completion="", request_sha256="x" * 64,
                     correlation_id="c", seed=i, source_shape="business_idea", configuration={"simulation_iterations": 1000})


def workload(store: RunStore, runs: int) -> dict[str, float]:
    rates = {}
    t = time.perf_counter()
    for i in range(runs):
        r = record(i)
        store.create(r, RunDirectory(store.root, r.project_id, r.run_id), actor="bench", stage_outputs={"ingestion": b"x" * 2048})
    rates["create"] = runs / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(runs):
        for stage in ("personas", "competitors", "simulation", "analysis", "overwatch"):
            store.update(f"RUN-{i:06d}", "stage.started", state="RUNNING", current_stage=stage, payload={"stage": stage})
    rates["update"] = 5 * runs / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(runs):
        store.get(f"RUN-{i:06d}")
    rates["get"] = runs / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(runs):
        store.events(f"RUN-{i:06d}")
    rates["events"] = runs / (time.perf_counter() - t)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = workload(RunStore(Path(tmp) / "sqlite", owner="bench"), args.runs)
        cluster = PgCluster(fsync=True).init().start()
        try:
            url = create_database(cluster.url(), "bench")
            results["postgresql"] = workload(RunStore(Path(tmp) / "pg", database_url=url, owner="bench"), args.runs)
        finally:
            cluster.destroy()
    print(f"{'operation':<10} {'sqlite ops/s':>14} {'postgresql ops/s':>18} {'ratio':>7}")
    for op in ("create", "update", "get", "events"):
        s, p = results["sqlite"][op], results["postgresql"][op]
        print(f"{op:<10} {s:>14.0f} {p:>18.0f} {s / p:>6.2f}x")
    path = append_row("store_ops", {"load_1min": round(os.getloadavg()[0], 2), "runs": args.runs, **{f"{backend}_{op}_ops_s": round(results[backend][op])
                                    for backend in ("sqlite", "postgresql") for op in ("create", "update", "get", "events")}})
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
