"""Runs grounded by the memory service, through the real process mesh (gateway, orchestrator, stages,
memory): a run with an imported competitor list is learned (SyncRuns); a similar idea in the same
domain then gets those competitors as learned entries with their provenance, and its decision cites
the first run. With memory stopped a run still decides, and says it went without memory."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path

import grpc
import pytest

from smvm.v1 import memory_service_pb2 as pb, memory_service_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())

pytestmark = pytest.mark.e2e


def _run_dir(mesh, run_id: str) -> Path:
    (found,) = Path(mesh.settings.runs_dir).glob(f"*/validation/{run_id}")
    return found


def _submit(client, wait, payload: dict) -> tuple[dict, dict]:
    accepted = client.post("/api/v1/validation/runs", json=payload)
    assert accepted.status_code == 201, accepted.text
    status, _ = wait(client, payload["run_id"])
    assert status["status"] == "DECISION_READY", status
    results = client.get(f"/api/v1/validation/{payload['run_id']}/results")
    assert results.status_code == 200, results.text
    return status, results.json()


def _events(mesh, run_id: str) -> list[dict]:
    return [json.loads(line) for line in (_run_dir(mesh, run_id) / "events.jsonl").read_text().splitlines()]


def test_a_similar_idea_is_grounded_in_what_the_first_run_taught(mesh, client, wait):
    tag = uuid.uuid4().hex[:8]
    domain = f"ledgers-{tag}"  # a domain of this test's own: the shared mesh's other runs stay out of it
    rivals = [
        {"name": f"Quillbook {tag}", "price_amount": 19, "billing_period": "monthly", "currency": "USD",
         "features": ["invoicing", "budgeting"], "market_share": 0.12, "source": "g2.example"},
        {"name": f"Tallymoor {tag}", "price_amount": 120, "billing_period": "annual", "currency": "USD",
         "features": ["bank account sync"], "source": "founder estimate"},
    ]
    upload = client.post("/api/v1/grounding/imports", json={
        "kind": "competitors", "source_name": "rivals.json", "content": base64.b64encode(json.dumps(rivals).encode()).decode()})
    assert upload.status_code == 201, upload.text
    import_id = upload.json()["import_id"]

    first = copy.deepcopy(EXAMPLE)
    first["project_id"] = f"PROJ-MEM-{tag}"
    first["run_id"] = f"RUN-MEM1-{tag}"
    first["business_idea"].update(domain=domain, grounding_refs=[import_id])
    _, first_results = _submit(client, wait, first)
    assert {c["provenance"] for c in first_results["competitors"]} == {"imported"}

    with grpc.insecure_channel(mesh.addresses["memory"]) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        stub.SyncRuns(pb.SyncRunsRequest(), timeout=30)  # learned now, if the periodic sync has not already
        history = stub.GetDecisionHistory(pb.GetDecisionHistoryRequest(project_id=first["project_id"]), timeout=30)
        assert [d.run_id for d in history.decisions] == [first["run_id"]]
        known = stub.ListKnownCompetitors(pb.ListKnownCompetitorsRequest(domain=domain), timeout=30)
        assert sorted(c.name for c in known.competitors) == sorted(r["name"] for r in rivals)

    second = copy.deepcopy(EXAMPLE)
    second["project_id"] = first["project_id"]
    second["run_id"] = f"RUN-MEM2-{tag}"
    second["business_idea"]["domain"] = domain
    second["business_idea"]["description"] += " It also nudges users to cancel unused subscriptions."
    _, results = _submit(client, wait, second)

    by_name = {c["name"]: c for c in results["competitors"]}
    for row in rivals:
        learned = by_name[row["name"]]
        assert learned["provenance"] == "learned" and not learned.get("synthetic", False)
        assert learned["source"] == f"memory:{first['run_id']}"
        assert learned["learned"]["run_id"] == first["run_id"]
        assert learned["learned"]["source"].startswith(f"import:{import_id[:12]}")
        assert learned["learned"]["last_seen"]
    assert by_name[rivals[0]["name"]]["monthly_price_usd"] == pytest.approx(19.0)
    assert by_name[rivals[1]["name"]]["monthly_price_usd"] == pytest.approx(10.0)
    # learned before synthetic, and the synthetic ones say so
    provenance = [c["provenance"] for c in sorted(results["competitors"], key=lambda c: c["rank"])]
    assert provenance[:2] == ["learned", "learned"] and set(provenance[2:]) == {"synthetic"}
    artifact = json.loads((_run_dir(mesh, second["run_id"]) / "outputs" / "competitors.output.json").read_text())
    assert sorted(c["name"] for c in artifact["competitors"] if c.get("provenance") == "learned") == sorted(
        r["name"] for r in rivals)

    decision = json.loads((_run_dir(mesh, second["run_id"]) / "outputs" / "decision.output.json").read_text())
    memory = decision["decision"]["memory"]
    assert memory["status"] == "used"
    assert [p["run_id"] for p in memory["precedents"]] == [first["run_id"]]
    assert memory["evidence"][0].startswith("1 similar idea decided before: 1 ")
    assert first["run_id"] in memory["evidence"][0] and first["run_id"] in memory["evidence"][1]
    market = next(r for r in decision["decision"]["risks"] if r["category"] == "market")
    assert any(line.startswith("similar ideas' outcomes") for line in market["evidence"])
    grounded = next(e for e in _events(mesh, second["run_id"]) if e["type"] == "memory.grounded")
    assert grounded["payload"]["known_competitors"] == 2 and grounded["payload"]["similar_ideas"] == [first["run_id"]]


def test_with_memory_stopped_a_run_still_decides_and_says_it_went_without(mesh, client, wait):
    assert mesh.kill("memory") == -9
    try:
        payload = copy.deepcopy(EXAMPLE)
        payload["run_id"] = f"RUN-NOMEM-{uuid.uuid4().hex[:8]}"
        status, results = _submit(client, wait, payload)
        assert results["decision"]["recommendation"] in ("GO", "PIVOT", "KILL")
        events = _events(mesh, payload["run_id"])
        (down,) = [e for e in events if e["type"] == "memory.unavailable"]
        assert "UNAVAILABLE" in down["payload"]["error"]
        decision = json.loads((_run_dir(mesh, payload["run_id"]) / "outputs" / "decision.output.json").read_text())
        assert decision["decision"]["memory"]["status"] == "unavailable"
        assert any(w.startswith("memory:unavailable:") for w in decision["decision"]["warnings"])
        assert all(c["provenance"] == "synthetic" for c in results["competitors"])
    finally:
        mesh.restart("memory")
