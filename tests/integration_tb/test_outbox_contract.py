"""What the dispatcher relies on from any smvm.outbox.Outbox. Every implementation is run through it:
MemoryOutbox and the run store's durable SqlOutbox (SQLite here; tests/store runs it on PostgreSQL too)."""

from __future__ import annotations

import threading

import pytest

from services.orchestrator.callbacks import payloads
from services.orchestrator.callbacks.memory_outbox import MemoryOutbox
from smvm.outbox import DEAD, DELIVERED, PENDING

def _sql_outbox(tmp_path):
    from smvm.db.database import open_database
    from smvm.db.migrations import migrate
    from smvm.db.outbox import SqlOutbox

    db = open_database(f"sqlite:///{tmp_path / 'smvm.db'}")
    migrate(db)
    return SqlOutbox(db)


IMPLEMENTATIONS = {"memory": lambda tmp_path: MemoryOutbox(), "sql": _sql_outbox}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def outbox(request, tmp_path):
    return IMPLEMENTATIONS[request.param](tmp_path)


def _message(event_id: str, run_id: str = "RUN-C-1", at: float = 100.0):
    return payloads.message("validation.update", run_id, "http://tb.example.com/cb/validation/update",
                            {"event": event_id, "nested": {"list": [1, 2.5, "x"]}}, event_id=event_id, now=at)


def test_claims_are_due_oldest_first_limited_and_leased(outbox):
    outbox.enqueue([_message("b", at=102), _message("a", at=101), _message("c", at=103)])
    assert [m.event_id for m in outbox.claim_due(now=200, limit=2, lease_s=10)] == ["a", "b"]
    assert [m.event_id for m in outbox.claim_due(now=201, limit=10, lease_s=10)] == ["c"]
    assert outbox.claim_due(now=209, limit=10, lease_s=10) == []
    assert sorted(m.event_id for m in outbox.claim_due(now=212, limit=10, lease_s=10)) == ["a", "b", "c"]


def test_nothing_is_claimed_before_its_next_attempt(outbox):
    outbox.enqueue([_message("a", at=500)])
    assert outbox.claim_due(now=499, limit=10, lease_s=1) == []
    assert [m.event_id for m in outbox.claim_due(now=500, limit=10, lease_s=1)] == ["a"]


def test_a_message_round_trips_unchanged(outbox):
    original = _message("a")
    outbox.enqueue([original])
    stored = outbox.get("a")
    assert (stored.event_id, stored.run_id, stored.kind, stored.url, stored.payload, stored.state, stored.attempts) == \
        (original.event_id, original.run_id, original.kind, original.url, original.payload, PENDING, 0)
    assert outbox.get("missing") is None


def test_failures_count_attempts_and_reschedule_or_dead_letter(outbox):
    outbox.enqueue([_message("a")])
    outbox.claim_due(now=200, limit=1, lease_s=30)
    outbox.mark_failed("a", "HTTP 503", next_attempt_at=300)
    failed = outbox.get("a")
    assert (failed.state, failed.attempts, failed.last_error, failed.next_attempt_at) == (PENDING, 1, "HTTP 503", 300)
    # A reschedule ends the lease: due again at 300, not at the lease's end (230).
    assert outbox.claim_due(now=299, limit=1, lease_s=30) == []
    assert [m.attempts for m in outbox.claim_due(now=300, limit=1, lease_s=30)] == [1]
    outbox.mark_failed("a", "HTTP 500", next_attempt_at=None)
    dead = outbox.get("a")
    assert (dead.state, dead.attempts, dead.last_error) == (DEAD, 2, "HTTP 500")
    assert outbox.claim_due(now=10_000, limit=10, lease_s=1) == []


def test_delivery_keeps_the_receivers_answer(outbox):
    outbox.enqueue([_message("a")])
    outbox.claim_due(now=200, limit=1, lease_s=30)
    outbox.mark_delivered("a", at=201.5, response='{"reference_id": "TB-1"}')
    done = outbox.get("a")
    assert (done.state, done.delivered_at, done.response) == (DELIVERED, 201.5, '{"reference_id": "TB-1"}')
    assert outbox.claim_due(now=10_000, limit=10, lease_s=1) == []


def test_list_filters_by_state_and_run_newest_first(outbox):
    outbox.enqueue([_message("a", "RUN-1", 1), _message("b", "RUN-2", 2), _message("c", "RUN-1", 3)])
    outbox.claim_due(now=10, limit=10, lease_s=1)
    outbox.mark_failed("b", "x", None)
    assert [m.event_id for m in outbox.list()] == ["c", "b", "a"]
    assert [m.event_id for m in outbox.list(run_id="RUN-1")] == ["c", "a"]
    assert [m.event_id for m in outbox.list(state=DEAD)] == ["b"]
    assert [m.event_id for m in outbox.list(state=PENDING, run_id="RUN-1", limit=1)] == ["c"]


def test_replay_puts_a_dead_or_delivered_message_back_with_attempts_reset(outbox):
    outbox.enqueue([_message("a"), _message("b", at=101)])
    outbox.claim_due(now=200, limit=10, lease_s=30)
    outbox.mark_failed("a", "HTTP 500", None)
    outbox.mark_delivered("b", at=201)
    for event_id in ("a", "b"):
        again = outbox.replay(event_id, now=400)
        assert (again.state, again.attempts) == (PENDING, 0)
    assert sorted(m.event_id for m in outbox.claim_due(now=400, limit=10, lease_s=1)) == ["a", "b"]
    with pytest.raises(KeyError):
        outbox.replay("missing", now=1)


def test_concurrent_claimers_never_get_the_same_message(outbox):
    outbox.enqueue([_message(f"m{i:03d}", at=i) for i in range(200)])
    got: list[list[str]] = [[] for _ in range(4)]

    def claimer(i: int) -> None:
        while batch := outbox.claim_due(now=1_000, limit=7, lease_s=1_000):
            got[i].extend(m.event_id for m in batch)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [e for part in got for e in part]
    assert sorted(every) == [f"m{i:03d}" for i in range(200)] and len(set(every)) == 200


def test_a_breaker_state_round_trips_per_host(outbox):
    assert outbox.load_breaker("tb.example.com") == (0, None)
    outbox.save_breaker("tb.example.com", 3, None, now=10.0)
    outbox.save_breaker("other.example.com", 5, 123.5, now=11.0)
    assert outbox.load_breaker("tb.example.com") == (3, None)
    assert outbox.load_breaker("other.example.com") == (5, 123.5)
    outbox.save_breaker("other.example.com", 0, None, now=12.0)  # closed again: overwritten
    assert outbox.load_breaker("other.example.com") == (0, None)
