"""Two overwatch replicas (real processes) on one PostgreSQL database: reservations racing through
both never pass a project ceiling, and either replica's audit trail for a project holds the budget
events of the other and the run lifecycle the orchestrator stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import httpx
import pytest

from smvm.db.pgcluster import PgCluster, create_database
from smvm.launcher import free_port
from smvm.v1 import overwatch_service_pb2 as opb, overwatch_service_pb2_grpc as ogrpc

from services.overwatch.policy import load_policy

from .test_faults import EXAMPLE, TOKEN, payload, start_mesh, submit, wait_terminal

pytestmark = pytest.mark.e2e
PROJECT_CEILING = int(load_policy().num("budget.project.max_utility_evaluations"))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    cluster = PgCluster().init().start()
    try:
        url = create_database(cluster.url(), "smvm_overwatch_replicas")
        mesh = start_mesh(tmp_path_factory.mktemp("overwatch-replicas"), database_url=url)
        try:
            second = f"127.0.0.1:{free_port()}"
            mesh.start_extra("overwatch-2", "overwatch", second)
            yield mesh, [mesh.addresses["overwatch"], second]
        finally:
            mesh.stop()
    finally:
        cluster.destroy()


async def _race(addresses: list[str], request_each: int, calls: int) -> list[grpc.StatusCode]:
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [ogrpc.OverwatchServiceStub(c) for c in channels]

    async def reserve(i: int) -> grpc.StatusCode:
        try:
            await stubs[i % len(stubs)].ReserveBudget(opb.ReserveBudgetRequest(
                run_id=f"RUN-RACE-{i}", project_id="PROJ-RACE", max_utility_evaluations=request_each,
                requested=opb.ResourceAmounts(utility_evaluations=request_each)), timeout=60)
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as err:
            return err.code()

    try:
        return await asyncio.gather(*(reserve(i) for i in range(calls)))
    finally:
        for channel in channels:
            await channel.close()


def test_reservations_racing_through_two_replicas_never_pass_the_project_ceiling(replicas):
    _, addresses = replicas
    request_each = PROJECT_CEILING // 7 + 1  # six fit, the seventh would pass the ceiling
    codes = asyncio.run(_race(addresses, request_each, 24))
    assert codes.count(grpc.StatusCode.OK) == 6
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 18
    for address in addresses:  # both replicas see the one ledger
        with grpc.insecure_channel(address) as channel:
            usage = ogrpc.OverwatchServiceStub(channel).GetUsage(opb.GetUsageRequest(project_id="PROJ-RACE"), timeout=10)
        assert usage.project_usage.reserved.utility_evaluations == 6 * request_each <= PROJECT_CEILING


def _trail(address: str, project_id: str) -> list[opb.AuditEvent]:
    """Every audit event of the project, read page by page."""
    events, token = [], ""
    with grpc.insecure_channel(address) as channel:
        stub = ogrpc.OverwatchServiceStub(channel)
        while True:
            page = stub.ListAuditEvents(opb.ListAuditEventsRequest(project_id=project_id, page_size=7, page_token=token),
                                        timeout=10)
            events += page.events
            if not (token := page.next_page_token):
                return events


def test_either_replicas_project_trail_holds_the_run_lifecycle_and_the_budget(replicas):
    mesh, addresses = replicas
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        run_id = submit(client, payload(iterations=2_000))
        status, _ = wait_terminal(client, run_id)
    assert status["status"] == "DECISION_READY", status
    rundir = Path(mesh.settings.runs_dir) / EXAMPLE["project_id"] / "validation" / run_id
    stored = [json.loads(line) for line in (rundir / "events.jsonl").read_text().splitlines()]

    # The orchestrator spoke to the first replica only; the second reads the same trail.
    trails = [[e for e in _trail(a, EXAMPLE["project_id"]) if e.run_id == run_id] for a in addresses]
    assert [e.sequence for e in trails[0]] == [e.sequence for e in trails[1]]
    trail = trails[1]
    kinds = [e.kind for e in trail]
    run_events = [e for e in trail if e.kind.startswith("run.")]
    # Every event of the run's event store, in order, with its id, type, actor and correlation id.
    assert [json.loads(e.payload_json)["event_id"] for e in run_events] == [e["event_id"] for e in stored]
    assert [e.kind for e in run_events] == [t if t.startswith("run.") else f"run.{t}" for t in (e["type"] for e in stored)]
    assert all((a.actor, a.correlation_id, a.time) == (s["actor"], s["correlation_id"], s["time"])
               for a, s in zip(run_events, stored))
    assert kinds[0] == "run.initiated" and "run.decision_ready" in kinds
    assert kinds.index("budget.reserved") < kinds.index("budget.committed") < kinds.index("run.decision_ready")
    assert any(k.startswith("review.") for k in kinds)
    assert all(e.project_id == EXAMPLE["project_id"] for e in trail)
