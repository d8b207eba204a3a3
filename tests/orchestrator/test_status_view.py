"""The cached GetRunStatus projection (services/orchestrator/status_view.py): it saves work, never
answers with an older state, whoever changed the run (this store, another store on the same
database, i.e. another replica), and stays bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from smvm.errors import NotFound
from smvm.v1 import run_pb2
from services.orchestrator.rundir import RunDirectory
from services.orchestrator.servicer import status_message
from services.orchestrator.status_view import StatusView
from services.orchestrator.store import STAGES, RunRecord, RunStore


def _record(run_id: str = "RUN-1") -> RunRecord:
    return RunRecord(
        run_id=run_id, project_id="PROJ-1", state="INITIATED", created_at="2026-11-22T10:00:00Z",
        updated_at="2026-11-22T10:00:00Z", estimated_completion="2026-11-22T10:02:00Z",
        request_sha256="abc", correlation_id="CORR-1", seed=7, source_shape="business_idea",
    )


def _create(store: RunStore, run_id: str = "RUN-1") -> None:
    store.create(_record(run_id), RunDirectory(store.root, "PROJ-1", run_id), actor="tester")


def _uncached(store: RunStore, run_id: str) -> run_pb2.RunStatus:
    """What the status was before the cache: a fresh read and a freshly built message."""
    record = store.get(run_id)
    return status_message(record, str(RunDirectory(store.root, record.project_id, run_id).path))


def test_an_unchanged_run_is_answered_from_the_cache_with_the_same_content(runs_dir):
    store = RunStore(runs_dir)
    _create(store)
    view = StatusView(store, status_message)
    first = view.response("RUN-1")
    assert view.response("RUN-1") is first
    assert (view.hits, view.misses) == (1, 1)
    assert first.status == _uncached(store, "RUN-1")
    assert first.status.run_directory == str(runs_dir / "PROJ-1" / "validation" / "RUN-1")


def test_a_change_is_seen_by_the_next_read(runs_dir):
    store = RunStore(runs_dir)
    _create(store)
    view = StatusView(store, status_message)
    assert view.response("RUN-1").status.state == run_pb2.RUN_STATE_INITIATED
    store.update("RUN-1", "stage.started", state="RUNNING", current_stage="personas", progress=0.05)
    answer = view.response("RUN-1").status
    assert answer.state == run_pb2.RUN_STATE_RUNNING and answer.current_stage == "personas"
    assert answer == _uncached(store, "RUN-1")


def test_live_progress_inside_a_stage_is_seen_without_a_database_change(runs_dir):
    store = RunStore(runs_dir)
    _create(store)
    store.update("RUN-1", "stage.started", state="RUNNING", current_stage="simulation", progress=0.25)
    view = StatusView(store, status_message)
    assert view.response("RUN-1").status.progress == pytest.approx(0.25)
    store.set_progress("RUN-1", 0.5)
    assert view.response("RUN-1").status.progress == pytest.approx(0.5)


def test_a_change_made_by_another_replica_on_the_same_database_is_seen(runs_dir):
    """Two stores on one database file stand for two orchestrator replicas: the cache of one must
    not hide what the other wrote."""
    mine, other = RunStore(runs_dir), RunStore(runs_dir)
    _create(mine)
    view = StatusView(mine, status_message)
    assert view.response("RUN-1").status.state == run_pb2.RUN_STATE_INITIATED
    other.update("RUN-1", "run.decision_ready", state="DECISION_READY", progress=1.0, recommendation="GO")
    answer = view.response("RUN-1").status
    assert answer.state == run_pb2.RUN_STATE_DECISION_READY and answer.recommendation == "GO"


def test_a_run_that_is_gone_is_not_found_not_served_from_the_cache(runs_dir):
    store = RunStore(runs_dir)
    _create(store)
    view = StatusView(store, status_message)
    view.response("RUN-1")
    with store.db.transaction() as tx:
        tx.execute("DELETE FROM runs WHERE run_id = ?", ("RUN-1",))
    with pytest.raises(NotFound):
        view.response("RUN-1")
    assert len(view) == 0


def test_the_cache_keeps_only_the_most_recently_read_runs(runs_dir):
    store = RunStore(runs_dir)
    for i in range(5):
        _create(store, f"RUN-{i}")
    view = StatusView(store, status_message, size=3)
    for i in range(5):
        view.response(f"RUN-{i}")
    assert len(view) == 3
    view.response("RUN-4")
    assert view.hits == 1
    view.response("RUN-0")  # evicted: built again
    assert view.misses == 6


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["read", "update", "progress"]), st.sampled_from(STAGES),
                                st.floats(0, 1)), min_size=1, max_size=12))
def test_any_sequence_of_changes_and_reads_answers_what_an_uncached_read_would(tmp_path_factory, steps):
    store = RunStore(tmp_path_factory.mktemp("runs"))
    _create(store)
    view = StatusView(store, status_message)
    for kind, stage, value in steps:
        if kind == "update":
            store.update("RUN-1", "stage.started", state="RUNNING", current_stage=stage, progress=value)
        elif kind == "progress":
            store.set_progress("RUN-1", value)
        assert view.response("RUN-1").status == _uncached(store, "RUN-1")
