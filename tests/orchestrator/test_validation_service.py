"""ValidationService through real gRPC against the real stage services (in-process)."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smvm.v1 import idea_pb2, run_pb2, validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc



def _request(run_id: str, **configuration) -> vpb.SubmitRunRequest:
    return vpb.SubmitRunRequest(
        project_id="PROJ-T",
        run_id=run_id,
        business_idea=idea_pb2.BusinessIdea(
            title="Budgeting app for students",
            description="A mobile budgeting app that helps university students track spending.",
            target_market="University students",
            value_proposition="Simple, automatic budgets",
            estimated_tam=2e9, estimated_sam=4e8, estimated_som=2e7,
            domain="finance",
            price=idea_pb2.Price(amount=4.99, currency="USD", billing_period="monthly"),
            features=["budgeting", "spending alerts"],
        ),
        configuration=run_pb2.RunConfiguration(simulation_iterations=configuration.pop("iterations", 300), **configuration),
    )


async def _wait(stub, run_id: str, timeout_s: float = 120) -> run_pb2.RunStatus:
    async def poll():
        while True:
            status = (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id=run_id), timeout=5)).status
            if status.state in (run_pb2.RUN_STATE_DECISION_READY, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_TIMEOUT):
                return status
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout_s)


async def test_a_run_reaches_a_decision_and_results_come_back(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            accepted = await stub.SubmitRun(_request("RUN-IP-1"), timeout=10)
            assert accepted.status == run_pb2.RUN_STATE_INITIATED and accepted.validation_id == "VAL-RUN-IP-1"
            status = await _wait(stub, "RUN-IP-1")
            assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
            # the validation id is accepted wherever the run id is
            by_validation_id = await stub.GetRunResults(vpb.GetRunResultsRequest(run_id="VAL-RUN-IP-1"), timeout=10)
            assert by_validation_id.decision.recommendation != 0
            assert len(by_validation_id.simulation.samples) == 0  # samples stay in the run directory
            assert by_validation_id.simulation.iterations == 300


async def test_results_before_the_decision_are_failed_precondition(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(_request("RUN-IP-2", iterations=20000), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetRunResults(vpb.GetRunResultsRequest(run_id="RUN-IP-2"), timeout=10)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.FinalizeRun(vpb.FinalizeRunRequest(run_id="RUN-IP-2"), timeout=10)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            await _wait(stub, "RUN-IP-2")


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.ClearField("business_idea"), "business_idea"),
        (lambda r: setattr(r, "project_id", "../etc"), "project_id"),
        (lambda r: setattr(r, "run_id", "a/b"), "run_id"),
        (lambda r: setattr(r.configuration, "simulation_iterations", 10**9), "configuration.simulation_iterations"),
        (lambda r: setattr(r.configuration, "persona_count", 99), "configuration.persona_count"),
        (lambda r: setattr(r, "callback_url", "ftp://x"), "callback_url"),
        (lambda r: setattr(r, "callback_url", "https://user:pw@tb.example.com/cb"), "callback_url"),
        (lambda r: setattr(r.business_idea, "title", ""), "business_idea.title"),
    ],
)
async def test_bad_submissions_name_the_field_and_store_nothing(mesh_factory, runs_dir, mutate, field):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            request = _request("RUN-BAD")
            mutate(request)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await vgrpc.ValidationServiceStub(channel).SubmitRun(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = error_details_pb2.BadRequest()
    assert rpc_status.from_call(err.value).details[0].Unpack(violation)
    assert violation.field_violations[0].field == field
    assert not any(runs_dir.rglob("meta.json"))


async def test_a_compute_budget_overrun_fails_the_run_before_simulating(mesh_factory):
    async with mesh_factory(max_utility_evaluations=1000) as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(_request("RUN-IP-BUDGET"), timeout=10)
            status = await _wait(stub, "RUN-IP-BUDGET")
    assert status.state == run_pb2.RUN_STATE_FAILED
    assert "RESOURCE_EXHAUSTED" in status.error and status.stage_results["simulation"] == "failed"
    assert status.stage_results["analysis"] == "pending"


async def test_a_run_that_outlives_its_timeout_ends_timeout(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(_request("RUN-IP-SLOW", iterations=300_000, timeout_seconds=1), timeout=10)
            status = await _wait(stub, "RUN-IP-SLOW", timeout_s=30)
    assert status.state == run_pb2.RUN_STATE_TIMEOUT
    assert "timeout_seconds=1" in status.error


async def test_fan_out_over_three_replicas_gives_the_same_bytes_as_one(runs_dir, mesh_factory):
    results = []
    for replicas in (1, 3):
        async with mesh_factory(simulation_replicas=replicas) as (settings, orchestrator, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
                stub = vgrpc.ValidationServiceStub(channel)
                run_id = f"RUN-FAN-{replicas}"
                request = _request(run_id, iterations=2000, seed=99)
                await stub.SubmitRun(request, timeout=10)
                status = await _wait(stub, run_id)
                assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
                doc = json.loads((runs_dir / "PROJ-T" / "validation" / run_id / "outputs/simulation.result.json").read_text())
                doc.pop("kernel_seconds", None)
                results.append(doc)
    assert results[0] == results[1]


async def test_restart_keeps_finished_runs_and_resumes_interrupted_ones(mesh_factory, runs_dir):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(_request("RUN-DONE"), timeout=10)
            await _wait(stub, "RUN-DONE")
            await stub.SubmitRun(_request("RUN-CUT", iterations=300_000), timeout=10)
            while (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id="RUN-CUT"), timeout=5)).status.current_stage != "simulation":
                await asyncio.sleep(0.05)
    # the orchestrator stopped mid-simulation; a new one resumes RUN-CUT from its last completed stage
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            done = (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id="RUN-DONE"), timeout=5)).status
            cut = await _wait(stub, "RUN-CUT")
            listed = await stub.ListRuns(vpb.ListRunsRequest(project_id="PROJ-T"), timeout=5)
    assert done.state == run_pb2.RUN_STATE_DECISION_READY
    assert cut.state == run_pb2.RUN_STATE_DECISION_READY, cut.error
    assert {r.run_id for r in listed.runs} == {"RUN-DONE", "RUN-CUT"}
    events = [json.loads(line) for line in (runs_dir / "PROJ-T/validation/RUN-CUT/events.jsonl").read_text().splitlines()]
    types = [e["type"] for e in events]
    assert "run.resumed" in types and types[-1] == "run.decision_ready"
    resumed_at = types.index("run.resumed")
    assert events[resumed_at]["payload"]["completed_stages"] == ["ingestion", "personas", "competitors"]
    # each stage completed exactly once: the finished ones were not called again
    completed = [e["payload"]["stage"] for e in events if e["type"] == "stage.completed"]
    assert completed == ["personas", "competitors", "simulation", "analysis", "overwatch"]


async def test_a_stage_down_past_its_budget_fails_the_run_naming_it(mesh_factory):
    async with mesh_factory(stage_timeout_s=2) as (settings, orchestrator, hosts):
        personas = hosts[1]
        await personas.stop(0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            started = asyncio.get_running_loop().time()
            await stub.SubmitRun(_request("RUN-DOWN"), timeout=10)
            status = await _wait(stub, "RUN-DOWN", timeout_s=60)
            waited = asyncio.get_running_loop().time() - started
    assert status.state == run_pb2.RUN_STATE_FAILED
    assert "personas" in status.error and "UNAVAILABLE" in status.error and "budget of 2s" in status.error
    assert status.stage_results["personas"] == "failed"
    assert 1.5 <= waited < 30  # retried for its budget, then gave up (never hangs)


async def test_cost_overrides_in_the_submission_reach_the_financials(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            request = _request("RUN-IP-COSTS")
            request.business_idea.cost_overrides.cac_usd = 123.0
            request.business_idea.cost_overrides.gross_margin = 0.55
            await stub.SubmitRun(request, timeout=10)
            status = await _wait(stub, "RUN-IP-COSTS")
            assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
            financials = (await stub.GetRunResults(vpb.GetRunResultsRequest(run_id="RUN-IP-COSTS"), timeout=10)).decision.financials
    assert (financials.cac_usd, financials.gross_margin) == (123.0, 0.55)
    assert any("cac" in line and "override" in line.lower() for line in financials.cost_basis), list(financials.cost_basis)
