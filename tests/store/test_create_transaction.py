"""A run's creation on both back ends: its INITIATED callback and its Idempotency-Key commit with it or not at all."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smvm.errors import AlreadyExists
from smvm.outbox import OutboxMessage
from services.orchestrator.idempotency import IdempotencyKey, IdempotencyKeys
from services.orchestrator.rundir import RunDirectory
from services.orchestrator.store import RunRecord, RunStore


def _record(run_id="RUN-1", digest="digest-1") -> RunRecord:
    return RunRecord(
        run_id=run_id, project_id="PROJ-1", state="INITIATED", created_at="2026-11-22T10:00:00Z",
        updated_at="2026-11-22T10:00:00Z", estimated_completion="2026-11-22T10:02:00Z",
        request_sha256=digest, correlation_id="CORR-1", seed=7, source_shape="business_idea",
        callback_url="https://tb.example", submit_response={"run_id": run_id, "status": "RUN_STATE_INITIATED"},
    )


def _initiated(record: RunRecord) -> list[OutboxMessage]:
    """What the servicer hands create: the update callback built from the new record."""
    return [OutboxMessage(event_id=f"EV-{record.run_id}", run_id=record.run_id, kind="validation.update",
                          url=record.callback_url + "/validation/update",
                          payload={"status": record.state, "run_id": record.run_id}, created_at=1.0)]


@pytest.fixture
def store(db, runs_dir):
    return RunStore(runs_dir, db)


def _create(store, record, **kw):
    store.create(record, RunDirectory(store.root, record.project_id, record.run_id), actor="tester",
                 stage_outputs={"ingestion": b"idea"}, **kw)


def _nothing_of(store, db, run_id):
    with db.reading() as tx:
        counts = [tx.one(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (run_id,))[0]
                  for table in ("runs", "events", "stage_outputs", "outbox", "idempotency_keys")]
    return counts == [0, 0, 0, 0, 0]


def test_a_committed_create_has_its_initiated_callback_built_from_the_new_record(store):
    _create(store, _record(), outbox=_initiated)
    [message] = store.outbox.list(run_id="RUN-1")
    assert message.payload == {"status": "INITIATED", "run_id": "RUN-1"}
    assert store.get("RUN-1").state == "INITIATED"


def test_a_failure_after_the_run_row_is_written_leaves_neither_run_nor_callback(store, db):
    seen_in_transaction = []
    insert_key = store.idempotency.insert

    def crash(tx, key, digest, run_id, answer):  # the transaction's last write, just before commit
        seen_in_transaction.append([tx.one(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (run_id,))[0]
                                    for table in ("runs", "events", "stage_outputs", "outbox")])
        raise RuntimeError("crash before commit")

    store.idempotency.insert = crash
    with pytest.raises(RuntimeError, match="crash before commit"):
        _create(store, _record(), outbox=_initiated, idempotency_key=IdempotencyKey("tok", "k-1"))
    assert seen_in_transaction == [[1, 1, 1, 1]]  # the run and its callback were written, uncommitted
    assert _nothing_of(store, db, "RUN-1")
    assert store.find("RUN-1") is None and store.outbox.list() == []
    # Nothing is left behind to block a retry: the same run and key then commit with their callback.
    store.idempotency.insert = insert_key
    _create(store, _record(), outbox=_initiated, idempotency_key=IdempotencyKey("tok", "k-1"))
    assert [m.event_id for m in store.outbox.list(run_id="RUN-1")] == ["EV-RUN-1"]
    assert store.keyed_answer(IdempotencyKey("tok", "k-1")).run_id == "RUN-1"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["RUN-A", "RUN-B", "RUN-C"]), st.sampled_from(["", "k1", "k2"]),
                          st.booleans()), min_size=1, max_size=8))
def test_every_committed_create_has_exactly_its_initiated_callback_and_key(db, runs_dir, attempts):
    """Creates that succeed, fail on a taken run_id or key, or crash mid-transaction: a run exists
    exactly when its one INITIATED message does, and a key stands for a run that exists."""
    store = RunStore(runs_dir, db)
    with db.transaction() as tx:
        for table in ("runs", "events", "stage_outputs", "outbox", "idempotency_keys", "run_leases"):
            if table != "events":
                tx.execute(f"DELETE FROM {table}")
    seen_events = {e for e in _event_ids(db)}
    for run_id, key, crash in attempts:
        def outbox(record, crash=crash):
            if crash:
                raise RuntimeError("injected")
            return _initiated(record)
        try:
            _create(store, _record(run_id), outbox=outbox,
                    idempotency_key=IdempotencyKey("tok", key) if key else None)
        except (AlreadyExists, RuntimeError):
            pass
    with db.reading() as tx:
        runs = {r[0] for r in tx.all("SELECT run_id FROM runs")}
        keyed = {r[0] for r in tx.all("SELECT run_id FROM idempotency_keys")}
    messages = store.outbox.list(limit=100)
    assert sorted(m.run_id for m in messages) == sorted(runs)
    assert keyed <= runs
    new_events = [e for e in _event_ids(db) if e not in seen_events]
    assert len(new_events) == len(runs)  # one run.initiated per created run, none from failed attempts


def _event_ids(db):
    with db.reading() as tx:
        return [r[0] for r in tx.all("SELECT event_id FROM events")]


def test_a_key_taken_by_another_run_aborts_the_whole_create(store, db):
    key = IdempotencyKey("tok", "order-7")
    _create(store, _record("RUN-1"), outbox=_initiated, idempotency_key=key)
    with pytest.raises(AlreadyExists):  # e.g. another orchestrator replica won the race for the key
        _create(store, _record("RUN-2"), outbox=_initiated, idempotency_key=key)
    assert _nothing_of(store, db, "RUN-2")
    answer = store.keyed_answer(key)
    assert (answer.run_id, answer.digest, answer.answer) == ("RUN-1", "digest-1", _record("RUN-1").submit_response)
    # nor a run directory: the losing replica's create leaves no trace on disk either
    assert not RunDirectory(store.root, "PROJ-1", "RUN-2").path.exists()
    assert RunDirectory(store.root, "PROJ-1", "RUN-1").exists()


def test_a_refused_create_keeps_the_directory_it_did_not_make(store):
    """A run_id conflict: the directory is the existing run's, and stays whole."""
    _create(store, _record("RUN-1"), outbox=_initiated)
    existing = RunDirectory(store.root, "PROJ-1", "RUN-1")
    before = sorted(p.relative_to(existing.path) for p in existing.path.rglob("*"))
    with pytest.raises(AlreadyExists):
        _create(store, _record("RUN-1", digest="other"), outbox=_initiated)
    assert existing.exists() and sorted(p.relative_to(existing.path) for p in existing.path.rglob("*")) == before


def test_a_directory_written_to_meanwhile_is_not_removed(tmp_path):
    """remove_if_empty never takes files with it (another writer's, on a shared volume)."""
    rundir = RunDirectory(tmp_path, "PROJ-1", "RUN-9")
    rundir.create()
    (rundir.outputs / "x.json").write_text("{}")
    rundir.remove_if_empty()
    assert (rundir.outputs / "x.json").exists()
    (rundir.outputs / "x.json").unlink()
    rundir.remove_if_empty()
    assert not rundir.path.exists()


def test_keys_are_per_scope_and_expire_after_the_ttl_then_are_purged(db, runs_dir):
    now = [1_000_000.0]
    store = RunStore(runs_dir, db)
    store.idempotency = IdempotencyKeys(ttl_s=86_400, clock=lambda: now[0])
    _create(store, _record("RUN-1"), idempotency_key=IdempotencyKey("tok-a", "k"))
    _create(store, _record("RUN-2"), idempotency_key=IdempotencyKey("tok-b", "k"))  # another caller's "k"
    assert store.keyed_answer(IdempotencyKey("tok-a", "k")).run_id == "RUN-1"
    assert store.keyed_answer(IdempotencyKey("tok-b", "k")).run_id == "RUN-2"
    now[0] += 86_399
    assert store.keyed_answer(IdempotencyKey("tok-a", "k")) is not None
    assert store.idempotency.purge_expired(db) == 0
    now[0] += 1
    assert store.keyed_answer(IdempotencyKey("tok-a", "k")) is None  # expired: as good as unused
    _create(store, _record("RUN-3"), idempotency_key=IdempotencyKey("tok-a", "k"))  # so it may be used again
    assert store.keyed_answer(IdempotencyKey("tok-a", "k")).run_id == "RUN-3"
    assert store.idempotency.purge_expired(db) == 1  # tok-b's row; tok-a's was replaced at reuse
    with db.reading() as tx:
        assert tx.all("SELECT scope, run_id FROM idempotency_keys") == [("tok-a", "RUN-3")]


def test_a_ttl_under_a_day_is_refused():
    with pytest.raises(ValueError, match="idempotency_ttl_s"):
        IdempotencyKeys(ttl_s=3600)
