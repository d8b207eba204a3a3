"""The IngestionService over real gRPC: a canonical idea back, or INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smvm.config import Settings
from smvm.v1 import ingestion_service_pb2_grpc as igrpc

from services.ingestion.servicer import build_host


@pytest.fixture
async def stub():
    host = build_host(Settings(), "127.0.0.1:0")
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield igrpc.IngestionServiceStub(channel)
    finally:
        await host.stop(0)


async def test_normalize_idea_over_grpc(stub, t0_body, business_body, to_request):
    idea = (await stub.NormalizeIdea(to_request("idea", t0_body), timeout=10)).idea
    assert idea.source_shape == "idea" and idea.submitter == "[EMAIL]"

    del business_body["title"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.NormalizeIdea(to_request("business_idea", business_body), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = error_details_pb2.BadRequest()
    assert rpc_status.from_call(err.value).details[0].Unpack(violation)
    assert violation.field_violations[0].field == "business_idea.title"
