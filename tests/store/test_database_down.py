"""PostgreSQL going away: callers get UNAVAILABLE (HTTP 503 at the gateway), and the store reconnects."""

import pytest

from smvm.db import DatabaseUnavailable, open_database
from services.orchestrator.rundir import RunDirectory
from services.orchestrator.store import RunStore

from .test_run_store import _record


def test_a_stopped_server_is_unavailable_and_nothing_committed_is_lost(pg_cluster, pg_url, runs_dir):
    if pg_cluster is None:
        pytest.fail("this test stops the server: it needs the session's own cluster, not SMVM_TEST_DATABASE_URL")
    store = RunStore(runs_dir, open_database(pg_url))
    store.create(_record("RUN-1"), RunDirectory(runs_dir, "PROJ-1", "RUN-1"), actor="t")
    pg_cluster.stop("immediate")
    try:
        with pytest.raises(DatabaseUnavailable) as err:
            store.update("RUN-1", "stage.started", state="RUNNING")
        assert err.value.code == "UNAVAILABLE"
        with pytest.raises(DatabaseUnavailable):
            store.get("RUN-1")
        assert not store.db.ping()
    finally:
        pg_cluster.start()
    assert store.db.ping()
    assert store.get("RUN-1").state == "INITIATED"
    store.update("RUN-1", "stage.started", state="RUNNING")
    assert [e["type"] for e in store.events("RUN-1")] == ["run.initiated", "stage.started"]
