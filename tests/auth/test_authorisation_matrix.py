"""Role x endpoint x project through the real gateway app over real gRPC to a secured mesh.

Two runs exist: RUN-AUTH-A in PROJ-A and RUN-AUTH-B in PROJ-B. A token scoped to PROJ-A reads its
own run and gets exactly the unknown-run 404 for the other; lists show only its projects; roles
without a right get 403; expired, revoked and unknown tokens get 401; every denial is in the audit
trail with actor, run and correlation id.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import grpc
import pytest

from smvm.v1 import overwatch_service_pb2 as opb, overwatch_service_pb2_grpc as ogrpc
from smvm.v1 import validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

IDEA = json.loads((Path(__file__).resolve().parents[2] / "examples" / "idea.json").read_text())
RUNS = {"A": "RUN-AUTH-A", "B": "RUN-AUTH-B"}
PROJECTS = {"A": "PROJ-A", "B": "PROJ-B"}
TERMINAL = {"DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"}


def body(project: str, run_id: str) -> dict:
    data = copy.deepcopy(IDEA)
    data.update(project_id=project, run_id=run_id)
    data["configuration"].update(simulation_iterations=200, persona_count=4, competitor_count=3)
    return data


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def world(mesh):
    settings, client, secrets, app = mesh
    for key, run_id in RUNS.items():
        answer = await client.post("/api/v1/validation/runs", json=body(PROJECTS[key], run_id), headers=auth(secrets["admin"]))
        assert answer.status_code == 201, answer.text
    for run_id in RUNS.values():
        for _ in range(1200):
            status = (await client.get(f"/api/v1/validation/{run_id}/status", headers=auth(secrets["admin"]))).json()
            if status["status"] in TERMINAL:
                break
            await asyncio.sleep(0.1)
        assert status["status"] == "DECISION_READY", status
    return mesh


async def call(client, method: str, endpoint: str, run_id: str, token: str, project: str = ""):
    headers = auth(token)
    if endpoint == "status":
        return await client.get(f"/api/v1/validation/{run_id}/status", headers=headers)
    if endpoint == "results":
        return await client.get(f"/api/v1/validation/{run_id}/results", headers=headers)
    if endpoint == "complete":
        return await client.put(f"/api/v1/validation/{run_id}/complete", json={"results": {"signups": 12}}, headers=headers)
    if endpoint == "finalize":
        return await client.post(f"/api/v1/validation/{run_id}/finalize", json={}, headers=headers)
    if endpoint == "submit":
        return await client.post("/api/v1/validation/runs", json=body(project, run_id), headers=headers)
    raise AssertionError(endpoint)


# (token, endpoint, run's project) -> expected HTTP status. "own" is PROJ-A for every scoped token.
MATRIX = [
    *[(role, ep, "A", code) for role, ep, code in [
        ("reader_a", "status", 200), ("reader_a", "results", 200), ("reader_a", "complete", 403),
        ("reader_a", "finalize", 403),
        ("submitter_a", "status", 200), ("submitter_a", "results", 200), ("submitter_a", "complete", 200),
        ("submitter_a", "finalize", 200),
        ("reader_ab", "status", 200), ("reader_ab", "results", 200), ("reader_ab", "finalize", 403),
        ("admin", "status", 200), ("admin", "results", 200), ("legacy", "status", 200), ("legacy", "results", 200),
        ("service", "status", 403), ("service", "results", 403), ("service", "complete", 403),
        ("expired", "status", 401), ("revoked", "status", 401),
    ]],
    *[(role, ep, "B", code) for role, ep, code in [
        ("reader_a", "status", 404), ("reader_a", "results", 404), ("reader_a", "complete", 403),
        ("submitter_a", "status", 404), ("submitter_a", "results", 404), ("submitter_a", "complete", 404),
        ("submitter_a", "finalize", 404),
        ("reader_ab", "status", 200), ("reader_ab", "results", 200),
        ("admin", "status", 200), ("admin", "complete", 200), ("admin", "finalize", 200), ("legacy", "results", 200),
        ("service", "status", 403), ("expired", "status", 401), ("revoked", "results", 401),
    ]],
]


@pytest.mark.parametrize("role,endpoint,project,expected", MATRIX, ids=[f"{r}-{e}-{p}" for r, e, p, _ in MATRIX])
async def test_matrix(world, role, endpoint, project, expected):
    _, client, secrets, _ = world
    answer = await call(client, "", endpoint, RUNS[project], secrets[role])
    assert answer.status_code == expected, answer.text
    if expected == 401:
        assert answer.json()["details"]["reason"] == {"expired": "TOKEN_EXPIRED", "revoked": "TOKEN_REVOKED"}[role]
    if expected == 403:
        assert answer.json()["details"]["reason"] == "ROLE_NOT_ALLOWED"


@pytest.mark.parametrize("role,project,expected", [
    ("submitter_a", "A", 201), ("submitter_a", "B", 403), ("reader_a", "A", 403), ("service", "A", 403),
    ("admin", "B", 201),
])
async def test_submission_matrix(world, role, project, expected):
    _, client, secrets, _ = world
    answer = await call(client, "", "submit", f"RUN-AUTH-SUB-{role.upper().replace('_', '-')}-{project}",
                        secrets[role], PROJECTS[project])
    assert answer.status_code == expected, answer.text
    if expected == 403:
        reason = "PROJECT_OUT_OF_SCOPE" if role == "submitter_a" else "ROLE_NOT_ALLOWED"
        assert answer.json()["details"]["reason"] == reason


async def test_a_scoped_submission_without_a_project_is_a_400_naming_the_field(world):
    _, client, secrets, _ = world
    data = body("PROJ-A", "RUN-AUTH-NOPROJ")
    del data["project_id"]
    answer = await client.post("/api/v1/validation/runs", json=data, headers=auth(secrets["submitter_a"]))
    assert answer.status_code == 400 and answer.json()["details"]["field"] == "project_id"


async def test_another_projects_run_answers_exactly_like_a_run_that_does_not_exist(world):
    _, client, secrets, _ = world
    hidden = await client.get("/api/v1/validation/RUN-AUTH-B/status", headers=auth(secrets["reader_a"]))
    missing = await client.get("/api/v1/validation/RUN-AUTH-NOPE/status", headers=auth(secrets["admin"]))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == json.loads(missing.text.replace("RUN-AUTH-NOPE", "RUN-AUTH-B"))
    by_validation_id = await client.get("/api/v1/validation/VAL-RUN-AUTH-B/results", headers=auth(secrets["reader_a"]))
    assert by_validation_id.status_code == 404 and by_validation_id.json()["message"] == "run RUN-AUTH-B not found"


async def test_lists_show_only_the_projects_in_scope(world):
    _, client, secrets, _ = world

    async def listed(token: str, **params) -> set[str]:
        answer = await client.get("/api/v1/validation/runs", params=params, headers=auth(token))
        assert answer.status_code == 200, answer.text
        return {run["run_id"] for run in answer.json()["runs"]}

    assert RUNS["A"] in await listed(secrets["reader_a"])
    assert all(run.startswith("RUN-AUTH-") for run in await listed(secrets["reader_a"]))
    assert RUNS["B"] not in await listed(secrets["reader_a"])
    assert await listed(secrets["reader_a"], project_id="PROJ-B") == set()  # as for a project without runs
    assert {RUNS["A"], RUNS["B"]} <= await listed(secrets["reader_ab"])
    assert {RUNS["A"], RUNS["B"]} <= await listed(secrets["admin"])
    page = await client.get("/api/v1/validation/runs", params={"page_size": 1}, headers=auth(secrets["reader_ab"]))
    assert len(page.json()["runs"]) == 1 and page.json()["next_page_token"] == "1"
    service = await client.get("/api/v1/validation/runs", headers=auth(secrets["service"]))
    assert service.status_code == 403


async def test_a_token_revoked_in_the_file_stops_working_without_a_restart(world, tmp_path):
    settings, client, secrets, _ = world
    from smvm.auth import TokenFile

    tokens = TokenFile(settings.tokens_file)
    secret = tokens.create("short-lived", "reader", ["PROJ-A"])
    assert (await client.get("/api/v1/validation/RUN-AUTH-A/status", headers=auth(secret))).status_code == 200
    tokens.revoke("short-lived")
    answer = await client.get("/api/v1/validation/RUN-AUTH-A/status", headers=auth(secret))
    assert answer.status_code == 401 and answer.json()["details"]["reason"] == "TOKEN_REVOKED"


async def test_denials_land_in_the_audit_trail_with_actor_run_and_correlation_id(world):
    _, client, secrets, app = world
    denied = await client.get("/api/v1/validation/RUN-AUTH-B/results", headers={
        **auth(secrets["submitter_a"]), "X-Correlation-ID": "cid-audit-probe-1"})
    assert denied.status_code == 404
    await app.state.audit.drain()
    trail = await client.get("/api/v1/audit", params={"run_id": "RUN-AUTH-B", "kind_prefix": "access."},
                             headers=auth(secrets["admin"]))
    assert trail.status_code == 200, trail.text
    probe = [e for e in trail.json()["events"] if e["correlation_id"] == "cid-audit-probe-1"]
    assert len(probe) == 1
    event = probe[0]
    assert (event["kind"], event["actor"], event["run_id"], event["project_id"]) == (
        "access.denied", "tb-submit-a", "RUN-AUTH-B", "PROJ-B")
    assert json.loads(event["payload_json"])["reason"] == "PROJECT_OUT_OF_SCOPE" and event["time"].endswith("Z")
    # the run's budget events are in the same trail, queryable by project
    budget = await client.get("/api/v1/audit", params={"project_id": "PROJ-B", "kind_prefix": "budget."},
                              headers=auth(secrets["admin"]))
    kinds = [e["kind"] for e in budget.json()["events"] if e["run_id"] == "RUN-AUTH-B"]
    assert kinds[:2] == ["budget.reserved", "budget.committed"]
    assert budget.json()["events"][0]["actor"].endswith("via service")  # the end user, through the mesh
    # a project-scoped admin sees only its projects' events
    from smvm.auth import TokenFile

    settings = world[0]
    scoped_admin = TokenFile(settings.tokens_file).create("admin-of-a", "admin", ["PROJ-A"])
    scoped = await client.get("/api/v1/audit", params={"run_id": "RUN-AUTH-B"}, headers=auth(scoped_admin))
    assert scoped.status_code == 200 and scoped.json().get("events", []) == []
    own = await client.get("/api/v1/audit", params={"run_id": "RUN-AUTH-A"}, headers=auth(scoped_admin))
    assert own.json()["events"] and {e["project_id"] for e in own.json()["events"]} == {"PROJ-A"}
    # and the audit view itself is admin-only
    assert (await client.get("/api/v1/audit", params={"run_id": "RUN-AUTH-B"},
                             headers=auth(secrets["reader_ab"]))).status_code == 403


async def test_every_grpc_service_requires_the_service_token(world):
    settings, _, secrets, _ = world
    request = vpb.GetRunStatusRequest(run_id="RUN-AUTH-A")
    async with grpc.aio.insecure_channel(settings.orchestrator_addr) as channel:
        stub = vgrpc.ValidationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRunStatus(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRunStatus(request, timeout=5, metadata=(("authorization", f"Bearer {secrets['reader_ab']}"),))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ok = await stub.GetRunStatus(request, timeout=5, metadata=(("authorization", f"Bearer {secrets['service']}"),))
        assert ok.status.project_id == "PROJ-A"
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
    async with grpc.aio.insecure_channel(settings.overwatch_addr) as channel:
        overwatch = ogrpc.OverwatchServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await overwatch.GetUsage(opb.GetUsageRequest(project_id="PROJ-A"), timeout=5,
                                     metadata=(("x-correlation-id", "cid-grpc-denied"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        trail = await overwatch.ListAuditEvents(
            opb.ListAuditEventsRequest(kind_prefix="access.denied", page_size=1000), timeout=5,
            metadata=(("authorization", f"Bearer {secrets['service']}"),))
        mine = [e for e in trail.events if e.correlation_id == "cid-grpc-denied"]
        assert len(mine) == 1 and json.loads(mine[0].payload_json)["reason"] == "MISSING_TOKEN"
