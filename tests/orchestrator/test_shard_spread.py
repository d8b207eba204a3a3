"""A run fanned out over several simulation replicas puts one shard on each replica, from the very
first run after the orchestrator starts (a round-robin channel that is still connecting sends every
call to the first replica that is ready), and again after the channel was idle."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.simulation.servicer import SimulationServicer
from smvm.v1 import idea_pb2, run_pb2, validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc


@pytest.fixture
def shard_servers(monkeypatch):
    """For each RunShard call, which servicer (one per replica) served it."""
    served: list[int] = []
    real = SimulationServicer.RunShard

    async def recording(self, request, context):
        served.append(id(self))
        async for message in real(self, request, context):
            yield message

    monkeypatch.setattr(SimulationServicer, "RunShard", recording)
    return served


def _request(run_id: str, iterations: int) -> vpb.SubmitRunRequest:
    return vpb.SubmitRunRequest(
        project_id="PROJ-S", run_id=run_id,
        business_idea=idea_pb2.BusinessIdea(
            title="Budgeting app for students",
            description="A mobile budgeting app that helps university students track spending.",
            target_market="University students", value_proposition="Simple, automatic budgets",
            estimated_tam=2e9, estimated_sam=4e8, estimated_som=2e7, domain="finance",
            price=idea_pb2.Price(amount=4.99, currency="USD", billing_period="monthly"), features=["budgeting"],
        ),
        configuration=run_pb2.RunConfiguration(simulation_iterations=iterations, seed=7),
    )


async def _decided(stub, run_id: str) -> run_pb2.RunStatus:
    async def poll():
        while True:
            status = (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id=run_id), timeout=5)).status
            if status.state in (run_pb2.RUN_STATE_DECISION_READY, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_TIMEOUT):
                return status
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), 120)


async def test_the_first_run_puts_one_shard_on_each_of_three_replicas(mesh_factory, shard_servers):
    async with mesh_factory(simulation_replicas=3) as (settings, orchestrator, hosts):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            for i in range(2):
                await stub.SubmitRun(_request(f"RUN-SPREAD-{i}", iterations=3000), timeout=10)
                status = await _decided(stub, f"RUN-SPREAD-{i}")
                assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
                assert len(shard_servers) == 3 * (i + 1)
                assert len(set(shard_servers[3 * i:])) == 3, f"run {i}: shards served by {shard_servers[3 * i:]}"
