"""The gateway's status cache (services/gateway/status_cache.py) with an injected clock: when it may
answer (freshness), and a model of the whole system (commits, the ordered stream, syncs, direct reads
racing it, reconnects, writes) in which no answer is ever older than the guarantees allow."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from smvm.v1 import run_pb2
from services.gateway.status_cache import StatusCache

L = 0.25


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status(run_id: str, change_seq: int, state=run_pb2.RUN_STATE_RUNNING, progress: float | None = None):
    return run_pb2.RunStatus(run_id=run_id, validation_id=f"VAL-{run_id}", project_id="PROJ-1", state=state,
                             progress=change_seq / 1000 if progress is None else progress)


def test_nothing_is_answered_until_a_sync_sent_on_a_live_stream_is_answered():
    clock = Clock()
    cache = StatusCache(10, L, clock)
    cache.stream_started()
    cache.apply_change(status("RUN-1", 1), 1)
    assert cache.lookup("RUN-1") is None  # live, but never synced
    sync = cache.sync_sent()
    clock.now += 0.1
    assert cache.lookup("RUN-1") is None  # sent, not answered
    cache.sync_answered(sync)
    assert cache.lookup("RUN-1").change_seq == 1
    assert cache.lookup("VAL-RUN-1").change_seq == 1  # a validation_id names the same run
    assert cache.lookup("RUN-2") is None  # fresh, but not cached


def test_freshness_counts_from_when_the_sync_was_sent_not_answered():
    clock = Clock()
    cache = StatusCache(10, L, clock)
    cache.stream_started()
    cache.apply_change(status("RUN-1", 1), 1)
    sync = cache.sync_sent()
    clock.now += 0.2
    cache.sync_answered(sync)  # answered 0.2 s after it was sent
    clock.now += 0.049
    assert cache.lookup("RUN-1") is not None
    clock.now += 0.002  # 0.251 s after the send
    assert cache.lookup("RUN-1") is None
    assert cache.sync_age() == pytest.approx(0.251)
    cache.sync_answered(cache.sync_sent())
    assert cache.lookup("RUN-1") is not None


def test_a_lost_stream_drops_freshness_and_entries_at_once_and_old_answers_count_for_nothing():
    clock = Clock()
    cache = StatusCache(10, L, clock)
    cache.stream_started()
    cache.apply_change(status("RUN-1", 1), 1)
    old_sync = cache.sync_sent()
    cache.sync_answered(cache.sync_sent())
    assert cache.lookup("RUN-1") is not None
    cache.stream_lost()
    assert cache.lookup("RUN-1") is None and len(cache) == 0
    cache.apply_change(status("RUN-1", 2), 2)  # a late message of the dead stream
    assert len(cache) == 0
    cache.stream_started()
    cache.sync_answered(old_sync)  # an answer to a sync of the previous stream
    assert not cache.fresh()


def test_a_direct_read_is_kept_only_if_it_started_on_the_live_stream_it_lands_on():
    clock = Clock()
    cache = StatusCache(10, L, clock)
    assert cache.read_token() is None
    cache.offer(status("RUN-1", 1), 1, cache.read_token())
    assert len(cache) == 0  # no stream: a change before one starts would never correct it
    cache.stream_started()
    token = cache.read_token()
    cache.stream_lost()
    cache.stream_started()
    answered = cache.offer(status("RUN-1", 3), 3, token)  # began on the previous stream
    assert answered.change_seq == 3 and len(cache) == 0
    cache.offer(status("RUN-1", 3), 3, cache.read_token())
    assert "RUN-1" in cache


def test_older_never_replaces_newer_and_an_older_direct_read_is_answered_with_the_newer_entry():
    cache = StatusCache(10, L, Clock())
    cache.stream_started()
    cache.apply_change(status("RUN-1", 5), 5)
    token = cache.read_token()
    cache.apply_change(status("RUN-1", 3), 3)
    assert cache.offer(status("RUN-1", 4), 4, token).change_seq == 5
    cache.sync_answered(cache.sync_sent())
    assert cache.lookup("RUN-1").change_seq == 5


def test_progress_only_raises_an_active_runs_progress():
    cache = StatusCache(10, L, Clock())
    cache.stream_started()
    cache.sync_answered(cache.sync_sent())
    cache.apply_change(status("RUN-1", 5, progress=0.25), 5)
    cache.apply_progress("RUN-1", 0.6)
    cache.apply_progress("RUN-1", 0.4)
    assert cache.lookup("RUN-1").status.progress == 0.6
    # The next change (record progress 0.5) keeps the higher live progress; a terminal one does not.
    cache.apply_change(status("RUN-1", 6, progress=0.5), 6)
    assert cache.lookup("RUN-1").status.progress == 0.6
    cache.apply_change(status("RUN-1", 7, state=run_pb2.RUN_STATE_DECISION_READY, progress=1.0), 7)
    cache.apply_progress("RUN-1", 0.9)
    entry = cache.lookup("RUN-1")
    assert (entry.status.state, entry.status.progress) == (run_pb2.RUN_STATE_DECISION_READY, 1.0)


def test_a_write_through_the_gateway_misses_until_a_later_sync_is_answered():
    clock = Clock()
    cache = StatusCache(10, L, clock)
    cache.stream_started()
    before = cache.sync_sent()
    cache.apply_change(status("RUN-1", 1), 1)
    clock.now += 0.01
    cache.wrote("RUN-1")
    cache.sync_answered(before)  # sent before the write: says nothing about it
    assert cache.lookup("RUN-1") is None and cache.lookup("RUN-2") is None
    clock.now += 0.01
    cache.sync_answered(cache.sync_sent())
    assert cache.lookup("RUN-1") is not None


def test_more_writes_than_the_cache_holds_make_every_run_wait_for_the_covering_sync():
    clock = Clock()
    cache = StatusCache(2, L, clock)
    cache.stream_started()
    cache.apply_change(status("RUN-1", 1), 1)
    before = cache.sync_sent()
    clock.now += 0.01
    for run_id in ("RUN-1", "RUN-2", "RUN-3"):  # RUN-1's write is the one no longer remembered by run
        cache.wrote(run_id)
    cache.sync_answered(before)
    assert cache.lookup("RUN-1") is None
    clock.now += 0.01
    cache.sync_answered(cache.sync_sent())
    assert cache.lookup("RUN-1").change_seq == 1


def test_the_cache_is_bounded_least_recently_used_first():
    cache = StatusCache(2, L, Clock())
    cache.stream_started()
    cache.sync_answered(cache.sync_sent())
    for n, run_id in enumerate(("RUN-1", "RUN-2"), 1):
        cache.apply_change(status(run_id, n), n)
    cache.lookup("RUN-1")  # used: RUN-2 is now the least recent
    cache.apply_change(status("RUN-3", 3), 3)
    assert "RUN-1" in cache and "RUN-3" in cache and "RUN-2" not in cache


RUNS = ("RUN-A", "RUN-B")


class System:
    """The world around one gateway's cache: commits at clock times, an ordered stream that delivers
    every change committed after it started (sometimes only a run's latest, as a poll reads it), syncs
    answered only once the changes committed before they arrived were delivered, direct reads that
    snapshot the store and land later, reconnects, writes through this gateway. Every answer is
    checked: (1) never older than a change committed more than L before it, (2) never older than an
    answer this gateway gave before the request began, (3) never older than the run's last write
    through this gateway."""

    def __init__(self):
        self.clock = Clock()
        self.cache = StatusCache(len(RUNS), L, self.clock)
        self.seq = 0
        self.log: list[tuple[int, str, float]] = []  # (change_seq, run, commit time)
        self.live = False
        self.delivered = 0  # changes up to this number have been delivered or passed over
        self.syncs: list[tuple[int, float]] = []  # (sync id, time the orchestrator received it)
        self.reads: list[tuple[str, int | None, int, int]] = []  # (run, token, snapshot seq, answered before)
        self.answered = {run: 0 for run in RUNS}
        self.written = {run: 0 for run in RUNS}
        self.hits = 0

    def latest(self, run: str, before: float | None = None) -> int:
        return max((s for s, r, t in self.log if r == run and (before is None or t < before)), default=0)

    def tick(self, dt: float) -> None:
        self.clock.now += dt

    def commit(self, run: str) -> None:
        self.seq += 1
        self.log.append((self.seq, run, self.clock.now))

    def write(self, run: str) -> None:
        self.commit(run)
        self.cache.wrote(run)
        self.written[run] = self.seq

    def connect(self) -> None:
        if not self.live:
            self.cache.stream_started()
            self.live, self.delivered, self.syncs = True, self.seq, []

    def disconnect(self) -> None:
        self.cache.stream_lost()
        self.live, self.syncs = False, []

    def deliver(self, latest_only: bool) -> None:
        if not self.live or self.delivered >= self.seq:
            return
        change_seq, run, _ = next(entry for entry in self.log if entry[0] > self.delivered)
        self.delivered = change_seq
        if latest_only:
            change_seq = self.latest(run)
        self.cache.apply_change(status(run, change_seq), change_seq)

    def send_sync(self) -> None:
        if self.live:
            self.syncs.append((self.cache.sync_sent(), self.clock.now))

    def answer_sync(self) -> None:
        if not self.live or not self.syncs:
            return
        sync_id, received = self.syncs[0]
        if any(s > self.delivered and t <= received for s, _, t in self.log):
            return  # the answer waits for the poll that delivers them
        self.syncs.pop(0)
        self.cache.sync_answered(sync_id)

    def catch_up(self, latest_only: bool) -> None:
        while self.live and self.delivered < self.seq:
            self.deliver(latest_only)
        self.send_sync()
        while self.syncs:
            self.answer_sync()

    def sync_in_flight(self, run: str, before: float, after: float) -> None:
        """A change committed while a sync is on its way back (after the orchestrator received it)."""
        self.send_sync()
        self.tick(before)
        self.commit(run)
        self.tick(after)
        self.answer_sync()

    def reconnect(self) -> None:
        self.disconnect()
        self.connect()

    def start_read(self, run: str) -> None:
        self.reads.append((run, self.cache.read_token(), self.latest(run), self.answered[run]))

    def finish_read(self, index: int) -> None:
        if not self.reads:
            return
        run, token, snapshot, answered_before = self.reads.pop(index % len(self.reads))
        if snapshot == 0:
            return  # NOT_FOUND: nothing offered
        entry = self.cache.offer(status(run, snapshot), snapshot, token)
        assert entry.status.run_id == run and entry.change_seq >= snapshot
        assert entry.change_seq >= answered_before
        self.answered[run] = max(self.answered[run], entry.change_seq)

    def lookup(self, run: str) -> None:
        entry = self.cache.lookup(run)
        if entry is None:
            return
        self.hits += 1
        assert entry.status.run_id == run and entry.change_seq <= self.latest(run)
        assert entry.change_seq >= self.latest(run, before=self.clock.now - L), "older than L allows"
        assert entry.change_seq >= self.answered[run], "went backwards"
        assert entry.change_seq >= self.written[run], "missed this gateway's own write"
        self.answered[run] = max(self.answered[run], entry.change_seq)


# Operations, repeated to weight them: mostly commits, deliveries, reads and lookups.
RUN = st.sampled_from(RUNS)
OPERATIONS = st.one_of(
    st.tuples(st.just("commit"), RUN), st.tuples(st.just("commit"), RUN),
    st.tuples(st.just("write"), RUN),
    st.tuples(st.just("deliver"), st.booleans()), st.tuples(st.just("deliver"), st.booleans()),
    st.tuples(st.just("catch_up"), st.booleans()), st.tuples(st.just("catch_up"), st.booleans()),
    st.tuples(st.just("send_sync")), st.tuples(st.just("answer_sync")),
    st.tuples(st.just("start_read"), RUN), st.tuples(st.just("start_read"), RUN),
    st.tuples(st.just("finish_read"), st.integers(0, 7)), st.tuples(st.just("finish_read"), st.integers(0, 7)),
    st.tuples(st.just("lookup"), RUN), st.tuples(st.just("lookup"), RUN), st.tuples(st.just("lookup"), RUN),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.05, 0.1])), st.tuples(st.just("tick"), st.just(0.3)),
    st.tuples(st.just("sync_in_flight"), RUN, st.sampled_from([0.05, 0.1]), st.sampled_from([0.1, 0.2])),
    st.tuples(st.just("connect")), st.tuples(st.just("disconnect")), st.tuples(st.just("reconnect")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPERATIONS, min_size=30, max_size=80))
def test_no_interleaving_of_stream_reads_syncs_and_reconnects_breaks_the_guarantees(operations):
    system = System()
    system.connect()
    system.catch_up(False)
    for name, *args in operations:
        getattr(system, name)(*args)
