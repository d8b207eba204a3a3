"""What surrounds the routes: auth, body limits, correlation ids, probes, rate limits, the process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2

from smvm.launcher import free_port
from smvm.v1 import run_pb2

from services.gateway.ratelimit import RateLimiter

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- auth
@pytest.mark.parametrize(
    ("headers", "www_authenticate"),
    [
        ({}, 'Bearer realm="smvm"'),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 'Bearer realm="smvm"'),
        ({"Authorization": "Bearer "}, 'Bearer realm="smvm"'),
        ({"Authorization": "Bearer wrong-token"}, 'Bearer realm="smvm", error="invalid_token"'),
        ({"Authorization": "Bearer dev-admin-token"}, 'Bearer realm="smvm", error="invalid_token"'),
    ],
)
async def test_missing_or_invalid_tokens_are_401_with_www_authenticate(make_client, upstream, headers, www_authenticate):
    client = make_client(headers=headers)
    for method, path in (("GET", "/api/v1/validation/runs"), ("POST", "/api/v1/validation/runs")):
        response = await client.request(method, path, json={} if method == "POST" else None)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == www_authenticate
        assert response.json()["error"] == "UNAUTHENTICATED"
    assert upstream.fake.calls == []


async def test_token_sources(make_client, upstream):
    from smvm.config import Settings

    upstream.fake.states["RUN-1"] = run_pb2.RUN_STATE_RUNNING
    dev = make_client(Settings(profile="dev", api_tokens=""), headers={"Authorization": "Bearer dev-admin-token"})
    assert (await dev.get("/api/v1/validation/RUN-1/status")).status_code == 200
    several = Settings(profile="prod", api_tokens=" one , two ")
    assert (await make_client(several, headers={"Authorization": "Bearer two"}).get("/api/v1/validation/RUN-1/status")).status_code == 200
    assert (await make_client(several, headers={"Authorization": "Bearer dev-admin-token"}).get("/api/v1/validation/RUN-1/status")).status_code == 401
    anonymous = make_client(several, headers={})
    assert (await anonymous.get("/healthz")).status_code == 200
    assert (await anonymous.get("/readyz")).status_code == 200
    assert (await anonymous.get("/openapi.json")).status_code == 200


# ---------------------------------------------------------------- body limits
async def test_bodies_over_max_request_bytes_are_413(client, upstream, business_idea):
    business_idea["business_idea"]["description"] = "x" * 5000  # settings.max_request_bytes is 4096
    response = await client.post("/api/v1/validation/runs", json=business_idea)
    assert response.status_code == 413
    assert response.json()["error"] == "PAYLOAD_TOO_LARGE" and response.json()["details"]["max_bytes"] == 4096

    async def chunks():  # no Content-Length: counted on the wire
        for _ in range(10):
            yield b" " * 1000

    chunked = await client.post("/api/v1/validation/runs", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert upstream.fake.calls == []


async def test_a_body_just_under_the_limit_passes(client, upstream, business_idea):
    import json

    business_idea["business_idea"]["description"] = ""
    base = len(json.dumps(business_idea).encode())
    business_idea["business_idea"]["description"] = "x" * (4096 - base)
    assert len(json.dumps(business_idea).encode()) == 4096
    response = await client.post("/api/v1/validation/runs", content=json.dumps(business_idea), headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_bodies_are_415(client, upstream, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    request = client.build_request("POST", "/api/v1/validation/runs", content=b'{"project_id": "P"}', headers=headers)
    assert content_type is None or request.headers["Content-Type"] == content_type
    response = await client.send(request)
    assert response.status_code == 415
    assert response.json()["error"] == "UNSUPPORTED_MEDIA_TYPE" and response.json()["details"]["field"] == "Content-Type"
    assert upstream.fake.calls == []


async def test_json_with_charset_and_vendor_json_types_are_accepted(client, business_idea):
    import json

    for content_type in ("application/json; charset=utf-8", "application/vnd.smvm+json"):
        business_idea["run_id"] = "RUN-CT-" + str(abs(hash(content_type)) % 1000)
        response = await client.post(
            "/api/v1/validation/runs", content=json.dumps(business_idea), headers={"Content-Type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)


# ---------------------------------------------------------------- correlation ids
async def test_correlation_id_travels_to_grpc_and_back(client, upstream):
    upstream.fake.states["RUN-1"] = run_pb2.RUN_STATE_RUNNING
    response = await client.get("/api/v1/validation/RUN-1/status", headers={"X-Correlation-ID": "CORR-abc.1:2"})
    assert response.headers["X-Correlation-ID"] == "CORR-abc.1:2"
    assert upstream.fake.calls[-1].metadata["x-correlation-id"] == "CORR-abc.1:2"

    generated = await client.get("/api/v1/validation/RUN-1/status")
    cid = generated.headers["X-Correlation-ID"]
    assert len(cid) == 32 and upstream.fake.calls[-1].metadata["x-correlation-id"] == cid

    # An id that is not safe to log is replaced, not echoed.
    hostile = await client.get("/api/v1/validation/RUN-1/status", headers={"X-Correlation-ID": "a b\tc"})
    assert hostile.headers["X-Correlation-ID"] != "a b\tc"
    assert upstream.fake.calls[-1].metadata["x-correlation-id"] == hostile.headers["X-Correlation-ID"]


async def test_correlation_id_is_echoed_on_every_kind_of_answer(make_client, client):
    anonymous = make_client(headers={})
    answers = [
        await anonymous.get("/api/v1/validation/runs", headers={"X-Correlation-ID": "c-401"}),
        await client.get("/api/v1/validation/a..b/status", headers={"X-Correlation-ID": "c-400"}),
        await client.get("/nope", headers={"X-Correlation-ID": "c-404"}),
        await client.post("/api/v1/validation/runs", content=b"x", headers={"X-Correlation-ID": "c-415", "Content-Type": "text/plain"}),
        await client.get("/healthz", headers={"X-Correlation-ID": "c-200"}),
    ]
    assert [r.headers["X-Correlation-ID"] for r in answers] == ["c-401", "c-400", "c-404", "c-415", "c-200"]


# ---------------------------------------------------------------- probes
async def test_readyz_follows_the_orchestrators_health(client, upstream):
    assert (await client.get("/readyz")).status_code == 200
    await upstream.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["details"]["reason"] == "NOT_SERVING"
    assert (await client.get("/healthz")).status_code == 200  # liveness does not depend on upstream
    await upstream.health.set("", health_pb2.HealthCheckResponse.SERVING)
    assert (await client.get("/readyz")).status_code == 200


# ---------------------------------------------------------------- rate limits
async def test_rate_limits(make_client, upstream):
    from smvm.config import Settings

    settings = Settings(profile="test", api_tokens="a,b")
    upstream.fake.states["RUN-1"] = run_pb2.RUN_STATE_DECISION_READY
    limited = {"finalize": 2, "status": 1000}
    client_a = make_client(settings, headers={"Authorization": "Bearer a"}, rate_limits_per_minute=limited)
    results = [(await client_a.post("/api/v1/validation/RUN-1/finalize")).status_code for _ in range(3)]
    assert results == [200, 200, 429]
    refused = await client_a.post("/api/v1/validation/RUN-1/finalize")
    assert refused.json()["error"] == "RESOURCE_EXHAUSTED" and refused.json()["details"]["reason"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30  # 2/min refills one every 30 s
    assert (await client_a.get("/api/v1/validation/RUN-1/status")).status_code == 200  # other endpoint
    # Another token of the same app has its own bucket.
    app = client_a._transport.app  # type: ignore[attr-defined]
    client_b = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"Authorization": "Bearer b"})
    async with client_b:
        assert (await client_b.post("/api/v1/validation/RUN-1/finalize")).status_code == 200


def test_token_bucket_refills_at_the_per_minute_rate():
    now = [0.0]
    limiter = RateLimiter({"runs": 60}, clock=lambda: now[0])
    assert all(limiter.acquire("t", "runs") == 0 for _ in range(60))
    wait = limiter.acquire("t", "runs")
    assert wait == pytest.approx(1.0)
    now[0] += 0.5
    assert limiter.acquire("t", "runs") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("t", "runs") == 0
    assert limiter.acquire("t", "unlimited-endpoint") == 0


# ---------------------------------------------------------------- the process
async def test_python_m_services_gateway_serves_and_drains_on_sigterm(upstream, tmp_path):
    port = free_port()
    env = dict(
        os.environ, SMVM_PROFILE="test", SMVM_GATEWAY_ADDR=f"127.0.0.1:{port}",
        SMVM_ORCHESTRATOR_ADDR=upstream.address, SMVM_API_TOKENS="proc-token", SMVM_GRACE_PERIOD_S="1",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
            for _ in range(150):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("gateway never became ready")
            upstream.fake.states["RUN-P"] = run_pb2.RUN_STATE_RUNNING
            answer = await http.get("/api/v1/validation/RUN-P/status", headers={"Authorization": "Bearer proc-token", "X-Correlation-ID": "proc-1"})
            assert answer.status_code == 200 and answer.json()["status"] == "RUNNING"
            assert upstream.fake.calls[-1].metadata["x-correlation-id"] == "proc-1"
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=10)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert b'"service": "gateway"' in stderr and b"proc-1" in stderr  # JSON logs carry the correlation id
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    "text, expected",
    [("", {"runs": 100, "status": 1000}), ("off", {}), ("status=5000, runs=0", {"runs": 0, "status": 5000})],
)
def test_rate_limits_setting_overrides_the_guides(text, expected):
    from services.gateway.ratelimit import limits_from_setting

    limits = limits_from_setting(text)
    assert {k: limits[k] for k in expected} == expected if expected else limits == {}


@pytest.mark.parametrize("text, named", [("status", "status"), ("stats=5", "stats=5"), ("runs=x", "rate_limits.runs"),
                                         ("runs=-1", "rate_limits.runs")])
def test_bad_rate_limits_settings_name_the_part(text, named):
    from smvm.config import Settings

    with pytest.raises(ValueError, match=named.replace("=", "=")):
        Settings(rate_limits=text)


async def test_rate_limits_from_settings_apply_at_the_gateway(make_client, upstream):
    from smvm.config import Settings

    client = make_client(Settings(profile="test", api_tokens="gateway-test-token", rate_limits="status=2"))
    codes = [(await client.get("/api/v1/validation/RUN-1/status")).status_code for _ in range(3)]
    assert codes[:2] != [429, 429] and codes[2] == 429
