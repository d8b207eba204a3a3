"""Every stage and the orchestrator as ServiceHosts in this test's event loop, over real loopback gRPC.

Faster than the process mesh of tests/e2e, and it lets a test reach into the orchestrator's store.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from smvm.config import Settings
from smvm.launcher import free_port
from services.analysis.servicer import build_host as analysis_host
from services.competitors.servicer import build_host as competitors_host
from services.ingestion.servicer import build_host as ingestion_host
from services.memory.servicer import build_host as memory_host
from services.orchestrator.servicer import build_host as orchestrator_host
from services.overwatch.servicer import build_host as overwatch_host
from services.personas.servicer import build_host as personas_host
from services.simulation.servicer import build_host as simulation_host

REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def in_process_mesh(runs_dir: Path, simulation_replicas: int = 1, **overrides):
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("orchestrator", "ingestion", "personas", "competitors", "analysis", "overwatch", "memory")}
    replicas = [f"127.0.0.1:{free_port()}" for _ in range(simulation_replicas)]
    settings = Settings(
        profile="test", runs_dir=runs_dir, numba_cache_dir=REPO / ".numba_cache", grace_period_s=1,
        simulation_addr=",".join(replicas), **{f"{k}_addr": v for k, v in addresses.items()}, **overrides,
    )
    hosts = [
        ingestion_host(settings), personas_host(settings), competitors_host(settings),
        analysis_host(settings), overwatch_host(settings), memory_host(settings),
        *(simulation_host(settings, address) for address in replicas),
    ]
    orchestrator = orchestrator_host(settings)
    try:
        for host in hosts + [orchestrator]:
            await host.start()
        for host in hosts + [orchestrator]:
            await host.ready.wait()
        yield settings, orchestrator, hosts
    finally:
        for host in [orchestrator] + hosts:
            await host.stop(0)


@pytest.fixture
def mesh_factory(runs_dir):
    return lambda **kw: in_process_mesh(runs_dir, **kw)
