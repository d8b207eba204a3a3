"""Callbacks outlive a crash of the orchestrator: its own module, so that the dispatcher's and the
breaker's state start fresh (see the note on issue #7 about a second receiver outage)."""

from __future__ import annotations

import pytest

from mesh_flow import GO_IDEA, deliveries, gateway_reaches_orchestrator, last_update, submit, wait_status, wait_until

pytestmark = pytest.mark.e2e


def test_pending_callbacks_survive_an_orchestrator_crash(api, tb, mesh):
    """The outbox is the store's: callbacks waiting for a receiver that is down outlive kill -9 of
    the orchestrator and are delivered, in order and once each, by the restarted one."""
    tb.stop()
    try:
        run_id = submit(api, tb, GO_IDEA)
        assert wait_status(api, run_id)["status"] == "DECISION_READY"
        waiting = deliveries(api, run_id)
        assert waiting and all(d["state"] == "pending" for d in waiting)
        assert mesh.kill("orchestrator") != 0  # SIGKILL: no drain, no last delivery round
        mesh.restart("orchestrator")
        gateway_reaches_orchestrator(api)
        # Still there after the crash, still pending (the receiver is still down).
        after = deliveries(api, run_id)
        assert [d["event_id"] for d in after] == [d["event_id"] for d in waiting]
    finally:
        tb.start()
    ready = wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), timeout_s=90, what="delivery after the crash")
    assert ready["decision"]["recommendation"] == "GO"
    try:
        wait_until(lambda: all(d["state"] == "delivered" for d in deliveries(api, run_id)), what="all delivered")
    except AssertionError:
        raise AssertionError([(d["kind"], d["state"], d["attempts"], d["payload"].get("status")) for d in deliveries(api, run_id)])
    received = [d["event_id"] for d in tb.state.deliveries if d["payload"]["run_id"] == run_id]
    assert sorted(set(received)) == sorted(d["event_id"] for d in waiting)  # each one arrived, none was lost
    statuses = [u["status"] for u in tb.state.updates_for(run_id)]
    assert statuses[0] == "INITIATED" and statuses[-1] == "DECISION_READY", statuses
