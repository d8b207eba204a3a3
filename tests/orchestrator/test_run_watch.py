"""RunWatchService over real loopback gRPC (services/orchestrator/run_watch.py): a sync is answered
only after every change committed before it arrived has been sent, changes by another replica on the
same database included; local commits and live progress are pushed at once; a stopping orchestrator
ends the streams and refuses new ones; the bidirectional stream carries the mesh's service token."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from grpc import aio

from smvm.auth import TokenRegistry
from smvm.channels import ClientSecurity, open_channel
from smvm.config import Settings
from smvm.db import open_database
from smvm.launcher import free_port
from smvm.server import ServerSecurity, ServiceHost
from smvm.v1 import run_pb2, run_watch_service_pb2 as wpb, run_watch_service_pb2_grpc as wgrpc
from services.orchestrator.rundir import RunDirectory
from services.orchestrator.run_watch import RunFeed, RunWatchServicer, Subscriber
from services.orchestrator.servicer import status_message
from services.orchestrator.status_view import StatusView
from services.orchestrator.store import RunRecord, RunStore

SERVICE_TOKEN = "svc-token-run-watch"
READ_TIMEOUT_S = 10


def _record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id, project_id="PROJ-1", state="INITIATED", created_at="2026-11-22T10:00:00Z",
        updated_at="2026-11-22T10:00:00Z", estimated_completion="2026-11-22T10:02:00Z",
        request_sha256="abc", correlation_id="CORR-1", seed=7, source_shape="business_idea",
    )


def _create(store: RunStore, run_id: str) -> None:
    store.create(_record(run_id), RunDirectory(store.root, "PROJ-1", run_id), actor="tester")


@contextlib.asynccontextmanager
async def watch_server(runs_dir):
    """The orchestrator's watch alone: its store, feed (polling only when woken) and a secured host."""
    store = RunStore(runs_dir)
    view = StatusView(store, status_message)
    feed = RunFeed(store, view, poll_interval_s=60).attach()

    def register(server):
        wgrpc.add_RunWatchServiceServicer_to_server(RunWatchServicer(feed), server)
        return [wpb.DESCRIPTOR.services_by_name["RunWatchService"].full_name]

    registry = TokenRegistry.from_settings(Settings(profile="test", service_token=SERVICE_TOKEN))
    host = ServiceHost("orchestrator", f"127.0.0.1:{free_port()}", register,
                       security=ServerSecurity(registry=registry, required=True))
    await host.start()
    polling = asyncio.create_task(feed.run())
    try:
        yield store, view, feed, host.address
    finally:
        feed.close()
        polling.cancel()
        await host.stop(0)
        store.db.close()


@contextlib.asynccontextmanager
async def stream(address, token: str = SERVICE_TOKEN):
    channel = open_channel(address, ClientSecurity(service_token=token))
    call = wgrpc.RunWatchServiceStub(channel).WatchRuns()
    try:
        yield call
    finally:
        call.cancel()
        await channel.close()


async def read(call) -> wpb.WatchRunsResponse:
    return await asyncio.wait_for(call.read(), READ_TIMEOUT_S)


async def until_synced(call, sync_id: int) -> list[wpb.WatchRunsResponse]:
    """Every message up to and including the answer to `sync_id`."""
    messages = []
    while True:
        message = await read(call)
        assert message is not aio.EOF
        messages.append(message)
        if message.WhichOneof("event") == "synced" and message.synced.sync_id == sync_id:
            return messages


async def test_a_sync_is_answered_after_every_change_committed_before_it_even_by_another_replica(runs_dir):
    async with watch_server(runs_dir) as (store, view, feed, address), stream(address) as call:
        started = await read(call)
        assert started.WhichOneof("event") == "started" and started.started.change_seq == 0
        # Another replica on the same database: its commits do not wake this feed.
        other = RunStore(runs_dir, open_database(store.db.url))
        _create(other, "RUN-ELSEWHERE")
        other.update("RUN-ELSEWHERE", "stage.started", state="RUNNING", current_stage="personas", progress=0.05)
        polls = feed.polls
        await call.write(wpb.WatchRunsRequest(sync_id=7))
        messages = await until_synced(call, 7)
        changes = [m.change for m in messages if m.WhichOneof("event") == "change"]
        assert [c.status.run_id for c in changes] == ["RUN-ELSEWHERE"]  # its last state, once
        assert changes[0].change_seq == 2 and messages[-1].synced.change_seq == 2
        assert changes[0].status.state == run_pb2.RUN_STATE_RUNNING
        # The full status, exactly as GetRunStatus answers it, with the same number.
        direct = view.response("RUN-ELSEWHERE")
        assert changes[0].status == direct.status and direct.change_seq == 2
        assert feed.polls > polls  # answered after a poll that started after the request
        # Nothing new: the next sync is answered with no change before it.
        await call.write(wpb.WatchRunsRequest(sync_id=8))
        assert [m.WhichOneof("event") for m in await until_synced(call, 8)] == ["synced"]
        other.db.close()


async def test_local_commits_and_live_progress_are_pushed_without_a_sync(runs_dir):
    async with watch_server(runs_dir) as (store, _, feed, address), stream(address) as call:
        assert (await read(call)).WhichOneof("event") == "started"
        _create(store, "RUN-HERE")
        change = await read(call)
        assert change.change.status.run_id == "RUN-HERE" and change.change.change_seq == 1
        store.update("RUN-HERE", "stage.started", state="RUNNING", current_stage="simulation", progress=0.25)
        assert (await read(call)).change.change_seq == 2
        store.set_progress("RUN-HERE", 0.4)
        store.set_progress("RUN-HERE", 0.5)  # coalesced with the one before
        progress = await read(call)
        assert progress.WhichOneof("event") == "progress"
        assert (progress.progress.run_id, progress.progress.progress) == ("RUN-HERE", 0.5)


async def test_a_stopping_orchestrator_ends_its_streams_and_refuses_new_ones(runs_dir):
    async with watch_server(runs_dir) as (_, _, feed, address):
        async with stream(address) as call:
            assert (await read(call)).WhichOneof("event") == "started"
            feed.close()
            assert await read(call) is aio.EOF
            assert await call.code() == grpc.StatusCode.OK
        async with stream(address) as call:
            with pytest.raises(aio.AioRpcError) as refused:
                await read(call)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_stream_needs_the_mesh_service_token(runs_dir):
    async with watch_server(runs_dir) as (_, _, _, address), stream(address, token="") as call:
        with pytest.raises(aio.AioRpcError) as refused:
            await read(call)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_stream_that_falls_behind_is_closed_rather_than_kept_missing_changes():
    subscriber = Subscriber(limit=2)
    first, second = wpb.WatchRunsResponse(), wpb.WatchRunsResponse()
    subscriber.put(first)
    subscriber.put(second)
    assert not subscriber.overflowed
    subscriber.put(wpb.WatchRunsResponse())
    assert subscriber.overflowed and subscriber.closed
    subscriber.put(wpb.WatchRunsResponse())  # nothing more is queued once closed
    assert [subscriber.queue.get_nowait() for _ in range(3)] == [first, second, None]
    assert subscriber.queue.empty()
