"""Crash safety through real processes: kill -9 a stage or the orchestrator mid-run, restart it.

The mesh here is this module's own (the faults would disturb the shared one), with the default
configuration: the embedded SQLite store inside the runs directory.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from smvm.config import Settings
from smvm.launcher import Mesh, free_addresses

from services.orchestrator.store import STAGE_WEIGHTS, progress_before

REPO = Path(__file__).resolve().parents[2]
TOKEN = "faults-token"
EXAMPLE = json.loads((REPO / "examples" / "idea.json").read_text())
TERMINAL = {"DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"}
SEED = 424242
# Enough iterations that the simulation runs for a few seconds on a busy 2-core machine.
ITERATIONS = 150_000

pytestmark = pytest.mark.e2e


def start_mesh(base: Path, **settings_overrides) -> Mesh:
    settings = Settings(
        profile="test", runs_dir=base / "runs", api_tokens=TOKEN, numba_cache_dir=REPO / ".numba_cache",
        stage_timeout_s=30, simulation_timeout_s=180,
        # The outcomes compared here assume memory answered (a busy machine must not make it give up).
        memory_timeout_s=20, **settings_overrides,
    )
    mesh = Mesh(settings, addresses=free_addresses(), log_dir=base / "logs", extra_env={"SMVM_PROFILE": "test"})
    mesh.start(timeout_s=300)
    return mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("faults"))
    yield mesh
    mesh.stop()


@pytest.fixture(scope="module")
def client(mesh):
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def payload(seed: int = SEED, iterations: int = ITERATIONS) -> dict:
    body = copy.deepcopy(EXAMPLE)
    body["run_id"] = f"RUN-FAULT-{uuid.uuid4().hex[:10]}"
    body["configuration"].update(simulation_iterations=iterations, seed=seed, timeout_seconds=600)
    return body


def submit(client: httpx.Client, body: dict) -> str:
    response = client.post("/api/v1/validation/runs", json=body)
    assert response.status_code == 201, response.text
    return body["run_id"]


def status_of(client: httpx.Client, run_id: str) -> tuple[int, dict]:
    try:
        response = client.get(f"/api/v1/validation/{run_id}/status")
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json()


def status_until_unavailable(client: httpx.Client, run_id: str, state: str, within_s: float = 5.0) -> dict:
    """GET /status until it answers 503 (its body returned), right after the orchestrator or its
    database went away. Until then the gateway's status cache may answer, for at most its staleness
    bound past its last answered sync, and only with the state last committed (`state`): nothing
    commits meanwhile."""
    started = time.monotonic()
    while (answer := status_of(client, run_id))[0] != 503:
        code, body = answer
        assert code == 200 and body["status"] == state, answer
        assert time.monotonic() - started < within_s, "status answered from the cache past its staleness bound"
        time.sleep(0.05)
    return answer[1]


def wait_mid_simulation(client: httpx.Client, run_id: str, timeout_s: float = 120) -> None:
    """Until the simulation stage has reported progress (it is computing, not finished)."""
    start = progress_before("simulation")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, status = status_of(client, run_id)
        assert code == 200, status
        assert status["status"] not in TERMINAL, f"run ended before the fault could be injected: {status}"
        if status["current_stage"] == "simulation" and start + 0.01 < status["progress"] < start + STAGE_WEIGHTS["simulation"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached the middle of the simulation")


def wait_terminal(client: httpx.Client, run_id: str, timeout_s: float = 240) -> tuple[dict, set[int]]:
    """Poll through outages; return the final status and every HTTP status code seen."""
    codes: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, status = status_of(client, run_id)
        codes.add(code)
        if code == 200 and status["status"] in TERMINAL:
            return status, codes
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout_s}s (codes seen {codes})")


def outcome(mesh: Mesh, run_id: str) -> dict:
    """What must not depend on faults: the simulation's numbers and the decision.

    The decision's memory evidence is checked apart (memory_of): it cites the runs decided before this
    one, which differ by design. Every run here is a re-run of the same idea in the same project, so
    none is a precedent and memory moves no risk score."""
    rundir = Path(mesh.settings.runs_dir) / EXAMPLE["project_id"] / "validation" / run_id
    simulation = json.loads((rundir / "outputs/simulation.result.json").read_text())
    simulation.pop("kernel_seconds", None)
    decision = json.loads((rundir / "outputs/decision.output.json").read_text())
    decision["decision"].pop("memory")
    return {"simulation": simulation, "decision": decision["decision"], "review": decision["review"]}


def memory_of(mesh: Mesh, run_id: str) -> dict:
    rundir = Path(mesh.settings.runs_dir) / EXAMPLE["project_id"] / "validation" / run_id
    return json.loads((rundir / "outputs/decision.output.json").read_text())["decision"]["memory"]


def events_of(mesh: Mesh, run_id: str) -> list[dict]:
    path = Path(mesh.settings.runs_dir) / EXAMPLE["project_id"] / "validation" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def undisturbed(mesh, client) -> dict:
    run_id = submit(client, payload())
    status, _ = wait_terminal(client, run_id)
    assert status["status"] == "DECISION_READY", (status["status"], status.get("error"))
    return outcome(mesh, run_id)


def test_killing_the_simulation_mid_run_and_restarting_it_gives_the_undisturbed_result(mesh, client, undisturbed):
    run_id = submit(client, payload())
    wait_mid_simulation(client, run_id)
    assert mesh.kill("simulation-0") == -9
    time.sleep(1.0)  # the stage is down for a while: the orchestrator retries within its budget
    mesh.restart("simulation-0")
    status, _ = wait_terminal(client, run_id)
    assert status["status"] == "DECISION_READY", (status["status"], status.get("error"))
    assert outcome(mesh, run_id) == undisturbed
    completed = [e["payload"]["stage"] for e in events_of(mesh, run_id) if e["type"] == "stage.completed"]
    assert completed == ["personas", "competitors", "simulation", "analysis", "overwatch"]
    memory = memory_of(mesh, run_id)
    assert memory["status"] == "used" and memory["decision_history"] and "precedents" not in memory


def test_killing_the_orchestrator_mid_run_and_restarting_it_resumes_the_run(mesh, client, undisturbed):
    before = submit(client, payload(iterations=1000))
    assert wait_terminal(client, before)[0]["status"] == "DECISION_READY"
    run_id = submit(client, payload())
    wait_mid_simulation(client, run_id)
    assert mesh.kill("orchestrator") == -9
    status_until_unavailable(client, run_id, "RUNNING")  # the gateway answers for the orchestrator while it is down
    mesh.restart("orchestrator")
    status, _ = wait_terminal(client, run_id)
    assert status["status"] == "DECISION_READY", (status["status"], status.get("error"))
    assert outcome(mesh, run_id) == undisturbed
    events = events_of(mesh, run_id)
    types = [e["type"] for e in events]
    assert "run.resumed" in types
    resumed = events[types.index("run.resumed")]["payload"]["completed_stages"]
    assert resumed == ["ingestion", "personas", "competitors"]
    completed = [e["payload"]["stage"] for e in events if e["type"] == "stage.completed"]
    assert completed == ["personas", "competitors", "simulation", "analysis", "overwatch"]
    # memory was asked once, before the crash; the resumed run used the grounding committed then
    assert [e["type"] for e in events].count("memory.grounded") == 1
    assert before in [d["run_id"] for d in memory_of(mesh, run_id)["decision_history"]]
    # nothing acknowledged before the crash is missing after it
    listed = {r["run_id"] for r in client.get("/api/v1/validation/runs", params={"page_size": 500}).json()["runs"]}
    assert {before, run_id} <= listed
