"""TractionBuild's side of the integration against a real mesh (every service its own process):
callbacks received by the guide's own handler and gate check, alerts, timeouts, a receiver outage,
the results sync with TractionBuild's API down, and the admin surface that lists and replays."""

from __future__ import annotations

import copy
import json

import httpx
import pytest

from conftest import TOKEN
from mesh_flow import (
    EXAMPLE, GO_IDEA, KILL_IDEA, PIVOT_IDEA, complete, deliveries, last_update, submit, wait_status,
    wait_until,
)
from smvm import cli as smvm_cli

pytestmark = pytest.mark.e2e


def test_go_run_updates_every_stage_and_opens_the_gate(api, tb, mesh):
    run_id = submit(api, tb, GO_IDEA, correlation="CORR-tb-go-1")
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    ready = wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), what="DECISION_READY update")
    results = api.get(f"/api/v1/validation/{run_id}/results").json()["decision"]
    assert results["recommendation"] == "GO"
    # The guide's handler read the decision and let the pipeline proceed.
    assert tb.state.pipeline[run_id] == {"blocked": False}
    assert ready["decision"]["recommendation"] == "GO"
    assert ready["decision"]["confidence"] == pytest.approx(results["confidence"])
    assert ready["progress"] == 1.0 and ready["validation_id"] == f"VAL-{run_id}"
    # The guide's gate check still waits: only COMPLETED opens it.
    assert tb.gate(run_id)["can_progress"] is False
    assert tb.gate(run_id)["block_reason"] == "SMVM validation in progress"

    complete(api, run_id)
    complete(api, run_id)  # idempotent: a retried PUT changes nothing and emits nothing
    wait_until(lambda: last_update(tb, run_id, "COMPLETED"), what="COMPLETED update")
    gate = tb.gate(run_id)
    assert gate["can_progress"] is True and gate["recommendation"] == "GO" and gate["block_reason"] is None
    assert gate["confidence"] == pytest.approx(results["confidence"])

    updates = tb.state.updates_for(run_id)
    statuses = [u["status"] for u in updates]
    assert statuses[0] == "INITIATED" and statuses[-2:] == ["DECISION_READY", "COMPLETED"]
    assert statuses.count("COMPLETED") == 1
    assert set(statuses[1:-2]) == {"RUNNING"}
    steps = [u["step_name"] for u in updates if u["status"] == "RUNNING"]
    assert steps == [s for stage in ("personas", "competitors", "simulation", "analysis", "overwatch") for s in (stage, stage)]
    progress = [u["progress"] for u in updates]
    assert progress == sorted(progress)  # in emission order, never backwards
    assert all(u["correlation_id"] == "CORR-tb-go-1" for u in updates)
    received = [d for d in tb.state.deliveries if d["payload"]["run_id"] == run_id]
    assert {d["correlation_id"] for d in received} == {"CORR-tb-go-1"}  # the X-Correlation-ID header too
    assert {d["authorization"] for d in received} == {"Bearer tb-callback-key"}
    assert len({d["event_id"] for d in received}) == len(received)
    assert tb.state.rejected_signatures == 0

    finalized = api.post(f"/api/v1/validation/{run_id}/finalize", json={})
    assert finalized.status_code == 200
    final = wait_until(lambda: [u for u in tb.state.updates_for(run_id) if "finalization" in u], what="finalize update")
    assert final[-1]["finalization"]["go_no_go"] == finalized.json()["go_no_go"]
    # The outbox records every one of them as delivered, with what TractionBuild answered.
    listed = wait_until(lambda: [d for d in deliveries(api, run_id) if d["state"] == "delivered"]
                        if all(d["state"] == "delivered" for d in deliveries(api, run_id)) else None,
                        what="all delivered")
    assert len(listed) == len([d for d in tb.state.deliveries if d["payload"]["run_id"] == run_id])
    assert all(d["response"] == '{"status":"acknowledged"}' for d in listed)


def test_pivot_run_hands_the_critical_success_factors_to_the_pipeline(api, tb):
    run_id = submit(api, tb, PIVOT_IDEA)
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    decision = api.get(f"/api/v1/validation/{run_id}/results").json()["decision"]
    assert decision["recommendation"] == "PIVOT" and decision["critical_success_factors"]
    wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), what="DECISION_READY update")
    assert tb.state.pipeline[run_id] == {"blocked": False, "requirements": decision["critical_success_factors"]}
    complete(api, run_id)
    wait_until(lambda: last_update(tb, run_id, "COMPLETED"), what="COMPLETED update")
    gate = tb.gate(run_id)
    assert gate["can_progress"] is True and gate["requirements"] == decision["critical_success_factors"]


def test_kill_run_blocks_the_pipeline_and_escalates(api, tb):
    run_id = submit(api, tb, KILL_IDEA)
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    assert api.get(f"/api/v1/validation/{run_id}/results").json()["decision"]["recommendation"] == "KILL"
    wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), what="DECISION_READY update")
    assert tb.state.pipeline[run_id] == {"blocked": True, "reason": "SMVM validation resulted in KILL decision"}
    alert = wait_until(lambda: [a for a in tb.state.alerts_for(run_id) if a["alert_type"] == "risk_escalation"],
                       what="risk_escalation alert")[0]
    assert alert["details"]["recommendation"] == "KILL" and alert["validation_id"] == f"VAL-{run_id}"
    complete(api, run_id)
    wait_until(lambda: last_update(tb, run_id, "COMPLETED"), what="COMPLETED update")
    gate = tb.gate(run_id)
    assert gate["can_progress"] is False and gate["block_reason"] == "SMVM validation decision"


def test_a_run_over_its_timeout_ends_timeout_with_a_timeline_slip_and_manual_review(api, tb):
    features = EXAMPLE["business_idea"]["features"] + ["budgeting"]  # a repeat: a data-quality warning
    run_id = submit(api, tb, {"features": features},
                    configuration={"timeout_seconds": 1, "simulation_iterations": 200_000})
    status = wait_status(api, run_id, timeout_s=60)
    assert status["status"] == "TIMEOUT" and status["manual_review_required"] is True
    assert "timeout_seconds=1" in status["error"]
    update = wait_until(lambda: last_update(tb, run_id, "TIMEOUT"), what="TIMEOUT update")
    assert update["manual_review_required"] is True
    slip = wait_until(lambda: [a for a in tb.state.alerts_for(run_id) if a["alert_type"] == "timeline_slip"],
                      what="timeline_slip alert")[0]
    assert slip["severity"] == "critical" and slip["details"]["timeout_seconds"] == 1
    assert tb.gate(run_id)["can_progress"] is False
    quality = wait_until(lambda: [a for a in tb.state.alerts_for(run_id) if a["alert_type"] == "quality_warning"],
                         what="quality_warning alert")[0]
    assert any(w.startswith("features:duplicates_removed") for w in quality["details"]["warnings"])
    # The flag stays on the run's status for TractionBuild's polling too.
    assert api.get(f"/api/v1/validation/VAL-{run_id}/status").json()["manual_review_required"] is True
    # The guide: "partial results returned if available" - the stages that finished, no decision.
    partial = api.get(f"/api/v1/validation/{run_id}/results")
    assert partial.status_code == 200, partial.text
    body = partial.json()
    assert body["status"]["status"] == "TIMEOUT" and body["status"]["manual_review_required"] is True
    assert body.get("decision", {}).get("recommendation") in (None, "", "UNSPECIFIED", "RECOMMENDATION_UNSPECIFIED")
    # What finished before the deadline is there, and nothing else.
    stages = body["status"]["stage_results"]
    assert stages["simulation"] != "completed" and "simulation" not in body
    assert len(body.get("personas", [])) == (5 if stages["personas"] == "completed" else 0)
    assert len(body.get("competitors", [])) == (10 if stages["competitors"] == "completed" else 0)
    assert body["idea"]["title"] == EXAMPLE["business_idea"]["title"]


def test_receiver_down_then_up_loses_nothing_and_keeps_the_order(api, tb, mesh):
    tb.stop()
    try:
        run_id = submit(api, tb, GO_IDEA)
        assert wait_status(api, run_id)["status"] == "DECISION_READY"
        # Everything is still waiting: nothing delivered, nothing dead-lettered.
        waiting = deliveries(api, run_id)
        assert waiting and all(d["state"] == "pending" for d in waiting)
        # The breaker opens and its trials fail (charged to it, not to the messages).
        wait_until(lambda: 'smvm_webhook_deliveries_total{kind="validation.update",outcome="trial_failed"}'
                   in httpx.get(mesh.metrics_url, timeout=5).text, timeout_s=20, what="a failed circuit trial")
        assert all(d["state"] == "pending" and d["attempts"] <= 5 for d in deliveries(api, run_id))
    finally:
        tb.start()
    ready = wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), timeout_s=60, what="delivery after outage")
    assert ready["decision"]["recommendation"] == "GO" and tb.state.pipeline[run_id] == {"blocked": False}, ready
    wait_until(lambda: all(d["state"] == "delivered" for d in deliveries(api, run_id)), what="all delivered")
    statuses = [u["status"] for u in tb.state.updates_for(run_id)]
    debug = ([(u["status"], u["step_name"], u["sequence"]) for u in tb.state.updates_for(run_id)],
             [(d["event_id"], d["created_at"], d["state"], d["attempts"], d["kind"]) for d in deliveries(api, run_id)],
             [(d["event_id"], d["received_at"]) for d in tb.state.deliveries if d["payload"]["run_id"] == run_id])
    assert statuses[0] == "INITIATED" and statuses[-1] == "DECISION_READY" and statuses.count("RUNNING") == 10, debug
    assert deliveries(api, run_id, "dead") == []


def test_a_lost_acknowledgement_is_redelivered_and_deduplicated_by_event_id(api, tb):
    duplicates_before = tb.state.duplicates
    tb.state.lose_ack_next = 1  # the first update is processed, but SMVM hears a 500
    run_id = submit(api, tb, PIVOT_IDEA)
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), what="DECISION_READY update")
    wait_until(lambda: all(d["state"] == "delivered" for d in deliveries(api, run_id)), what="all delivered")
    first = min(deliveries(api, run_id), key=lambda d: d["created_at"])
    assert first["attempts"] == 2 and first["payload"]["status"] == "INITIATED"
    # Sent twice, processed once: the receiver dropped the second copy on its webhook-id.
    assert tb.state.duplicates == duplicates_before + 1
    assert tb.state.attempts.count(first["event_id"]) == 2
    ids = [d["event_id"] for d in tb.state.deliveries if d["payload"]["run_id"] == run_id]
    assert len(ids) == len(set(ids)) and ids.count(first["event_id"]) == 1
    # An operator's replay of a delivered message is de-duplicated the same way.
    replayed = api.post(f"/api/v1/admin/deliveries/{first['event_id']}/replay")
    assert replayed.status_code == 200 and replayed.json()["delivery"]["state"] == "pending"
    wait_until(lambda: tb.state.duplicates == duplicates_before + 2, what="replayed duplicate dropped")
    assert [d["event_id"] for d in tb.state.deliveries].count(first["event_id"]) == 1


def test_dead_letters_are_listed_and_replayed_through_the_admin_api(api, tb, mesh, capsys):
    tb.state.fail_next["alert"] = (6, 400, {})  # the receiver refuses the alert 6 times: it dies
    run_id = submit(api, tb, KILL_IDEA)
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    dead = wait_until(lambda: deliveries(api, run_id, "dead"), what="a dead letter")
    assert len(dead) == 1 and dead[0]["kind"] == "validation.alert" and dead[0]["attempts"] == 6
    assert dead[0]["last_error"].startswith("HTTP 400")
    assert not [a for a in tb.state.alerts_for(run_id)]
    # The operator's commands: `smvm deliveries --state dead` lists it, `smvm replay` sends it again.
    cli = ["--url", mesh.gateway_url, "--token", TOKEN]
    assert smvm_cli.main([*cli, "deliveries", "--state", "dead", "--run-id", run_id]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["event_id"] for d in listed["deliveries"]] == [dead[0]["event_id"]] and listed["durable"] is True  # the store's outbox
    assert smvm_cli.main([*cli, "replay", dead[0]["event_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["delivery"]["state"] in ("pending", "delivered")
    wait_until(lambda: tb.state.alerts_for(run_id), what="replayed alert")
    assert tb.state.alerts_for(run_id)[0]["alert_type"] == "risk_escalation"
    assert api.post("/api/v1/admin/deliveries/evt_nope/replay").status_code == 404
    bad = api.get("/api/v1/admin/deliveries", params={"state": "lost"})
    assert bad.status_code == 400


def test_results_sync_survives_tractionbuild_api_down_and_records_the_reference(api, tb, mesh, capsys):
    run_id = submit(api, tb, PIVOT_IDEA)
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    complete(api, run_id)
    tb.stop()
    try:
        answer = api.post("/api/v1/admin/results-sync", json={"run_ids": [run_id]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"] == [{"run_id": run_id, "action": "enqueued", "event_id": f"sync_{run_id}",
                                           "detail": ""}]
        wait_until(lambda: [d for d in deliveries(api, run_id) if d["kind"] == "validation.results"
                            and d["attempts"] >= 2], what="failed sync attempts")
        again = api.post("/api/v1/admin/results-sync", json={"run_ids": [run_id]}).json()["items"][0]
        assert again["action"] == "pending"  # never two sync messages for one run
    finally:
        tb.start()
    wait_until(lambda: run_id in tb.state.persisted, timeout_s=60, what="results persisted")
    payload = tb.state.persisted[run_id]
    [sync_delivery] = [d for d in tb.state.deliveries if d["path"] == "results" and d["payload"]["run_id"] == run_id]
    assert sync_delivery["authorization"] == "Bearer tb-api-key"
    assert payload["project_id"] == EXAMPLE["project_id"]
    assert set(payload["files"]) == {"decision_output", "validation_report", "simulation_results", "personas_output",
                                     "competitors_output", "run_metadata", "events_log"}
    assert payload["files"]["decision_output"]["recommendation"] == "PIVOT"
    run_dir = mesh.settings.runs_dir / EXAMPLE["project_id"] / "validation" / run_id
    persistence = wait_until(lambda: (run_dir / "outputs/persistence.json").exists() and
                             json.loads((run_dir / "outputs/persistence.json").read_text()), what="reference recorded")
    assert persistence["tractionbuild_reference"] == f"TB-REF-{run_id}"
    assert persistence["persistence_status"] == "COMPLETED"
    persisted = wait_until(lambda: [e for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
                                    if e["type"] == "run.persisted"], what="run.persisted event")
    assert [e["payload"]["tractionbuild_reference"] for e in persisted] == [f"TB-REF-{run_id}"]
    # `smvm sync-results RUN` (the on-demand sync) now has nothing to do for it.
    assert smvm_cli.main(["--url", mesh.gateway_url, "--token", TOKEN, "sync-results", run_id]) == 0
    [item] = json.loads(capsys.readouterr().out)["items"]
    assert item["action"] == "skipped" and item["detail"] == "already persisted"


def test_orchestrator_metrics_endpoint_counts_runs_rpcs_and_deliveries(api, tb, mesh):
    run_id = submit(api, tb, PIVOT_IDEA)
    assert wait_status(api, run_id)["status"] == "DECISION_READY"
    wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), what="DECISION_READY update")
    bad = copy.deepcopy(EXAMPLE)
    bad["configuration"]["persona_count"] = 999
    assert api.post("/api/v1/validation/runs", json=bad).status_code == 400
    text = httpx.get(mesh.metrics_url, timeout=5).text
    assert 'smvm_grpc_server_handled_total{code="INVALID_ARGUMENT",method="/smvm.v1.ValidationService/SubmitRun"}' in text
    assert 'smvm_validation_runs_finished_total{outcome="DECISION_READY"}' in text
    assert 'smvm_grpc_server_handled_total{code="OK",method="/smvm.v1.ValidationService/SubmitRun"}' in text
    assert 'smvm_webhook_deliveries_total{kind="validation.update",outcome="delivered"}' in text
    assert "smvm_simulation_utility_evaluations_total" in text and "smvm_validation_run_duration_seconds_bucket" in text


def test_a_run_refused_for_compute_fails_with_a_resource_constraint_alert(api, tb):
    run_id = submit(api, tb, {}, configuration={"simulation_iterations": 10_000_000})
    status = wait_status(api, run_id, timeout_s=60)
    assert status["status"] == "FAILED" and "RESOURCE_EXHAUSTED" in status["error"]
    assert status["manual_review_required"] is False
    failed = wait_until(lambda: last_update(tb, run_id, "FAILED"), what="FAILED update")
    assert failed["stage_results"]["simulation"] == "failed" and "RESOURCE_EXHAUSTED" in failed["error"]
    alert = wait_until(lambda: [a for a in tb.state.alerts_for(run_id) if a["alert_type"] == "resource_constraint"],
                       what="resource_constraint alert")[0]
    assert alert["severity"] == "critical" and alert["details"]["stage"] == "simulation"
    gate = tb.gate(run_id)
    assert gate["can_progress"] is False and gate["block_reason"] == "SMVM validation failed"

