"""What grounding a run in memory costs, and how it grows with what memory knows.

For each size N, a SQLite store gets N decided runs (ideas over a small vocabulary, 5 competitors
each, 3 of them imported), the real MemoryService learns them (one SyncRuns), and the orchestrator's
`memory_grounding.ground()` - three queries in parallel over loopback gRPC - is timed K times for a
new idea. The figure to hold against `SMVM_MEMORY_TIMEOUT_S` (2 s by default) is the p95: past the
deadline a run goes on without memory.

    .venv/bin/python benchmarks/memory_grounding.py [--sizes 100,1000,3000] [--queries 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from common import append_row, machine, percentile  # noqa: E402  (puts the repository on sys.path)

import grpc  # noqa: E402

from smvm.config import Settings  # noqa: E402
from smvm.launcher import free_port  # noqa: E402
from smvm.v1 import (  # noqa: E402
    analysis_service_pb2, competitor_service_pb2, decision_pb2, idea_pb2, market_pb2, memory_service_pb2,
    memory_service_pb2_grpc,
)
from services.memory.servicer import build_host  # noqa: E402
from services.orchestrator.memory_grounding import ground  # noqa: E402
from services.orchestrator.rundir import RunDirectory  # noqa: E402
from services.orchestrator.store import RunRecord, RunStore  # noqa: E402

WORDS = ("budget app student saving coach invoice freelancer payroll tax ledger bank sync expense "
         "receipt subscription family shared goal debt credit score crypto wallet invest robo advisor "
         "insurance claim rent tenant landlord split bill travel").split()
RECOMMENDATIONS = ("GO", "PIVOT", "KILL")


def populate(store: RunStore, n: int, rng: random.Random) -> None:
    for i in range(n):
        run_id, project = f"RUN-B{i:06d}", f"PROJ-B{i % 50:03d}"
        record = RunRecord(run_id=run_id, project_id=project, state="INITIATED", created_at="2026-11-25T00:00:00Z",
                           updated_at="2026-11-25T00:00:00Z", estimated_completion="", request_sha256="x" * 64,
                           correlation_id="c", seed=i, source_shape="business_idea")
        idea = idea_pb2.Idea(title=" ".join(rng.sample(WORDS, 3)), description=" ".join(rng.choices(WORDS, k=25)),
                             domain="fintech", features=rng.sample(WORDS, 4))
        store.create(record, RunDirectory(store.root, project, run_id), actor="bench",
                     stage_outputs={"ingestion": idea.SerializeToString()})
        landscape = competitor_service_pb2.BuildLandscapeResponse(competitors=[
            market_pb2.Competitor(name=f"Rival {rng.randrange(200)}", monthly_price_usd=rng.uniform(0, 50),
                                  provenance="imported" if k < 3 else "synthetic", synthetic=k >= 3,
                                  source="import:bench", features=rng.sample(WORDS, 3)) for k in range(5)])
        analysis = analysis_service_pb2.AnalyzeResponse(decision=decision_pb2.Decision(
            recommendation=decision_pb2.Recommendation.Value(f"RECOMMENDATION_{rng.choice(RECOMMENDATIONS)}"),
            confidence=0.7))
        store.update(run_id, "stage.completed", state="RUNNING", stage_output=("competitors", landscape.SerializeToString()))
        store.update(run_id, "stage.completed", stage_output=("analysis", analysis.SerializeToString()))
        store.update(run_id, "run.decision_ready", state="DECISION_READY")


async def measure(runs_dir: Path, queries: int) -> tuple[float, list[float], int, int]:
    settings = Settings(profile="test", runs_dir=runs_dir, grace_period_s=0, memory_addr=f"127.0.0.1:{free_port()}",
                        memory_sync_interval_s=3600)
    host = build_host(settings)
    await host.start()
    await host.ready.wait()
    try:
        async with grpc.aio.insecure_channel(settings.memory_addr) as channel:
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
            t = time.perf_counter()
            await stub.SyncRuns(memory_service_pb2.SyncRunsRequest(), timeout=3600)
            learn_s = time.perf_counter() - t
            idea = idea_pb2.Idea(title="student budget coach", description="a budget app that coaches students to save",
                                 domain="fintech", features=["budget", "saving goal"])
            times, found = [], None
            for k in range(queries):
                t = time.perf_counter()
                found = await ground(stub, run_id=f"RUN-NEW-{k}", project_id="PROJ-B001", idea=idea, timeout_s=60)
                times.append(time.perf_counter() - t)
                assert found.status == "used", found.error
            return learn_s, times, len(found.known_competitors), len(found.similar_ideas)
    finally:
        await host.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,3000")
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    print(machine())
    print(f"{'runs known':>10} {'learn s':>8} {'ground p50 ms':>14} {'p95 ms':>8} {'known':>6} {'similar':>8}")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            runs_dir = Path(tmp) / "runs"
            populate(RunStore(runs_dir), n, random.Random(n))
            learn_s, times, known, similar = asyncio.run(measure(runs_dir, args.queries))
        p50, p95 = 1000 * percentile(times, 50), 1000 * percentile(times, 95)
        print(f"{n:>10} {learn_s:>8.1f} {p50:>14.1f} {p95:>8.1f} {known:>6} {similar:>8}")
        append_row("memory_grounding", {"runs_known": n, "learn_s": round(learn_s, 2), "ground_p50_ms": round(p50, 1),
                                        "ground_p95_ms": round(p95, 1), "queries": args.queries})


if __name__ == "__main__":
    main()
