"""The memory service in the mesh learns runs decided through the REST API."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import grpc
import pytest

from smvm.v1 import memory_service_pb2 as pb, memory_service_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())

pytestmark = pytest.mark.e2e


def test_a_decided_run_reaches_the_memory_graph(client, mesh, wait):
    payload = copy.deepcopy(EXAMPLE)
    payload["run_id"] = f"RUN-MEM-{uuid.uuid4().hex[:10]}"
    assert client.post("/api/v1/validation/runs", json=payload).status_code == 201
    status, _ = wait(client, payload["run_id"])
    assert status["status"] == "DECISION_READY", status

    with grpc.insecure_channel(mesh.addresses["memory"]) as channel:
        stub = pb_grpc.MemoryServiceStub(channel)
        history = stub.GetDecisionHistory(pb.GetDecisionHistoryRequest(project_id=payload["project_id"]), timeout=30)
        mine = [d for d in history.decisions if d.run_id == payload["run_id"]]
        assert len(mine) == 1 and mine[0].recommendation == status["recommendation"]
        similar = stub.FindSimilarIdeas(pb.FindSimilarIdeasRequest(
            text=payload["business_idea"]["description"], domain=payload["business_idea"]["domain"], limit=100), timeout=30)
        assert payload["run_id"] in [i.run_id for i in similar.ideas]
        assert similar.ideas[0].similarity > 0.5
        known = stub.ListKnownCompetitors(pb.ListKnownCompetitorsRequest(domain=payload["business_idea"]["domain"]), timeout=30)
        assert len(known.competitors) >= 1 and all(c.runs_seen >= 1 for c in known.competitors)
