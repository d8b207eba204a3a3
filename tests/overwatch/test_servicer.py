"""OverwatchService over real loopback gRPC: RESOURCE_EXHAUSTED on the wire, and a VETO."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smvm.config import Settings
from smvm.v1 import decision_pb2, overwatch_service_pb2 as pb, overwatch_service_pb2_grpc as pb_grpc

from services.overwatch.servicer import build_host


@pytest.fixture
async def overwatch(tmp_path):
    settings = Settings(profile="test", grace_period_s=1, max_utility_evaluations=1_000_000, runs_dir=tmp_path)
    host = build_host(settings, "127.0.0.1:0")
    port = await host.start()
    await host.ready.wait()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.OverwatchServiceStub(channel)
    await host.stop(0)


async def test_check_budget_over_the_wire(overwatch):
    ok = await overwatch.CheckBudget(pb.CheckBudgetRequest(run_id="R", requested_utility_evaluations=900_000), timeout=5)
    assert ok.max_utility_evaluations == 1_000_000 and ok.max_tokens_per_run == 10_000
    assert ok.utilisation == pytest.approx(0.9) and ok.warnings[0].startswith("resource_constraint: compute at 90%")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await overwatch.CheckBudget(pb.CheckBudgetRequest(run_id="R", requested_utility_evaluations=1_000_001), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "requested 1000001 utility evaluations > allowed 1000000" in err.value.details()
    violation = error_details_pb2.BadRequest()
    assert rpc_status.from_call(err.value).details[0].Unpack(violation)
    assert violation.field_violations[0].field == "requested_utility_evaluations"


async def test_review_decision_over_the_wire_vetoes_a_go_from_a_tiny_simulation(overwatch, healthy_go):
    approved = await overwatch.ReviewDecision(healthy_go, timeout=5)
    assert approved.review.verdict == decision_pb2.REVIEW_VERDICT_APPROVE
    healthy_go.simulation.iterations = 20
    vetoed = await overwatch.ReviewDecision(healthy_go, timeout=5)
    assert vetoed.review.verdict == decision_pb2.REVIEW_VERDICT_VETO
    assert [(r.code, r.severity) for r in vetoed.review.reasons] == [("simulation.too_small", "blocking")]
    assert vetoed.review.policy_version == approved.review.policy_version


async def test_review_decision_rejects_a_decision_without_a_recommendation(overwatch, healthy_go):
    healthy_go.decision.recommendation = decision_pb2.RECOMMENDATION_UNSPECIFIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await overwatch.ReviewDecision(healthy_go, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "decision.recommendation" in err.value.details()


async def test_concurrent_reservations_over_grpc_never_exceed_the_project_ceiling(tmp_path):
    import asyncio

    from services.overwatch.policy import load_policy

    policy = load_policy({"budget": {"project": {"max_utility_evaluations": 10_000}}})
    settings = Settings(profile="test", grace_period_s=1, max_utility_evaluations=1_000_000, runs_dir=tmp_path)
    host = build_host(settings, "127.0.0.1:0", policy=policy)
    port = await host.start()
    await host.ready.wait()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.OverwatchServiceStub(channel)

            async def reserve(i: int) -> int:
                try:
                    await stub.ReserveBudget(pb.ReserveBudgetRequest(
                        run_id=f"RUN-C{i}", project_id="proj",
                        requested=pb.ResourceAmounts(utility_evaluations=300)), timeout=30)
                    return 300
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
                    return 0

            granted = await asyncio.gather(*(reserve(i) for i in range(60)))
            assert sum(granted) == 33 * 300  # floor(10000 / 300)
            usage = await stub.GetUsage(pb.GetUsageRequest(project_id="proj"), timeout=5)
            assert usage.project_usage.reserved.utility_evaluations == 9_900
            assert usage.project_usage.ceilings.utility_evaluations == 10_000
            refused = await stub.ListAuditEvents(
                pb.ListAuditEventsRequest(project_id="proj", kind_prefix="budget.refused", page_size=20), timeout=5)
            assert len(refused.events) == 20 and refused.next_page_token
            rest = await stub.ListAuditEvents(pb.ListAuditEventsRequest(
                project_id="proj", kind_prefix="budget.refused", page_size=20, page_token=refused.next_page_token),
                timeout=5)
            assert len(rest.events) == 7 and not rest.next_page_token
            assert rest.events[0].sequence > refused.events[-1].sequence
    finally:
        await host.stop(0)
