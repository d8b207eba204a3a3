"""simulation.result.json is written beside the analysis stage, never after DECISION_READY, spelled
exactly as json.dumps(MessageToDict(...), indent=2) spells it; and a run's segments add up."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import grpc
from google.protobuf import json_format

from smvm import metrics
from smvm.launcher import free_port
from smvm.v1 import run_pb2, simulation_pb2, validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

from services.orchestrator import pipeline
from services.orchestrator.pipeline import RESULT_JSON, without_swing_paths
from services.orchestrator.servicer import build_host as orchestrator_host
from services.orchestrator.store import RunStore
from .test_validation_service import _request, _wait

# The orchestrator's own segments of a fresh run, in the order its stopwatch records them.
PIPELINE_SEGMENTS = [
    "personas.start", "personas.call", "personas.artifact", "personas.commit", "memory.grounding",
    "competitors.start", "competitors.call", "competitors.artifact", "competitors.commit",
    "simulation.start", "simulation.config_artifact", "simulation.budget_reserve", "simulation.run",
    "simulation.budget_commit", "simulation.commit", "simulation.result_artifact",
    "analysis.request", "analysis.start", "analysis.call", "analysis.artifact", "analysis.commit",
    "overwatch.start", "overwatch.call", "overwatch.artifacts", "overwatch.commit",
    "simulation.result_artifact_wait", "run.decision_ready",
]


def segments() -> dict[str, tuple[float, float]]:
    """segment -> (seconds, count) recorded so far in this process (the in-process mesh shares it)."""
    out: dict[str, list[float]] = {}
    for family in metrics.RUN_SEGMENT.collect():
        for sample in family.samples:
            entry = out.setdefault(sample.labels["segment"], [0.0, 0.0])
            if sample.name.endswith("_sum"):
                entry[0] = sample.value
            elif sample.name.endswith("_count"):
                entry[1] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def spelled_as_before(store: RunStore, run_id: str) -> bytes:
    """The committed result as the pipeline wrote simulation.result.json before artifact_json."""
    result = simulation_pb2.SimulationResult.FromString(store.stage_output(run_id, "simulation"))
    as_dict = json_format.MessageToDict(without_swing_paths(result), preserving_proto_field_name=True)
    return (json.dumps(as_dict, indent=2, sort_keys=False, default=str) + "\n").encode()


def event_time(events: list[dict], event_type: str, stage: str | None = None) -> float:
    event = next(e for e in events if e["type"] == event_type and (stage is None or e["payload"].get("stage") == stage))
    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


async def test_the_result_json_is_there_at_decision_ready_and_the_segments_add_up(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        store = RunStore(settings.runs_dir, database_url=settings.database_url)
        before = segments()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            submitted = time.time()
            run_id = (await stub.SubmitRun(_request(""), timeout=10)).run_id
            status = await _wait(stub, run_id)
            seen = time.time()
            assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
            # At DECISION_READY the file is complete, recorded, and byte for byte what it was before.
            written = store.rundir(run_id).read_bytes(RESULT_JSON)
            assert written == spelled_as_before(store, run_id)
            results = await stub.GetRunResults(vpb.GetRunResultsRequest(run_id=run_id), timeout=10)
            committed = simulation_pb2.SimulationResult.FromString(store.stage_output(run_id, "simulation"))
            assert results.simulation.iterations == 300 and len(results.simulation.swings) == len(committed.swings) > 0
        after = segments()
    recorded = {k: (s - before.get(k, (0.0, 0.0))[0], c - before.get(k, (0.0, 0.0))[1]) for k, (s, c) in after.items()}
    for segment in PIPELINE_SEGMENTS:
        assert recorded.get(segment, (0.0, 0.0))[1] == 1, segment
    for segment in ("simulation.engine.chunks", "simulation.engine.merge", "simulation.engine.result_proto",
                    "analysis.service.decide"):
        assert recorded[segment][1] == 1 and recorded[segment][0] > 0, segment
    # The laps cover the whole pipeline: at least from its first event to its last, at most the client's wait.
    total = sum(recorded[k][0] for k in PIPELINE_SEGMENTS)
    events = store.events(run_id)
    first, last = event_time(events, "stage.started", "personas"), event_time(events, "run.decision_ready")
    assert last - first - 0.002 <= total <= seen - submitted
    assert recorded["analysis.service.decide"][0] <= recorded["analysis.call"][0]


async def test_a_run_stopped_before_its_result_json_was_written_writes_it_when_resumed(mesh_factory, monkeypatch):
    never = []

    def stopped_before_writing(rundir, relative, message):  # as if the orchestrator died before the write
        future = asyncio.get_running_loop().create_future()
        never.append(future)
        return future

    async with mesh_factory() as (settings, orchestrator, _):
        store = RunStore(settings.runs_dir, database_url=settings.database_url)
        with monkeypatch.context() as patched:
            patched.setattr(pipeline, "write_in_background", stopped_before_writing)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
                stub = vgrpc.ValidationServiceStub(channel)
                run_id = (await stub.SubmitRun(_request(""), timeout=10)).run_id
                for _ in range(600):  # every stage committed, the run held back by the missing file
                    if store.stage_output(run_id, "overwatch") is not None:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                assert never and store.get(run_id).state == "RUNNING"
                assert store.artifact_digest(run_id, RESULT_JSON) is None
                assert not store.rundir(run_id).has(RESULT_JSON)
            await orchestrator.stop(0)

        successor = orchestrator_host(settings.model_copy(update={"orchestrator_addr": f"127.0.0.1:{free_port()}"}))
        await successor.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{successor.port}") as channel:
                stub = vgrpc.ValidationServiceStub(channel)
                status = await _wait(stub, run_id)
                assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
                assert store.rundir(run_id).read_bytes(RESULT_JSON) == spelled_as_before(store, run_id)
                assert [e["type"] for e in store.events(run_id)].count("stage.completed") == 5  # no stage ran twice
        finally:
            await successor.stop(0)
