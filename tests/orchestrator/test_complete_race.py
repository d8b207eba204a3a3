"""Complete and finalize are check-then-act: with two orchestrator replicas, the one that read the run
before the other changed it must not overwrite the first answer (the check runs under the row lock)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from smvm.errors import AlreadyExists
from smvm.v1 import run_pb2, validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

from services.orchestrator.servicer import ValidationServicer, pseudonym
from services.orchestrator.store import RunStore
from .test_validation_service import _request, _wait


def _results(**values) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


class _StaleReplica(ValidationServicer):
    """Another replica whose first read of the run happened before the change it is about to race."""

    def __init__(self, settings, store, stale):
        super().__init__(settings, store, clients=None)
        self._stale = [stale]

    def _record(self, any_id):
        return self._stale.pop() if self._stale else super()._record(any_id)


async def test_a_replica_that_read_the_run_before_another_completed_it_replays_or_refuses(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            run_id = (await stub.SubmitRun(_request(""), timeout=10)).run_id
            await _wait(stub, run_id)
            other = RunStore(settings.runs_dir, database_url=settings.database_url)
            stale = other.get(run_id)
            assert stale.state == "DECISION_READY"

            await stub.CompleteRun(vpb.CompleteRunRequest(run_id=run_id, results=_results(launched=True)), timeout=10)
            with pytest.raises(AlreadyExists, match="different results"):
                await _StaleReplica(settings, other, stale).CompleteRun(
                    vpb.CompleteRunRequest(run_id=run_id, results=_results(launched=False)), None)
            same = await _StaleReplica(settings, other, stale).CompleteRun(
                vpb.CompleteRunRequest(run_id=run_id, results=_results(launched=True)), None)
            assert same.status.state == run_pb2.RUN_STATE_COMPLETED
            assert other.rundir(run_id).read_json("outputs/completion.json")["results"] == {"launched": True}

            stale = other.get(run_id)
            first = await stub.FinalizeRun(vpb.FinalizeRunRequest(run_id=run_id, finalized_by="alice"), timeout=10)
            again = await _StaleReplica(settings, other, stale).FinalizeRun(
                vpb.FinalizeRunRequest(run_id=run_id, finalized_by="bob"), None)
            assert again.go_no_go == first.go_no_go and list(again.reasons) == list(first.reasons)
            stored = other.rundir(run_id).read_json("outputs/finalization.json")
            assert stored["finalized_by"] == pseudonym("alice") != pseudonym("bob")  # the first one stands

            types = [e["type"] for e in other.events(run_id)]
            assert types.count("run.completed") == 1 and types.count("run.finalized") == 1
