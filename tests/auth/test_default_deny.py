"""An /api/ endpoint added without authorisation is closed by default: only all-project admins
reach it until it is classified in services.gateway.access.GUARDED_ROUTES."""

from __future__ import annotations

import httpx
from grpc import aio

from smvm.auth import TokenFile
from smvm.config import Settings

from services.gateway.app import create_app


async def test_an_unclassified_endpoint_is_admin_only_and_unknown_paths_still_404(tmp_path):
    tokens = TokenFile(tmp_path / "tokens.yaml")
    reader = tokens.create("reader", "reader", ["PROJ-A"])
    scoped_admin = tokens.create("project-admin", "admin", ["PROJ-A"])
    settings = Settings(profile="test", api_tokens="root-token", tokens_file=str(tmp_path / "tokens.yaml"))
    channel = aio.insecure_channel("127.0.0.1:9")  # never called
    app = create_app(settings, channel, rate_limits_per_minute={})

    @app.get("/api/v1/validation/{run_id}/experimental")
    async def experimental(run_id: str):
        return {"run_id": run_id}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        def get(path: str, token: str):
            return client.get(path, headers={"Authorization": f"Bearer {token}"})

        denied = await get("/api/v1/validation/RUN-1/experimental", reader)
        assert denied.status_code == 403 and denied.json()["details"]["reason"] == "ENDPOINT_NOT_CLASSIFIED"
        assert (await get("/api/v1/validation/RUN-1/experimental", scoped_admin)).status_code == 403
        allowed = await get("/api/v1/validation/RUN-1/experimental", "root-token")
        assert allowed.status_code == 200 and allowed.json() == {"run_id": "RUN-1"}
        assert (await get("/api/v1/nowhere", reader)).status_code == 404
        assert (await client.get("/api/v1/validation/RUN-1/experimental")).status_code == 401
    await channel.close()
