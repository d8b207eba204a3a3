"""The gateway's part of Idempotency-Key (the header to the orchestrator, scoped by token), the guide's
default rate limits, and /metrics. The key store itself is the orchestrator's: tests/orchestrator and,
through two real gateway processes, tests/integration_tb/test_idempotency_replicas.py."""

from __future__ import annotations

import copy

import httpx
import pytest
from hypothesis import given, strategies as st

from smvm.config import Settings
from smvm.errors import InvalidArgument
from smvm.v1 import run_pb2

from services.gateway.ratelimit import GUIDE_LIMITS_PER_MINUTE, per_replica


async def test_the_key_goes_to_the_orchestrator_scoped_by_token_and_its_replay_is_marked(client, upstream, business_idea):
    headers = {"Idempotency-Key": "order-1"}
    first = await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)
    again = await client.post("/api/v1/validation/runs", json=business_idea,
                              headers={**headers, "X-Correlation-ID": "CORR-retry-2"})
    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers and first.json()["replayed"] is False
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["replayed"] is True
    assert {k: v for k, v in again.json().items() if k != "replayed"} == \
        {k: v for k, v in first.json().items() if k != "replayed"}
    sent = [c.request for c in upstream.fake.calls]
    assert [r.idempotency_key for r in sent] == ["order-1", "order-1"]
    assert sent[0].idempotency_scope == sent[1].idempotency_scope
    # The scope is a digest of the token, never the token itself.
    assert len(sent[0].idempotency_scope) == 16 and "gateway-test-token" not in sent[0].idempotency_scope
    without = await client.post("/api/v1/validation/runs", json=dict(business_idea, run_id="RUN-T-NOKEY"))
    assert without.status_code == 201
    assert upstream.fake.calls[-1].request.idempotency_key == upstream.fake.calls[-1].request.idempotency_scope == ""


async def test_a_key_reused_with_a_different_run_id_is_409_naming_the_header(client, upstream, business_idea):
    headers = {"Idempotency-Key": "order-2"}
    assert (await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)).status_code == 201
    other = copy.deepcopy(business_idea)
    other["run_id"] = "RUN-T-OTHER"
    conflict = await client.post("/api/v1/validation/runs", json=other, headers=headers)
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["error"] == "ALREADY_EXISTS"
    assert (body["details"]["field"], body["details"]["reason"]) == ("Idempotency-Key", "IDEMPOTENCY_KEY_REUSED")
    assert body["run_id"] == business_idea["run_id"]  # the run the key stands for, not the one asked for
    assert "RUN-T-OTHER" not in upstream.fake.runs  # nothing was started for the conflicting request


async def test_keys_belong_to_one_token(make_client, upstream, business_idea):
    settings = Settings(profile="test", api_tokens="a,b")
    a = make_client(settings, headers={"Authorization": "Bearer a"}, rate_limits_per_minute={})
    b = make_client(settings, headers={"Authorization": "Bearer b"}, rate_limits_per_minute={})
    other = copy.deepcopy(business_idea)
    other["run_id"] = "RUN-T-B"
    assert (await a.post("/api/v1/validation/runs", json=business_idea, headers={"Idempotency-Key": "k"})).status_code == 201
    assert (await b.post("/api/v1/validation/runs", json=other, headers={"Idempotency-Key": "k"})).status_code == 201
    scopes = {c.request.idempotency_scope for c in upstream.fake.calls}
    assert len(scopes) == 2


async def test_a_failed_request_is_not_remembered_so_a_corrected_retry_may_reuse_the_key(client, upstream, business_idea):
    upstream.fake.failures["SubmitRun"] = InvalidArgument("business_idea.title", "must not be empty")
    headers = {"Idempotency-Key": "order-3"}
    assert (await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)).status_code == 400
    del upstream.fake.failures["SubmitRun"]
    fixed = await client.post("/api/v1/validation/runs", json=business_idea, headers=headers)
    assert fixed.status_code == 201 and fixed.json()["replayed"] is False


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\there"])
async def test_a_malformed_key_is_400_naming_the_header_and_reaches_no_service(client, upstream, business_idea, key):
    response = await client.post("/api/v1/validation/runs", json=business_idea, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    details = response.json()["details"]
    assert (details["field"], details["reason"]) == ("Idempotency-Key", "INVALID_FIELD")
    assert upstream.fake.calls == []


async def test_the_key_fields_cannot_be_sent_in_the_body(client, upstream, business_idea):
    response = await client.post("/api/v1/validation/runs", json=dict(business_idea, idempotency_scope="someone-else"))
    assert response.status_code == 400 and response.json()["details"]["field"] == "idempotency_scope"
    assert upstream.fake.calls == []


def test_the_ttl_is_at_least_a_day():
    assert Settings(profile="test").idempotency_ttl_s >= 24 * 3600
    with pytest.raises(ValueError, match="idempotency_ttl_s"):
        Settings(profile="test", idempotency_ttl_s=3600)


async def test_default_limits_are_the_guides_per_token(make_client, upstream):
    assert {k: GUIDE_LIMITS_PER_MINUTE[k] for k in ("runs", "status", "results", "complete", "finalize")} == {
        "runs": 100, "status": 1000, "results": 100, "complete": 50, "finalize": 20}
    upstream.fake.states["RUN-1"] = run_pb2.RUN_STATE_DECISION_READY
    limited = make_client()  # no override: the guide's limits
    codes = [(await limited.post("/api/v1/validation/RUN-1/finalize")).status_code for _ in range(21)]
    assert codes == [200] * 20 + [429]


@pytest.mark.parametrize("replicas, expected", [
    (1, {"runs": 100, "status": 1000, "results": 100, "complete": 50, "finalize": 20}),
    (2, {"runs": 50, "status": 500, "results": 50, "complete": 25, "finalize": 10}),
    (3, {"runs": 34, "status": 334, "results": 34, "complete": 17, "finalize": 7}),
    (8, {"runs": 13, "status": 125, "results": 13, "complete": 7, "finalize": 3}),
])
def test_each_replica_enforces_its_share_of_the_guides_limits_rounded_up(replicas, expected):
    shares = per_replica(GUIDE_LIMITS_PER_MINUTE, replicas)
    assert {k: shares[k] for k in expected} == expected
    assert per_replica({"status": 0}, 4) == {"status": 0}  # no limit stays no limit


@given(st.integers(1, 100_000), st.integers(1, 64))
def test_replicas_together_allow_the_limit_and_less_than_one_request_per_replica_more(limit, replicas):
    share = per_replica({"runs": limit}, replicas)["runs"]
    assert share * replicas >= limit > (share - 1) * replicas


async def test_a_gateway_told_it_is_one_of_two_refuses_past_half_and_says_so(make_client, upstream):
    upstream.fake.states["RUN-1"] = run_pb2.RUN_STATE_DECISION_READY
    limited = make_client(Settings(profile="test", api_tokens="gateway-test-token", rate_limit_replicas=2))
    codes = [(await limited.post("/api/v1/validation/RUN-1/finalize")).status_code for _ in range(11)]
    assert codes == [200] * 10 + [429]
    refused = await limited.post("/api/v1/validation/RUN-1/finalize")
    assert refused.json()["message"] == (
        "rate limit of 20 requests/minute for finalize (10/minute on each of 2 gateway replicas) exceeded")
    with pytest.raises(ValueError, match="rate_limit_replicas"):
        Settings(profile="test", rate_limit_replicas=0)


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
