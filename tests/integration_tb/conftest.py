"""Fixtures of the TractionBuild integration tests: the double, and a mesh that calls it back."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smvm.config import Settings  # noqa: E402
from smvm.launcher import Mesh, MeshError, free_addresses, free_port, unclean_exits  # noqa: E402
from tractionbuild_double import TractionBuildDouble  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXRoZS1pbnRlZ3JhdGlvbi10ZXN0cw=="
TOKEN = "tb-integration-token"


def start_mesh(base: Path, tb: TractionBuildDouble, **overrides) -> Mesh:
    """A mesh (each service its own process, test profile) that calls `tb` back, with fast retries;
    the orchestrator serves its metrics at `mesh.metrics_url`."""
    metrics_port = free_port()
    values = dict(
        profile="test", runs_dir=base / "runs", api_tokens=TOKEN, numba_cache_dir=REPO / ".numba_cache",
        stage_timeout_s=30, simulation_timeout_s=120,
        webhook_secrets=SECRET, callback_allowed_hosts="127.0.0.1",
        webhook_backoff_base_s=0.05, webhook_breaker_cooldown_s=0.5, webhook_lease_s=0.5,
        webhook_poll_interval_s=0.05, webhook_timeout_s=5,
        tractionbuild_base_url=tb.base_url, tractionbuild_api_key="tb-api-key", results_sync_interval_s=3600,
        callback_api_key="tb-callback-key",
    )
    values.update(overrides)
    for attempt in range(3):
        log_dir = base / f"logs-{attempt}"
        mesh = Mesh(Settings(**values), addresses=free_addresses(), log_dir=log_dir,
                    extra_env={"SMVM_PROFILE": "test", "SMVM_ORCHESTRATOR_METRICS_ADDR": f"127.0.0.1:{metrics_port}"})
        mesh.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        try:
            mesh.start(timeout_s=300)
            return mesh
        except MeshError:
            # free_addresses() picks free ports and releases them; on a machine shared with other
            # meshes one can be taken before our service binds it. Only that race is retried.
            lost_race = any(sign in path.read_text(errors="replace")
                            for path in log_dir.glob("*.log")
                            for sign in ("Failed to bind", "cannot bind", "Address already in use"))
            if not lost_race or attempt == 2:
                raise
            metrics_port = free_port()
    raise AssertionError("unreachable")


@pytest.fixture
def double():
    tb = TractionBuildDouble(SECRET)
    tb.start()
    yield tb
    tb.stop()


# One TractionBuild double and one mesh per test module (a module's tests share its state).
@pytest.fixture(scope="module")
def tb():
    double = TractionBuildDouble(SECRET)
    double.start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def mesh(tb, tmp_path_factory):
    mesh = start_mesh(tmp_path_factory.mktemp("tbmesh"), tb)
    yield mesh
    codes = mesh.stop()
    assert not (unclean := unclean_exits(codes)), unclean


@pytest.fixture(scope="module")
def api(mesh):
    with httpx.Client(base_url=mesh.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c
