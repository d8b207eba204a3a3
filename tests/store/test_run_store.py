"""The run store on both back ends: state changes, events, stage outputs, artifacts, rebuild."""

import dataclasses
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smvm.errors import AlreadyExists, NotFound
from smvm.outbox import OutboxMessage
from services.orchestrator.rundir import ArtifactCorrupt, RunDirectory
from services.orchestrator.store import RunRecord, RunStore, fold_events


def _record(run_id="RUN-1", project_id="PROJ-1") -> RunRecord:
    return RunRecord(
        run_id=run_id, project_id=project_id, state="INITIATED", created_at="2026-11-22T10:00:00Z",
        updated_at="2026-11-22T10:00:00Z", estimated_completion="2026-11-22T10:02:00Z",
        request_sha256="abc", correlation_id="CORR-1", seed=7, source_shape="business_idea",
        configuration={"persona_count": 5}, submit_response={"run_id": run_id},
    )


@pytest.fixture
def store(db, runs_dir):
    return RunStore(runs_dir, db)


def _create(store, run_id="RUN-1"):
    record = _record(run_id)
    store.create(record, RunDirectory(store.root, record.project_id, run_id), actor="tester",
                 stage_outputs={"ingestion": b"idea-bytes"})
    return record


def _message(event_id="EV-1", run_id="RUN-1", created_at=1.0) -> OutboxMessage:
    return OutboxMessage(event_id=event_id, run_id=run_id, kind="validation.update", url="https://tb.example/hook",
                         payload={"status": "RUNNING"}, created_at=created_at)


def test_state_changes_are_stored_with_ordered_events_that_the_run_directory_mirrors(store):
    _create(store)
    store.update("RUN-1", "stage.started", state="RUNNING", current_stage="personas", payload={"stage": "personas"})
    store.update("RUN-1", "run.failed", actor="orchestrator", state="FAILED", error="boom")
    record = store.get("RUN-1")
    assert (record.state, record.error, record.current_stage) == ("FAILED", "boom", "personas")
    events = store.events("RUN-1")
    assert [e["type"] for e in events] == ["run.initiated", "stage.started", "run.failed"]
    for event in events:
        assert event["event_id"] and event["time"] and event["actor"] and event["correlation_id"] == "CORR-1"
    assert events[1]["payload"]["stage"] == "personas" and events[1]["payload"]["changes"]["state"] == "RUNNING"
    rundir = store.rundir("RUN-1")
    assert rundir.events() == events  # events.jsonl is an exact mirror of the event store
    assert rundir.read_json("meta.json")["status"] == "FAILED"


def test_a_run_id_is_created_once(store):
    _create(store)
    with pytest.raises(AlreadyExists):
        _create(store)
    assert [e["type"] for e in store.events("RUN-1")] == ["run.initiated"]


def test_unknown_runs_and_fields_are_refused(store):
    with pytest.raises(NotFound):
        store.get("RUN-NONE")
    with pytest.raises(NotFound):
        store.update("RUN-NONE", "x", state="RUNNING")
    _create(store)
    with pytest.raises(AttributeError):
        store.update("RUN-1", "x", colour="blue")


def test_status_row_is_rebuilt_from_events_alone(store, db):
    _create(store)
    store.update("RUN-1", "stage.started", state="RUNNING", current_stage="personas", progress=0.05,
                 stage_results={**_record().stage_results, "ingestion": "completed", "personas": "in_progress"})
    store.update("RUN-1", "run.decision_ready", state="DECISION_READY", current_stage="", progress=1.0,
                 recommendation="GO", review_verdict="APPROVE")
    before = store.get("RUN-1")
    with db.transaction() as tx:
        tx.execute("DELETE FROM runs WHERE run_id = ?", ("RUN-1",))
    assert store.find("RUN-1") is None
    assert store.load() == []  # start-up notices the missing row and rebuilds it
    assert store.get("RUN-1") == before
    assert store.rebuild("RUN-1") == before


def test_events_are_append_only(store, db):
    _create(store)
    with pytest.raises(Exception, match="append-only"):
        with db.transaction() as tx:
            tx.execute("UPDATE events SET type = ? WHERE run_id = ?", ("forged", "RUN-1"))
    with pytest.raises(Exception, match="append-only"):
        with db.transaction() as tx:
            tx.execute("DELETE FROM events WHERE run_id = ?", ("RUN-1",))
    assert [e["type"] for e in store.events("RUN-1")] == ["run.initiated"]


def test_a_stage_output_commits_with_its_event_and_only_once(store):
    _create(store)
    assert store.stage_output("RUN-1", "ingestion") == b"idea-bytes"
    assert store.stage_output("RUN-1", "personas") is None
    store.update("RUN-1", "stage.completed", stage_output=("personas", b"\x00personas\xff"), progress=0.15)
    assert store.stage_output("RUN-1", "personas") == b"\x00personas\xff"
    with pytest.raises(AlreadyExists):
        store.update("RUN-1", "stage.completed", stage_output=("personas", b"other"), progress=0.9)
    # the refused transaction left nothing behind: no event, no progress, the first output
    assert [e["type"] for e in store.events("RUN-1")] == ["run.initiated", "stage.completed"]
    assert store.get("RUN-1").progress == pytest.approx(0.15)
    assert store.stage_output("RUN-1", "personas") == b"\x00personas\xff"


def test_outbox_messages_commit_with_the_state_change_or_not_at_all(store):
    _create(store)
    store.update("RUN-1", "run.decision_ready", state="DECISION_READY", outbox=[_message("EV-1")])
    assert [m.event_id for m in store.outbox.list(run_id="RUN-1")] == ["EV-1"]
    with pytest.raises(AlreadyExists):  # a duplicate event id aborts the whole change
        store.update("RUN-1", "run.completed", state="COMPLETED", outbox=[_message("EV-2"), _message("EV-1")])
    assert store.get("RUN-1").state == "DECISION_READY"
    assert [m.event_id for m in store.outbox.list()] == ["EV-1"]
    assert store.events("RUN-1")[-1]["type"] == "run.decision_ready"


@pytest.mark.parametrize("damage", ["edit", "truncate", "delete"])
def test_artifacts_are_checked_against_their_recorded_digest(store, damage):
    _create(store)
    rundir = store.rundir("RUN-1")
    rundir.write_json("outputs/personas.output.json", {"personas": [{"name": "Ana"}]})
    assert rundir.read_json("outputs/personas.output.json") == {"personas": [{"name": "Ana"}]}
    path = rundir.path / "outputs/personas.output.json"
    if damage == "edit":
        path.write_text(path.read_text().replace("Ana", "Bob"))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:10])
    else:
        path.unlink()
    with pytest.raises(ArtifactCorrupt) as err:
        store.rundir("RUN-1").read_json("outputs/personas.output.json")
    assert err.value.code == "DATA_LOSS" and "personas.output.json" in str(err.value)


def test_rewriting_an_artifact_records_the_new_digest(store):
    _create(store)
    rundir = store.rundir("RUN-1")
    rundir.write_json("outputs/completion.json", {"v": 1})
    rundir.write_json("outputs/completion.json", {"v": 2})
    assert store.rundir("RUN-1").read_json("outputs/completion.json") == {"v": 2}


def test_a_new_store_on_the_same_database_sees_every_run_and_reports_active_ones(store, database_url, runs_dir):
    _create(store, "RUN-A")
    _create(store, "RUN-B")
    store.update("RUN-B", "run.decision_ready", state="DECISION_READY", recommendation="GO")
    reopened = RunStore(runs_dir, database_url=database_url)
    assert [r.run_id for r in reopened.load()] == ["RUN-A"]
    assert reopened.get("RUN-B").recommendation == "GO"
    assert {r.run_id for r in reopened} == {"RUN-A", "RUN-B"}


def test_start_up_restores_a_mirror_that_fell_behind_the_database(store):
    _create(store)
    store.update("RUN-1", "stage.started", state="RUNNING", current_stage="personas")
    rundir = store.rundir("RUN-1")
    lines = (rundir.path / "events.jsonl").read_text().splitlines()
    (rundir.path / "events.jsonl").write_text(lines[0] + "\n")  # a crash after commit, before the mirror
    store.load()
    assert rundir.events() == store.events("RUN-1")


def test_runs_written_before_the_database_are_imported_once(db, runs_dir):
    legacy = RunDirectory(runs_dir, "PROJ-OLD", "RUN-OLD")
    legacy.create()
    legacy.write_json("meta.json", _record("RUN-OLD", "PROJ-OLD").to_meta(str(legacy.path)) | {"status": "DECISION_READY"})
    broken = runs_dir / "PROJ-1" / "validation" / "RUN-X"
    broken.mkdir(parents=True)
    (broken / "meta.json").write_text("{not json")
    store = RunStore(runs_dir, db)
    assert store.load() == []
    assert store.get("RUN-OLD").state == "DECISION_READY"
    store.load()
    assert [e["type"] for e in store.events("RUN-OLD")] == ["run.imported"]


def test_live_progress_is_monotone_and_never_outlives_the_run(store):
    _create(store)
    store.update("RUN-1", "stage.started", state="RUNNING", progress=0.25)
    store.set_progress("RUN-1", 0.5)
    store.set_progress("RUN-1", 0.4)
    assert store.get("RUN-1").progress == pytest.approx(0.5)
    store.update("RUN-1", "run.failed", state="FAILED")
    assert store.get("RUN-1").progress == pytest.approx(0.25)


_values = {
    "state": st.sampled_from(["RUNNING", "DECISION_READY", "FAILED", "TIMEOUT", "COMPLETED"]),
    "current_stage": st.sampled_from(["", "personas", "simulation"]),
    "progress": st.floats(0, 1),
    "error": st.text(max_size=20),
    "recommendation": st.sampled_from(["", "GO", "PIVOT", "KILL"]),
    "stage_results": st.dictionaries(st.sampled_from(["personas", "simulation"]), st.sampled_from(["pending", "completed"])),
    "configuration": st.dictionaries(st.text(min_size=1, max_size=5), st.integers(-5, 5), max_size=3),
}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({}, optional=_values), max_size=6))
def test_folding_the_events_always_gives_the_stored_record(db, runs_dir, changes_list):
    store = RunStore(runs_dir, db)
    run_id = f"RUN-P{os.urandom(4).hex()}"
    _create(store, run_id)
    for changes in changes_list:
        store.update(run_id, "test.change", **changes)
    assert fold_events(store.events(run_id)) == store.get(run_id)
    assert fold_events(store.rundir(run_id).events()) == store.get(run_id)


def test_undocumented_lists_decided_runs_without_a_reports_event_on_both_back_ends(store):
    for run_id in ("RUN-U1", "RUN-U2", "RUN-U3", "RUN-U4"):
        _create(store, run_id)
    store.update("RUN-U1", "run.decision_ready", state="DECISION_READY")
    store.update("RUN-U2", "run.decision_ready", state="DECISION_READY")
    store.update("RUN-U2", "reports.rendered")
    store.update("RUN-U3", "run.decision_ready", state="DECISION_READY")
    store.update("RUN-U3", "reports.failed", payload={"error": "boom"})  # given up on: not retried
    store.update("RUN-U4", "run.failed", state="FAILED")  # no decision, no documents
    assert [r.run_id for r in store.undocumented()] == ["RUN-U1"]
    store.update("RUN-U1", "run.completed", state="COMPLETED")
    assert [r.run_id for r in store.undocumented()] == ["RUN-U1"]
    assert store.undocumented(within_s=-60) == []  # only recent runs
