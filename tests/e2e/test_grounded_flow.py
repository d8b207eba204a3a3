"""A grounded run through the real mesh: upload a survey and a competitor list over REST, submit an idea
that references them, and find the survey-calibrated personas and the imported competitors in the run.
Uses the session's mesh (conftest.py), so it costs no extra start-up."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import TOKEN

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "grounding"
EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())

pytestmark = pytest.mark.e2e


def _upload(client: httpx.Client, path: Path, kind: str) -> str:
    answer = client.post("/api/v1/grounding/imports", json={
        "kind": kind, "source_name": path.name, "content": base64.b64encode(path.read_bytes()).decode()})
    assert answer.status_code == 201, answer.text
    return answer.json()["import_id"]


def run_dirs_of(settings, run_id: str) -> Path:
    (found,) = Path(settings.runs_dir).glob(f"*/validation/{run_id}")
    return found


def test_a_run_grounded_in_imports(mesh, client):
    settings = mesh.settings
    survey = _upload(client, FIXTURES / "van_westendorp" / "good.csv", "van_westendorp")
    rivals = _upload(client, FIXTURES / "competitors" / "good.json", "competitors")
    payload = copy.deepcopy(EXAMPLE)
    payload["run_id"] = f"RUN-GROUNDED-{uuid.uuid4().hex[:10]}"
    payload["business_idea"]["grounding_refs"] = [survey, rivals]
    accepted = client.post("/api/v1/validation/runs", json=payload)
    assert accepted.status_code == 201, accepted.text

    bad = copy.deepcopy(payload)
    bad["run_id"] += "-X"
    bad["business_idea"]["grounding_refs"] = ["0" * 64]
    refused = client.post("/api/v1/validation/runs", json=bad)
    assert refused.status_code == 400 and refused.json()["details"]["field"] == "business_idea.grounding_refs[0]"

    deadline = time.monotonic() + 120
    while (status := client.get(f"/api/v1/validation/{payload['run_id']}/status").json())["status"] not in (
            "DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["status"] == "DECISION_READY", status
    results = client.get(f"/api/v1/validation/{payload['run_id']}/results").json()

    names = {c["name"] for c in results["competitors"]}
    assert names == {"Acme Books", "FreeLedger", "QuarterCo"}
    assert all(not c["synthetic"] for c in results["competitors"])
    assert all(p["sources"]["wtp"].startswith(f"grounding:{survey[:12]}") for p in results["personas"])

    run_dirs = list(Path(settings.runs_dir).glob(f"*/validation/{payload['run_id']}"))
    assert len(run_dirs) == 1
    idea = json.loads((run_dirs[0] / "idea.input.json").read_text())["idea"]
    assert idea["grounding_refs"] == [survey, rivals]
    assert len(idea["grounding"]["van_westendorp"]) == 41
    text = (run_dirs[0] / "idea.input.json").read_text() + (run_dirs[0] / "outputs" / "personas.output.json").read_text()
    assert "jane.doe@example.com" not in text and "jane@acme.example" not in text
    personas_out = json.loads((run_dirs[0] / "outputs" / "personas.output.json").read_text())
    assert personas_out.get("calibration", {}).get("calibrated") is True, list(personas_out)


def test_the_demo_imports_its_competitor_list_and_the_gate_counts_it(mesh, client):
    """What `smvm demo examples/idea.json --import competitors=examples/competitors.csv` (make run) does,
    through the same client code: the ten real apps are imported, referenced from the idea, and counted by
    the T0+3 gate as identified competitors."""
    from smvm import cli

    demo = cli.Client(mesh.gateway_url, TOKEN)
    payload = copy.deepcopy(EXAMPLE)
    payload["run_id"] = f"RUN-DEMO-{uuid.uuid4().hex[:10]}"
    for kind, path in [cli._import_arg(f"competitors={REPO / 'examples' / 'competitors.csv'}")]:
        answer = demo.import_grounding(path, kind)
        assert answer["report"]["rows_accepted"] == 10 and not answer["report"]["quality_warning"], answer
        cli._reference_import(payload, answer["import_id"])
    assert payload["business_idea"]["grounding_refs"] == [answer["import_id"]]
    demo.submit(payload)
    status = demo.wait(payload["run_id"], timeout_s=120, interval_s=0.1)
    assert status["status"] == "DECISION_READY", status
    results = demo.results(payload["run_id"])
    assert {c["provenance"] for c in results["competitors"]} == {"imported"} and len(results["competitors"]) == 10
    assert "YNAB (You Need A Budget)" in {c["name"] for c in results["competitors"]}
    gate = results["decision"]["gate"]
    criterion = next(c for c in gate["criteria"] if c["name"] == "top_5_competitors_identified")
    assert criterion["passed"] and "10 imported, 0 learned, 0 synthetic; need 5" in criterion["evidence"], criterion
    summary = cli._summarise(results)
    assert f"Gate (T0+3): {gate['gate_decision']}" in summary and "top_5_competitors_identified: pass" in summary


def test_a_poor_import_raises_quality_warning_lowers_confidence_and_overwatch_abstains(mesh, client):
    # market_size/good.csv is usable but poor: 1 of 6 rows rejected and 1 duplicate (> 10 % each).
    sizes = _upload(client, FIXTURES / "market_size" / "good.csv", "market_size")
    payload = copy.deepcopy(EXAMPLE)
    payload["run_id"] = f"RUN-POOR-{uuid.uuid4().hex[:10]}"
    payload["business_idea"]["grounding_refs"] = [sizes]
    assert client.post("/api/v1/validation/runs", json=payload).status_code == 201
    deadline = time.monotonic() + 120
    while (status := client.get(f"/api/v1/validation/{payload['run_id']}/status").json())["status"] not in (
            "DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["status"] == "DECISION_READY", status
    results = client.get(f"/api/v1/validation/{payload['run_id']}/results").json()
    grounding = results["idea"]["grounding"]
    assert grounding["quality_warning"] is True and 0 < grounding["confidence_factor"] < 1
    events = [json.loads(line) for line in (run_dirs_of(mesh.settings, payload["run_id"]) / "events.jsonl").read_text().splitlines()]
    alerts = [e["payload"]["alert"] for e in events if e["type"] == "alert.quality_warning"]
    assert any("grounding import" in a for a in alerts), alerts
    detail = results["decision"]["confidence_detail"]
    assert detail["evidence_adjusted"] <= detail["band_share"] * grounding["confidence_factor"] + 1e-9
    codes = [r["code"] for r in results["review"]["reasons"]]
    assert "input.data_quality" in codes and results["review"]["verdict"] == "ABSTAIN", codes
