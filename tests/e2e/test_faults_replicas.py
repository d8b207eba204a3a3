"""Two orchestrator replicas on one PostgreSQL database: the one driving a run dies for good
(kill -9, never restarted) and the other adopts the run when its lease expires, and completes it."""

from __future__ import annotations

import json
import time

import grpc
import httpx
import pytest

from smvm.db.pgcluster import PgCluster, create_database
from smvm.launcher import free_port
from smvm.v1 import run_pb2, validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

from .test_faults import TOKEN, events_of, payload, start_mesh, submit, wait_mid_simulation

pytestmark = pytest.mark.e2e
LEASE_S = 3.0


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    cluster = PgCluster().init().start()
    try:
        url = create_database(cluster.url(), "smvm_replicas")
        mesh = start_mesh(tmp_path_factory.mktemp("faults-replicas"), database_url=url, run_lease_s=LEASE_S)
        try:
            second = f"127.0.0.1:{free_port()}"
            mesh.start_extra("orchestrator-2", "orchestrator", second)
            yield mesh, second
        finally:
            mesh.stop()
    finally:
        cluster.destroy()


def test_a_surviving_replica_adopts_the_run_of_a_dead_one(replicated):
    mesh, second = replicated
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        run_id = submit(client, payload())  # the gateway's orchestrator creates it and holds its lease
        wait_mid_simulation(client, run_id)
    killed_at = time.monotonic()
    assert mesh.kill("orchestrator") == -9

    with grpc.insecure_channel(second) as channel:
        stub = vgrpc.ValidationServiceStub(channel)
        deadline = time.monotonic() + 240
        while True:
            status = stub.GetRunStatus(vpb.GetRunStatusRequest(run_id=run_id), timeout=10).status
            if status.state not in (run_pb2.RUN_STATE_INITIATED, run_pb2.RUN_STATE_RUNNING):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
    assert status.state == run_pb2.RUN_STATE_DECISION_READY, status.error
    events = events_of(mesh, run_id)
    types = [e["type"] for e in events]
    resumed = events[types.index("run.resumed")]
    assert resumed["payload"]["completed_stages"] == ["ingestion", "personas", "competitors"]
    completed = [e["payload"]["stage"] for e in events if e["type"] == "stage.completed"]
    assert completed == ["personas", "competitors", "simulation", "analysis", "overwatch"]
    assert time.monotonic() - killed_at >= LEASE_S * 0.5  # adopted only once the dead replica's lease ran out
