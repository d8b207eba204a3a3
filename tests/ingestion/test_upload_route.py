"""Uploading grounding data through the REST gateway (and the `smvm import` CLI) into a real
IngestionService over loopback gRPC; the OpenAPI document describes the route and grounding_refs."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn
from grpc import aio

from smvm import cli
from smvm.config import Settings

from services.gateway.app import create_app
from services.ingestion.servicer import build_host

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grounding"
TOKEN = "upload-test-token"


@pytest.fixture
async def ingestion(tmp_path):
    host = build_host(Settings(runs_dir=tmp_path), "127.0.0.1:0")
    port = await host.start()
    try:
        yield port
    finally:
        await host.stop(0)


def _settings(port: int) -> Settings:
    return Settings(profile="test", api_tokens=TOKEN, ingestion_addr=f"127.0.0.1:{port}")


def _body(path: Path, kind: str, **extra) -> dict:
    return {"kind": kind, "source_name": path.name, "content": base64.b64encode(path.read_bytes()).decode(), **extra}


async def test_upload_imports_once_and_refuses_a_broken_file(ingestion, tmp_path):
    channel = aio.insecure_channel("127.0.0.1:1")  # the orchestrator is not needed by this route
    app = create_app(_settings(ingestion), channel, rate_limits_per_minute={})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=headers) as c:
        good = FIXTURES / "competitors" / "good.json"
        first = await c.post("/api/v1/grounding/imports", json=_body(good, "competitors"))
        assert first.status_code == 201, first.text
        answer = first.json()
        assert answer["report"]["rows_accepted"] == 3 and answer["report"]["source_name"] == "good.json"
        assert (tmp_path / "imports" / f"{answer['import_id']}.json").exists()
        again = await c.post("/api/v1/grounding/imports", json=_body(good, "competitors"))
        assert again.status_code == 200 and again.json()["existed"] is True

        broken = FIXTURES / "van_westendorp" / "broken_missing_column.csv"
        refused = await c.post("/api/v1/grounding/imports", json=_body(broken, "van_westendorp"))
        assert refused.status_code == 400
        assert refused.json()["details"]["field"] == "content.too_expensive"
        assert len(list((tmp_path / "imports").glob("*.json"))) == 1

        unknown = await c.post("/api/v1/grounding/imports", json={"kind": "competitors", "contents": "x"})
        assert unknown.status_code == 400
        unauthorised = await c.post("/api/v1/grounding/imports", json=_body(good, "competitors"),
                                    headers={"Authorization": "Bearer nope"})
        assert unauthorised.status_code == 401

        schema = (await c.get("/openapi.json")).json()
        assert "/api/v1/grounding/imports" in schema["paths"]
        for shape in ("BusinessIdea", "IdeaSubmission"):
            refs = schema["components"]["schemas"][shape]["properties"]["grounding_refs"]
            assert refs["anyOf"][0]["type"] == "array" and "grounding imports" in refs["description"]
    await channel.close()


async def test_cli_import_through_a_running_gateway(ingestion, tmp_path, capsys):
    channel = aio.insecure_channel("127.0.0.1:1")
    app = create_app(_settings(ingestion), channel, rate_limits_per_minute={})
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if server.started:
                break
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        path = FIXTURES / "van_westendorp" / "small_eur_annual.jsonl"
        # The CLI blocks; the ingestion server runs on this test's event loop, so the CLI gets a thread.
        code = await asyncio.to_thread(cli.main, ["--url", f"http://127.0.0.1:{port}", "--token", TOKEN, "import",
                                                  str(path), "--kind", "van_westendorp"])
        out = capsys.readouterr()
        assert code == 0
        answer = json.loads(out.out)
        assert answer["report"]["rows_accepted"] == 6 and answer["report"]["format"] == "jsonl"
        assert "quality_warning: quality:too_few_rows" in out.err
        assert (tmp_path / "imports" / f"{answer['import_id']}.json").exists()
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        await channel.close()


def test_cli_local_import_writes_the_runs_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SMVM_RUNS_DIR", str(tmp_path))
    cli.load_settings.cache_clear()
    try:
        path = FIXTURES / "market_size" / "good.csv"
        assert cli.main(["import", str(path), "--kind", "market_size", "--local"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["report"]["rows_accepted"] == 4 and answer["existed"] is False
        assert (tmp_path / "imports" / f"{answer['import_id']}.json").exists()
        with pytest.raises(SystemExit, match="import refused, nothing stored: content: 2 of 3 rows rejected"):
            cli.main(["import", str(FIXTURES / "market_size" / "broken_unsourced.csv"), "--kind", "market_size", "--local"])
        assert len(list((tmp_path / "imports").glob("*.json"))) == 1
    finally:
        cli.load_settings.cache_clear()
