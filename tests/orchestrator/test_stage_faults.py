"""A stage slowed past its deadline by fault injection (smvm/faults.py) fails the run with the
reason, promptly, instead of leaving it RUNNING."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from smvm.v1 import idea_pb2, run_pb2, validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc


async def test_a_stage_slower_than_its_deadline_fails_the_run_with_the_reason(faults, mesh_factory):
    faults("methods=/smvm.v1.PersonaService/*;delay_ms=3000")
    async with mesh_factory(stage_timeout_s=0.5) as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            request = vpb.SubmitRunRequest(
                project_id="PROJ-F", run_id="RUN-SLOW-STAGE",
                business_idea=idea_pb2.BusinessIdea(
                    title="Slow personas", description="A budgeting app for students.", domain="finance",
                    estimated_tam=2e9, estimated_sam=4e8, estimated_som=2e7,
                ),
                configuration=run_pb2.RunConfiguration(simulation_iterations=200),
            )
            await stub.SubmitRun(request, timeout=10)
            started = time.monotonic()
            while True:
                status = (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id="RUN-SLOW-STAGE"), timeout=5)).status
                if status.state in (run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_DECISION_READY, run_pb2.RUN_STATE_TIMEOUT):
                    break
                assert time.monotonic() - started < 15, "the run hung on a slow stage"
                await asyncio.sleep(0.05)
    assert status.state == run_pb2.RUN_STATE_FAILED
    assert "personas" in status.error and "DEADLINE_EXCEEDED" in status.error, status.error
