"""Callbacks outlive a crash of the orchestrator: its own module, so that the dispatcher's and the
breaker's state start fresh (see the note on issue #7 about a second receiver outage)."""
from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import SECRET, TOKEN, start_mesh
from smvm import cli as smvm_cli
from tractionbuild_double import TractionBuildDouble

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"}
EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())

# Ideas measured to land on each recommendation with the decision policy as shipped.
GO_IDEA = {"team_coverage": 1.0, "estimated_build_months": 3,
           "price": {"amount": 2.99, "currency": "USD", "billing_period": "monthly"}}
PIVOT_IDEA: dict = {}  # examples/idea.json as it is
KILL_IDEA = {"estimated_tam": 100_000_000, "estimated_sam": 20_000_000, "estimated_som": 500_000,
             "price": {"amount": 49, "currency": "USD", "billing_period": "monthly"},
             "team_coverage": 0.4, "estimated_build_months": 18}


@pytest.fixture(scope="module")
def tb():
    double = TractionBuildDouble(SECRET)
    double.start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def mesh(tb, tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("tbmesh"), tb)
    yield mesh
    codes = mesh.stop()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture(scope="module")
def api(mesh):
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def submit(api, tb, overrides: dict, *, configuration: dict | None = None, correlation: str | None = None) -> str:
    payload = copy.deepcopy(EXAMPLE)
    payload["run_id"] = f"RUN-TB-{uuid.uuid4().hex[:10]}"
    payload["business_idea"].update(overrides)
    # A fixed seed: the recommendation of each idea below is then reproducible (the default seed
    # derives from the run_id, which is new every time).
    payload["configuration"].update({"seed": 11, **(configuration or {})})
    payload["metadata"]["callback_url"] = tb.callback_url
    headers = {"X-Correlation-ID": correlation} if correlation else {}
    response = api.post("/api/v1/validation/runs", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    return payload["run_id"]


def wait_status(api, run_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = api.get(f"/api/v1/validation/{run_id}/status").json()
        if status["status"] in TERMINAL:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def wait_until(condition, timeout_s: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def last_update(tb, run_id: str, status: str) -> dict | None:
    found = [u for u in tb.state.updates_for(run_id) if u["status"] == status]
    return found[-1] if found else None


def deliveries(api, run_id: str, state: str | None = None) -> list[dict]:
    params = {"run_id": run_id, **({"state": state} if state else {})}
    response = api.get("/api/v1/admin/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def complete(api, run_id: str) -> None:
    response = api.put(f"/api/v1/validation/{run_id}/complete", json={"results": {"reviewed": True}})
    assert response.status_code == 200, response.text


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
