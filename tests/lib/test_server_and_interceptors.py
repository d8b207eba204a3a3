"""ServiceHost and the interceptor chain, over real loopback gRPC.

The servicers here are test doubles of the plumbing's callers, not of any SMVM stage: they raise
chosen errors and record what reached them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from smvm import correlation, logs
from smvm.channels import open_channel
from smvm.errors import InvalidArgument, NotFound, ResourceExhausted
from smvm.server import ServiceHost
from smvm.v1 import idea_pb2, ingestion_service_pb2 as ipb, ingestion_service_pb2_grpc as igrpc
from smvm.v1 import persona_service_pb2 as ppb, persona_service_pb2_grpc as pgrpc


class RecordingIngestion(igrpc.IngestionServiceServicer):
    """Answers with the correlation id it saw; raises whatever the description names."""

    def __init__(self):
        self.seen: list[str] = []

    async def NormalizeIdea(self, request, context):
        self.seen.append(correlation.get())
        logging.getLogger("test.ingestion").info("normalising")
        text = request.business_idea.description
        if text == "invalid":
            raise InvalidArgument("business_idea.title", "is required")
        if text == "missing":
            raise NotFound("no such thing")
        if text == "budget":
            raise ResourceExhausted("compute ceiling 10 < 20")
        if text == "bug":
            raise KeyError("secret-internal-detail")
        return ipb.NormalizeIdeaResponse(idea=idea_pb2.Idea(title=correlation.get()))


class ChainingPersonas(pgrpc.PersonaServiceServicer):
    """Calls ingestion downstream, as the orchestrator calls stages."""

    def __init__(self, address: str):
        self.address = address

    async def GeneratePersonas(self, request, context):
        async with open_channel(self.address) as channel:
            reply = await igrpc.IngestionServiceStub(channel).NormalizeIdea(
                ipb.NormalizeIdeaRequest(business_idea=idea_pb2.BusinessIdea(description="ok")), timeout=5
            )
        return ppb.GeneratePersonasResponse(prior=reply.idea.title)


def _ingestion_host(servicer, warmup=None) -> ServiceHost:
    def register(server):
        igrpc.add_IngestionServiceServicer_to_server(servicer, server)
        return ["smvm.v1.IngestionService"]

    return ServiceHost("ingestion", "127.0.0.1:0", register, warmup=warmup, grace_s=1)


async def _health(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return reply.status


async def test_health_is_not_serving_until_warm_then_serving_then_not_serving_while_draining():
    release = threading.Event()
    host = _ingestion_host(RecordingIngestion(), warmup=lambda: release.wait(10))
    port = await host.start()
    try:
        assert await _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _health(port, "smvm.v1.IngestionService") == health_pb2.HealthCheckResponse.NOT_SERVING
        release.set()
        await asyncio.wait_for(host.ready.wait(), 5)
        assert await _health(port) == health_pb2.HealthCheckResponse.SERVING
        assert await _health(port, "smvm.v1.IngestionService") == health_pb2.HealthCheckResponse.SERVING
        await host.health.enter_graceful_shutdown()
        assert await _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await host.stop(0)


async def test_failed_warmup_never_reports_serving():
    def broken():
        raise RuntimeError("compile failed")

    host = _ingestion_host(RecordingIngestion(), warmup=broken)
    port = await host.start()
    try:
        await asyncio.sleep(0.3)
        assert await _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await host.stop(0)


async def test_reflection_lists_the_services():
    host = _ingestion_host(RecordingIngestion())
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = set()
            async for reply in call:
                names |= {s.name for s in reply.list_services_response.service}
        assert {"smvm.v1.IngestionService", "grpc.health.v1.Health"} <= names
    finally:
        await host.stop(0)


@pytest.fixture
async def ingestion():
    servicer = RecordingIngestion()
    host = _ingestion_host(servicer)
    port = await host.start()
    await host.ready.wait()
    yield servicer, f"127.0.0.1:{port}"
    await host.stop(0)


def _request(description: str) -> ipb.NormalizeIdeaRequest:
    return ipb.NormalizeIdeaRequest(business_idea=idea_pb2.BusinessIdea(description=description))


async def test_domain_error_becomes_invalid_argument_with_the_field(ingestion):
    _, address = ingestion
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await igrpc.IngestionServiceStub(channel).NormalizeIdea(_request("invalid"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "business_idea.title" in err.value.details()
    status = rpc_status.from_call(err.value)
    violation = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violation)
    assert violation.field_violations[0].field == "business_idea.title"


@pytest.mark.parametrize(
    "description, code",
    [("missing", grpc.StatusCode.NOT_FOUND), ("budget", grpc.StatusCode.RESOURCE_EXHAUSTED)],
)
async def test_domain_errors_map_to_their_codes(ingestion, description, code):
    _, address = ingestion
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await igrpc.IngestionServiceStub(channel).NormalizeIdea(_request(description), timeout=5)
    assert err.value.code() == code


async def test_unexpected_exception_is_internal_and_leaks_nothing(ingestion):
    _, address = ingestion
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await igrpc.IngestionServiceStub(channel).NormalizeIdea(_request("bug"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-internal-detail" not in err.value.details()


async def test_correlation_id_travels_from_caller_through_a_chain_of_services(ingestion):
    servicer, ingestion_address = ingestion

    def register(server):
        pgrpc.add_PersonaServiceServicer_to_server(ChainingPersonas(ingestion_address), server)
        return ["smvm.v1.PersonaService"]

    front = ServiceHost("personas", "127.0.0.1:0", register, grace_s=1)
    port = await front.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await pgrpc.PersonaServiceStub(channel).GeneratePersonas(
                ppb.GeneratePersonasRequest(), metadata=((correlation.METADATA_KEY, "CORR-abc-123"),), timeout=5
            )
        assert reply.prior == "CORR-abc-123"
        assert servicer.seen[-1] == "CORR-abc-123"
    finally:
        await front.stop(0)


async def test_missing_or_invalid_correlation_id_is_replaced_by_a_fresh_one(ingestion):
    servicer, address = ingestion
    async with grpc.aio.insecure_channel(address) as channel:
        stub = igrpc.IngestionServiceStub(channel)
        await stub.NormalizeIdea(_request("ok"), timeout=5)
        await stub.NormalizeIdea(_request("ok"), metadata=((correlation.METADATA_KEY, "bad id with spaces"),), timeout=5)
    first, second = servicer.seen[-2:]
    assert len(first) == 32 and len(second) == 32 and first != second


async def test_log_lines_are_json_and_carry_the_correlation_id(ingestion, monkeypatch):
    _, address = ingestion
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("ingestion", "INFO")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            await igrpc.IngestionServiceStub(channel).NormalizeIdea(
                _request("ok"), metadata=((correlation.METADATA_KEY, "CORR-log-1"),), timeout=5
            )
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    ours = [line for line in lines if line.get("correlation_id") == "CORR-log-1"]
    assert any(line["message"] == "normalising" for line in ours)
    rpc_lines = [line for line in ours if line["message"] == "rpc"]
    assert rpc_lines and rpc_lines[0]["method"] == "/smvm.v1.IngestionService/NormalizeIdea"
    assert rpc_lines[0]["code"] == "OK" and rpc_lines[0]["service"] == "ingestion"
