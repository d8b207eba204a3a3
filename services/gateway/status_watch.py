"""The gateway's end of RunWatchService: one stream per gateway process, feeding its StatusCache.

`StatusWatch.run` keeps a WatchRuns stream to the orchestrator open, reconnecting with backoff. On
the stream it sends a sync every `sync_interval_s` (a quarter of the staleness bound) and at once
after a write through this gateway (`sync_soon`), and applies what comes back in order: changes,
progress, sync answers. Anything that ends the stream (the orchestrator stopping or dying, a
network fault, a stream that fell behind) drops the cache's freshness at once (`stream_lost`).
"""

from __future__ import annotations

import asyncio
import logging
import random

from grpc import aio

from smvm.v1 import run_watch_service_pb2 as wpb, run_watch_service_pb2_grpc as wgrpc

from services.gateway.status_cache import StatusCache

log = logging.getLogger("smvm.gateway.status_watch")

MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0
STABLE_S = 5.0  # a stream that lived this long resets the backoff


class StatusWatch:
    def __init__(self, channel: aio.Channel, cache: StatusCache, sync_interval_s: float):
        self.stub = wgrpc.RunWatchServiceStub(channel)
        self.cache = cache
        self.sync_interval_s = sync_interval_s
        self.streams = 0  # streams that reached `started`
        self._sync_now = asyncio.Event()

    def sync_soon(self) -> None:
        """Send a sync now rather than at the next interval (a write went through this gateway)."""
        self._sync_now.set()

    async def run(self) -> None:
        """Follow the orchestrator's changes until cancelled."""
        loop = asyncio.get_running_loop()
        delay = MIN_BACKOFF_S
        while True:
            started = loop.time()
            try:
                await self._follow()
                log.info("run watch stream ended; reconnecting")
            except aio.AioRpcError as err:
                log.info("run watch stream failed; reconnecting", extra={"grpc_code": err.code().name})
            except asyncio.CancelledError:
                self.cache.stream_lost()
                raise
            except Exception:
                log.exception("run watch stream failed; reconnecting")
            self.cache.stream_lost()
            if loop.time() - started > STABLE_S:
                delay = MIN_BACKOFF_S
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(MAX_BACKOFF_S, delay * 2)

    async def _follow(self) -> None:
        call = self.stub.WatchRuns()
        syncing: asyncio.Task | None = None
        try:
            first = await call.read()
            if first is aio.EOF or first.WhichOneof("event") != "started":
                raise RuntimeError(f"run watch: expected `started` first, got {first!r}")
            self.cache.stream_started()
            self.streams += 1
            syncing = asyncio.create_task(self._sync(call), name="status-watch-sync")
            while True:
                message = await call.read()
                if message is aio.EOF:
                    return
                kind = message.WhichOneof("event")
                if kind == "change":
                    self.cache.apply_change(message.change.status, message.change.change_seq)
                elif kind == "progress":
                    self.cache.apply_progress(message.progress.run_id, message.progress.progress)
                elif kind == "synced":
                    self.cache.sync_answered(message.synced.sync_id)
                if syncing.done():  # the writer failed: the stream is no good
                    syncing.result()
                    return
        finally:
            self.cache.stream_lost()  # before anything else can read the cache as fresh
            if syncing is not None:
                syncing.cancel()
            call.cancel()

    async def _sync(self, call) -> None:
        while True:
            self._sync_now.clear()
            await call.write(wpb.WatchRunsRequest(sync_id=self.cache.sync_sent()))
            try:
                await asyncio.wait_for(self._sync_now.wait(), self.sync_interval_s)
            except asyncio.TimeoutError:
                pass
