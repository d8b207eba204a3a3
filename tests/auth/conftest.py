"""A secured mesh: every stage and the orchestrator in-process over real loopback gRPC, each
requiring the service token, and the real gateway app in front with a file of scoped tokens."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import httpx
import pytest

from smvm.auth import TokenFile
from smvm.channels import ClientSecurity, open_channel
from smvm.config import Settings
from smvm.launcher import free_port
from smvm.server import ServerSecurity
from services.analysis.servicer import build_host as analysis_host
from services.competitors.servicer import build_host as competitors_host
from services.gateway.app import create_app
from services.ingestion.servicer import build_host as ingestion_host
from services.orchestrator.servicer import build_host as orchestrator_host
from services.overwatch.servicer import build_host as overwatch_host
from services.personas.servicer import build_host as personas_host
from services.simulation.servicer import build_host as simulation_host

REPO = Path(__file__).resolve().parents[2]
SERVICE_TOKEN = "svc-" + "s" * 40
LEGACY_ADMIN = "legacy-admin-token"


def write_tokens(path: Path) -> dict[str, str]:
    """Scoped tokens by label; returns each label's secret."""
    tokens = TokenFile(path)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    secrets = {
        "admin": tokens.create("ops-admin", "admin", ["*"]),
        "submitter_a": tokens.create("tb-submit-a", "submitter", ["PROJ-A"]),
        "reader_a": tokens.create("tb-read-a", "reader", ["PROJ-A"]),
        "reader_ab": tokens.create("tb-read-ab", "reader", ["PROJ-A", "PROJ-B"]),
        "service": tokens.create("mesh", "service", ["*"]),
        "expired": tokens.create("old", "reader", ["PROJ-A"], expires_at=past),
        "revoked": tokens.create("leaked", "admin", ["*"]),
    }
    tokens.revoke("leaked")
    secrets["legacy"] = LEGACY_ADMIN
    return secrets


@contextlib.asynccontextmanager
async def secured_mesh(tmp: Path, **overrides):
    runs_dir = tmp / "runs"
    tokens_file = tmp / "tokens.yaml"
    secrets = write_tokens(tokens_file)
    names = ("orchestrator", "ingestion", "personas", "competitors", "analysis", "overwatch", "simulation")
    settings = Settings(
        profile="test", runs_dir=runs_dir, numba_cache_dir=REPO / ".numba_cache", grace_period_s=1,
        api_tokens=LEGACY_ADMIN, tokens_file=str(tokens_file), service_token=SERVICE_TOKEN,
        **{f"{name}_addr": f"127.0.0.1:{free_port()}" for name in names}, **overrides,
    )
    hosts = [ingestion_host(settings), personas_host(settings), competitors_host(settings), analysis_host(settings),
             overwatch_host(settings), simulation_host(settings)]
    orchestrator = orchestrator_host(settings)
    for host in [*hosts, orchestrator]:
        on_denied = host.security.on_denied
        host.security = ServerSecurity.from_settings(settings)  # what run_service does for every service
        host.security.on_denied = on_denied
    security = ClientSecurity.from_settings(settings)
    channel = open_channel(settings.orchestrator_addr, security)
    audit_channel = open_channel(settings.overwatch_addr, security)
    app = create_app(settings, channel, rate_limits_per_minute={}, audit_channel=audit_channel)
    try:
        for host in [*hosts, orchestrator]:
            await host.start()
        for host in [*hosts, orchestrator]:
            await host.ready.wait()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield settings, client, secrets, app
    finally:
        await app.state.audit.drain()
        await channel.close()
        await audit_channel.close()
        for host in [orchestrator, *hosts]:
            await host.stop(0)


@pytest.fixture(scope="module")
async def mesh(tmp_path_factory):
    async with secured_mesh(tmp_path_factory.mktemp("secured")) as parts:
        yield parts
