"""Fault injection (smvm/faults.py) and what it proves: deadlines cut slow calls, the channels' retry
policy rides over refused calls but only up to its attempt limit, and (a slow stage failing a run with its
reason instead of hanging it: tests/orchestrator/test_stage_faults.py). Real servers, real loopback channels."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from smvm.channels import RETRY_SERVICE_CONFIG, open_channel
from smvm.config import Settings
from smvm.faults import FaultPlan
from smvm.server import ServiceHost
from smvm.v1 import idea_pb2, ingestion_service_pb2 as ipb, ingestion_service_pb2_grpc as igrpc

INGESTION = "/smvm.v1.IngestionService/*"
MAX_ATTEMPTS = RETRY_SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]


class CountingIngestion(igrpc.IngestionServiceServicer):
    def __init__(self):
        self.handled = 0

    async def NormalizeIdea(self, request, context):
        self.handled += 1
        return ipb.NormalizeIdeaResponse(idea=idea_pb2.Idea(title="ok"))


async def _start(servicer) -> ServiceHost:
    def register(server):
        igrpc.add_IngestionServiceServicer_to_server(servicer, server)
        return ["smvm.v1.IngestionService"]

    host = ServiceHost("ingestion", "127.0.0.1:0", register, grace_s=0)
    await host.start()
    await host.ready.wait()
    return host


REQUEST = ipb.NormalizeIdeaRequest(business_idea=idea_pb2.BusinessIdea(title="t"))


@pytest.mark.parametrize(
    "text, plan",
    [
        ("", None),
        ("delay_ms=250", FaultPlan(delay_ms=250.0)),
        (
            "methods=/a/*, /b/C ; unavailable_first=2;unavailable_every=3",
            FaultPlan(methods=("/a/*", "/b/C"), unavailable_first=2, unavailable_every=3),
        ),
    ],
)
def test_plans_parse_to_known_values(text, plan):
    assert FaultPlan.parse(text) == plan


@pytest.mark.parametrize(
    "text, named",
    [("delay=3", "'delay'"), ("delay_ms=slow", "fault_injection.delay_ms"), ("unavailable_first=-1", "unavailable_first"),
     ("delay_ms", "not key=value")],
)
def test_bad_plans_are_refused_naming_the_key(text, named):
    with pytest.raises(ValueError, match=named):
        FaultPlan.parse(text)
    with pytest.raises(ValueError, match="fault_injection"):
        Settings(fault_injection=text)


def test_health_and_reflection_are_never_faulted():
    plan = FaultPlan(methods=("*",), unavailable_first=99)
    assert plan.applies_to("/smvm.v1.IngestionService/NormalizeIdea")
    assert not plan.applies_to("/grpc.health.v1.Health/Check")
    assert not plan.applies_to("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")


async def test_injected_latency_trips_a_short_deadline_and_passes_a_long_one(faults):
    faults(f"methods={INGESTION};delay_ms=400")
    servicer = CountingIngestion()
    host = await _start(servicer)
    try:
        async with open_channel(f"127.0.0.1:{host.port}") as channel:
            stub = igrpc.IngestionServiceStub(channel)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.NormalizeIdea(REQUEST, timeout=0.1)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 0.35  # cut at the deadline, not after the 400 ms delay
            started = time.monotonic()
            assert (await stub.NormalizeIdea(REQUEST, timeout=5)).idea.title == "ok"
            assert time.monotonic() - started >= 0.39
    finally:
        await host.stop(0)


async def test_retry_policy_rides_over_refused_calls(faults, caplog):
    faults(f"methods={INGESTION};unavailable_first={MAX_ATTEMPTS - 1}")
    servicer = CountingIngestion()
    host = await _start(servicer)
    try:
        # A bare channel has no retry policy: the first refusal reaches the caller.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as bare:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await igrpc.IngestionServiceStub(bare).NormalizeIdea(REQUEST, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # The mesh's channels retry: the remaining refusals are absorbed and the call succeeds.
        async with open_channel(f"127.0.0.1:{host.port}") as channel:
            reply = await igrpc.IngestionServiceStub(channel).NormalizeIdea(REQUEST, timeout=10)
        assert reply.idea.title == "ok"
        assert servicer.handled == 1  # refused calls never reached the handler
    finally:
        await host.stop(0)


async def test_retries_are_bounded_by_max_attempts(faults, caplog):
    faults(f"methods={INGESTION};unavailable_first=100")
    servicer = CountingIngestion()
    host = await _start(servicer)
    caplog.set_level(logging.INFO, logger="smvm.faults")
    try:
        async with open_channel(f"127.0.0.1:{host.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await igrpc.IngestionServiceStub(channel).NormalizeIdea(REQUEST, timeout=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        refused = [r for r in caplog.records if r.name == "smvm.faults" and r.getMessage() == "fault injected"]
        assert len(refused) == MAX_ATTEMPTS
        assert servicer.handled == 0
    finally:
        await host.stop(0)
