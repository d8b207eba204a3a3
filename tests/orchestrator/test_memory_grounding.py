"""The orchestrator grounds a run in the memory service: the answers it collects, and memory that is
down or slow never failing or stalling a run (real memory service and stages over loopback gRPC)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from smvm.config import Settings
from smvm.launcher import free_port
from smvm.v1 import idea_pb2, memory_service_pb2_grpc, run_pb2, validation_service_pb2_grpc as vgrpc
from services.memory.servicer import build_host as memory_host
from services.orchestrator.memory_grounding import ground
from services.orchestrator.store import RunStore

from tests.memory.test_graph import decided_run
from tests.orchestrator.test_validation_service import _request, _wait

IDEA = idea_pb2.Idea(title="Student budgeting", description="A budgeting app for university students", domain="fintech")


@pytest.fixture
async def memory(runs_dir):
    store = RunStore(runs_dir)
    decided_run(store, "RUN-A", "PROJ-1", "Student budgeting app", "A budgeting app for university students", "fintech",
                [("Tallyho", 12.0, False), ("Synthetic Co", 5.0, True)], "KILL")
    decided_run(store, "RUN-PETS", "PROJ-2", "Dog walking", "Book dog walkers nearby", "pets", [("Rover", 20.0, False)], "GO")
    settings = Settings(profile="test", runs_dir=runs_dir, grace_period_s=0, memory_addr=f"127.0.0.1:{free_port()}")

    async def start():
        host = memory_host(settings)
        await host.start()
        await host.ready.wait()
        return host

    hosts = []
    async with grpc.aio.insecure_channel(settings.memory_addr) as channel:
        yield memory_service_pb2_grpc.MemoryServiceStub(channel), start, hosts
        for host in hosts:
            await host.stop(0)


async def test_a_run_is_grounded_in_what_earlier_runs_of_its_domain_and_project_taught(memory):
    stub, start, hosts = memory
    hosts.append(await start())
    found = await ground(stub, run_id="RUN-NEW", project_id="PROJ-1", idea=IDEA, timeout_s=10)
    assert found.status == "used" and found.error == "" and found.project_id == "PROJ-1"
    assert [c.name for c in found.known_competitors] == ["Tallyho"]  # synthetic ones and other domains left out
    assert found.known_competitors[0].last_run_id == "RUN-A"
    assert [(i.run_id, i.recommendation) for i in found.similar_ideas] == [("RUN-A", "KILL")]
    assert [d.run_id for d in found.decision_history] == ["RUN-A"]
    # the run's own idea and decision are never its own grounding
    itself = await ground(stub, run_id="RUN-A", project_id="PROJ-1", idea=IDEA, timeout_s=10)
    assert itself.similar_ideas == [] and itself.decision_history == []


async def test_memory_slower_than_its_deadline_is_given_up_on_time(memory, faults):
    stub, start, hosts = memory
    faults("methods=/smvm.v1.MemoryService/*;delay_ms=3000")
    hosts.append(await start())
    began = time.monotonic()
    found = await ground(stub, run_id="RUN-NEW", project_id="PROJ-1", idea=IDEA, timeout_s=0.5)
    assert time.monotonic() - began < 2.0
    assert found.status == "unavailable" and "DEADLINE_EXCEEDED after 0.5s" in found.error
    assert not found.known_competitors and not found.similar_ideas and not found.decision_history


async def test_memory_that_is_down_is_unavailable_at_once(memory):
    stub, _, _ = memory  # never started
    began = time.monotonic()
    found = await ground(stub, run_id="RUN-NEW", project_id="PROJ-1", idea=IDEA, timeout_s=5)
    assert time.monotonic() - began < 4.0
    assert found.status == "unavailable" and "UNAVAILABLE" in found.error


def _events(settings, run_id: str) -> list[dict]:
    (path,) = Path(settings.runs_dir).glob(f"*/validation/{run_id}/events.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _decision(settings, run_id: str) -> dict:
    (path,) = Path(settings.runs_dir).glob(f"*/validation/{run_id}/outputs/decision.output.json")
    return json.loads(path.read_text())


async def test_a_run_with_memory_too_slow_still_decides_and_says_it_went_without(mesh_factory, faults):
    faults("methods=/smvm.v1.MemoryService/*;delay_ms=5000")
    async with mesh_factory(memory_timeout_s=0.5) as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(_request("RUN-MEM-SLOW"), timeout=10)
            status = await _wait(stub, "RUN-MEM-SLOW")
    assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
    events = _events(settings, "RUN-MEM-SLOW")
    types = [e["type"] for e in events]
    assert "memory.unavailable" in types and "memory.grounded" not in types
    gave_up = events[types.index("memory.unavailable")]
    assert "DEADLINE_EXCEEDED" in gave_up["payload"]["error"]
    asked = next(e for e in events if e["type"] == "stage.completed" and e["payload"]["stage"] == "personas")
    waited = (_time(gave_up) - _time(asked))
    assert waited < 3.0, f"the run waited {waited:.1f}s for memory"
    decision = _decision(settings, "RUN-MEM-SLOW")
    assert decision["decision"]["memory"]["status"] == "unavailable"
    assert any(w.startswith("memory:unavailable:") for w in decision["decision"]["warnings"])


async def test_a_second_run_cites_the_first_in_its_decision(mesh_factory):
    async with mesh_factory() as (settings, orchestrator, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = vgrpc.ValidationServiceStub(channel)
            await stub.SubmitRun(_request("RUN-MEM-1"), timeout=10)
            first = await _wait(stub, "RUN-MEM-1")
            second_request = _request("RUN-MEM-2")
            second_request.business_idea.description = "A budgeting app that helps college students track spending."
            await stub.SubmitRun(second_request, timeout=10)
            second = await _wait(stub, "RUN-MEM-2")
    assert first.state == second.state == run_pb2.RUN_STATE_DECISION_READY, (first.error, second.error)
    grounded = next(e for e in _events(settings, "RUN-MEM-2") if e["type"] == "memory.grounded")
    assert grounded["payload"]["similar_ideas"] == ["RUN-MEM-1"] and grounded["payload"]["decision_history"] == ["RUN-MEM-1"]
    memory = _decision(settings, "RUN-MEM-2")["decision"]["memory"]
    assert memory["status"] == "used" and memory["precedents"][0]["run_id"] == "RUN-MEM-1"
    assert "1 similar idea decided before" in memory["evidence"][0] and "RUN-MEM-1" in memory["evidence"][0]
    assert "RUN-MEM-1" in memory["evidence"][1]  # the project's history
    # the first run found nothing to cite: memory was empty
    first_memory = _decision(settings, "RUN-MEM-1")["decision"]["memory"]
    assert first_memory["status"] == "used" and first_memory["evidence"] == ["no similar idea decided before"]


def _time(event: dict) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
