"""The production wiring, end to end: every service its own process (`python -m services.<name>`),
configured only through the environment with a service token, a file of scoped tokens and mTLS
certificates; TractionBuild's REST calls go through, scoped tokens see only their project, and a
caller without the mesh's certificate cannot reach any gRPC service."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smvm.auth import TokenFile
from smvm.config import Settings
from smvm.launcher import Mesh, free_addresses, unclean_exits

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
IDEA = json.loads((REPO / "examples" / "idea.json").read_text())


@pytest.fixture(scope="module")
def secured(tmp_path_factory, pki):
    base = tmp_path_factory.mktemp("secured-mesh")
    tokens = TokenFile(base / "tokens.yaml")
    secrets = {"submitter": tokens.create("tb-acme", "submitter", ["PROJ-ACME"]),
               "reader_other": tokens.create("tb-other", "reader", ["PROJ-OTHER"]),
               "admin": tokens.create("ops", "admin", ["*"])}
    settings = Settings(
        profile="test", runs_dir=base / "runs", numba_cache_dir=REPO / ".numba_cache", stage_timeout_s=30,
        simulation_timeout_s=120, api_tokens="", tokens_file=str(base / "tokens.yaml"), service_token="svc-" + "x" * 40,
        tls_cert=pki["paths"]["mesh_cert"], tls_key=pki["paths"]["mesh_key"], tls_ca=pki["paths"]["ca"],
    )
    mesh = Mesh(settings, addresses=free_addresses(), log_dir=base / "logs", extra_env={"SMVM_PROFILE": "test"})
    mesh.start(timeout_s=300)
    try:
        yield mesh, secrets
    finally:
        codes = mesh.stop()
        assert not (unclean := unclean_exits(codes)), unclean


def test_a_scoped_submitter_runs_a_validation_through_the_secured_mesh(secured):
    mesh, secrets = secured
    body = copy.deepcopy(IDEA)
    body.update(project_id="PROJ-ACME", run_id="RUN-SECURE-1")
    body["configuration"].update(simulation_iterations=300, persona_count=4, competitor_count=3)
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        submitter = {"Authorization": f"Bearer {secrets['submitter']}"}
        assert client.post("/api/v1/validation/runs", json=body, headers=submitter).status_code == 201
        deadline = time.monotonic() + 120
        while (status := client.get("/api/v1/validation/RUN-SECURE-1/status", headers=submitter).json())["status"] \
                not in ("DECISION_READY", "FAILED", "TIMEOUT"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["status"] == "DECISION_READY", status
        assert client.get("/api/v1/validation/RUN-SECURE-1/results", headers=submitter).status_code == 200
        other = {"Authorization": f"Bearer {secrets['reader_other']}"}
        assert client.get("/api/v1/validation/RUN-SECURE-1/results", headers=other).status_code == 404
        assert client.get("/api/v1/validation/RUN-SECURE-1/status",
                          headers={"Authorization": "Bearer dev-admin-token"}).status_code == 401
        # the admin view shows the run's budget settled and the denial, with the actor named
        admin = {"Authorization": f"Bearer {secrets['admin']}"}
        deadline = time.monotonic() + 10  # the gateway reports denials without holding up its answer
        while True:
            trail = client.get("/api/v1/audit", params={"run_id": "RUN-SECURE-1"}, headers=admin).json()["events"]
            if any(e["kind"] == "access.denied" for e in trail) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    kinds = [e["kind"] for e in trail]
    # The run's lifecycle comes first (run.initiated, its state changes), the budget settled in order.
    budget = [e for e in trail if e["kind"].startswith("budget.")]
    assert kinds[0] == "run.initiated" and "run.decision_ready" in kinds and "access.denied" in kinds
    assert [e["kind"] for e in budget[:2]] == ["budget.reserved", "budget.committed"]
    assert budget[0]["actor"] == "tb-acme via service"
    denial = next(e for e in trail if e["kind"] == "access.denied")
    assert denial["actor"] == "tb-other" and denial["project_id"] == "PROJ-ACME"


def test_no_grpc_service_answers_a_caller_without_the_mesh_certificate(secured):
    mesh, _ = secured
    for name, address in mesh.grpc_targets().items():
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as err:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name
