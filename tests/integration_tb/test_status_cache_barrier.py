"""The callback barrier through real processes (issue #10): a client that GETs /status as soon as a
callback arrives is answered a state at least as new as the callback's, by any gateway.

Two orchestrator replicas share one PostgreSQL database. B drives the runs (they are submitted to it)
and delivers their callbacks; A delivers none (its outbox poll is a minute away and it drives no
run). The gateway under test follows A's run watch, so it learns B's changes only from A's polls (at
each of its syncs, every L/4): its cache runs up to L/4 behind B's commits, the situation of any
gateway that watches another replica. The TractionBuild double GETs that gateway's /status on every
update it accepts. With the barrier (B's dispatcher waits L after claiming a callback) no read-back
is older than its callback; with B restarted at SMVM_STATUS_CACHE_STALENESS_MS=0 (no barrier) and
the reads going to a gateway that still caches (and syncs A only once a second, so the lag is wide
on any machine) read-backs older than their callbacks appear: the control showing that the barrier
is what holds the guarantee.
"""

from __future__ import annotations

import copy
import uuid

import grpc
import httpx
import pytest
from google.protobuf import json_format

from conftest import TOKEN, start_mesh
from mesh_flow import EXAMPLE, last_update, wait_until
from smvm.db.pgcluster import create_database
from smvm.db.testing import pg_cluster, pg_server_url  # noqa: F401 (fixtures)
from smvm.launcher import free_port, unclean_exits
from smvm.v1 import validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

pytestmark = pytest.mark.e2e

L_MS = 1000
STATE_RANK = {"INITIATED": 0, "RUNNING": 1, "DECISION_READY": 2, "FAILED": 2, "TIMEOUT": 2, "COMPLETED": 3}
STAGE_RANK = {"pending": 0, "in_progress": 1, "completed": 2, "failed": 2}


@pytest.fixture(scope="module")
def replicas(tb, tmp_path_factory, pg_server_url):  # noqa: F811 (the imported fixture)
    url = create_database(pg_server_url, f"smvm_barrier_{uuid.uuid4().hex[:8]}")
    mesh = start_mesh(tmp_path_factory.mktemp("barrier"), tb, database_url=url, status_cache_staleness_ms=L_MS,
                      webhook_lease_s=5, webhook_poll_interval_s=60)
    second = f"127.0.0.1:{free_port()}"
    try:
        mesh.start_extra("orchestrator-2", "orchestrator", second,
                         env_changes={"SMVM_WEBHOOK_POLL_INTERVAL_S": "0.05", "SMVM_ORCHESTRATOR_METRICS_ADDR": ""})
    except BaseException:
        mesh.stop()
        raise
    tb.state.read_back_url, tb.state.read_back_token = mesh.gateway_url, TOKEN
    yield mesh, second
    tb.state.read_back_url = ""
    codes = mesh.stop()
    assert not (unclean := unclean_exits(codes)), unclean


def newness(view: dict) -> tuple[int, int]:
    """How far a run has got, from a callback's payload or a GET /status body (both carry these)."""
    return STATE_RANK[view["status"]], sum(STAGE_RANK[v] for v in view["stage_results"].values())


def older(read: dict, update: dict) -> bool:
    (state, stages), (callback_state, callback_stages) = newness(read), newness(update)
    return state < callback_state or stages < callback_stages


def run_on(address: str, tb) -> list[tuple[dict, int, dict]]:
    """Submit a run to the replica at `address`; once its DECISION_READY callback is in, every
    (update, HTTP status, GET /status body) the double read back for it."""
    payload = copy.deepcopy(EXAMPLE)
    payload["run_id"] = f"RUN-BARRIER-{uuid.uuid4().hex[:10]}"
    payload["configuration"]["seed"] = 11
    payload["metadata"]["callback_url"] = tb.callback_url
    with grpc.insecure_channel(address) as channel:
        vgrpc.ValidationServiceStub(channel).SubmitRun(json_format.ParseDict(payload, vpb.SubmitRunRequest()),
                                                       timeout=60, wait_for_ready=True)
    run_id = payload["run_id"]
    wait_until(lambda: last_update(tb, run_id, "DECISION_READY"), timeout_s=180, what="DECISION_READY update")
    return [read for read in tb.state.read_backs if read[0]["run_id"] == run_id]


def cache_hits(mesh) -> float:
    text = httpx.get(f"{mesh.gateway_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('smvm_status_cache_lookups_total{outcome="hit"}'):
            return float(line.split()[-1])
    return 0.0


def test_after_a_callback_the_gateway_never_answers_an_older_state(replicas, tb):
    mesh, second = replicas
    hits = cache_hits(mesh)
    reads = run_on(second, tb)
    assert len(reads) >= 10  # INITIATED, each stage's start and end, DECISION_READY
    assert all(code == 200 for _, code, _ in reads)
    stale = [(u["status"], u["step_name"], r["status"], r["current_stage"]) for u, _, r in reads if older(r, u)]
    assert stale == []
    assert cache_hits(mesh) - hits >= 3  # answered from the cache, not only around it


def test_without_the_barrier_the_same_reads_see_states_older_than_their_callbacks(replicas, tb):
    mesh, second = replicas
    process = mesh.processes["orchestrator-2"]
    process.terminate()
    assert process.wait(30) == 0
    mesh.restart("orchestrator-2", env_changes={"SMVM_STATUS_CACHE_STALENESS_MS": "0"})
    # A gateway that syncs every second (L = 4 s) instead of the first one (whose syncs would keep A
    # polling every 250 ms) widens the window in which the cache lags B's commits to about a second,
    # so that the control does not depend on the machine's speed.
    lagging = f"127.0.0.1:{free_port()}"
    mesh.start_extra("gateway-2", "gateway", lagging, env_changes={"SMVM_STATUS_CACHE_STALENESS_MS": "4000"})
    first = mesh.processes["gateway"]
    first.terminate()
    assert first.wait(30) == 0
    tb.state.read_back_url = f"http://{lagging}"
    reads = run_on(second, tb)
    assert all(code == 200 for _, code, _ in reads)
    stale = [(u["status"], u["step_name"], r["status"], r["current_stage"]) for u, _, r in reads if older(r, u)]
    assert stale, "no read-back was older than its callback without the barrier"
