"""The gateway against a real grpc.aio server on loopback hosting a small fake ValidationService.

The fake keeps runs in a dict and behaves like the orchestrator where the gateway can tell
(replay of an identical submission, 409 on a different body, results only once a decision is
ready); tests can make any RPC fail with a domain error or hang. It runs behind SMVM's real server
interceptors, so failures arrive as the same rich gRPC status the orchestrator sends.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field

import httpx
import pytest
from google.protobuf import json_format, timestamp_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from smvm.config import Settings
from smvm.errors import AlreadyExists, FailedPrecondition, NotFound
from smvm.interceptors import server_interceptors
from smvm.v1 import (
    decision_pb2,
    run_pb2,
    simulation_pb2,
    validation_service_pb2 as vpb,
    validation_service_pb2_grpc as vgrpc,
)

from services.gateway.app import create_app

TOKEN = "gateway-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Call:
    method: str
    request: object
    metadata: dict[str, str]


@dataclass
class FakeValidation(vgrpc.ValidationServiceServicer):
    calls: list[Call] = field(default_factory=list)
    runs: dict[str, tuple[bytes, vpb.SubmitRunResponse]] = field(default_factory=dict)
    # (idempotency_scope, idempotency_key) -> run_id, as the orchestrator keeps them.
    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    # method name -> exception to raise (domain error or anything else) on its next calls.
    failures: dict[str, BaseException] = field(default_factory=dict)
    delay_s: float = 0.0

    def reset(self) -> None:
        self.calls.clear(), self.runs.clear(), self.keys.clear(), self.states.clear(), self.failures.clear()
        self.delay_s = 0.0

    async def _enter(self, method: str, request, context) -> None:
        self.calls.append(Call(method, request, {k: v for k, v in context.invocation_metadata()}))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if method in self.failures:
            raise self.failures[method]

    def _status(self, run_id: str) -> run_pb2.RunStatus:
        if run_id.startswith("VAL-"):
            run_id = run_id[4:]
        if run_id not in self.states:
            raise NotFound(f"run {run_id} not found")
        status = run_pb2.RunStatus(
            run_id=run_id, validation_id=f"VAL-{run_id}", project_id="PROJ-1", state=self.states[run_id],
            current_stage="simulation", progress=0.5, stage_results={"ingestion": "completed", "simulation": "in_progress"},
        )
        status.created_at.FromJsonString("2026-11-22T14:30:52Z")
        return status

    async def SubmitRun(self, request, context):
        await self._enter("SubmitRun", request, context)
        unkeyed = vpb.SubmitRunRequest()
        unkeyed.CopyFrom(request)
        unkeyed.idempotency_key = unkeyed.idempotency_scope = ""
        digest = unkeyed.SerializeToString(deterministic=True)
        key = (request.idempotency_scope, request.idempotency_key)
        if request.idempotency_key and key in self.keys:
            keyed_run = self.keys[key]
            if self.runs[keyed_run][0] != digest:
                raise AlreadyExists("this Idempotency-Key was used with a different request", field="Idempotency-Key",
                                    reason="IDEMPOTENCY_KEY_REUSED", metadata={"run_id": keyed_run})
            run_id = keyed_run
        else:
            run_id = request.run_id or f"RUN-GENERATED-{len(self.runs) + 1}"
        if run_id in self.runs:
            stored_digest, stored = self.runs[run_id]
            if stored_digest != digest:
                raise AlreadyExists(f"run {run_id} already exists with different content", reason="RUN_ID_CONFLICT")
            replay = vpb.SubmitRunResponse()
            replay.CopyFrom(stored)
            replay.replayed = True
            return replay
        response = vpb.SubmitRunResponse(
            run_id=run_id, validation_id=f"VAL-{run_id}", project_id=request.project_id,
            status=run_pb2.RUN_STATE_INITIATED, run_directory=f"runs/{request.project_id}/validation/{run_id}",
            validation_results=vpb.ValidationResults(schema_compliance="passed", business_logic_check="passed"),
            webhook_urls=vpb.WebhookUrls(status_updates=f"http://gw/api/v1/validation/{run_id}/status"),
            correlation_id=request.correlation_id or context_id(context),
        )
        response.estimated_completion.FromJsonString("2026-11-22T14:35:52Z")
        self.runs[run_id] = (digest, response)
        if request.idempotency_key:
            self.keys[key] = run_id
        self.states[run_id] = run_pb2.RUN_STATE_RUNNING
        return response

    async def GetRunStatus(self, request, context):
        await self._enter("GetRunStatus", request, context)
        return vpb.GetRunStatusResponse(status=self._status(request.run_id))

    async def GetRunResults(self, request, context):
        await self._enter("GetRunResults", request, context)
        status = self._status(request.run_id)
        if status.state != run_pb2.RUN_STATE_DECISION_READY:
            raise FailedPrecondition(f"run {status.run_id} has no results: status RUNNING", reason="NOT_READY")
        response = vpb.GetRunResultsResponse(status=status)
        response.decision.recommendation = decision_pb2.RECOMMENDATION_GO
        response.decision.confidence = 0.8
        response.review.verdict = decision_pb2.REVIEW_VERDICT_APPROVE
        response.simulation.CopyFrom(simulation_pb2.SimulationResult())
        json_format.ParseDict({"reviewed": True, "score": 3}, response.completion_results)
        return response

    async def CompleteRun(self, request, context):
        await self._enter("CompleteRun", request, context)
        self._status(request.run_id)
        self.states[request.run_id] = run_pb2.RUN_STATE_COMPLETED
        return vpb.CompleteRunResponse(status=self._status(request.run_id))

    async def FinalizeRun(self, request, context):
        await self._enter("FinalizeRun", request, context)
        status = self._status(request.run_id)
        return vpb.FinalizeRunResponse(
            run_id=status.run_id, go_no_go="GO", recommendation=decision_pb2.RECOMMENDATION_PIVOT,
            confidence=0.7, status=status, reasons=["proceed with the pivot"],
        )

    async def ListRuns(self, request, context):
        await self._enter("ListRuns", request, context)
        runs = [self._status(r) for r in sorted(self.states)]
        return vpb.ListRunsResponse(runs=runs, next_page_token="")


def context_id(context) -> str:
    return dict(context.invocation_metadata()).get("x-correlation-id", "")


@dataclass
class Upstream:
    fake: FakeValidation
    health: HealthServicer
    address: str
    channel: aio.Channel


@pytest.fixture(scope="session")
async def upstream_server():
    fake = FakeValidation()
    health = HealthServicer()
    server = aio.server(interceptors=server_interceptors())
    vgrpc.add_ValidationServiceServicer_to_server(fake, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    channel = aio.insecure_channel(address)
    yield Upstream(fake, health, address, channel)
    await channel.close()
    await server.stop(0)


@pytest.fixture
async def upstream(upstream_server):
    upstream_server.fake.reset()
    await upstream_server.health.set("", health_pb2.HealthCheckResponse.SERVING)
    yield upstream_server
    upstream_server.fake.reset()


def make_settings(**overrides) -> Settings:
    values = dict(profile="test", api_tokens=TOKEN, max_request_bytes=4096, public_base_url="http://gw")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def client(upstream, settings):
    app = create_app(settings, upstream.channel, rate_limits_per_minute={})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=AUTH) as c:
        yield c


@pytest.fixture
async def make_client(upstream):
    """A client over an app built with other settings / limits / channel (closed by the test's end)."""
    clients: list[httpx.AsyncClient] = []

    def build(settings: Settings | None = None, channel: aio.Channel | None = None, headers=AUTH, **kwargs) -> httpx.AsyncClient:
        app = create_app(settings or make_settings(), channel or upstream.channel, **kwargs)
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=headers)
        clients.append(c)
        return c

    yield build
    for c in clients:
        await c.aclose()


BUSINESS_IDEA = {
    "project_id": "PROJ-2026-001",
    "run_id": "RUN-T-1",
    "business_idea": {
        "title": "AI finance coach",
        "description": "Coaching for millennials",
        "target_market": "US millennials",
        "value_proposition": "cheap coaching",
        "estimated_tam": 12_000_000_000,
        "estimated_sam": 1_500_000_000,
        "estimated_som": 45_000_000,
        "price": {"amount": 9.99, "currency": "USD", "billing_period": "monthly"},
        "features": ["sync", "budgeting"],
    },
    "configuration": {"simulation_iterations": 1000, "persona_count": 5, "max_tokens_per_run": 10000, "seed": 0},
    "metadata": {"initiated_by": "founder@example.com", "source_system": "tractionbuild"},
}

T0_IDEA = {
    "run_id": "RUN-T0-1",
    "project_id": "PROJ-2026-002",
    "idea": {
        "description": "AI-powered personal finance management platform",
        "domain": "finance",
        "urgency": "high",
        "submitter": "john.doe@company.com",
        "metadata": {"estimated_market_size": 5000000, "target_customers": "millennials", "competitive_advantage": "AI"},
    },
    "callback_url": "https://tractionbuild.example.com/api/v1/smvm/callback",
    "correlation_id": "CORR-20261122-143052-001",
}


@pytest.fixture
def business_idea() -> dict:
    return copy.deepcopy(BUSINESS_IDEA)


@pytest.fixture
def t0_idea() -> dict:
    return copy.deepcopy(T0_IDEA)
