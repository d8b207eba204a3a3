"""Idempotency-Key answers kept by the gateway, the guide's default rate limits, and /metrics."""

from __future__ import annotations

import copy

import httpx
import pytest

from smvm.config import Settings
from smvm.errors import InvalidArgument
from smvm.v1 import run_pb2

from services.gateway.idempotency import IdempotencyStore, request_digest
from services.gateway.ratelimit import GUIDE_LIMITS_PER_MINUTE


async def test_a_key_replays_the_first_answer_without_calling_the_orchestrator_again(client, upstream, business_idea):
    headers = {"Idempotency-Key": "order-1"}
    first = await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)
    again = await client.post("/api/v1/validation/runs", json=business_idea,
                              headers={**headers, "X-Correlation-ID": "CORR-retry-2"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["replayed"] is True
    assert {k: v for k, v in again.json().items() if k != "replayed"} == \
        {k: v for k, v in first.json().items() if k != "replayed"}
    assert [c.method for c in upstream.fake.calls] == ["SubmitRun"]


async def test_a_key_reused_with_a_different_run_id_is_409_naming_the_header(client, upstream, business_idea):
    headers = {"Idempotency-Key": "order-2"}
    assert (await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)).status_code == 201
    other = copy.deepcopy(business_idea)
    other["run_id"] = "RUN-T-OTHER"
    conflict = await client.post("/api/v1/validation/runs", json=other, headers=headers)
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["details"] == {"field": "Idempotency-Key", "reason": "IDEMPOTENCY_KEY_REUSED"}
    assert body["run_id"] == business_idea["run_id"]
    assert "RUN-T-OTHER" not in upstream.fake.runs  # nothing was started for the conflicting request


async def test_keys_belong_to_one_token(make_client, upstream, business_idea):
    settings = Settings(profile="test", api_tokens="a,b")
    a = make_client(settings, headers={"Authorization": "Bearer a"}, rate_limits_per_minute={})
    b = make_client(settings, headers={"Authorization": "Bearer b"}, rate_limits_per_minute={})
    other = copy.deepcopy(business_idea)
    other["run_id"] = "RUN-T-B"
    assert (await a.post("/api/v1/validation/runs", json=business_idea, headers={"Idempotency-Key": "k"})).status_code == 201
    assert (await b.post("/api/v1/validation/runs", json=other, headers={"Idempotency-Key": "k"})).status_code == 201


async def test_a_failed_request_is_not_remembered_so_a_corrected_retry_may_reuse_the_key(client, upstream, business_idea):
    upstream.fake.failures["SubmitRun"] = InvalidArgument("business_idea.title", "must not be empty")
    headers = {"Idempotency-Key": "order-3"}
    assert (await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)).status_code == 400
    del upstream.fake.failures["SubmitRun"]
    fixed = await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)
    assert fixed.status_code == 201 and fixed.json()["replayed"] is False


def test_answers_are_kept_for_the_ttl_then_forgotten():
    now = [0.0]
    store = IdempotencyStore(ttl_s=86_400, clock=lambda: now[0])
    store.put("tok", "k", "d1", 201, {"run_id": "RUN-1"})
    now[0] = 86_399.0
    assert store.get("tok", "k").body == {"run_id": "RUN-1"}
    now[0] = 86_400.0
    assert store.get("tok", "k") is None
    assert Settings(profile="test").idempotency_ttl_s >= 24 * 3600


def test_the_digest_ignores_correlation_id_and_initiated_at_only():
    base = {"project_id": "P", "metadata": {"initiated_by": "x", "initiated_at": "2026-01-01T00:00:00Z"}}
    same = {"project_id": "P", "metadata": {"initiated_by": "x"}, "correlation_id": "C-2"}
    assert request_digest(base) == request_digest(same)
    assert request_digest(base) != request_digest({"project_id": "P", "metadata": {"initiated_by": "y"}})


async def test_default_limits_are_the_guides_per_token(make_client, upstream):
    assert {k: GUIDE_LIMITS_PER_MINUTE[k] for k in ("runs", "status", "results", "complete", "finalize")} == {
        "runs": 100, "status": 1000, "results": 100, "complete": 50, "finalize": 20}
    upstream.fake.states["RUN-1"] = run_pb2.RUN_STATE_DECISION_READY
    limited = make_client()  # no override: the guide's limits
    codes = [(await limited.post("/api/v1/validation/RUN-1/finalize")).status_code for _ in range(21)]
    assert codes == [200] * 20 + [429]


async def test_metrics_count_requests_by_endpoint_and_status(client, upstream):
    upstream.fake.states["RUN-M"] = run_pb2.RUN_STATE_RUNNING

    def sample(text: str, endpoint: str, status: str) -> float:
        prefix = f'smvm_http_requests_total{{endpoint="{endpoint}",method="GET",status="{status}"}} '
        return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))

    before = (await client.get("/metrics")).text
    assert (await client.get("/api/v1/validation/RUN-M/status")).status_code == 200
    assert (await client.get("/api/v1/validation/RUN-NOPE/status")).status_code == 404
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert sample(after, "status", "200") == sample(before, "status", "200") + 1
    assert sample(after, "status", "404") == sample(before, "status", "404") + 1
    assert 'smvm_http_request_duration_seconds_bucket{endpoint="status",le="0.005",method="GET"}' in after
    # /metrics needs no token (it is scraped from inside the cluster), like the probes.
    async with httpx.AsyncClient(transport=client._transport, base_url="http://gw") as anonymous:  # type: ignore[attr-defined]
        assert (await anonymous.get("/metrics")).status_code == 200
