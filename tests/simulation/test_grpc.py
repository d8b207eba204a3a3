"""SimulationService over real grpc.aio servers on loopback: errors name the field, the budget is
refused before any work, a deadline or a cancel stops the engine within a chunk, and a run
sharded over three replicas (orchestrator-style, round-robin channel) gives the same bytes as one.

Chunk starts are observed by wrapping runner._run_one (the engine still runs for real).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.orchestrator.pipeline import split_chunks
from services.simulation import budget, convert
from services.simulation.engine import runner
from services.simulation.servicer import build_host
from smvm.channels import open_channel
from smvm.config import Settings
from smvm.launcher import free_port
from smvm.v1 import simulation_service_pb2 as pb, simulation_service_pb2_grpc as pb_grpc

MAX_ITERATIONS = 5_000_000


@contextlib.asynccontextmanager
async def simulation_replicas(count: int):
    settings = Settings(profile="test", grace_period_s=1, max_iterations=MAX_ITERATIONS)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    hosts = [build_host(settings, address) for address in addresses]
    try:
        for host in hosts:
            await host.start()
        for host in hosts:
            await host.ready.wait()
        yield ",".join(addresses)
    finally:
        for host in hosts:
            await host.stop(0)


@pytest.fixture
def chunk_log(monkeypatch):
    """(start, end) monotonic times of every chunk the engine runs in this process."""
    log: list[list[float]] = []
    lock = threading.Lock()
    real = runner._run_one

    def recording(*args, **kwargs):
        entry = [time.monotonic(), math.inf]
        with lock:
            log.append(entry)
        try:
            return real(*args, **kwargs)
        finally:
            entry[1] = time.monotonic()

    monkeypatch.setattr(runner, "_run_one", recording)
    return log


def _field_violation(err: grpc.aio.AioRpcError) -> str:
    violation = error_details_pb2.BadRequest()
    assert rpc_status.from_call(err).details[0].Unpack(violation)
    return violation.field_violations[0].field


async def _run(stub, config, timeout=60):
    events = [e async for e in stub.RunSimulation(pb.RunSimulationRequest(config=config), timeout=timeout)]
    return events


@pytest.mark.parametrize("mutate,field", [
    (lambda c: setattr(c, "iterations", MAX_ITERATIONS + 1), "config.iterations"),
    (lambda c: setattr(c.our_offering, "monthly_price_usd", -5.0), "config.our_offering.monthly_price_usd"),
    (lambda c: setattr(c.competitors[1], "monthly_price_usd", -0.01), "config.competitors[1].monthly_price_usd"),
    (lambda c: c.ClearField("segments"), "config.segments"),
    (lambda c: c.segments[0].feature_importance.__setitem__(1, math.nan), "config.segments[0].feature_importance[1]"),
    (lambda c: setattr(c.priors, "bass_q_mean", math.nan), "config.priors.bass_q_mean"),
])
async def test_invalid_config_is_invalid_argument_naming_the_field(config_factory, chunk_log, mutate, field):
    config = config_factory()
    mutate(config)
    async with simulation_replicas(1) as address, open_channel(address) as channel:
        stub = pb_grpc.SimulationServiceStub(channel)
        for call in (lambda: _run(stub, config),
                     lambda: _collect(stub.RunShard(pb.RunShardRequest(config=config, chunk_start=0, chunk_count=1),
                                                    timeout=30))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert _field_violation(err.value) == field
    assert chunk_log == []


async def _collect(call):
    return [e async for e in call]


async def test_budget_is_resource_exhausted_before_any_work(config_factory, chunk_log):
    config = config_factory(iterations=64)
    config.max_utility_evaluations = budget.planned_utility_evaluations(config) - 1
    async with simulation_replicas(1) as address, open_channel(address) as channel:
        stub = pb_grpc.SimulationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _run(stub, config)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(config.max_utility_evaluations) in err.value.details()
        assert chunk_log == []  # refused before the engine ran a single chunk
        config.max_utility_evaluations += 1  # exactly the planned count is allowed
        events = await _run(stub, config)
    assert events[-1].result.utility_evaluations == config.max_utility_evaluations


def _big(config_factory):
    return config_factory(iterations=2_000_000, chunk_iterations=64, customers=64, competitors=6, months=24)


async def _settled(log, quiet_s=0.6, limit_s=20.0) -> None:
    """Wait until no chunk is running and none started for quiet_s."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        if all(end < now for _, end in log) and (not log or now - max(s for s, _ in log) > quiet_s):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the engine kept running")


async def test_deadline_stops_the_engine_within_one_chunk(config_factory, chunk_log):
    config = _big(config_factory)
    total = convert.spec_from_proto(config).n_chunks
    async with simulation_replicas(1) as address, open_channel(address) as channel:
        stub = pb_grpc.SimulationServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _run(stub, config, timeout=1.0)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = started + 1.0
        await _settled(chunk_log)
    assert 0 < len(chunk_log) < total / 10
    # No chunk started after the deadline (0.25 s of slack for the clocks of client and server);
    # those running at the deadline were the last.
    assert max(start for start, _ in chunk_log) < deadline + 0.25


async def test_cancel_stops_the_engine_within_one_chunk(config_factory, chunk_log, monkeypatch):
    stopped_at: list[float] = []
    real_run_chunks = runner.run_chunks

    def run_chunks(*args, should_stop=None, **kwargs):
        def recording_stop():
            answer = should_stop()
            if answer and not stopped_at:
                stopped_at.append(time.monotonic())
            return answer

        return real_run_chunks(*args, should_stop=recording_stop, **kwargs)

    monkeypatch.setattr(runner, "run_chunks", run_chunks)
    config = _big(config_factory)
    async with simulation_replicas(1) as address, open_channel(address) as channel:
        stub = pb_grpc.SimulationServiceStub(channel)
        call = stub.RunSimulation(pb.RunSimulationRequest(config=config), timeout=60)
        first = await call.read()
        assert first.HasField("progress")
        call.cancel()
        cancelled = time.monotonic()
        await _settled(chunk_log)
    assert stopped_at and stopped_at[0] - cancelled < 2.0  # the server passed the cancel to the engine
    # After one thread saw the stop, no thread starts more than the one chunk it may already have
    # been cleared for (its own check came just before); the ones running then (at most one per
    # thread) finished, and the engine was idle.
    assert sum(1 for start, _ in chunk_log if start > stopped_at[0]) <= runner.default_threads() - 1
    assert sum(1 for start, end in chunk_log if end > stopped_at[0]) <= runner.default_threads()
    assert len(chunk_log) < convert.spec_from_proto(config).n_chunks / 10


async def test_three_replicas_and_one_give_the_same_bytes(config_factory):
    config = config_factory(iterations=300, chunk_iterations=16, response=True, sample_limit=40)
    n_chunks = convert.spec_from_proto(config).n_chunks
    async with simulation_replicas(1) as address, open_channel(address) as channel:
        events = await _run(pb_grpc.SimulationServiceStub(channel), config)
        single = events[-1].result
    async with simulation_replicas(3) as addresses, open_channel(addresses) as channel:
        stub = pb_grpc.SimulationServiceStub(channel)

        async def shard(start: int, count: int):
            events = await _collect(stub.RunShard(
                pb.RunShardRequest(config=config, chunk_start=start, chunk_count=count), timeout=60))
            assert [e.progress.chunks_done for e in events[:-1]] == list(range(1, count + 1))
            return events[-1].shard

        shards = await asyncio.gather(*(shard(s, c) for s, c in split_chunks(n_chunks, 3)))
        merged = await stub.MergeShards(pb.MergeShardsRequest(config=config, shards=shards), timeout=60)
    assert len({s.chunk_start for s in shards}) == 3
    assert convert.deterministic_bytes(merged.result) == convert.deterministic_bytes(single)
    assert merged.result.utility_evaluations == budget.planned_utility_evaluations(config)
    assert [s.iteration for s in merged.result.samples] == list(range(40))
