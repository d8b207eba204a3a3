"""The store's PostgreSQL server stops mid-run: requests get 503, and once it is back nothing
acknowledged is missing and the interrupted run completes."""

from __future__ import annotations

import time

import httpx
import pytest

from smvm.db.pgcluster import PgCluster, create_database

from .test_faults import (
    TOKEN, payload, start_mesh, status_of, status_until_unavailable, submit, wait_mid_simulation, wait_terminal,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster():
    cluster = PgCluster().init().start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def pg_mesh(tmp_path_factory, cluster):
    url = create_database(cluster.url(), "smvm_faults")
    mesh = start_mesh(tmp_path_factory.mktemp("faults-pg"), database_url=url)
    yield mesh
    mesh.stop()


def test_database_outage_gives_503_and_loses_no_acknowledged_run(pg_mesh, cluster):
    with httpx.Client(base_url=pg_mesh.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        finished = submit(client, payload(iterations=1000))
        assert wait_terminal(client, finished)[0]["status"] == "DECISION_READY"
        in_flight = submit(client, payload())
        wait_mid_simulation(client, in_flight)

        cluster.stop("fast")
        try:
            body = status_until_unavailable(client, in_flight, "RUNNING")
            assert body["error"] == "UNAVAILABLE", body
            refused = payload(iterations=1000)
            response = client.post("/api/v1/validation/runs", json=refused)
            assert response.status_code == 503, response.text
            assert response.headers.get("Retry-After")
            # Keep the database down until the simulation has finished and the run has found the
            # database gone when committing its output: it must wait, not fail.
            log = pg_mesh.log_dir / "orchestrator.log"
            deadline = time.monotonic() + 120
            while "waits for the database" not in log.read_text():
                assert time.monotonic() < deadline, "the run never reached the database while it was down"
                time.sleep(0.2)
            code, body = status_of(client, in_flight)
            assert code == 503, body
        finally:
            cluster.start()

        status, _ = wait_terminal(client, in_flight)
        assert status["status"] == "DECISION_READY", (status["status"], status.get("error"))
        listed = {r["run_id"] for r in client.get("/api/v1/validation/runs", params={"page_size": 500}).json()["runs"]}
        assert {finished, in_flight} <= listed
        # the submission refused with 503 was never acknowledged, and left nothing behind
        assert client.get(f"/api/v1/validation/{refused['run_id']}/status").status_code == 404
        results = client.get(f"/api/v1/validation/{in_flight}/results")
        assert results.status_code == 200 and results.json()["decision"]["recommendation"] in ("GO", "PIVOT", "KILL")
