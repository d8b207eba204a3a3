"""RunWatchService: the run changes an orchestrator sees in the store, streamed to the gateways.

One `RunFeed` per orchestrator process follows the store's global change sequence
(`RunStore.changes_since`): it reads every run whose last change is numbered after the last one it
read, so it sees the changes of every replica sharing a PostgreSQL database, not only its own. It
polls at once when this process commits a change or a gateway asks for a sync, and every
POLL_INTERVAL_S otherwise. Each gateway holds one WatchRuns stream (a `Subscriber` here).

The guarantee a gateway's status cache rests on (services/gateway/status_cache.py): a sync request
is answered only after a poll that STARTED after the request arrived has finished and its changes
were queued on the stream ahead of the answer. Commit order is seq order, so that poll found every
change committed before the request arrived: once the gateway reads the answer it has read them all.

Live progress (RunStore.set_progress, only on the replica driving the run) is sent as RunProgress,
coalesced per run every PROGRESS_INTERVAL_S: best effort, never a state change.
"""

from __future__ import annotations

import asyncio
import logging

from smvm.errors import ResourceExhausted, Unavailable
from smvm.v1 import run_watch_service_pb2 as wpb, run_watch_service_pb2_grpc as wgrpc

from services.orchestrator.status_view import StatusView
from services.orchestrator.store import RunStore

log = logging.getLogger("smvm.run_watch")

POLL_INTERVAL_S = 1.0  # with no local commit and no sync request (gateways sync several times a second)
PROGRESS_INTERVAL_S = 0.05
POLL_BATCH = 500
RETRY_S = 0.5  # after a failed poll (the database is down)
# Messages queued for one stream before it counts as stuck: it is then ended, and its gateway
# reconnects with an empty cache rather than answering from one that misses changes.
QUEUE_LIMIT = 10_000


class Subscriber:
    """One WatchRuns stream's queue of messages, in the order they are to be sent."""

    def __init__(self, limit: int = QUEUE_LIMIT):
        self.queue: asyncio.Queue[wpb.WatchRunsResponse | None] = asyncio.Queue()
        self.limit = limit
        self.overflowed = False
        self.closed = False

    def put(self, message: wpb.WatchRunsResponse) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.limit:
            self.overflowed = True
            self.close()
            return
        self.queue.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class RunFeed:
    """This process's poller of the store's change sequence and the streams it feeds."""

    def __init__(self, store: RunStore, view: StatusView, *, poll_interval_s: float = POLL_INTERVAL_S,
                 batch: int = POLL_BATCH, queue_limit: int = QUEUE_LIMIT):
        self.store = store
        self.view = view
        self.poll_interval_s = poll_interval_s
        self.batch = batch
        self.queue_limit = queue_limit
        self.position: int | None = None  # the last change_seq read
        self.polls = 0
        self._subscribers: set[Subscriber] = set()
        self._syncs: list[tuple[Subscriber, int]] = []
        self._progress: dict[str, float] = {}
        self._progress_flush: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def attach(self) -> "RunFeed":
        """Be told of the store's commits and live progress."""
        self.store.on_change = self.wake
        self.store.on_progress = self.progress
        return self

    # ------------------------------------------------------------------ inputs
    def wake(self) -> None:
        """A change was committed here: poll now (safe from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def sync(self, subscriber: Subscriber, sync_id: int) -> None:
        """Answer `sync_id` on `subscriber` after the next poll (which starts after this call)."""
        self._syncs.append((subscriber, sync_id))
        self._wake.set()

    def progress(self, run_id: str, value: float) -> None:
        if not self._subscribers or self._loop is None:
            return
        self._progress[run_id] = max(value, self._progress.get(run_id, 0.0))
        if self._progress_flush is None:
            self._progress_flush = self._loop.call_later(PROGRESS_INTERVAL_S, self._flush_progress)

    def _flush_progress(self) -> None:
        self._progress_flush = None
        pending, self._progress = self._progress, {}
        for run_id, value in pending.items():
            self._publish(wpb.WatchRunsResponse(progress=wpb.RunProgress(run_id=run_id, progress=value)))

    # ------------------------------------------------------------------ streams
    def subscribe(self) -> Subscriber:
        """A new stream: `started` first, then every change read after this moment."""
        if self._closed:
            raise Unavailable("the orchestrator is shutting down", reason="DRAINING")
        if self.position is None:
            self.position = self.store.last_change_seq()  # DatabaseUnavailable ends the call: UNAVAILABLE
        subscriber = Subscriber(self.queue_limit)
        subscriber.put(wpb.WatchRunsResponse(started=wpb.WatchStarted(change_seq=self.position)))
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        subscriber.close()

    def close(self) -> None:
        """Shutting down: end every stream now (their gateways stop answering from their caches)."""
        self._closed = True
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)

    def _publish(self, message: wpb.WatchRunsResponse) -> None:
        for subscriber in list(self._subscribers):
            subscriber.put(message)
            if subscriber.overflowed:
                log.warning("run watch stream stuck; ending it", extra={"queued": subscriber.limit})
                self._subscribers.discard(subscriber)

    # ------------------------------------------------------------------ polling
    def poll_once(self) -> bool:
        """Read and publish the changes after `position`; True when a full batch was read (more may wait)."""
        self.polls += 1
        if self.position is None:
            self.position = self.store.last_change_seq()
            return False
        rows = self.store.changes_since(self.position, self.batch)
        for change_seq, run_id, text in rows:
            if self._subscribers:
                answer = self.view.answer(run_id, text, change_seq)
                self._publish(wpb.WatchRunsResponse(change=wpb.RunChange(status=answer.status, change_seq=change_seq)))
            self.position = change_seq
        return len(rows) >= self.batch

    async def run(self) -> None:
        """The poller: until cancelled."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            syncs, self._syncs = self._syncs, []  # these arrived before the poll below starts
            try:
                more = self.poll_once()
            except Exception:  # the database may be down: syncs wait, so gateways' caches go stale
                log.exception("run watch poll failed")
                self._syncs = syncs + self._syncs
                await asyncio.sleep(RETRY_S)
                continue
            if more:
                self._syncs = syncs + self._syncs
                self._wake.set()
                continue
            for subscriber, sync_id in syncs:
                subscriber.put(wpb.WatchRunsResponse(synced=wpb.WatchSynced(sync_id=sync_id, change_seq=self.position)))


class RunWatchServicer(wgrpc.RunWatchServiceServicer):
    def __init__(self, feed: RunFeed):
        self.feed = feed

    async def WatchRuns(self, request_iterator, context):
        subscriber = self.feed.subscribe()
        reader = asyncio.create_task(self._read_syncs(request_iterator, subscriber))
        try:
            while True:
                message = await subscriber.queue.get()
                if message is None:
                    if subscriber.overflowed:
                        raise ResourceExhausted("run watch stream fell behind; reconnect", reason="WATCH_BEHIND")
                    return
                yield message
        finally:
            reader.cancel()
            self.feed.unsubscribe(subscriber)

    async def _read_syncs(self, request_iterator, subscriber: Subscriber) -> None:
        async for request in request_iterator:
            self.feed.sync(subscriber, request.sync_id)
