"""SubmitRun's Idempotency-Key and its INITIATED callback, through real gRPC against the real stages (in-process)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smvm.db import open_database
from smvm.db.database import database_url_for
from smvm.db.outbox import SqlOutbox
from smvm.v1 import run_pb2, validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

from services.orchestrator.servicer import request_digest
from .test_validation_service import _request, _wait


def _keyed(key: str, scope: str = "token-a", run_id: str = "", **configuration) -> vpb.SubmitRunRequest:
    request = _request(run_id, **configuration)
    request.idempotency_key, request.idempotency_scope = key, scope
    return request


def _rich(err: grpc.aio.AioRpcError) -> tuple[list, dict]:
    violations, metadata = [], {}
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.reason) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            metadata.update(info.metadata)
    return violations, metadata


def test_the_digest_ignores_the_key_correlation_id_and_initiated_at_only():
    base = _request("RUN-D")
    same = _keyed("k", "scope", run_id="RUN-D")
    same.correlation_id = "CORR-2"
    same.metadata.initiated_at = "2026-01-01T00:00:00Z"
    assert request_digest(base) == request_digest(same)
    other = _request("RUN-D")
    other.metadata.initiated_by = "someone"
    assert request_digest(base) != request_digest(other)


async def test_a_key_replays_its_first_answer_across_an_orchestrator_restart_and_refuses_another_request(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            first = await stub.SubmitRun(_keyed("order-1"), timeout=10)
            again = await stub.SubmitRun(_keyed("order-1"), timeout=10)
            theirs = await stub.SubmitRun(_keyed("order-1", scope="token-b"), timeout=10)  # another caller's key
            await _wait(stub, first.run_id)
            await _wait(stub, theirs.run_id)
    assert not first.replayed and again.replayed
    again.replayed = False
    assert again == first
    assert theirs.run_id != first.run_id and not theirs.replayed
    # A new orchestrator on the same database: the key still stands for its run.
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            replay = await stub.SubmitRun(_keyed("order-1"), timeout=10)
            changed = _keyed("order-1")
            changed.business_idea.title = "Another idea"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SubmitRun(changed, timeout=10)
            listed = await stub.ListRuns(vpb.ListRunsRequest(project_id="PROJ-T"), timeout=5)
    assert replay.replayed and replay.run_id == first.run_id
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _rich(err.value) == ([("Idempotency-Key", "IDEMPOTENCY_KEY_REUSED")], {"run_id": first.run_id})
    assert sorted(r.run_id for r in listed.runs) == sorted([first.run_id, theirs.run_id])


@pytest.mark.parametrize("key, scope, field", [("k" * 256, "s", "Idempotency-Key"), ("", "s", "idempotency_key"),
                                               ("nul\x00", "s", "Idempotency-Key"), ("k", "s" * 129, "idempotency_scope")])
async def test_a_malformed_key_is_invalid_argument_naming_it(mesh_factory, runs_dir, key, scope, field):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await vgrpc.ValidationServiceStub(channel).SubmitRun(_keyed(key, scope), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _rich(err.value)[0][0][0] == field
    assert not any(runs_dir.rglob("meta.json"))


async def test_the_initiated_callback_is_in_the_outbox_when_submit_answers_and_only_once(mesh_factory, runs_dir):
    # Nobody listens at the callback URL: messages stay in the outbox, where the test reads them.
    async with mesh_factory(callback_allowed_hosts="127.0.0.1", webhook_backoff_base_s=60) as (settings, orchestrator, _):
        outbox = SqlOutbox(open_database(database_url_for(settings.database_url, settings.runs_dir)))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            request = _request("RUN-CB-1")
            request.callback_url = "http://127.0.0.1:9/tb"
            await stub.SubmitRun(request, timeout=10)
            at_answer = [m.payload["status"] for m in outbox.list(run_id="RUN-CB-1") if m.kind == "validation.update"]
            await _wait(stub, "RUN-CB-1")
            await asyncio.sleep(0.2)
    assert "INITIATED" in at_answer
    updates = sorted((m for m in outbox.list(run_id="RUN-CB-1", limit=500) if m.kind == "validation.update"),
                     key=lambda m: m.payload["sequence"])
    statuses = [m.payload["status"] for m in updates]
    assert statuses.count("INITIATED") == 1 and statuses[0] == "INITIATED" and statuses[-1] == "DECISION_READY"
    assert updates[0].payload["step_name"] == "ingestion" and updates[0].payload["stage_results"]["ingestion"] == "completed"
