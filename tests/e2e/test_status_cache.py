"""The gateway's status cache through real processes (issue #10): a run's changes reach the cache
and GET /status answers from it without ever going backwards; a write through the gateway is seen
by the next read; with the orchestrator killed nothing is answered from the cache, and after its
restart the cache recovers without answering what changed while it was down.

This module's own mesh (it kills the orchestrator), with the embedded SQLite store.
"""

from __future__ import annotations

import time

import httpx
import pytest

from services.orchestrator.store import RunStore

from .test_faults import client, payload, start_mesh, submit  # noqa: F401 (client: over this module's mesh)

pytestmark = pytest.mark.e2e
STATE_RANK = {"INITIATED": 0, "RUNNING": 1, "DECISION_READY": 2, "FAILED": 2, "TIMEOUT": 2, "COMPLETED": 3}
STAGE_RANK = {"pending": 0, "in_progress": 1, "completed": 2, "failed": 2}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("status-cache"), rate_limits="off")  # polled hard here
    yield mesh
    mesh.stop()


def lookups(client: httpx.Client) -> dict[str, float]:
    """The gateway's smvm_status_cache_lookups_total by outcome, and its updates by kind."""
    found: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        for series in ("smvm_status_cache_lookups_total", "smvm_status_cache_updates_total"):
            if line.startswith(series + "{"):
                label = line.split('"')[1]
                found[label] = float(line.split()[-1])
    return found


def newness(body: dict) -> tuple[int, int, float]:
    return (STATE_RANK[body["status"]], sum(STAGE_RANK[v] for v in body["stage_results"].values()), body["progress"])


def test_a_run_is_answered_from_the_cache_never_backwards_and_a_write_is_read_back(client):
    before = lookups(client)
    run_id = submit(client, payload(iterations=20_000))
    answers = []
    deadline = time.monotonic() + 180
    while True:
        response = client.get(f"/api/v1/validation/{run_id}/status")
        assert response.status_code == 200, response.text
        answers.append(response.json())
        if answers[-1]["status"] == "DECISION_READY":
            break
        assert time.monotonic() < deadline, answers[-1]
    for _ in range(20):  # a decided run polled on: unchanged, from the cache
        answers.append(client.get(f"/api/v1/validation/{run_id}/status").json())
    ranks = [newness(a) for a in answers]
    assert all(a <= b for a, b in zip(ranks, ranks[1:])), "an answer went backwards"
    assert [k for k in ("personas", "simulation", "overwatch") if any(a["current_stage"] == k for a in answers)]
    after = lookups(client)
    assert after.get("change", 0) - before.get("change", 0) >= 8  # the run's changes reached the cache
    assert after.get("hit", 0) - before.get("hit", 0) >= 20
    # The REST body is exactly what it was: no change_seq, no new field.
    assert "change_seq" not in answers[-1] and answers[-1]["validation_id"] == f"VAL-{run_id}"
    assert client.get(f"/api/v1/validation/VAL-{run_id}/status").json() == answers[-1]

    completed = client.put(f"/api/v1/validation/{run_id}/complete", json={"results": {"reviewed": True}})
    assert completed.status_code == 200, completed.text
    assert client.get(f"/api/v1/validation/{run_id}/status").json()["status"] == "COMPLETED"  # at once
    assert lookups(client).get("written", 0) > after.get("written", 0)  # read past the cache until synced


def test_with_the_orchestrator_down_nothing_comes_from_the_cache_and_it_recovers(mesh, client):
    run_id = submit(client, payload(iterations=1_000))
    deadline = time.monotonic() + 120
    while (body := client.get(f"/api/v1/validation/{run_id}/status").json())["status"] != "DECISION_READY":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    client.get(f"/api/v1/validation/{run_id}/status")
    lost = lookups(client).get("lost", 0)
    assert mesh.kill("orchestrator") == -9
    deadline = time.monotonic() + 10
    while lookups(client).get("lost", 0) == lost:  # the gateway sees its stream end
        assert time.monotonic() < deadline, "the gateway did not notice its run watch stream end"
        time.sleep(0.02)
    # A change the cache cannot know of: made while the orchestrator (and its stream) is down.
    store = RunStore(mesh.settings.runs_dir)
    changed = store.update(run_id, "test.touched", payload={"by": "test_status_cache"})
    store.db.close()
    hits = lookups(client).get("hit", 0)
    for _ in range(3):
        assert client.get(f"/api/v1/validation/{run_id}/status").status_code == 503
    assert lookups(client).get("hit", 0) == hits

    mesh.restart("orchestrator")
    deadline = time.monotonic() + 60
    while (response := client.get(f"/api/v1/validation/{run_id}/status")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    assert response.json()["updated_at"] == changed.updated_at
    deadline = time.monotonic() + 30
    while lookups(client).get("hit", 0) <= hits:  # answering from the cache again
        assert time.monotonic() < deadline, "the cache did not recover"
        assert client.get(f"/api/v1/validation/{run_id}/status").json()["updated_at"] == changed.updated_at
        time.sleep(0.05)
