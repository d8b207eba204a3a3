"""Report documents a stop left unrendered are queued again when an orchestrator starts."""

from __future__ import annotations

import asyncio

import grpc

from smvm.launcher import free_port
from smvm.v1 import validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

from services.orchestrator.pipeline import Pipeline
from services.orchestrator.servicer import build_host as orchestrator_host
from services.orchestrator.store import RunStore
from .test_validation_service import _request, _wait


async def test_a_decided_run_without_documents_gets_them_from_the_next_orchestrator(mesh_factory, monkeypatch):
    async def stopped_before_its_turn(self, ctx):  # as if the orchestrator stopped with the job queued
        return None

    async with mesh_factory() as (settings, orchestrator, _):
        with monkeypatch.context() as patched:
            patched.setattr(Pipeline, "_render_documents", stopped_before_its_turn)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
                stub = vgrpc.ValidationServiceStub(channel)
                run_id = (await stub.SubmitRun(_request(""), timeout=10)).run_id
                await _wait(stub, run_id)
                await asyncio.sleep(0.5)
                try:
                    await stub.GetRunReport(vpb.GetRunReportRequest(run_id=run_id, format="html"), timeout=10)
                    raise AssertionError("a report without rendering")
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "being rendered" in err.details()
            store = RunStore(settings.runs_dir, database_url=settings.database_url)
            assert [r.run_id for r in store.undocumented()] == [run_id]
        await orchestrator.stop(0)

        successor = orchestrator_host(settings.model_copy(update={"orchestrator_addr": f"127.0.0.1:{free_port()}"}))
        await successor.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{successor.port}") as channel:
                stub = vgrpc.ValidationServiceStub(channel)
                for _ in range(600):
                    if not store.undocumented():
                        break
                    await asyncio.sleep(0.1)
                report = await stub.GetRunReport(vpb.GetRunReportRequest(run_id=run_id, format="html"), timeout=10)
                assert report.content.startswith(b"<!DOCTYPE html") or b"<html" in report.content[:500]
                assert [e["type"] for e in store.events(run_id)].count("reports.rendered") == 1
                assert store.undocumented() == []
        finally:
            await successor.stop(0)
