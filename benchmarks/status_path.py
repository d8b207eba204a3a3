"""The orchestrator's status read in-process, without gRPC: how the work per GetRunStatus changed.

  rebuilt   what GetRunStatus did before the status projection: read the record (twice: once for
            the record, once for its run directory), parse its JSON, resolve the run directory on
            disk, build the RunStatus field by field
  cached    StatusView (services/orchestrator/status_view.py): one read of the record's JSON text,
            the cached answer when the text and the live progress are unchanged
Both on the same SQLite store and run, interleaved in rounds, best round of each. Appends a dated
row to benchmarks/results/status_path.tsv.

    .venv/bin/python benchmarks/status_path.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import REPO, append_row, machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from services.orchestrator.rundir import RunDirectory, iso, utcnow
    from services.orchestrator.servicer import status_message
    from services.orchestrator.status_view import StatusView
    from services.orchestrator.store import RunRecord, RunStore
    from smvm.v1 import validation_service_pb2 as vpb

    with tempfile.TemporaryDirectory(prefix="smvm-status-") as tmp:
        store = RunStore(Path(tmp) / "runs")
        now = iso(utcnow())
        record = RunRecord(
            run_id="RUN-BENCH", project_id="PROJ-BENCH", state="INITIATED", created_at=now, updated_at=now,
            estimated_completion=now, request_sha256="0" * 64, correlation_id="0123456789abcdef", seed=7,
            source_shape="idea", configuration={"simulation_iterations": 1000, "persona_count": 5, "seed": "7"},
        )
        store.create(record, RunDirectory(store.root, record.project_id, record.run_id), actor="bench")
        store.update("RUN-BENCH", "stage.started", state="RUNNING", current_stage="simulation", progress=0.25)
        view = StatusView(store, status_message)

        def rebuilt() -> vpb.GetRunStatusResponse:
            found = store.get("RUN-BENCH")
            return vpb.GetRunStatusResponse(status=status_message(found, str(store.rundir("RUN-BENCH").path)))

        def cached() -> vpb.GetRunStatusResponse:
            return view.response("RUN-BENCH")

        assert rebuilt() == cached()
        best = {"rebuilt": float("inf"), "cached": float("inf")}
        for _ in range(args.rounds):
            for name, call in (("rebuilt", rebuilt), ("cached", cached)):
                start = time.perf_counter()
                for _ in range(args.calls):
                    call()
                best[name] = min(best[name], (time.perf_counter() - start) / args.calls)

    us = {k: v * 1e6 for k, v in best.items()}
    ratio = us["rebuilt"] / us["cached"]
    print(f"machine: {machine()}")
    print(f"{'path':10}{'us/call':>10}{'calls/s':>10}")
    for name, value in us.items():
        print(f"{name:10}{value:>10.1f}{1e6 / value:>10.0f}")
    path = append_row("status_path", {"calls": args.calls, "rounds": args.rounds,
                                      "rebuilt_us": round(us["rebuilt"], 1), "cached_us": round(us["cached"], 1),
                                      "ratio": round(ratio, 2)})
    print(f"status path: cached {us['cached']:.1f} us vs rebuilt {us['rebuilt']:.1f} us per call ({ratio:.1f}x less work); "
          f"row appended to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
