"""A SubmitRun still in flight when the orchestrator's shutdown began stores the run but starts no
pipeline task (one would outlive the shutdown); the next orchestrator to start resumes it."""

from __future__ import annotations

import asyncio

import grpc

from smvm.launcher import free_port
from smvm.v1 import run_pb2, validation_service_pb2_grpc as vgrpc

from services.orchestrator.pipeline import StageClients
from services.orchestrator.servicer import ValidationServicer, build_host as orchestrator_host
from services.orchestrator.store import RunStore
from .test_validation_service import _request, _wait


async def test_a_run_accepted_during_shutdown_starts_on_the_next_orchestrator(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        await orchestrator.stop(0)
        store = RunStore(settings.runs_dir, database_url=settings.database_url, owner="replica-closing")
        clients = StageClients(settings)
        closing = ValidationServicer(settings, store, clients)
        try:
            await closing.shutdown()
            accepted = await closing.SubmitRun(_request(""), None)
            assert closing._tasks == set()  # nothing runs on after the shutdown
            assert store.get(accepted.run_id).state == "INITIATED"
        finally:
            await clients.close()

        successor = orchestrator_host(settings.model_copy(update={"orchestrator_addr": f"127.0.0.1:{free_port()}"}))
        await successor.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{successor.port}") as channel:
                status = await _wait(vgrpc.ValidationServiceStub(channel), accepted.run_id)
            assert status.state == run_pb2.RUN_STATE_DECISION_READY
        finally:
            await successor.stop(0)


async def test_shutdown_ends_a_task_that_swallows_its_first_cancellation(tmp_path):
    """asyncio.wait_for in 3.11 can swallow a cancellation; shutdown must not then wait for the run."""
    from smvm.config import Settings

    settings = Settings(profile="test", runs_dir=tmp_path)
    servicer = ValidationServicer(settings, RunStore(tmp_path, database_url=settings.database_url), clients=None)
    swallowed = []

    async def stubborn_run():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.append(True)  # as a wait_for whose inner call just finished would
        await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn_run())
    servicer._tasks.add(task)
    task.add_done_callback(servicer._tasks.discard)
    await asyncio.sleep(0)
    await asyncio.wait_for(servicer.shutdown(), 10)
    assert swallowed and task.cancelled() and servicer._tasks == set()
