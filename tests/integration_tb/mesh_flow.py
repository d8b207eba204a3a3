"""What the mesh tests of this folder share: the ideas that land on each recommendation and the
steps TractionBuild takes (submit, poll, read the deliveries). The mesh fixtures are in conftest."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

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


def gateway_reaches_orchestrator(api, timeout_s: float = 60) -> None:
    """After an orchestrator restart the gateway's channel reconnects with backoff (until then it
    answers 503, as it should): wait for its readiness, which checks the orchestrator's health."""
    wait_until(lambda: api.get("/readyz").status_code == 200, timeout_s, "the gateway to reach the orchestrator")


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
