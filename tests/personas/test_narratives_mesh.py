"""The narrative adapter in a real process mesh against the OpenAI-compatible double: the
orchestrator reserves the narratives' tokens in overwatch's ledger before the personas stage, the
personas process calls the provider within that allowance, the provider's counts are committed and
show in GetUsage; a ceiling refuses before any call; a provider error leaves the run decided with
template narratives and a recorded warning."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import httpx
import pytest
from openai_double import DOWN, OpenAIDouble

from smvm.channels import ClientSecurity, open_channel
from smvm.config import Settings
from smvm.launcher import Mesh, free_addresses
from smvm.v1 import overwatch_service_pb2, overwatch_service_pb2_grpc

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
IDEA = json.loads((REPO / "examples" / "idea.json").read_text())
ADMIN = "narratives-admin-token"
PROJECT = "PROJ-NARRATE"
MODEL = "double-chat-1"
PER_PERSONA = 500  # Settings.llm_tokens_per_persona below


@pytest.fixture(scope="module")
def narrated_mesh(tmp_path_factory):
    base = tmp_path_factory.mktemp("narratives-mesh")
    with OpenAIDouble() as provider:
        settings = Settings(
            profile="test", runs_dir=base / "runs", api_tokens=ADMIN, numba_cache_dir=REPO / ".numba_cache",
            stage_timeout_s=30, simulation_timeout_s=120, llm_base_url=provider.base_url, llm_model=MODEL,
            llm_api_key=provider.state.api_key, llm_tokens_per_persona=PER_PERSONA, llm_max_completion_tokens=80,
        )
        mesh = Mesh(settings, addresses=free_addresses(), log_dir=base / "logs", extra_env={"SMVM_PROFILE": "test"})
        mesh.start(timeout_s=300)
        try:
            yield mesh, provider, base / "runs"
        finally:
            mesh.stop()


def decide(mesh: Mesh, run_id: str, title: str, max_tokens_per_run: int) -> dict:
    body = copy.deepcopy(IDEA)
    body.update(project_id=PROJECT, run_id=run_id)
    body["business_idea"]["title"] = title
    body["configuration"].update(simulation_iterations=300, persona_count=4, competitor_count=3,
                                 max_tokens_per_run=max_tokens_per_run)
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as client:
        answer = client.post("/api/v1/validation/runs", json=body)
        assert answer.status_code == 201, answer.text
        deadline = time.monotonic() + 180
        while (status := client.get(f"/api/v1/validation/{run_id}/status").json())["status"] \
                not in ("DECISION_READY", "FAILED", "TIMEOUT"):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
    return status


def outputs(runs: Path, run_id: str) -> tuple[dict, list[dict]]:
    run_dir = runs / PROJECT / "validation" / run_id
    personas = json.loads((run_dir / "outputs" / "personas.output.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return personas, events


async def ledger(mesh: Mesh, run_id: str):
    async with open_channel(mesh.addresses["overwatch"], ClientSecurity()) as channel:
        stub = overwatch_service_pb2_grpc.OverwatchServiceStub(channel)
        usage = await stub.GetUsage(overwatch_service_pb2.GetUsageRequest(run_id=run_id), timeout=10)
        audit = await stub.ListAuditEvents(overwatch_service_pb2.ListAuditEventsRequest(run_id=run_id), timeout=10)
    return usage.run_usage, [(e.kind, json.loads(e.payload_json or "{}")) for e in audit.events]


async def test_narratives_are_written_by_the_model_and_its_counts_are_metered(narrated_mesh):
    mesh, provider, runs = narrated_mesh
    # 4 personas x 500 = 2000 tokens held of a 2400 ceiling: 83 %, past the 80 % warning.
    assert decide(mesh, "RUN-NARR-1", "Narrated ledger app", 2400)["status"] == "DECISION_READY"
    calls = provider.state.calls_about("Narrated ledger app")
    assert len(calls) == 4 and all(c["status"] == 200 and c["body"]["model"] == MODEL for c in calls)
    prompt, completion = provider.state.reported("Narrated ledger app")
    usage, audit = await ledger(mesh, "RUN-NARR-1")
    assert usage.committed.tokens == prompt + completion > 0 and usage.reserved.tokens == 0
    assert usage.ceilings.tokens == 2400
    committed = next(p for k, p in audit if k == "budget.committed" and p["actual"]["tokens"])
    assert committed["reserved"]["tokens"] == 4 * PER_PERSONA
    personas, events = outputs(runs, "RUN-NARR-1")
    assert all(p["sources"]["narrative"] == f"model:{MODEL}" and p["narrative"].startswith("This persona")
               for p in personas["personas"])
    assert personas["narrative_usage"]["calls"] == 4
    metered = next(e["payload"] for e in events if e["type"] == "narratives.metered")
    assert (metered["prompt_tokens"], metered["completion_tokens"], metered["failed_calls"]) == (prompt, completion, 0)
    alerts = [e["payload"]["alert"] for e in events if e["type"] == "alert.resource_constraint"]
    assert any("run tokens at 83% of ceiling (2000 of 2400 tokens)" in alert for alert in alerts), alerts


async def test_a_token_ceiling_refuses_before_any_call_and_the_run_still_decides(narrated_mesh):
    mesh, provider, runs = narrated_mesh
    # 4 x 500 = 2000 tokens would cross max_tokens_per_run = 1000.
    assert decide(mesh, "RUN-NARR-2", "Over budget narration", 1000)["status"] == "DECISION_READY"
    assert provider.state.calls_about("Over budget narration") == []
    usage, audit = await ledger(mesh, "RUN-NARR-2")
    assert usage.committed.tokens == 0 and usage.reserved.tokens == 0
    refused = next(p for k, p in audit if k == "budget.refused")
    assert refused["purpose"] == "narratives" and refused["reason"] == "RUN_TOKENS_CEILING_EXCEEDED"
    assert refused["field"] == "requested.tokens"
    personas, events = outputs(runs, "RUN-NARR-2")
    assert all(p["sources"]["narrative"] == "template" and p["narrative"] for p in personas["personas"])
    refusal = next(e["payload"] for e in events if e["type"] == "narratives.refused")
    assert refusal["code"] == "RESOURCE_EXHAUSTED" and "1000" in refusal["message"]
    assert any(e["type"] == "alert.resource_constraint" for e in events)


async def test_a_provider_error_leaves_the_run_decided_with_templates_and_a_warning(narrated_mesh):
    mesh, provider, runs = narrated_mesh
    assert decide(mesh, "RUN-NARR-3", f"Narration {DOWN}", 10000)["status"] == "DECISION_READY"
    assert provider.state.calls_about(DOWN) and all(c["status"] == 503 for c in provider.state.calls_about(DOWN))
    personas, events = outputs(runs, "RUN-NARR-3")
    assert all(p["sources"]["narrative"] == "template" and p["narrative"] for p in personas["personas"])
    warning = next(w for w in personas["warnings"] if w.startswith("narratives:provider_error: "))
    assert "HTTP 503" in warning
    metered = next(e["payload"] for e in events if e["type"] == "narratives.metered")
    assert metered["failed_calls"] >= 1 and metered["warnings"] == [warning]
    usage, _ = await ledger(mesh, "RUN-NARR-3")
    assert usage.committed.tokens == 0 and usage.reserved.tokens == 0  # the 503s reported no usage
