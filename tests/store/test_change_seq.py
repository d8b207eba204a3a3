"""The global change sequence of run records (migration 7, RunStore.changes_since), on both back ends:
every committed change takes the next number, numbers commit in order, and a poller that follows
`change_seq > last` never skips a change, even with writers committing concurrently."""

from __future__ import annotations

import json
import random
import threading
import time

from smvm.db import open_database
from smvm.db.database import Database
from smvm.db.migrations import MIGRATIONS, migrate
from services.orchestrator.rundir import RunDirectory
from services.orchestrator.store import RunRecord, RunStore


def _record(run_id: str, updated_at: str = "2026-11-22T10:00:00Z") -> RunRecord:
    return RunRecord(
        run_id=run_id, project_id="PROJ-1", state="INITIATED", created_at="2026-11-22T10:00:00Z",
        updated_at=updated_at, estimated_completion="2026-11-22T10:02:00Z", request_sha256="abc",
        correlation_id="CORR-1", seed=7, source_shape="business_idea",
    )


def _create(store: RunStore, run_id: str, **kwargs) -> None:
    store.create(_record(run_id), RunDirectory(store.root, "PROJ-1", run_id), actor="tester", **kwargs)


def _seq(store: RunStore, run_id: str) -> int:
    return store.record_version(run_id)[1]


def test_every_committed_change_takes_the_next_number(db, runs_dir):
    store = RunStore(runs_dir, db)
    assert store.last_change_seq() == 0 and store.changes_since(0) == []
    _create(store, "RUN-A")
    _create(store, "RUN-B")
    assert (_seq(store, "RUN-A"), _seq(store, "RUN-B")) == (1, 2)
    store.update("RUN-A", "stage.started", state="RUNNING", current_stage="personas")
    assert _seq(store, "RUN-A") == 3 and store.last_change_seq() == 3
    store.rebuild("RUN-B")  # a rewritten row is a change too
    assert _seq(store, "RUN-B") == 4
    # Each run once, with its last change, in sequence order; `limit` pages.
    assert [(s, r) for s, r, _ in store.changes_since(0)] == [(3, "RUN-A"), (4, "RUN-B")]
    assert [(s, r) for s, r, _ in store.changes_since(3)] == [(4, "RUN-B")]
    assert [(s, r) for s, r, _ in store.changes_since(0, limit=1)] == [(3, "RUN-A")]
    assert store.changes_since(0)[0][2] == store.record_version("RUN-A")[0]


def test_a_refused_change_takes_no_number(db, runs_dir):
    store = RunStore(runs_dir, db)
    _create(store, "RUN-A")

    def refuse(record):
        raise RuntimeError("no")

    try:
        store.update("RUN-A", "x", guard=refuse, state="RUNNING")
    except RuntimeError:
        pass
    assert store.last_change_seq() == 1
    store.update("RUN-A", "y", state="RUNNING")
    assert _seq(store, "RUN-A") == 2  # no gap: the refused transaction's number was rolled back


def test_migration_numbers_existing_runs_in_the_order_they_last_changed(database_url, tmp_path):
    db = Database(database_url)
    migrate(db, MIGRATIONS[:6])
    with db.transaction() as tx:
        for run_id, updated in (("RUN-OLD", "2026-11-20T00:00:00Z"), ("RUN-NEW", "2026-11-22T00:00:00Z"),
                                ("RUN-MID", "2026-11-21T00:00:00Z")):
            tx.execute("INSERT INTO runs (run_id, project_id, state, created_at, updated_at, record) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (run_id, "PROJ-1", "INITIATED", updated, updated,
                                                     json.dumps(_record(run_id, updated).to_row())))
    assert migrate(db) == [7]
    with db.reading() as tx:
        assert tx.all("SELECT run_id, change_seq FROM runs ORDER BY change_seq") == [
            ("RUN-OLD", 1), ("RUN-MID", 2), ("RUN-NEW", 3)]
    store = RunStore(tmp_path / "runs", db)
    assert store.last_change_seq() == 3
    _create(store, "RUN-NEXT")
    assert _seq(store, "RUN-NEXT") == 4
    db.close()


def test_a_poller_never_skips_a_change_of_concurrent_writers(database_url, tmp_path):
    """Writers on their own connections (as replicas are) create runs, each holding its transaction
    open a random while after taking its number; a poller following `change_seq > last` must still
    see every run. With numbers taken outside the transaction (a sequence, say), a number committed
    after a larger one would be skipped."""
    writers, per_writer = 4, 15
    open_database(database_url).close()  # migrate once
    done = threading.Event()
    seen: dict[str, int] = {}
    errors: list[BaseException] = []

    def write(index: int) -> None:
        rng = random.Random(index)
        store = RunStore(tmp_path / "runs", open_database(database_url))
        try:
            for n in range(per_writer):
                # The outbox callable runs inside the transaction, after the run row took its number.
                _create(store, f"RUN-W{index}-{n}", outbox=lambda record: (time.sleep(rng.uniform(0, 0.01)), [])[1])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            store.db.close()

    def poll() -> None:
        store = RunStore(tmp_path / "runs", open_database(database_url))
        last = 0
        try:
            while True:
                finished = done.is_set()
                for change_seq, run_id, _ in store.changes_since(last):
                    assert change_seq > last
                    seen[run_id] = change_seq
                    last = change_seq
                if finished:
                    return
                time.sleep(0.0005)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.db.close()

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    poller.join(60)
    assert not errors, errors
    expected = {f"RUN-W{i}-{n}" for i in range(writers) for n in range(per_writer)}
    assert set(seen) == expected, sorted(expected - set(seen))
    assert sorted(seen.values()) == list(range(1, len(expected) + 1))
