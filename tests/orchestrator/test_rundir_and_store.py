import json
import os

import pytest

from smvm.errors import InvalidArgument, NotFound
from services.orchestrator.rundir import RunDirectory, atomic_write_json
from services.orchestrator.store import STAGES, RunRecord, RunStore, progress_before
from services.orchestrator.pipeline import split_chunks


def _record(run_id="RUN-1", state="INITIATED") -> RunRecord:
    return RunRecord(
        run_id=run_id, project_id="PROJ-1", state=state, created_at="2026-11-22T10:00:00Z",
        updated_at="2026-11-22T10:00:00Z", estimated_completion="2026-11-22T10:02:00Z",
        request_sha256="abc", correlation_id="CORR-1", seed=7, source_shape="business_idea",
    )


def test_layout_matches_the_integration_guide(runs_dir):
    rundir = RunDirectory(runs_dir, "PROJ-1", "RUN-1")
    rundir.create()
    assert rundir.path == runs_dir / "PROJ-1" / "validation" / "RUN-1"
    assert (rundir.path / "outputs").is_dir() and (rundir.path / "reports").is_dir()


@pytest.mark.parametrize("project_id, run_id, field", [("..", "RUN-1", "project_id"), ("P", "../../x", "run_id"), ("P/Q", "R", "project_id")])
def test_ids_are_checked_before_touching_a_path(runs_dir, project_id, run_id, field):
    with pytest.raises(InvalidArgument) as err:
        RunDirectory(runs_dir, project_id, run_id)
    assert err.value.field == field
    assert list(runs_dir.iterdir()) == []


def test_atomic_write_replaces_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["x.json"]


def test_failed_write_keeps_the_previous_version(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    class Unserialisable:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        atomic_write_json(target, {"a": Unserialisable()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def test_every_state_change_is_persisted_and_logged_as_an_event(runs_dir):
    store = RunStore(runs_dir)
    rundir = RunDirectory(runs_dir, "PROJ-1", "RUN-1")
    store.create(_record(), rundir, actor="tester")
    store.update("RUN-1", "stage.started", state="RUNNING", current_stage="personas")
    store.update("RUN-1", "run.failed", state="FAILED", error="boom")
    meta = rundir.read_json("meta.json")
    assert meta["status"] == "FAILED" and meta["error"] == "boom" and meta["run_directory"] == str(rundir.path)
    events = rundir.events()
    assert [e["type"] for e in events] == ["run.initiated", "stage.started", "run.failed"]
    assert all(e["run_id"] == "RUN-1" and e["event_id"] for e in events)
    assert events[1]["payload"]["current_stage"] == "personas"


def test_a_new_store_reloads_runs_and_reports_the_interrupted_ones(runs_dir):
    store = RunStore(runs_dir)
    store.create(_record("RUN-A"), RunDirectory(runs_dir, "PROJ-1", "RUN-A"), actor="t")
    store.create(_record("RUN-B"), RunDirectory(runs_dir, "PROJ-1", "RUN-B"), actor="t")
    store.update("RUN-B", "run.decision_ready", state="DECISION_READY", recommendation="GO")
    reloaded = RunStore(runs_dir)
    interrupted = reloaded.load()
    assert [r.run_id for r in interrupted] == ["RUN-A"]
    assert reloaded.get("RUN-B").recommendation == "GO"
    with pytest.raises(NotFound):
        reloaded.get("RUN-C")


def test_unreadable_run_directories_are_skipped(runs_dir):
    broken = runs_dir / "PROJ-1" / "validation" / "RUN-X"
    broken.mkdir(parents=True)
    (broken / "meta.json").write_text("{not json")
    assert RunStore(runs_dir).load() == []


def test_stage_progress_is_monotone_and_ends_at_one():
    marks = [progress_before(s) for s in STAGES]
    assert marks == sorted(marks) and marks[0] == 0.0
    assert progress_before("overwatch") < 1.0


@pytest.mark.parametrize("n_chunks, shards", [(1, 1), (4, 1), (4, 3), (10, 3), (7, 7), (100, 4)])
def test_split_chunks_covers_every_chunk_once(n_chunks, shards):
    bounds = split_chunks(n_chunks, shards)
    covered = [i for start, count in bounds for i in range(start, start + count)]
    assert covered == list(range(n_chunks))
    counts = [c for _, c in bounds]
    assert max(counts) - min(counts) <= 1
