"""The orchestrator reserves the simulation's compute in overwatch's ledger before simulating and
commits what it spent after; a project whose budget is spent fails its run before the simulation,
and a run near a ceiling raises the guide's resource_constraint alert (real services, real gRPC)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import grpc
import pytest

from smvm.config import Settings
from smvm.v1 import (
    idea_pb2,
    overwatch_service_pb2 as opb,
    overwatch_service_pb2_grpc as ogrpc,
    run_pb2,
    validation_service_pb2 as vpb,
    validation_service_pb2_grpc as vgrpc,
)

from services.overwatch.budget import BudgetDefaults
from services.overwatch.ledger import Amounts, Ledger
from services.overwatch.ledger_store import LedgerStore
from services.overwatch.policy import load_policy

_spec = importlib.util.spec_from_file_location(
    "orchestrator_mesh", Path(__file__).resolve().parents[1] / "orchestrator" / "conftest.py")
_mesh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mesh)
PROJECT_CEILING = int(load_policy().num("budget.project.max_utility_evaluations"))


def _request(run_id: str) -> vpb.SubmitRunRequest:
    return vpb.SubmitRunRequest(
        project_id="PROJ-B", run_id=run_id,
        business_idea=idea_pb2.BusinessIdea(
            title="Budgeting app for students", description="A mobile budgeting app for university students.",
            target_market="University students", value_proposition="Simple, automatic budgets",
            estimated_tam=2e9, estimated_sam=4e8, estimated_som=2e7, domain="finance",
            price=idea_pb2.Price(amount=4.99, currency="USD", billing_period="monthly"),
            features=["budgeting", "spending alerts"],
        ),
        configuration=run_pb2.RunConfiguration(simulation_iterations=300),
    )


def _events(runs_dir: Path, run_id: str) -> list[dict]:
    path = runs_dir / "PROJ-B" / "validation" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _preload(runs_dir: Path, evaluations: int) -> None:
    """Another run of the project already holds `evaluations` (written to the store's database
    directly, as a second overwatch replica sharing it would)."""
    ledger = Ledger(LedgerStore.under(runs_dir), BudgetDefaults(PROJECT_CEILING, 10_000), load_policy())
    ledger.reserve(run_id="RUN-OTHER", project_id="PROJ-B", requested=Amounts(evaluations),
                   max_utility_evaluations=PROJECT_CEILING)
    ledger.store.close()


async def _run(settings: Settings, orchestrator, run_id: str) -> run_pb2.RunStatus:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
        stub = vgrpc.ValidationServiceStub(channel)
        await stub.SubmitRun(_request(run_id), timeout=10)
        while True:
            status = (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id=run_id), timeout=5)).status
            if status.state in (run_pb2.RUN_STATE_DECISION_READY, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_TIMEOUT):
                return status
            await asyncio.sleep(0.05)


async def _usage(settings: Settings, run_id: str) -> opb.GetUsageResponse:
    async with grpc.aio.insecure_channel(settings.overwatch_addr) as channel:
        return await ogrpc.OverwatchServiceStub(channel).GetUsage(
            opb.GetUsageRequest(run_id=run_id, project_id="PROJ-B"), timeout=5)


async def test_a_run_reserves_then_commits_what_the_simulation_spent(runs_dir):
    async with _mesh.in_process_mesh(runs_dir) as (settings, orchestrator, _):
        status = await _run(settings, orchestrator, "RUN-LEDGER-1")
        assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
        usage = await _usage(settings, "RUN-LEDGER-1")
    result = json.loads((runs_dir / "PROJ-B/validation/RUN-LEDGER-1/outputs/simulation.result.json").read_text())
    assert usage.run_usage.committed.utility_evaluations == int(result["utility_evaluations"]) > 0
    assert usage.run_usage.reserved.utility_evaluations == 0  # settled, nothing left held
    assert usage.run_usage.committed.cpu_seconds == pytest.approx(result["kernel_seconds"])
    kinds = [e["type"] for e in _events(runs_dir, "RUN-LEDGER-1")]
    assert "budget.reserved" in kinds and "alert.resource_constraint" not in kinds


async def test_a_spent_project_fails_the_run_before_the_simulation_starts(runs_dir):
    _preload(runs_dir, PROJECT_CEILING)
    async with _mesh.in_process_mesh(runs_dir) as (settings, orchestrator, _):
        status = await _run(settings, orchestrator, "RUN-LEDGER-2")
    assert status.state == run_pb2.RUN_STATE_FAILED
    assert "RESOURCE_EXHAUSTED" in status.error and "project PROJ-B compute ceiling exceeded" in status.error
    assert status.stage_results["simulation"] == "failed" and status.stage_results["analysis"] == "pending"
    assert not (runs_dir / "PROJ-B/validation/RUN-LEDGER-2/outputs/simulation.result.json").exists()
    refused = Ledger(LedgerStore.under(runs_dir), BudgetDefaults(1, 1), load_policy()).events(
        run_id="RUN-LEDGER-2", kind_prefix="budget.")
    assert [e.kind for e in refused] == ["budget.refused"]
    assert refused[0].payload["reason"] == "PROJECT_COMPUTE_CEILING_EXCEEDED"
    assert refused[0].correlation_id and refused[0].project_id == "PROJ-B"


async def test_a_run_past_80_percent_of_its_project_raises_resource_constraint(runs_dir):
    _preload(runs_dir, int(PROJECT_CEILING * 0.8))
    async with _mesh.in_process_mesh(runs_dir) as (settings, orchestrator, _):
        status = await _run(settings, orchestrator, "RUN-LEDGER-3")
    assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
    events = _events(runs_dir, "RUN-LEDGER-3")
    alerts = [e for e in events if e["type"] == "alert.resource_constraint"]
    assert len(alerts) == 1
    assert alerts[0]["payload"]["alert"].startswith("resource_constraint: project PROJ-B compute at 80% of ceiling")


async def test_review_reasons_land_structured_in_the_decision_and_the_events(runs_dir):
    request = _request("RUN-REVIEW-1")
    request.configuration.simulation_iterations = 200  # below the policy's 250: the review cannot approve
    async with _mesh.in_process_mesh(runs_dir) as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(request, timeout=10)
            while (status := (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id="RUN-REVIEW-1"), timeout=5)).status
                   ).state not in (run_pb2.RUN_STATE_DECISION_READY, run_pb2.RUN_STATE_FAILED):
                await asyncio.sleep(0.05)
    assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
    decision = json.loads((runs_dir / "PROJ-B/validation/RUN-REVIEW-1/outputs/decision.output.json").read_text())
    review = decision["review"]
    assert review["verdict"] in ("ABSTAIN", "VETO")
    codes = {r["code"]: r for r in review["reasons"]}
    assert "simulation.few_iterations" in codes or "simulation.too_small" in codes
    for reason in review["reasons"]:
        assert set(reason) == {"code", "message", "severity"} and reason["severity"] in ("blocking", "warning", "info")
    assert decision["released"] == (review["verdict"] != "VETO")
    (event,) = [e for e in _events(runs_dir, "RUN-REVIEW-1")
                if e["type"] == "stage.completed" and e["payload"]["stage"] == "overwatch"]
    assert event["payload"]["verdict"] == review["verdict"]
    assert event["payload"]["reasons"] == review["reasons"]
    assert event["payload"]["policy_version"] == review["policy_version"] and event["correlation_id"]
    reviewed = Ledger(LedgerStore.under(runs_dir), BudgetDefaults(1, 1), load_policy()).events(
        run_id="RUN-REVIEW-1", kind_prefix="review.")
    assert [e.kind for e in reviewed] == [f"review.{review['verdict'].lower()}"]
    assert reviewed[0].project_id == "PROJ-B" and reviewed[0].correlation_id == event["correlation_id"]
    assert reviewed[0].payload["reasons"] == [{"code": r["code"], "severity": r["severity"]} for r in review["reasons"]]


async def test_without_a_service_token_the_end_user_is_still_named_in_the_budget_trail(runs_dir):
    """Dev wiring (plaintext, no service token): the actor the caller names reaches overwatch."""
    from smvm import auth
    from smvm.server import ServerSecurity

    async with _mesh.in_process_mesh(runs_dir) as (settings, orchestrator, hosts):
        overwatch = next(h for h in hosts if h.name == "overwatch")
        for host in (overwatch, orchestrator):  # what run_service does: security from the settings
            await host.stop(0)
            on_denied = host.security.on_denied
            host.security = ServerSecurity.from_settings(settings)
            host.security.on_denied = on_denied
            await host.start()
            await host.ready.wait()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(_request("RUN-ACTOR-1"), timeout=10,
                                 metadata=((auth.ACTOR_METADATA_KEY, "tb-founder"),))
            while (await stub.GetRunStatus(vpb.GetRunStatusRequest(run_id="RUN-ACTOR-1"), timeout=5)).status.state \
                    not in (run_pb2.RUN_STATE_DECISION_READY, run_pb2.RUN_STATE_FAILED):
                await asyncio.sleep(0.05)
    trail = Ledger(LedgerStore.under(runs_dir), BudgetDefaults(1, 1), load_policy()).events(
        run_id="RUN-ACTOR-1", kind_prefix="budget.")
    assert trail[0].kind == "budget.reserved" and trail[0].actor == "tb-founder via anonymous"
