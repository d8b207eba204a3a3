"""Idempotency-Key across gateway replicas: two gateway processes over one orchestrator (as with the
k8s HPA's 2-8 gateway pods), a retry landing on the other replica, a gateway restart in between, and
both replicas racing on one key. The key's answer is the orchestrator's, in its database."""

from __future__ import annotations

import copy
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import TOKEN
from mesh_flow import EXAMPLE, deliveries, wait_status, wait_until
from smvm.launcher import free_port

pytestmark = pytest.mark.e2e
RUNS = "/api/v1/validation/runs"


@pytest.fixture(scope="module")
def replica(mesh):
    """A second gateway process over the mesh's orchestrator, and a client of it."""
    address = f"127.0.0.1:{free_port()}"
    mesh.start_extra("gateway-2", "gateway", address)
    with httpx.Client(base_url=f"http://{address}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def _payload(tb, project_id: str) -> dict:
    payload = copy.deepcopy(EXAMPLE)
    payload.pop("run_id", None)  # the orchestrator picks the run_id: only the key ties the retries together
    payload["project_id"] = project_id
    payload["configuration"].update({"seed": 11, "simulation_iterations": 500})
    payload["metadata"]["callback_url"] = tb.callback_url
    return payload


def _runs_of(api, project_id: str) -> list[str]:
    response = api.get(RUNS, params={"project_id": project_id})
    assert response.status_code == 200, response.text
    return [r["run_id"] for r in response.json()["runs"]]


def _updates(tb, run_id: str) -> list[dict]:
    """The run's updates as sent, one per event id (a redelivery of one event is not a second update)."""
    by_event = {d["event_id"]: d["payload"] for d in tb.state.deliveries
                if d["path"] == "update" and d["payload"]["run_id"] == run_id}
    return sorted(by_event.values(), key=lambda u: u["sequence"])


def _without_replayed(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "replayed"}


def test_a_retry_on_another_replica_and_after_its_restart_replays_the_first_answer(api, replica, tb, mesh):
    project = f"PROJ-IK-{uuid.uuid4().hex[:8]}"
    payload = _payload(tb, project)
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}

    first = api.post(RUNS, json=payload, headers=key)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers and first.json()["replayed"] is False
    run_id = first.json()["run_id"]

    # The retry lands on the other replica, with a new correlation id (which does not count).
    retry = replica.post(RUNS, json=payload, headers={**key, "X-Correlation-ID": "CORR-retry-other-replica"})
    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true" and retry.json()["replayed"] is True
    assert _without_replayed(retry.json()) == _without_replayed(first.json())
    assert retry.headers["Location"] == first.headers["Location"] == f"/api/v1/validation/{run_id}/status"

    # A restart of that replica forgets nothing: the answers were never its own.
    assert mesh.kill("gateway-2") != 0
    mesh.restart("gateway-2")
    after_restart = replica.post(RUNS, json=payload, headers=key)
    assert after_restart.status_code == 201 and after_restart.headers["Idempotent-Replayed"] == "true"
    assert _without_replayed(after_restart.json()) == _without_replayed(first.json())

    # The same key with another request is a 409 naming the key and the key's run, on either replica.
    changed = copy.deepcopy(payload)
    changed["business_idea"]["title"] = "Something else entirely"
    for client in (replica, api):
        conflict = client.post(RUNS, json=changed, headers=key)
        assert conflict.status_code == 409, conflict.text
        body = conflict.json()
        assert body["error"] == "ALREADY_EXISTS" and body["run_id"] == run_id
        assert (body["details"]["field"], body["details"]["reason"]) == ("Idempotency-Key", "IDEMPOTENCY_KEY_REUSED")

    # One run, and one INITIATED callback for it, however many times it was asked for.
    assert _runs_of(api, project) == [run_id]
    wait_until(lambda: any(u["status"] == "INITIATED" for u in tb.state.updates_for(run_id)), what="INITIATED update")
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    assert [u["status"] for u in _updates(tb, run_id)].count("INITIATED") == 1

    # PUT /complete and POST /finalize retried on the other replica answer as the first time did.
    results = {"results": {"reviewed": True, "pilot_customers": 3}}
    completed = api.put(f"/api/v1/validation/{run_id}/complete", json=results)
    completed_again = replica.put(f"/api/v1/validation/{run_id}/complete", json=results)
    assert completed.status_code == completed_again.status_code == 200, completed_again.text
    assert completed_again.json() == completed.json() and completed.json()["status"]["status"] == "COMPLETED"
    other_results = replica.put(f"/api/v1/validation/{run_id}/complete", json={"results": {"reviewed": False}})
    assert other_results.status_code == 409 and other_results.json()["details"]["reason"] == "ALREADY_COMPLETED"
    finalized = api.post(f"/api/v1/validation/{run_id}/finalize")
    finalized_again = replica.post(f"/api/v1/validation/{run_id}/finalize")
    assert finalized.status_code == finalized_again.status_code == 200, finalized_again.text
    assert finalized_again.json() == finalized.json()
    # One COMPLETED update and one finalization update were sent, not one per request.
    wait_until(lambda: any("finalization" in u for u in tb.state.updates_for(run_id)), what="finalization update")
    wait_until(lambda: all(d["state"] == "delivered" for d in deliveries(api, run_id)), what="all delivered")
    updates = _updates(tb, run_id)
    assert [u["status"] for u in updates].count("COMPLETED") == 2  # the completion and the finalization
    assert sum("finalization" in u for u in updates) == 1


def test_both_replicas_racing_on_one_key_start_one_run(api, replica, tb):
    project = f"PROJ-IK-{uuid.uuid4().hex[:8]}"
    payload = _payload(tb, project)
    key = {"Idempotency-Key": f"race-{uuid.uuid4().hex}"}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda client: client.post(RUNS, json=payload, headers=key), [api, replica] * 2))
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert sorted(a.json()["replayed"] for a in answers) == [False, True, True, True]
    assert _runs_of(api, project) == [answers[0].json()["run_id"]]


def test_an_unkeyed_resubmission_of_the_same_body_is_a_new_run(api, replica, tb):
    project = f"PROJ-IK-{uuid.uuid4().hex[:8]}"
    payload = _payload(tb, project)
    key = {"Idempotency-Key": f"shared-{uuid.uuid4().hex}"}
    ours = api.post(RUNS, json=payload, headers=key)
    # Without a key (and without a run_id) the same body is a new submission, by design.
    unkeyed = replica.post(RUNS, json=payload)
    assert ours.status_code == unkeyed.status_code == 201
    assert unkeyed.json()["run_id"] != ours.json()["run_id"] and unkeyed.json()["replayed"] is False
    assert sorted(_runs_of(api, project)) == sorted([ours.json()["run_id"], unkeyed.json()["run_id"]])
