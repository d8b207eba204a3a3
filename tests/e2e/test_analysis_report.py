"""The analysis report through the real mesh: HTML with charts over REST, PDF and Markdown, run-directory files."""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
from pathlib import Path

import pytest
from pypdf import PdfReader

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())


@pytest.fixture(scope="module")
def decided(client, wait):
    payload = copy.deepcopy(EXAMPLE)
    payload["run_id"] = f"RUN-E2E-{uuid.uuid4().hex[:10]}"
    assert client.post("/api/v1/validation/runs", json=payload).status_code == 201
    status, _ = wait(client, payload["run_id"])
    assert status["status"] == "DECISION_READY", status
    # The chart documents are rendered right after DECISION_READY: until then the report answers 409
    # REPORT_NOT_READY (never a 404 or a 5xx), then 200.
    deadline = time.monotonic() + 60
    while (answer := client.get(f"/api/v1/validation/{payload['run_id']}/report")).status_code == 409:
        assert answer.json()["details"]["reason"] == "REPORT_NOT_READY", answer.text
        assert time.monotonic() < deadline, "the report was never rendered"
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    return payload["run_id"], Path(status["run_directory"])


def test_report_is_served_as_html_with_every_chart(client, decided):
    run_id, _ = decided
    answer = client.get(f"/api/v1/validation/{run_id}/report")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    for chart in ("demand_revenue", "revenue_fan", "adoption", "tornado", "positioning"):
        assert f'id="chart-{chart}"><img' in page, chart
    assert page.count("data:image/png;base64,") == 5
    decision = client.get(f"/api/v1/validation/{run_id}/results").json()["decision"]
    assert f"{decision['composite_score']:.1f}" in page


def test_report_as_pdf_and_markdown_and_files_on_disk(client, decided):
    run_id, run_dir = decided
    pdf = client.get(f"/api/v1/validation/{run_id}/report", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert len(PdfReader(io.BytesIO(pdf.content)).pages) == 6  # summary + 5 charts
    md = client.get(f"/api/v1/validation/{run_id}/report", params={"format": "markdown"})
    assert md.status_code == 200 and md.text.startswith("# Validation report")
    for name in ("reports/validation_report.md", "reports/validation_report.html", "reports/analysis_report.pdf"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "reports/validation_summary.json").read_text())
    analysis = summary["analysis"]
    assert analysis["recommendation"] == summary["recommendation"]
    assert analysis["confidence"] == pytest.approx(analysis["confidence_detail"]["band_share"])
    assert {r["category"] for r in analysis["risks"]} == {"market", "competitive", "execution"}
    assert len(analysis["sensitivity"]) >= 5
    # The market drivers of the tornado were re-simulated by the simulation service (same seed).
    methods = {s["driver"]: s["method"] for s in analysis["sensitivity"]}
    assert {d for d, m in methods.items() if m == "re-simulated"} == {
        "Bass p (innovation)", "Bass q (word of mouth)", "churn", "competitor prices"}
    decision = json.loads((run_dir / "outputs/decision.output.json").read_text())
    assert not any("approximated" in w for w in decision.get("decision", {}).get("warnings", []))
    simulation = json.loads((run_dir / "outputs/simulation.result.json").read_text())
    config = json.loads((run_dir / "outputs/simulation.config.json").read_text())
    # The tornado's 8 swings and the pivots' scenarios (a segment focus for 5 personas; feature parity
    # where our offering trails the competitors' mean), as asked, without their paths in the artifact.
    drivers = [s["swing"]["driver"] for s in simulation["swings"]]
    assert drivers == [s["driver"] for s in config["swings"]] and "SWING_DRIVER_SEGMENT_FOCUS" in drivers
    assert len(drivers) >= 9 and all("monthly_customers_f64" not in s for s in simulation["swings"])


def test_the_gate_does_not_count_synthetic_competitors_and_pivots_are_simulated(client, decided):
    """examples/idea.json without its competitor list: the landscape is the prior's archetypes (and, in a
    session whose memory has learned competitors from earlier runs in the domain, those), and the T0+3 gate
    counts only the grounded ones as identified competitors (the demo imports examples/competitors.csv)."""
    run_id, _ = decided
    results = client.get(f"/api/v1/validation/{run_id}/results").json()
    decision = results["decision"]
    criterion = next(c for c in decision["gate"]["criteria"] if c["name"] == "top_5_competitors_identified")
    count = {p: sum(1 for c in results["competitors"] if c["provenance"] == p) for p in ("imported", "learned", "synthetic")}
    assert count["imported"] == 0 and sum(count.values()) == len(results["competitors"])
    assert criterion["evidence"].endswith(f"0 imported, {count['learned']} learned, {count['synthetic']} synthetic; need 5")
    assert criterion.get("passed", False) is (count["learned"] >= 5)
    if count["learned"] < 5:
        assert decision["gate"]["gate_decision"] in ("hold", "reject")
    for pivot in decision.get("pivot_suggestions", []):
        if pivot.startswith(("segment:", "positioning:")):
            assert "simulated on" in pivot and "not simulated" not in pivot, pivot


def test_report_errors_name_the_problem(client, decided):
    run_id, _ = decided
    bad = client.get(f"/api/v1/validation/{run_id}/report", params={"format": "docx"})
    assert bad.status_code == 400 and "format" in bad.text
    assert client.get("/api/v1/validation/RUN-NOPE-0000/report").status_code == 404
