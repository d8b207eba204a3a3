"""Every gRPC status the orchestrator can send, and every local refusal, in the one error body."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio

from smvm import errors as domain
from smvm.launcher import free_port
from smvm.v1 import run_pb2

from services.gateway import app as gateway_app

ERROR_KEYS = {"error", "message", "details", "run_id"}


@pytest.mark.parametrize(
    ("failure", "http", "error"),
    [
        (domain.InvalidArgument("run_id", "bad id"), 400, "INVALID_ARGUMENT"),
        (domain.NotFound("run RUN-X not found"), 404, "NOT_FOUND"),
        (domain.AlreadyExists("exists with different content"), 409, "ALREADY_EXISTS"),
        (domain.FailedPrecondition("not ready", reason="NOT_READY"), 409, "FAILED_PRECONDITION"),
        (domain.ResourceExhausted("budget exceeded", reason="TOKEN_CEILING"), 429, "RESOURCE_EXHAUSTED"),
        (domain.PermissionDenied("not yours"), 403, "PERMISSION_DENIED"),
        (domain.Unauthenticated("who are you"), 401, "UNAUTHENTICATED"),
        (domain.Unavailable("stage simulation at 10.0.0.7:50054 down"), 503, "UNAVAILABLE"),
        (domain.DeadlineExceeded("stage took too long"), 504, "DEADLINE_EXCEEDED"),
        (domain.Cancelled("cancelled"), 500, "INTERNAL"),
        (RuntimeError("secret path /etc/smvm/key leaked"), 500, "INTERNAL"),
    ],
)
async def test_grpc_status_maps_to_the_guides_http_code(client, upstream, failure, http, error):
    upstream.fake.states["RUN-X"] = run_pb2.RUN_STATE_RUNNING
    upstream.fake.failures["GetRunStatus"] = failure
    response = await client.get("/api/v1/validation/RUN-X/status")
    assert response.status_code == http, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == error and body["run_id"] == "RUN-X"
    assert isinstance(body["details"], dict)
    if http >= 500:
        # Nothing from upstream leaks: no addresses, no exception text.
        assert "10.0.0.7" not in response.text and "secret" not in response.text and "RuntimeError" not in response.text
        assert body["details"] == {}
    else:
        assert failure.message in body["message"]
        assert body["details"]["reason"] == failure.reason
    if http == 400:
        assert body["details"]["field"] == "run_id"
    if http == 503:
        assert int(response.headers["Retry-After"]) >= 1


async def test_upstream_field_violations_come_back_with_the_dotted_field(client, upstream, business_idea):
    upstream.fake.failures["SubmitRun"] = domain.InvalidArgument("business_idea.estimated_som", "must not exceed estimated_sam")
    response = await client.post("/api/v1/validation/runs", json=business_idea)
    assert response.status_code == 400
    body = response.json()
    assert body["details"]["field"] == "business_idea.estimated_som"
    assert body["details"]["description"] == "must not exceed estimated_sam"
    assert body["run_id"] == business_idea["run_id"]


@pytest.mark.parametrize(
    ("shape", "path", "value", "field"),
    [
        ("business_idea", ("business_idea", "estimated_tam"), "lots", "business_idea.estimated_tam"),
        ("business_idea", ("business_idea", "features"), ["ok", 7], "business_idea.features[1]"),
        ("business_idea", ("business_idea", "price", "amount"), "free", "business_idea.price.amount"),
        ("business_idea", ("business_idea", "titel"), "typo", "business_idea.titel"),
        ("business_idea", ("configuration", "persona_count"), 2**40, "configuration.persona_count"),
        ("business_idea", ("configuration", "seed"), -1, "configuration.seed"),
        ("business_idea", ("business_idea", "title"), 12, "business_idea.title"),
        ("idea", ("idea", "metadata", "estimated_market_size"), "big", "idea.metadata.estimated_market_size"),
        ("idea", ("idea", "description"), {"text": "x"}, "idea.description"),
        ("idea", ("idea", "metadata", "unknown"), 1, "idea.metadata.unknown"),
        ("idea", ("callback_url",), 5, "callback_url"),
    ],
)
async def test_body_validation_is_a_400_naming_the_field_for_both_shapes(
    client, upstream, business_idea, t0_idea, shape, path, value, field
):
    payload = business_idea if shape == "business_idea" else t0_idea
    target = payload
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    response = await client.post("/api/v1/validation/runs", json=payload)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error"] == "INVALID_ARGUMENT"
    assert body["details"]["field"] == field
    assert body["message"].startswith(field)
    assert body["run_id"] is None or body["run_id"] == payload["run_id"]
    assert upstream.fake.calls == []  # refused before any gRPC call


async def test_undecodable_json_non_object_and_nan_are_400_not_422(client, upstream):
    broken = await client.post(
        "/api/v1/validation/runs", content=b'{"project_id": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["details"]["reason"] == "INVALID_JSON"
    assert broken.json()["details"]["field"] == "body"
    listed = await client.post("/api/v1/validation/runs", json=[1, 2])
    assert listed.status_code == 400 and listed.json()["details"]["field"] == "body"
    nan = await client.post(
        "/api/v1/validation/runs",
        content=b'{"business_idea": {"estimated_tam": NaN}}', headers={"Content-Type": "application/json"},
    )
    assert nan.status_code == 400 and nan.json()["details"]["field"] == "business_idea.estimated_tam"
    assert upstream.fake.calls == []


@pytest.mark.parametrize("bad_id", ["a..b", ".hidden", "x" * 200, "semi;colon"])
async def test_unsafe_path_ids_are_400_before_any_call(client, upstream, bad_id):
    for method, suffix in (("GET", "status"), ("GET", "results"), ("POST", "finalize")):
        response = await client.request(method, f"/api/v1/validation/{bad_id}/{suffix}")
        assert response.status_code == 400, (bad_id, suffix, response.text)
        assert response.json()["details"]["field"] == "run_id"
    assert upstream.fake.calls == []


async def test_traversal_in_the_path_never_reaches_a_route(client, upstream):
    response = await client.get("/api/v1/validation/..%2F..%2Fetc/status")
    assert response.status_code in (400, 404)
    assert set(response.json()) == ERROR_KEYS
    assert upstream.fake.calls == []


async def test_unknown_route_and_wrong_method_use_the_error_body(client):
    missing = await client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and set(missing.json()) == ERROR_KEYS
    wrong = await client.delete("/api/v1/validation/RUN-1/status")
    assert wrong.status_code == 405 and wrong.json()["error"] == "METHOD_NOT_ALLOWED"


async def test_a_slow_orchestrator_is_a_504_at_the_endpoint_deadline(client, upstream, monkeypatch):
    monkeypatch.setitem(gateway_app.TIMEOUTS_S, "status", 0.2)
    upstream.fake.states["RUN-SLOW"] = run_pb2.RUN_STATE_RUNNING
    upstream.fake.delay_s = 2.0
    started = asyncio.get_running_loop().time()
    response = await client.get("/api/v1/validation/RUN-SLOW/status")
    assert response.status_code == 504 and response.json()["error"] == "DEADLINE_EXCEEDED"
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_an_unreachable_orchestrator_is_a_503_without_its_address(make_client):
    address = f"127.0.0.1:{free_port()}"
    channel = aio.insecure_channel(address)
    try:
        client = make_client(channel=channel)
        response = await client.get("/api/v1/validation/RUN-1/status")
        assert response.status_code == 503
        assert response.json()["error"] == "UNAVAILABLE" and address not in response.text
        assert response.headers["Retry-After"] == "1"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
    finally:
        await channel.close()


def test_every_mapped_code_is_a_4xx_or_5xx_and_unknown_codes_are_500():
    from services.gateway.errors import HTTP_STATUS

    assert all(400 <= status < 600 for status in HTTP_STATUS.values())
    assert grpc.StatusCode.UNKNOWN not in HTTP_STATUS and grpc.StatusCode.INTERNAL not in HTTP_STATUS
