"""The servicer on the engine, without a server: progress then result; shards merge to the same bytes."""

from __future__ import annotations

from services.simulation import convert
from services.simulation.servicer import SimulationServicer
from smvm.v1 import simulation_service_pb2 as pb


async def test_run_simulation_streams_progress_then_result_equal_to_merged_shards(config_factory):
    config = config_factory(iterations=60, chunk_iterations=16, response=True)
    servicer = SimulationServicer(max_iterations=10_000)
    events = [e async for e in servicer.RunSimulation(pb.RunSimulationRequest(config=config), None)]
    assert [e.WhichOneof("event") for e in events] == ["progress"] * 4 + ["result"]
    assert [e.progress.chunks_done for e in events[:-1]] == [1, 2, 3, 4]
    whole = events[-1].result
    assert whole.engine.startswith("numba-") and whole.chunks == 4 and whole.iterations == 60

    shards = []
    for start, count in [(0, 1), (1, 3)]:
        stream = servicer.RunShard(pb.RunShardRequest(config=config, chunk_start=start, chunk_count=count), None)
        shards.append([e async for e in stream][-1].shard)
    merged = await servicer.MergeShards(pb.MergeShardsRequest(config=config, shards=shards), None)
    assert convert.deterministic_bytes(merged.result) == convert.deterministic_bytes(whole)
