"""The SQL outbox against smvm.outbox.Outbox's contract, on both back ends."""

import threading

import pytest

from smvm.db import open_database
from smvm.db.outbox import SqlOutbox
from smvm.outbox import DEAD, DELIVERED, PENDING, Outbox, OutboxMessage


def _message(event_id: str, created_at: float, run_id="RUN-1", next_attempt_at=0.0) -> OutboxMessage:
    return OutboxMessage(event_id=event_id, run_id=run_id, kind="validation.update", url="https://tb.example/hook",
                         payload={"n": created_at, "nested": {"ok": True}}, created_at=created_at,
                         next_attempt_at=next_attempt_at)


@pytest.fixture
def outbox(db) -> SqlOutbox:
    return SqlOutbox(db)


def test_it_implements_the_protocol(outbox):
    box: Outbox = outbox  # the shape the dispatcher codes against
    assert all(callable(getattr(box, name)) for name in
               ("enqueue", "claim_due", "mark_delivered", "mark_failed", "get", "list", "replay"))


def test_due_messages_are_claimed_oldest_first_and_leased(outbox):
    outbox.enqueue([_message("B", 2.0), _message("A", 1.0), _message("LATER", 0.5, next_attempt_at=500.0)])
    claimed = outbox.claim_due(now=100.0, limit=10, lease_s=30.0)
    assert [m.event_id for m in claimed] == ["A", "B"]
    assert claimed[0].payload == {"n": 1.0, "nested": {"ok": True}}
    assert outbox.claim_due(now=110.0, limit=10, lease_s=30.0) == []  # leased to the first caller
    again = outbox.claim_due(now=131.0, limit=1, lease_s=30.0)  # lease ran out without a mark_*
    assert [m.event_id for m in again] == ["A"]


def test_failures_retry_then_dead_letter_and_replay_resets(outbox):
    outbox.enqueue([_message("A", 1.0)])
    outbox.claim_due(now=10.0, limit=1, lease_s=5.0)
    outbox.mark_failed("A", "HTTP 502", next_attempt_at=20.0)
    message = outbox.get("A")
    assert (message.state, message.attempts, message.last_error, message.next_attempt_at) == (PENDING, 1, "HTTP 502", 20.0)
    assert outbox.claim_due(now=19.0, limit=1, lease_s=5.0) == []
    assert [m.event_id for m in outbox.claim_due(now=20.0, limit=1, lease_s=5.0)] == ["A"]
    outbox.mark_failed("A", "HTTP 410", next_attempt_at=None)
    dead = outbox.get("A")
    assert (dead.state, dead.attempts) == (DEAD, 2)
    assert [m.event_id for m in outbox.list(state=DEAD)] == ["A"]
    assert outbox.claim_due(now=1e9, limit=10, lease_s=5.0) == []
    replayed = outbox.replay("A", now=50.0)
    assert (replayed.state, replayed.attempts, replayed.next_attempt_at, replayed.last_error) == (PENDING, 0, 50.0, "")
    assert [m.event_id for m in outbox.claim_due(now=50.0, limit=1, lease_s=5.0)] == ["A"]


def test_delivery_is_recorded_with_the_receivers_answer(outbox):
    outbox.enqueue([_message("A", 1.0)])
    outbox.claim_due(now=10.0, limit=1, lease_s=5.0)
    outbox.mark_delivered("A", at=11.5, response="TB-REF-42")
    message = outbox.get("A")
    assert (message.state, message.delivered_at, message.response, message.attempts) == (DELIVERED, 11.5, "TB-REF-42", 1)
    assert outbox.claim_due(now=1e9, limit=10, lease_s=5.0) == []


def test_listing_is_newest_first_and_filters(outbox):
    outbox.enqueue([_message("A", 1.0, "RUN-1"), _message("B", 2.0, "RUN-2"), _message("C", 3.0, "RUN-1")])
    assert [m.event_id for m in outbox.list()] == ["C", "B", "A"]
    assert [m.event_id for m in outbox.list(run_id="RUN-1")] == ["C", "A"]
    assert [m.event_id for m in outbox.list(limit=1)] == ["C"]
    assert outbox.list(state=DELIVERED) == []


def test_unknown_ids_raise_key_error(outbox):
    assert outbox.get("NOPE") is None
    for call in (lambda: outbox.replay("NOPE", 1.0), lambda: outbox.mark_delivered("NOPE", 1.0),
                 lambda: outbox.mark_failed("NOPE", "x", None)):
        with pytest.raises(KeyError):
            call()


def test_concurrent_dispatchers_never_claim_the_same_message(database_url):
    setup = SqlOutbox(open_database(database_url))
    setup.enqueue([_message(f"M{i:03d}", float(i)) for i in range(120)])
    claims: list[list[str]] = []

    def dispatcher():
        box = SqlOutbox(open_database(database_url))  # its own connection, like another replica
        mine = []
        while batch := box.claim_due(now=1000.0, limit=7, lease_s=600.0):
            mine += [m.event_id for m in batch]
        claims.append(mine)
        box.db.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [e for mine in claims for e in mine]
    assert sorted(everything) == [f"M{i:03d}" for i in range(120)]  # each exactly once
