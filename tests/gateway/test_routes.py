"""The guide's endpoints: both submission shapes, status / results / complete / finalize / list."""

from __future__ import annotations

import copy

from smvm.v1 import run_pb2

ERROR_KEYS = {"error", "message", "details", "run_id"}


async def test_business_idea_shape_becomes_a_submit_call_and_a_201(client, upstream, business_idea, t0_idea):
    response = await client.post("/api/v1/validation/runs", json=business_idea)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["run_id"] == "RUN-T-1" and body["validation_id"] == "VAL-RUN-T-1"
    assert body["status"] == "INITIATED"
    assert body["estimated_completion"] == "2026-11-22T14:35:52Z"
    assert body["validation_results"]["schema_compliance"] == "passed"
    assert body["webhook_urls"]["status_updates"].endswith("/RUN-T-1/status")
    assert body["replayed"] is False
    assert response.headers["Location"] == "/api/v1/validation/RUN-T-1/status"

    (call,) = upstream.fake.calls
    request = call.request
    assert call.method == "SubmitRun"
    assert request.HasField("business_idea") and not request.HasField("idea")
    assert request.business_idea.title == "AI finance coach"
    assert request.business_idea.estimated_som == 45_000_000
    assert list(request.business_idea.features) == ["sync", "budgeting"]
    assert request.business_idea.price.billing_period == "monthly"
    assert request.configuration.max_tokens_per_run == 10000
    # An explicit seed of 0 is a seed, not "absent".
    assert request.configuration.HasField("seed") and request.configuration.seed == 0
    assert request.metadata.initiated_by == "founder@example.com"


async def test_t0_idea_shape_is_accepted_with_its_top_level_callback_and_correlation(client, upstream, business_idea, t0_idea):
    response = await client.post("/api/v1/validation/runs", json=t0_idea)
    assert response.status_code == 201, response.text
    assert response.json()["correlation_id"] == "CORR-20261122-143052-001"
    request = upstream.fake.calls[0].request
    assert request.HasField("idea") and not request.HasField("business_idea")
    assert request.idea.metadata.estimated_market_size == 5_000_000
    assert request.idea.submitter == "john.doe@company.com"
    assert request.callback_url == t0_idea["callback_url"]
    assert request.correlation_id == t0_idea["correlation_id"]


async def test_the_brief_alias_submit_path_behaves_like_runs(client, upstream, business_idea, t0_idea):
    response = await client.post("/api/v1/validation/submit", json=t0_idea)
    assert response.status_code == 201 and response.json()["run_id"] == "RUN-T0-1"


async def test_resubmission_replays_and_a_changed_body_conflicts(client, business_idea, t0_idea):
    first = await client.post("/api/v1/validation/runs", json=business_idea)
    replay = await client.post("/api/v1/validation/runs", json=business_idea)
    assert first.status_code == replay.status_code == 201
    assert replay.json()["replayed"] is True and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["run_id"] == first.json()["run_id"]
    changed = copy.deepcopy(business_idea)
    changed["business_idea"]["title"] = "Something else"
    conflict = await client.post("/api/v1/validation/runs", json=changed)
    assert conflict.status_code == 409
    body = conflict.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == "ALREADY_EXISTS" and body["run_id"] == "RUN-T-1"
    assert body["details"]["reason"] == "RUN_ID_CONFLICT"


async def test_idempotency_key_without_run_id_maps_to_one_stable_run(client, upstream, business_idea, t0_idea):
    payload = {k: v for k, v in business_idea.items() if k != "run_id"}
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/api/v1/validation/runs", json=payload, headers=headers)
    second = await client.post("/api/v1/validation/runs", json=payload, headers=headers)
    other = await client.post("/api/v1/validation/runs", json=payload, headers={"Idempotency-Key": "order-43"})
    assert first.status_code == second.status_code == other.status_code == 201
    # The gateway leaves the run_id to the orchestrator, which answers the key's run again.
    assert [c.request.run_id for c in upstream.fake.calls] == ["", "", ""]
    assert second.json()["run_id"] == first.json()["run_id"] and second.json()["replayed"] is True
    assert other.json()["run_id"] != first.json()["run_id"]
    changed = copy.deepcopy(payload)
    changed["business_idea"]["title"] = "Different"
    assert (await client.post("/api/v1/validation/runs", json=changed, headers=headers)).status_code == 409
    too_long = await client.post("/api/v1/validation/runs", json=payload, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 400 and too_long.json()["details"]["field"] == "Idempotency-Key"


async def test_status_is_flat_with_status_progress_and_short_enum_names(client, upstream):
    upstream.fake.states["RUN-A"] = run_pb2.RUN_STATE_RUNNING
    response = await client.get("/api/v1/validation/RUN-A/status")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "RUNNING" and "state" not in body
    assert body["progress"] == 0.5 and body["current_stage"] == "simulation"
    assert body["stage_results"] == {"ingestion": "completed", "simulation": "in_progress"}
    assert body["created_at"] == "2026-11-22T14:30:52Z"
    # Fields without presence are printed even when empty, so clients can rely on them.
    assert body["error"] == "" and body["recommendation"] == ""
    # A validation_id reaches the orchestrator unchanged (it resolves it).
    assert (await client.get("/api/v1/validation/VAL-RUN-A/status")).json()["run_id"] == "RUN-A"
    assert upstream.fake.calls[-1].request.run_id == "VAL-RUN-A"


async def test_results_show_enums_by_short_name_and_stored_results_as_json(client, upstream):
    upstream.fake.states["RUN-B"] = run_pb2.RUN_STATE_RUNNING
    not_ready = await client.get("/api/v1/validation/RUN-B/results")
    assert not_ready.status_code == 409 and not_ready.json()["details"]["reason"] == "NOT_READY"

    upstream.fake.states["RUN-B"] = run_pb2.RUN_STATE_DECISION_READY
    body = (await client.get("/api/v1/validation/RUN-B/results")).json()
    assert body["decision"]["recommendation"] == "GO"
    assert body["review"]["verdict"] == "APPROVE"
    assert body["status"]["status"] == "DECISION_READY"
    assert body["completion_results"] == {"reviewed": True, "score": 3}
    # 64-bit integers stay JSON numbers.
    assert body["simulation"]["utility_evaluations"] == 0 and isinstance(body["simulation"]["seed"], int)


async def test_complete_put_carries_results_and_post_is_an_alias(client, upstream):
    upstream.fake.states["RUN-C"] = run_pb2.RUN_STATE_DECISION_READY
    response = await client.put(
        "/api/v1/validation/RUN-C/complete", json={"results": {"reviewed": True, "notes": ["a"]}, "completed_by": "ops"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"]["status"] == "COMPLETED"
    request = upstream.fake.calls[-1].request
    assert request.run_id == "RUN-C" and request.completed_by == "ops"
    assert dict(request.results)["reviewed"] is True
    assert (await client.post("/api/v1/validation/RUN-C/complete", json={"results": {}})).status_code == 200
    # The path names the run; a body cannot redirect the call to another one.
    smuggled = await client.put("/api/v1/validation/RUN-C/complete", json={"run_id": "RUN-OTHER", "results": {}})
    assert smuggled.status_code == 400 and smuggled.json()["details"]["field"] == "run_id"


async def test_finalize_accepts_an_empty_object_or_no_body(client, upstream):
    upstream.fake.states["RUN-D"] = run_pb2.RUN_STATE_DECISION_READY
    with_body = await client.post("/api/v1/validation/RUN-D/finalize", json={"finalized_by": "ops"})
    without = await client.post("/api/v1/validation/RUN-D/finalize")
    assert with_body.status_code == without.status_code == 200, (with_body.text, without.text)
    body = with_body.json()
    assert body["go_no_go"] == "GO" and body["recommendation"] == "PIVOT" and body["confidence"] == 0.7
    assert body["status"]["status"] == "DECISION_READY"
    assert upstream.fake.calls[-2].request.finalized_by == "ops"
    assert upstream.fake.calls[-1].request.run_id == "RUN-D"


async def test_list_runs_passes_filters_and_checks_them(client, upstream):
    upstream.fake.states["RUN-E"] = run_pb2.RUN_STATE_RUNNING
    response = await client.get("/api/v1/validation/runs", params={"project_id": "PROJ-1", "page_size": 10})
    assert response.status_code == 200
    assert [r["run_id"] for r in response.json()["runs"]] == ["RUN-E"]
    request = upstream.fake.calls[-1].request
    assert request.project_id == "PROJ-1" and request.page_size == 10
    bad = await client.get("/api/v1/validation/runs", params={"page_size": "many"})
    assert bad.status_code == 400 and bad.json()["details"]["field"] == "page_size"
    unsafe = await client.get("/api/v1/validation/runs", params={"project_id": "../etc"})
    assert unsafe.status_code == 400 and unsafe.json()["details"]["field"] == "project_id"


async def test_openapi_documents_both_shapes_and_every_guide_endpoint(client):
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {"post"} <= set(paths["/api/v1/validation/runs"]) and "get" in paths["/api/v1/validation/runs"]
    assert "put" in paths["/api/v1/validation/{run_id}/complete"]
    assert "post" in paths["/api/v1/validation/{run_id}/finalize"]
    submit = spec["components"]["schemas"]["SubmitRunBody"]["properties"]
    assert {"idea", "business_idea", "configuration", "metadata", "callback_url"} <= set(submit)
    status_view = spec["components"]["schemas"]["RunStatusView"]["properties"]
    assert "status" in status_view and "state" not in status_view
