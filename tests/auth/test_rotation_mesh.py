"""Rotating the mesh's service token across real processes, one roll at a time (docs/deploy.md):
the caller already sending the new token reaches stages that still hold the old-plus-new list, and
once the old token is dropped from a stage that stage refuses it with UNAUTHENTICATED."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest

from smvm.channels import ClientSecurity, open_channel
from smvm.config import Settings
from smvm.launcher import Mesh, free_addresses
from smvm.v1 import competitor_service_pb2, competitor_service_pb2_grpc, persona_service_pb2, persona_service_pb2_grpc

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
IDEA = json.loads((REPO / "examples" / "idea.json").read_text())
OLD, NEW = "svc-old-" + "o" * 40, "svc-new-" + "n" * 40
ADMIN = "rotation-admin-token"


@pytest.fixture(scope="module")
def rolled_mesh(tmp_path_factory):
    """Roll 1 done everywhere (every process sends OLD and accepts OLD and NEW); then roll 2 reaches
    the orchestrator only: it sends NEW while every stage still holds the old-plus-new list."""
    base = tmp_path_factory.mktemp("rotation-mesh")
    settings = Settings(
        profile="test", runs_dir=base / "runs", api_tokens=ADMIN, numba_cache_dir=REPO / ".numba_cache",
        stage_timeout_s=30, simulation_timeout_s=120, service_token=OLD, service_tokens_accepted=NEW,
    )
    mesh = Mesh(settings, addresses=free_addresses(), log_dir=base / "logs", extra_env={"SMVM_PROFILE": "test"})
    mesh.start(timeout_s=300)
    try:
        mesh.kill("orchestrator")
        mesh.restart("orchestrator", timeout_s=120,
                     env_changes={"SMVM_SERVICE_TOKEN": NEW, "SMVM_SERVICE_TOKENS_ACCEPTED": OLD})
        gateway_ready_again(mesh)
        yield mesh
    finally:
        mesh.stop()


def gateway_ready_again(mesh: Mesh, timeout_s: float = 90) -> None:
    """The gateway's channel reconnects to the restarted orchestrator with backoff: wait for its
    readiness (what a Kubernetes readiness probe waits for) before sending it runs."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{mesh.gateway_url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "gateway not ready after the orchestrator's restart"
        time.sleep(0.2)


def run_to_decision(mesh: Mesh, run_id: str) -> dict:
    body = copy.deepcopy(IDEA)
    body.update(project_id="PROJ-ROTATE", run_id=run_id)
    body["configuration"].update(simulation_iterations=300, persona_count=4, competitor_count=3)
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as client:
        for attempt in range(5):  # a 503 is retried with backoff, as TractionBuild does (same Idempotency-Key)
            answer = client.post("/api/v1/validation/runs", json=body, headers={"Idempotency-Key": run_id})
            if answer.status_code != 503:
                break
            time.sleep(0.5 * 2 ** attempt)
        assert answer.status_code == 201, answer.text
        deadline = time.monotonic() + 180
        while (status := client.get(f"/api/v1/validation/{run_id}/status").json())["status"] \
                not in ("DECISION_READY", "FAILED", "TIMEOUT"):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
    return status


async def generate_personas(address: str, token: str) -> persona_service_pb2.GeneratePersonasResponse:
    async with open_channel(address, ClientSecurity(service_token=token)) as channel:
        stub = persona_service_pb2_grpc.PersonaServiceStub(channel)
        return await stub.GeneratePersonas(persona_service_pb2.GeneratePersonasRequest(count=3, seed=7), timeout=30)


async def test_the_rotation_rolls_through_the_mesh_without_a_refused_call(rolled_mesh):
    mesh = rolled_mesh
    # Mid-rotation: the orchestrator sends NEW, the stages hold [OLD, NEW], the gateway still sends OLD.
    status = run_to_decision(mesh, "RUN-ROTATE-1")
    assert status["status"] == "DECISION_READY", status

    # Roll 3 reaches the personas stage: OLD is dropped from its list.
    personas = mesh.addresses["personas"]
    mesh.kill("personas")
    mesh.restart("personas", timeout_s=120, env_changes={"SMVM_SERVICE_TOKEN": NEW, "SMVM_SERVICE_TOKENS_ACCEPTED": ""})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await generate_personas(personas, OLD)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len((await generate_personas(personas, NEW)).personas) == 3
    # ... and the orchestrator, sending NEW, still gets its runs through that stage.
    status = run_to_decision(mesh, "RUN-ROTATE-2")
    assert status["status"] == "DECISION_READY", status


async def test_a_stage_past_the_overlap_refuses_the_old_token_and_takes_the_new(rolled_mesh):
    mesh = rolled_mesh
    competitors = mesh.addresses["competitors"]
    mesh.kill("competitors")
    mesh.restart("competitors", timeout_s=120, env_changes={
        "SMVM_SERVICE_TOKEN": NEW, "SMVM_SERVICE_TOKENS_ACCEPTED": OLD,
        "SMVM_SERVICE_TOKENS_ACCEPTED_UNTIL": "2020-01-01T00:00:00Z"})
    async def build(token: str):
        async with open_channel(competitors, ClientSecurity(service_token=token)) as channel:
            return await competitor_service_pb2_grpc.CompetitorServiceStub(channel).BuildLandscape(
                competitor_service_pb2.BuildLandscapeRequest(count=2, seed=3), timeout=30)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await build(OLD)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "stopped being accepted" in refused.value.details()
    assert len((await build(NEW)).competitors) == 2
