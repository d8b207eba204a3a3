"""A real mesh: every service its own process on free loopback ports, a temporary runs dir."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from smvm.config import Settings
from smvm.launcher import Mesh, free_addresses, unclean_exits

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token"
TERMINAL = {"DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"}


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    base = tmp_path_factory.mktemp("mesh")
    settings = Settings(
        profile="test", runs_dir=base / "runs", api_tokens=TOKEN, numba_cache_dir=REPO / ".numba_cache",
        stage_timeout_s=30, simulation_timeout_s=120,
        # Memory grounding must not be given up on because the shared 2-core machine is busy
        # (test_memory_grounding.py relies on it; memory that is down still fails at once).
        memory_timeout_s=20,
        # Outside dev, callback hosts must be allow-listed (the T0 example names this one).
        callback_allowed_hosts="tractionbuild.example.com",
    )
    mesh = Mesh(settings, addresses=free_addresses(), log_dir=base / "logs", extra_env={"SMVM_PROFILE": "test"})
    mesh.start(timeout_s=300)
    yield mesh
    codes = mesh.stop()
    # Every process drained and exited on SIGTERM by itself (not killed).
    assert not (unclean := unclean_exits(codes)), unclean


@pytest.fixture(scope="session")
def client(mesh):
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def wait_for(client: httpx.Client, run_id: str, timeout_s: float = 120) -> tuple[dict, list[str]]:
    """Poll status like TractionBuild; return the final status and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/api/v1/validation/{run_id}/status")
        assert response.status_code == 200, response.text
        status = response.json()
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        if status["status"] in TERMINAL:
            return status, seen
        assert time.monotonic() < deadline, f"run {run_id} stuck in {status}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def wait():
    return wait_for
