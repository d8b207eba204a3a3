"""SimulationService: streams progress from the engine running in a worker thread, then the result.

The engine checks `should_stop` between chunks, so a cancelled call or a passed deadline stops the
kernel within one chunk. The compute budget is checked before any work starts.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import AsyncIterator, Callable

from smvm import metrics
from smvm.config import Settings
from smvm.errors import Cancelled, DeadlineExceeded, InvalidArgument
from smvm.server import ServiceHost
from smvm.v1 import simulation_pb2, simulation_service_pb2 as pb, simulation_service_pb2_grpc as pb_grpc

from services.simulation import convert
from services.simulation.engine import runner


def _progress(done: int, total: int, evaluations: int) -> simulation_pb2.SimulationProgress:
    return simulation_pb2.SimulationProgress(
        chunks_done=done, chunks_total=total, fraction=done / total if total else 1.0, utility_evaluations=evaluations
    )


async def _run_with_progress(
    work: Callable[[Callable, Callable], object], context, total_chunks: int
) -> AsyncIterator[simulation_pb2.SimulationProgress | object]:
    """Run `work(on_progress, should_stop)` in a thread; yield progress messages, then its result."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    timed_out = threading.Event()
    remaining = context.time_remaining() if context is not None else None
    deadline = time.monotonic() + remaining if remaining is not None else math.inf

    def on_progress(done: int, total: int, evaluations: int) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, _progress(done, total, evaluations))

    def should_stop() -> bool:
        if stop.is_set():
            return True
        if time.monotonic() > deadline:
            timed_out.set()
            return True
        return False

    if context is not None:
        # The call's end (cancelled by the client, deadline, or done) stops the engine. The
        # generator's finally below is not enough: when the call is cancelled while this generator
        # is suspended at a yield, nothing resumes it and the finally runs only when it is
        # garbage-collected, so the engine would run to the end for nobody.
        context.add_done_callback(lambda _: stop.set())
    job = asyncio.ensure_future(asyncio.to_thread(work, on_progress, should_stop))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({job, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            break
        while not queue.empty():
            yield queue.get_nowait()
        try:
            result = job.result()
        except Cancelled as err:
            # Stopped by the call's own deadline: say so (the engine noticed it before gRPC did).
            if timed_out.is_set():
                raise DeadlineExceeded(str(err)) from err
            raise
        yield result
    finally:
        stop.set()  # client gone or deadline passed: the engine stops at the next chunk boundary
        if not job.done():
            # Nobody awaits the job any more: consume its outcome (Cancelled, most likely) when it ends.
            job.add_done_callback(lambda j: j.cancelled() or j.exception())


class SimulationServicer(pb_grpc.SimulationServiceServicer):
    def __init__(self, max_iterations: int):
        self.max_iterations = max_iterations

    def _spec(self, config: simulation_pb2.SimulationConfig):
        spec = convert.spec_from_proto(config)
        if spec.iterations > self.max_iterations:
            raise InvalidArgument("config.iterations", f"must be at most {self.max_iterations}")
        spec.check_budget()
        return spec

    async def RunSimulation(self, request: pb.RunSimulationRequest, context):
        spec = self._spec(request.config)
        total = spec.n_chunks

        def work(on_progress, should_stop):
            watch = metrics.Stopwatch()
            partial = runner.run_chunks(spec, 0, total, on_progress=on_progress, should_stop=should_stop)
            watch.lap("simulation.engine.chunks")
            output = runner.merge(spec, [partial])
            watch.lap("simulation.engine.merge")
            result = convert.output_to_proto(output)
            watch.lap("simulation.engine.result_proto")
            metrics.RUN_SEGMENT.labels("simulation.engine.kernel").observe(output.kernel_seconds)  # in chunks, summed over threads
            return result

        async for item in _run_with_progress(work, context, total):
            if isinstance(item, simulation_pb2.SimulationProgress):
                yield pb.RunSimulationResponse(progress=item)
            else:
                yield pb.RunSimulationResponse(result=item)

    async def RunShard(self, request: pb.RunShardRequest, context):
        spec = self._spec(request.config)
        start, count = request.chunk_start, request.chunk_count
        if start < 0 or start >= spec.n_chunks:
            raise InvalidArgument("chunk_start", f"must be in [0, {spec.n_chunks})")
        if count < 1 or start + count > spec.n_chunks:
            raise InvalidArgument("chunk_count", f"must be in [1, {spec.n_chunks - start}]")

        def work(on_progress, should_stop):
            watch = metrics.Stopwatch()
            partial = runner.run_chunks(spec, start, count, on_progress=on_progress, should_stop=should_stop)
            watch.lap("simulation.engine.chunks")
            shard = convert.shard_to_proto(partial)
            watch.lap("simulation.engine.shard_proto")
            metrics.RUN_SEGMENT.labels("simulation.engine.kernel").observe(partial.kernel_seconds)  # in chunks, summed over threads
            return shard

        async for item in _run_with_progress(work, context, count):
            if isinstance(item, simulation_pb2.SimulationProgress):
                yield pb.RunShardResponse(progress=item)
            else:
                yield pb.RunShardResponse(shard=item)

    async def MergeShards(self, request: pb.MergeShardsRequest, context) -> pb.MergeShardsResponse:
        spec = convert.spec_from_proto(request.config)
        if not request.shards:
            raise InvalidArgument("shards", "at least one shard is required")
        watch = metrics.Stopwatch()
        partials = [convert.shard_from_proto(s) for s in request.shards]
        watch.lap("simulation.engine.shard_parse")
        output = await asyncio.to_thread(runner.merge, spec, partials)
        watch.lap("simulation.engine.merge")
        response = pb.MergeShardsResponse(result=convert.output_to_proto(output))
        watch.lap("simulation.engine.result_proto")
        return response


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    def register(server):
        pb_grpc.add_SimulationServiceServicer_to_server(SimulationServicer(settings.max_iterations), server)
        return [pb.DESCRIPTOR.services_by_name["SimulationService"].full_name]

    def warmup() -> None:
        from services.simulation.engine import kernel

        kernel.warmup()

    return ServiceHost(
        "simulation", address or settings.simulation_addr, register, warmup=warmup, grace_s=settings.grace_period_s
    )
