"""The audit trail holds the run lifecycle: every event the run store appends is copied, in the same
transaction, into overwatch's audit_events with the run's project (migration 5), on SQLite and on a
real PostgreSQL server; events stored before the migration are copied when it runs."""

from __future__ import annotations

import json

import pytest

from smvm.db import Database
from smvm.db.migrations import MIGRATIONS, migrate
from smvm.errors import AlreadyExists

from services.orchestrator.rundir import RunDirectory
from services.orchestrator.store import RunRecord, RunStore
from services.overwatch.budget import BudgetDefaults
from services.overwatch.ledger import Amounts, Ledger
from services.overwatch.ledger_store import LedgerStore
from services.overwatch.policy import load_policy


def _record(run_id: str, project_id: str = "PROJ-1") -> RunRecord:
    return RunRecord(
        run_id=run_id, project_id=project_id, state="INITIATED", created_at="2026-11-22T10:00:00Z",
        updated_at="2026-11-22T10:00:00Z", estimated_completion="2026-11-22T10:02:00Z",
        request_sha256="abc", correlation_id=f"CORR-{run_id}", seed=7, source_shape="business_idea",
        configuration={"persona_count": 5}, submit_response={"run_id": run_id},
    )


def _create(store: RunStore, run_id: str, project_id: str = "PROJ-1") -> None:
    record = _record(run_id, project_id)
    store.create(record, RunDirectory(store.root, project_id, run_id), actor="tb-founder")


def _ledger(db: Database) -> Ledger:
    return Ledger(LedgerStore(db), BudgetDefaults(10_000, 1_000), load_policy())


def test_a_projects_audit_trail_holds_its_runs_lifecycle_in_order(db, runs_dir):
    store, ledger = RunStore(runs_dir, db), _ledger(db)
    _create(store, "RUN-1")
    store.update("RUN-1", "stage.started", state="RUNNING", current_stage="simulation", payload={"stage": "simulation"})
    held = ledger.reserve(run_id="RUN-1", project_id="PROJ-1", requested=Amounts(500), actor="orchestrator",
                          correlation_id="CORR-RUN-1")
    ledger.commit(held.reservation_id, Amounts(480, 0, 0.5), actor="orchestrator")
    store.update("RUN-1", "run.decision_ready", state="DECISION_READY", recommendation="GO")
    store.update("RUN-1", "run.completed", actor="tb-founder", state="COMPLETED")
    _create(store, "RUN-2", project_id="PROJ-2")  # another project's run stays out of PROJ-1's trail

    trail = ledger.events(project_id="PROJ-1")
    assert [e.kind for e in trail] == ["run.initiated", "run.stage.started", "budget.reserved", "budget.committed",
                                       "run.decision_ready", "run.completed"]
    assert [e.sequence for e in trail] == sorted(e.sequence for e in trail)
    stored = store.events("RUN-1")
    run_events = [e for e in trail if e.kind.startswith("run.")]
    for audited, event in zip(run_events, stored):
        assert audited.payload["event_id"] == event["event_id"]
        assert (audited.actor, audited.run_id, audited.project_id, audited.correlation_id, audited.time) == (
            event["actor"], "RUN-1", "PROJ-1", event["correlation_id"], event["time"])
    initiated, started = run_events[0], run_events[1]
    assert initiated.actor == "tb-founder" and "record" not in initiated.payload  # the full record stays in the store
    assert initiated.payload["status"] == "INITIATED" and initiated.payload["seed"] == 7
    assert started.payload["changes"]["state"] == "RUNNING" and started.payload["stage"] == "simulation"
    assert [e.kind for e in ledger.events(project_id="PROJ-1", kind_prefix="run.")] == [
        "run.initiated", "run.stage.started", "run.decision_ready", "run.completed"]
    assert [e.kind for e in ledger.events(run_id="RUN-2")] == ["run.initiated"]
    assert ledger.events(run_id="RUN-2")[0].project_id == "PROJ-2"


def test_a_run_change_that_rolls_back_leaves_no_audit_event(db, runs_dir):
    store, ledger = RunStore(runs_dir, db), _ledger(db)
    _create(store, "RUN-1")
    with pytest.raises(AlreadyExists):
        _create(store, "RUN-1")
    assert [e.kind for e in ledger.events(run_id="RUN-1")] == ["run.initiated"]


def test_a_payload_that_is_not_a_json_object_never_fails_the_run_stores_write(db):
    with db.transaction() as tx:
        for event_id, payload in (("EV-NAN", '{"progress": NaN}'), ("EV-LIST", "[1, 2]"), ("EV-TEXT", "not json")):
            tx.execute("INSERT INTO events (event_id, run_id, type, actor, correlation_id, time, payload) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (event_id, "RUN-X", "stage.progress", "sim", "c", "t", payload))
    audited = _ledger(db).events(run_id="RUN-X")
    assert [(e.kind, e.payload) for e in audited] == [
        ("run.stage.progress", {"event_id": "EV-NAN"}), ("run.stage.progress", {"event_id": "EV-LIST"}),
        ("run.stage.progress", {"event_id": "EV-TEXT"})]
    assert audited[0].project_id == ""  # no runs row: the trail still names the run


def test_events_stored_before_migration_5_are_copied_once_when_it_runs(database_url, runs_dir):
    db = Database(database_url)
    try:
        # Up to 4, and the run change sequence today's RunStore writes (7), which 5 does not touch.
        assert migrate(db, MIGRATIONS[:4] + tuple(m for m in MIGRATIONS if m.version == 7)) == [1, 2, 3, 4, 7]
        store = RunStore(runs_dir, db)
        _create(store, "RUN-OLD")
        store.update("RUN-OLD", "run.failed", state="FAILED", error="boom")
        assert migrate(db, MIGRATIONS[:5]) == [5]
        store.update("RUN-OLD", "run.resumed")  # after the migration: the trigger copies it
        assert migrate(db, MIGRATIONS[:5]) == []
        trail = _ledger(db).events(project_id="PROJ-1")
        assert [e.kind for e in trail] == ["run.initiated", "run.failed", "run.resumed"]
        assert [e.payload["event_id"] for e in trail] == [e["event_id"] for e in store.events("RUN-OLD")]
        assert trail[1].payload["changes"]["error"] == "boom"
        with db.reading() as tx:
            assert json.loads(tx.one("SELECT payload_json FROM audit_events WHERE kind = 'run.initiated'")[0])[
                "source_shape"] == "business_idea"
    finally:
        db.close()
