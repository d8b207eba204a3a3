"""TractionBuild's whole flow through the real mesh: submit, poll, results, complete, finalize."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())
T0_EXAMPLE = json.loads((REPO / "examples" / "idea_t0_shape.json").read_text())
EXPECTED_FILES = [
    "meta.json",
    "idea.input.json",
    "events.jsonl",
    "outputs/personas.output.json",
    "outputs/competitors.output.json",
    "outputs/simulation.config.json",
    "outputs/simulation.result.json",
    "outputs/decision.output.json",
    "reports/validation_report.md",
    "reports/validation_summary.json",
]


def _payload(base: dict, **overrides) -> dict:
    payload = copy.deepcopy(base)
    payload["run_id"] = f"RUN-E2E-{uuid.uuid4().hex[:10]}"
    payload.update(overrides)
    return payload


def test_business_idea_travels_every_stage_to_a_decision(client, mesh, wait):
    payload = _payload(EXAMPLE)
    accepted = client.post("/api/v1/validation/runs", json=payload, headers={"X-Correlation-ID": "CORR-e2e-1"})
    assert accepted.status_code == 201, accepted.text
    body = accepted.json()
    assert body["run_id"] == payload["run_id"] and body["status"] == "INITIATED"
    assert body["validation_id"] == f"VAL-{payload['run_id']}"
    assert accepted.headers["X-Correlation-ID"] == "CORR-e2e-1"

    status, seen = wait(client, payload["run_id"])
    assert status["status"] == "DECISION_READY", status
    assert seen[-1] == "DECISION_READY" and set(seen) <= {"INITIATED", "RUNNING", "DECISION_READY"}
    assert status["progress"] == pytest.approx(1.0)
    assert all(v == "completed" for v in status["stage_results"].values()), status["stage_results"]

    results = client.get(f"/api/v1/validation/{payload['run_id']}/results").json()
    decision = results["decision"]
    assert decision["recommendation"] in ("GO", "PIVOT", "KILL")
    assert 0.0 <= decision["confidence"] <= 1.0
    assert {c["name"] for c in decision["criteria"]} and abs(sum(c["weight"] for c in decision["criteria"]) - 1) < 1e-6
    assert results["review"]["verdict"] in ("APPROVE", "ABSTAIN", "VETO")
    assert len(results["personas"]) == 5 and len(results["competitors"]) == 10
    assert results["simulation"]["iterations"] == 1000

    run_dir = Path(status["run_directory"])
    assert run_dir == mesh.settings.runs_dir / payload["project_id"] / "validation" / payload["run_id"]
    for name in EXPECTED_FILES:
        assert (run_dir / name).is_file(), name
    decision_doc = json.loads((run_dir / "outputs/decision.output.json").read_text())
    assert decision_doc["recommendation"] == decision["recommendation"]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run.initiated" and types[-1] == "run.decision_ready"
    completed_stages = [e["payload"]["stage"] for e in events if e["type"] == "stage.completed"]
    assert completed_stages == ["personas", "competitors", "simulation", "analysis", "overwatch"]
    assert all(e["correlation_id"] == "CORR-e2e-1" for e in events)
    # PII never reaches the disk: the initiator's e-mail is masked wherever the idea was stored.
    for name in EXPECTED_FILES:
        assert "founder@example.com" not in (run_dir / name).read_text(), name

    completed = client.put(f"/api/v1/validation/{payload['run_id']}/complete", json={"results": {"reviewed": True}})
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"]["status"] == "COMPLETED"
    again = client.put(f"/api/v1/validation/{payload['run_id']}/complete", json={"results": {"reviewed": True}})
    assert again.status_code == 200
    conflict = client.put(f"/api/v1/validation/{payload['run_id']}/complete", json={"results": {"reviewed": False}})
    assert conflict.status_code == 409

    final = client.post(f"/api/v1/validation/{payload['run_id']}/finalize", json={})
    assert final.status_code == 200, final.text
    final_body = final.json()
    expected = "GO" if decision["recommendation"] in ("GO", "PIVOT") and results["review"]["verdict"] == "APPROVE" else "NO_GO"
    assert final_body["go_no_go"] == expected
    assert client.post(f"/api/v1/validation/{payload['run_id']}/finalize", json={}).json()["go_no_go"] == expected
    assert (run_dir / "outputs/finalization.json").is_file()


def test_the_t0_idea_shape_is_accepted_too(client, wait):
    payload = _payload(T0_EXAMPLE)
    accepted = client.post("/api/v1/validation/runs", json=payload)
    assert accepted.status_code == 201, accepted.text
    status, _ = wait(client, payload["run_id"])
    assert status["status"] == "DECISION_READY", status
    results = client.get(f"/api/v1/validation/{payload['run_id']}/results").json()
    assert results["idea"]["source_shape"] == "idea"
    assert "john.doe@company.com" not in json.dumps(results)


def test_same_seed_gives_the_same_simulation_and_decision(client, wait):
    runs = []
    for _ in range(2):
        payload = _payload(EXAMPLE)
        payload["configuration"] = dict(payload["configuration"], seed=424242, simulation_iterations=300)
        assert client.post("/api/v1/validation/runs", json=payload).status_code == 201
        status, _ = wait(client, payload["run_id"])
        assert status["status"] == "DECISION_READY", status
        runs.append(Path(status["run_directory"]))
    first, second = (json.loads((r / "outputs/simulation.result.json").read_text()) for r in runs)
    first.pop("kernel_seconds", None), second.pop("kernel_seconds", None)
    assert first == second
    d1, d2 = (json.loads((r / "outputs/decision.output.json").read_text())["decision"] for r in runs)
    # Memory of earlier runs differs by design: the second run's project history holds the first. It is
    # a re-run of the same idea, so no precedent (the risks stay equal); all else is the seed's to decide.
    m1, m2 = d1.pop("memory"), d2.pop("memory")
    assert m1["status"] == m2["status"] == "used"
    assert m2["decision_history"][-1]["run_id"] == runs[0].name and runs[0].name in m2["evidence"][-1]
    assert "precedents" not in m2 and "precedent_risk" not in m2
    assert d1 == d2


def test_a_different_seed_changes_the_simulation(client, wait):
    results = []
    for seed in (1, 2):
        payload = _payload(EXAMPLE)
        payload["configuration"] = dict(payload["configuration"], seed=seed, simulation_iterations=300)
        client.post("/api/v1/validation/runs", json=payload)
        status, _ = wait(client, payload["run_id"])
        results.append(json.loads((Path(status["run_directory"]) / "outputs/simulation.result.json").read_text()))
    assert results[0]["month_stats"] != results[1]["month_stats"]


def test_invalid_idea_is_a_400_naming_the_field_and_stores_nothing(client, mesh, wait):
    payload = _payload(EXAMPLE)
    del payload["business_idea"]["title"]
    response = client.post("/api/v1/validation/runs", json=payload)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details", "run_id"}
    assert body["details"]["field"] == "business_idea.title"
    assert not (mesh.settings.runs_dir / payload["project_id"] / "validation" / payload["run_id"]).exists()

    payload = _payload(EXAMPLE)
    payload["business_idea"]["estimated_som"] = payload["business_idea"]["estimated_sam"] * 2
    response = client.post("/api/v1/validation/runs", json=payload)
    assert response.status_code == 400 and response.json()["details"]["field"].startswith("business_idea.estimated_s")


def test_resubmission_replays_and_a_different_body_under_the_same_run_id_conflicts(client, wait):
    payload = _payload(EXAMPLE)
    first = client.post("/api/v1/validation/runs", json=payload)
    assert first.status_code == 201
    replay = client.post("/api/v1/validation/runs", json=payload)
    assert replay.status_code in (200, 201) and replay.json()["run_id"] == payload["run_id"]
    changed = copy.deepcopy(payload)
    changed["business_idea"]["title"] = "Something else entirely"
    conflict = client.post("/api/v1/validation/runs", json=changed)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"]
    wait(client, payload["run_id"])


def test_unknown_runs_are_404_and_unsafe_ids_400(client, wait):
    assert client.get("/api/v1/validation/RUN-does-not-exist/status").status_code == 404
    assert client.get("/api/v1/validation/..%2F..%2Fetc/status").status_code in (400, 404)
    assert client.get("/api/v1/validation/a..b/results").status_code == 400


def test_requests_without_a_valid_token_are_401(mesh):
    import httpx

    response = httpx.get(f"{mesh.gateway_url}/api/v1/validation/runs")
    assert response.status_code == 401
    response = httpx.get(f"{mesh.gateway_url}/api/v1/validation/runs", headers={"Authorization": "Bearer dev-admin-token"})
    assert response.status_code == 401  # the dev token is not accepted outside the dev profile


def test_list_runs_filters_by_project(client, wait):
    payload = _payload(EXAMPLE, project_id=f"PROJ-LIST-{uuid.uuid4().hex[:6]}")
    client.post("/api/v1/validation/runs", json=payload)
    listed = client.get("/api/v1/validation/runs", params={"project_id": payload["project_id"]}).json()
    assert [r["run_id"] for r in listed["runs"]] == [payload["run_id"]]
    wait(client, payload["run_id"])
