"""Replica leases on active runs (several orchestrators on one database)."""

import time

import pytest

from services.orchestrator.rundir import RunDirectory
from services.orchestrator.store import LeaseLost, RunStore

from .test_run_store import _record


def _stores(db, runs_dir, lease_s=0.3):
    return RunStore(runs_dir, db, owner="replica-a", lease_s=lease_s), RunStore(runs_dir, db, owner="replica-b", lease_s=lease_s)


def test_the_creating_replica_drives_the_run_until_its_lease_expires(db, runs_dir):
    a, b = _stores(db, runs_dir)
    a.create(_record("RUN-1"), RunDirectory(runs_dir, "PROJ-1", "RUN-1"), actor="t")
    assert not b.claim("RUN-1") and b.orphaned() == []
    with pytest.raises(LeaseLost):
        b.update("RUN-1", "stage.started", state="RUNNING")
    a.update("RUN-1", "stage.started", state="RUNNING")
    assert a.renew_leases() == 1
    time.sleep(0.4)  # replica a stops renewing (it died)
    assert [r.run_id for r in b.orphaned()] == ["RUN-1"]
    assert b.claim("RUN-1")
    with pytest.raises(LeaseLost):  # a, back from a pause, may not write any more
        a.update("RUN-1", "stage.completed", progress=0.5)
    b.update("RUN-1", "run.decision_ready", state="DECISION_READY")
    with db.transaction() as tx:
        assert tx.all("SELECT run_id FROM run_leases") == []  # a finished run holds no lease
    a.update("RUN-1", "run.completed", state="COMPLETED")  # terminal runs take anyone's writes (REST calls)


def test_a_restarted_replica_reclaims_at_once_and_a_stopping_one_hands_over(db, runs_dir):
    a, b = _stores(db, runs_dir, lease_s=60)
    a.create(_record("RUN-1"), RunDirectory(runs_dir, "PROJ-1", "RUN-1"), actor="t")
    again = RunStore(runs_dir, db, owner="replica-a", lease_s=60)  # same id after a crash
    assert again.claim("RUN-1")
    assert not b.claim("RUN-1")
    again.release_leases()
    assert [r.run_id for r in b.orphaned()] == ["RUN-1"] and b.claim("RUN-1")
