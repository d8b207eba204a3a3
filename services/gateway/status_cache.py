"""GET /status from memory: the gateway's bounded cache of run statuses, fed by the run watch.

The orchestrator streams every committed run change with its number in the store's global change
sequence (services/orchestrator/run_watch.py; `status_watch` follows the stream here). An entry is
kept per run (by run_id; a validation_id names the same entry), and an older change never replaces
a newer one, whatever order stream changes and direct reads arrive in.

When may an entry answer? Only while the cache is fresh, by the gateway's own monotonic clock: a
sync sent at local time s and answered means every change committed before s has been applied
(the orchestrator answers only after a poll that started after the sync arrived). A request at
time t is answered from the cache only if the stream is live and t - s < L (the newest answered
sync, L = SMVM_STATUS_CACHE_STALENESS_MS); otherwise (no entry, stream down, not yet synced, too
old) the route calls GetRunStatus and offers the answer here. So:

- per gateway, answers never go backwards (entries only move forward, and a direct read that is
  kept is answered as the newer of itself and the entry a stream change may have made meanwhile);
- an answer is never older than a change committed L before it: across gateway replicas, staleness
  is at most L; and since the callback dispatcher delivers a callback no earlier than L after its
  change committed, a client that got a callback never reads an older state from any gateway;
- a write through this gateway (`wrote`) makes that run miss until a sync sent after the write is
  answered, so the writer's next read sees its write.

A stream that breaks or restarts starts a new epoch: entries are dropped, and a direct read that
started in an earlier epoch (or with no live stream) is answered but not kept, since a change
committed before the stream started would never be streamed to correct it.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Callable

from smvm import metrics
from smvm.ids import run_id_from
from smvm.v1 import run_pb2

ACTIVE_STATES = frozenset({run_pb2.RUN_STATE_INITIATED, run_pb2.RUN_STATE_RUNNING})
MAX_OUTSTANDING_SYNCS = 64  # a stalled stream's unanswered syncs are forgotten, oldest first
# The lookup outcomes' counters, bound once (GET /status counts one per request).
_LOOKUPS = {outcome: metrics.STATUS_CACHE_LOOKUPS.labels(outcome) for outcome in ("hit", "miss", "stale", "written")}


class Entry:
    """A run's newest known status, its change_seq, and its JSON body once rendered."""

    __slots__ = ("status", "change_seq", "body")

    def __init__(self, status: run_pb2.RunStatus, change_seq: int):
        self.status = status
        self.change_seq = change_seq
        self.body: bytes | None = None


def _with_progress(status: run_pb2.RunStatus, progress: float) -> run_pb2.RunStatus:
    copy = run_pb2.RunStatus()
    copy.CopyFrom(status)
    copy.progress = progress
    return copy


class StatusCache:
    def __init__(self, size: int, staleness_s: float, clock: Callable[[], float] = time.monotonic):
        if size < 1:
            raise ValueError("size must be at least 1 (a size of 0 means no cache at all)")
        self.size = size
        self.staleness_s = staleness_s
        self.clock = clock
        self.epoch = 0
        self.live = False  # the current stream has said `started`
        self.synced_at: float | None = None  # local send time of the newest answered sync
        self._entries: collections.OrderedDict[str, Entry] = collections.OrderedDict()
        self._syncs: collections.OrderedDict[int, float] = collections.OrderedDict()  # sync id -> sent at
        self._next_sync = 0
        self._written: collections.OrderedDict[str, float] = collections.OrderedDict()  # run_id -> written at
        self._forgotten_writes = -math.inf  # the latest write dropped from _written while not yet synced

    # ------------------------------------------------------------------ the stream's side
    def stream_started(self) -> None:
        """A new stream is live: every change committed from now on will be streamed."""
        self._new_epoch(live=True)
        metrics.STATUS_CACHE_UPDATES.labels("started").inc()

    def stream_lost(self) -> None:
        """The stream ended or failed: nothing is answered from the cache until a new one syncs."""
        if self.live:
            metrics.STATUS_CACHE_UPDATES.labels("lost").inc()
        self._new_epoch(live=False)

    def _new_epoch(self, live: bool) -> None:
        self.epoch += 1
        self.live = live
        self.synced_at = None
        self._entries.clear()
        self._syncs.clear()
        metrics.STATUS_CACHE_ENTRIES.set(0)

    def sync_sent(self) -> int:
        """Record a sync about to be sent (its time is taken before it leaves); return its id."""
        self._next_sync += 1
        self._syncs[self._next_sync] = self.clock()
        while len(self._syncs) > MAX_OUTSTANDING_SYNCS:
            self._syncs.popitem(last=False)
        return self._next_sync

    def sync_answered(self, sync_id: int) -> None:
        """Every change committed before sync `sync_id` was sent has been applied."""
        sent = self._syncs.pop(sync_id, None)
        while self._syncs and next(iter(self._syncs)) < sync_id:  # answers come in order
            self._syncs.popitem(last=False)
        if sent is None or not self.live:
            return
        if self.synced_at is None or sent > self.synced_at:
            self.synced_at = sent
        while self._written and next(iter(self._written.values())) < self.synced_at:
            self._written.popitem(last=False)  # those writes are covered now
        metrics.STATUS_CACHE_UPDATES.labels("synced").inc()

    def apply_change(self, status: run_pb2.RunStatus, change_seq: int) -> None:
        if self.live:
            self._keep(status, change_seq)
            metrics.STATUS_CACHE_UPDATES.labels("change").inc()

    def apply_progress(self, run_id: str, progress: float) -> None:
        """Live progress inside a stage: raises a cached active run's progress, nothing else."""
        entry = self._entries.get(run_id) if self.live else None
        if entry is None or entry.status.state not in ACTIVE_STATES or not progress > entry.status.progress:
            return
        entry.status = _with_progress(entry.status, min(1.0, progress))
        entry.body = None
        metrics.STATUS_CACHE_UPDATES.labels("progress").inc()

    # ------------------------------------------------------------------ the requests' side
    def fresh(self) -> bool:
        return self.live and self.synced_at is not None and self.clock() - self.synced_at < self.staleness_s

    def sync_age(self) -> float:
        return math.inf if self.synced_at is None or not self.live else max(0.0, self.clock() - self.synced_at)

    def lookup(self, any_id: str) -> Entry | None:
        """The entry to answer from, or None (the caller reads the run directly and `offer`s it)."""
        run_id = run_id_from(any_id)
        if not self.fresh():
            _LOOKUPS["stale"].inc()
            return None
        if max(self._written.get(run_id, -math.inf), self._forgotten_writes) >= self.synced_at:
            _LOOKUPS["written"].inc()
            return None
        entry = self._entries.get(run_id)
        if entry is None:
            _LOOKUPS["miss"].inc()
            return None
        self._entries.move_to_end(run_id)
        _LOOKUPS["hit"].inc()
        return entry

    def read_token(self) -> int | None:
        """Taken before a direct read: what `offer` needs to know whether its answer may be kept."""
        return self.epoch if self.live else None

    def offer(self, status: run_pb2.RunStatus, change_seq: int, token: int | None) -> Entry:
        """A direct read's answer, kept if its read started in this live epoch; returns what to answer:
        the newer of it and the cached entry when kept (a stream change may have overtaken the read)."""
        if token is not None and token == self.epoch and self.live:
            return self._keep(status, change_seq)
        return Entry(status, change_seq)

    def wrote(self, any_id: str) -> None:
        """A write to the run went through this gateway: miss until a sync sent after now is answered."""
        run_id = run_id_from(any_id)
        self._written.pop(run_id, None)
        self._written[run_id] = self.clock()
        while len(self._written) > self.size:  # then every run waits for the sync that covers them all
            self._forgotten_writes = max(self._forgotten_writes, self._written.popitem(last=False)[1])

    def _keep(self, status: run_pb2.RunStatus, change_seq: int) -> Entry:
        run_id = status.run_id
        entry = self._entries.get(run_id)
        if entry is not None and change_seq < entry.change_seq:
            return entry  # an older change never replaces a newer one
        if entry is not None and status.state in ACTIVE_STATES and entry.status.progress > status.progress:
            status = _with_progress(status, entry.status.progress)  # progress never goes backwards either
        if entry is not None and change_seq == entry.change_seq and status == entry.status:
            return entry
        entry = Entry(status, change_seq)
        self._entries[run_id] = entry
        self._entries.move_to_end(run_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        metrics.STATUS_CACHE_ENTRIES.set(len(self._entries))
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, any_id: str) -> bool:
        return run_id_from(any_id) in self._entries
