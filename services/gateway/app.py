"""The REST face TractionBuild codes against: the integration guide's endpoints over ValidationService.

Each route validates the body against a model derived from the proto, makes one gRPC call with the
guide's per-endpoint timeout as its deadline and the request's correlation id as metadata, and
answers the message as JSON (`jsonview`). No pipeline logic lives here; every decision about a run
is the orchestrator's, and its status codes become HTTP codes in `errors`.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Awaitable, Callable, Optional

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel

from smvm import __version__, correlation, metrics
from smvm.channels import open_channel
from smvm.config import Settings
from smvm.errors import InvalidArgument
from smvm.ids import check_id
from smvm.v1 import (
    delivery_service_pb2 as dpb,
    delivery_service_pb2_grpc as dgrpc,
    validation_service_pb2 as vpb,
    validation_service_pb2_grpc as vgrpc,
)

from services.gateway import errors
from services.gateway.errors import ApiError
from services.gateway.idempotency import MAX_KEY_LENGTH, IdempotencyStore, request_digest
from services.gateway.jsonview import json_to_message, message_to_json
from services.gateway.middleware import GatewayMiddleware
from services.gateway.ratelimit import RateLimiter
from services.gateway.schema import request_model, response_model

# The guide's per-endpoint timeouts (seconds), used as gRPC deadlines.
TIMEOUTS_S = {"runs": 30.0, "status": 5.0, "results": 30.0, "complete": 60.0, "finalize": 30.0, "list": 30.0,
              "admin": 30.0}
READY_CHECK_TIMEOUT_S = 2.0

SubmitRunBody = request_model(vpb.SubmitRunRequest.DESCRIPTOR, name="SubmitRunBody")
CompleteRunBody = request_model(vpb.CompleteRunRequest.DESCRIPTOR, exclude=("run_id",), name="CompleteRunBody")
FinalizeRunBody = request_model(vpb.FinalizeRunRequest.DESCRIPTOR, exclude=("run_id",), name="FinalizeRunBody")
SyncResultsBody = request_model(dpb.SyncResultsRequest.DESCRIPTOR, name="SyncResultsBody")



class ErrorBody(BaseModel):
    """The one body of every error answer."""

    error: str
    message: str
    details: dict[str, Any]
    run_id: Optional[str]


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "model": ErrorBody}
    for code, text in {
        400: "Bad Request (invalid payload; details.field names the field)",
        401: "Unauthorized (missing or invalid bearer token)",
        403: "Forbidden",
        404: "Not Found (unknown validation id)",
        409: "Conflict (run exists with different content, or not in a state that allows this)",
        413: "Payload Too Large",
        415: "Unsupported Media Type (bodies must be application/json)",
        429: "Too Many Requests (see Retry-After)",
        500: "Internal Server Error",
        503: "Service Unavailable (see Retry-After)",
        504: "Gateway Timeout",
    }.items()
}


def _checked(field: str, value: str) -> str:
    """An id from the path or query, refused before it reaches any service if unsafe."""
    try:
        return check_id(field, value)
    except InvalidArgument as exc:
        raise ApiError(
            400, "INVALID_ARGUMENT", str(exc), details={"field": exc.field, "reason": exc.reason, "description": exc.message}
        ) from None


def _path_id(value: str) -> str:
    """A run_id or validation_id from the path."""
    return _checked("run_id", value)


def _body_dict(body: Any) -> dict[str, Any]:
    return body.model_dump(exclude_none=True, mode="json") if body is not None else {}


def _idempotent_run_id(token_hint: str, key: str) -> str:
    """The run_id an Idempotency-Key stands for, so the orchestrator's replay / 409 rules apply to it."""
    return "RUN-IK-" + hashlib.sha256(f"{token_hint}\0{key}".encode()).hexdigest()[:32]


class Upstream:
    """The orchestrator's stubs, and whether this gateway is draining."""

    def __init__(self, channel: aio.Channel):
        self.channel = channel
        self.validation = vgrpc.ValidationServiceStub(channel)
        self.delivery = dgrpc.DeliveryServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.draining = False

    async def call(self, method: Callable[..., Awaitable[Message]], request: Message, endpoint: str, run_id: str | None) -> Message:
        metadata = ((correlation.METADATA_KEY, correlation.get() or correlation.new_id()),)
        try:
            return await method(request, timeout=TIMEOUTS_S[endpoint], metadata=metadata)
        except aio.AioRpcError as err:
            raise errors.from_rpc_error(err, run_id) from None

    async def serving(self) -> bool:
        if self.draining:
            return False
        try:
            answer = await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=READY_CHECK_TIMEOUT_S)
        except aio.AioRpcError:
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING


def create_app(
    settings: Settings,
    channel: aio.Channel | None = None,
    *,
    rate_limits_per_minute: dict[str, int] | None = None,
) -> FastAPI:
    """The gateway app. With no `channel`, one to settings.orchestrator_addr is opened at startup
    and closed at shutdown; a given channel belongs to the caller. `rate_limits_per_minute`
    overrides the guide's limits (an empty dict disables them)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        own = channel is None
        upstream = Upstream(open_channel(settings.orchestrator_addr) if own else channel)
        app.state.upstream = upstream
        try:
            yield
        finally:
            upstream.draining = True
            if own:
                await upstream.channel.close()

    app = FastAPI(
        title="SMVM validation API",
        version=__version__,
        description="TractionBuild's door to the Synthetic Market Validation Module (REST over the gRPC ValidationService).",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    app.state.idempotency = IdempotencyStore(ttl_s=settings.idempotency_ttl_s)
    # Tests may build the app without running its lifespan; the upstream then exists from the start.
    if channel is not None:
        app.state.upstream = Upstream(channel)
    errors.install(app)
    app.add_middleware(
        GatewayMiddleware,
        accepted_tokens=settings.accepted_tokens(),
        max_request_bytes=settings.max_request_bytes,
        rate_limiter=RateLimiter(rate_limits_per_minute),
    )

    def upstream_of(request: Request) -> Upstream:
        return request.app.state.upstream

    # ------------------------------------------------------------------ probes (no auth)
    @app.get("/healthz", tags=["probes"], summary="Liveness: the gateway process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics of this gateway", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/readyz", tags=["probes"], summary="Readiness: the orchestrator reports SERVING")
    async def readyz(request: Request):
        if await upstream_of(request).serving():
            return {"status": "ready"}
        raise ApiError(503, "UNAVAILABLE", "the validation service is not serving", details={"reason": "NOT_SERVING"},
                       headers={"Retry-After": str(errors.UNAVAILABLE_RETRY_AFTER_S)})

    # ------------------------------------------------------------------ the guide's endpoints
    async def submit(request: Request, body: SubmitRunBody, idempotency_key: Optional[str]) -> JSONResponse:  # type: ignore[valid-type]
        data = _body_dict(body)
        request.state.run_id = data.get("run_id") or None
        store: IdempotencyStore = request.app.state.idempotency
        client = getattr(request.state, "client_id", "") or hashlib.sha256(
            request.headers.get("authorization", "").encode()).hexdigest()
        digest = request_digest(data)
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
                raise ApiError(400, "INVALID_ARGUMENT", f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters",
                               details={"field": "Idempotency-Key", "reason": "INVALID_FIELD"})
            stored = store.get(client, idempotency_key)
            if stored is not None:
                if stored.digest != digest:
                    raise ApiError(409, "ALREADY_EXISTS", "this Idempotency-Key was used with a different request",
                                   details={"field": "Idempotency-Key", "reason": "IDEMPOTENCY_KEY_REUSED"},
                                   run_id=stored.body.get("run_id"))
                replay = dict(stored.body, replayed=True)
                return JSONResponse(replay, status_code=stored.status, headers={
                    "Location": f"/api/v1/validation/{replay['run_id']}/status", "Idempotent-Replayed": "true"})
            if not data.get("run_id"):
                data["run_id"] = _idempotent_run_id(client, idempotency_key)
                request.state.run_id = data["run_id"]
        message = json_to_message(data, vpb.SubmitRunRequest())
        upstream = upstream_of(request)
        answer: vpb.SubmitRunResponse = await upstream.call(upstream.validation.SubmitRun, message, "runs", request.state.run_id)
        headers = {"Location": f"/api/v1/validation/{answer.run_id}/status"}
        if answer.replayed:
            headers["Idempotent-Replayed"] = "true"
        answer_body = message_to_json(answer)
        if idempotency_key is not None:
            store.put(client, idempotency_key, digest, 201, dict(answer_body, replayed=False))
        return JSONResponse(answer_body, status_code=201, headers=headers)

    @app.post(
        "/api/v1/validation/runs", status_code=201, tags=["validation"],
        summary="Initiate a validation run (T0); accepts the `idea` and the `business_idea` shapes",
        response_model=response_model(vpb.SubmitRunResponse.DESCRIPTOR),
    )
    async def submit_run(
        request: Request, body: SubmitRunBody,  # type: ignore[valid-type]
        idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key"),
    ):
        return await submit(request, body, idempotency_key)

    @app.post("/api/v1/validation/submit", status_code=201, include_in_schema=False)
    async def submit_alias(
        request: Request, body: SubmitRunBody,  # type: ignore[valid-type]
        idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key"),
    ):
        return await submit(request, body, idempotency_key)

    @app.get(
        "/api/v1/validation/runs", tags=["validation"], summary="List runs, newest first",
        response_model=response_model(vpb.ListRunsResponse.DESCRIPTOR),
    )
    async def list_runs(
        request: Request,
        project_id: Optional[str] = Query(None, max_length=128),
        page_size: Optional[int] = Query(None, ge=1, le=500),
        page_token: Optional[str] = Query(None, max_length=64),
    ):
        if project_id:
            _checked("project_id", project_id)
        message = vpb.ListRunsRequest(project_id=project_id or "", page_size=page_size or 0, page_token=page_token or "")
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.validation.ListRuns, message, "list", None)
        return JSONResponse(message_to_json(answer))

    @app.get(
        "/api/v1/validation/{run_id}/status", tags=["validation"],
        summary="Where a run stands (accepts a run_id or its validation_id)",
        response_model=response_model(vpb.GetRunStatusResponse.DESCRIPTOR.fields_by_name["status"].message_type),
    )
    async def run_status(request: Request, run_id: str):
        run_id = _path_id(run_id)
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.validation.GetRunStatus, vpb.GetRunStatusRequest(run_id=run_id), "status", run_id)
        return JSONResponse(message_to_json(answer.status))

    @app.get(
        "/api/v1/validation/{run_id}/results", tags=["validation"],
        summary="The decision, review, personas, competitors and simulation of a run",
        response_model=response_model(vpb.GetRunResultsResponse.DESCRIPTOR),
    )
    async def run_results(request: Request, run_id: str):
        run_id = _path_id(run_id)
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.validation.GetRunResults, vpb.GetRunResultsRequest(run_id=run_id), "results", run_id)
        return JSONResponse(message_to_json(answer))

    async def complete(request: Request, run_id: str, body: Any) -> JSONResponse:
        run_id = _path_id(run_id)
        message = json_to_message(_body_dict(body), vpb.CompleteRunRequest())
        message.run_id = run_id
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.validation.CompleteRun, message, "complete", run_id)
        return JSONResponse(message_to_json(answer))

    complete_doc = dict(
        tags=["validation"], summary="Store the final results of a run (T0+30..31); idempotent",
        response_model=response_model(vpb.CompleteRunResponse.DESCRIPTOR),
    )

    @app.put("/api/v1/validation/{run_id}/complete", **complete_doc)
    async def complete_run(request: Request, run_id: str, body: CompleteRunBody):  # type: ignore[valid-type]
        return await complete(request, run_id, body)

    @app.post("/api/v1/validation/{run_id}/complete", include_in_schema=False)
    async def complete_run_post(request: Request, run_id: str, body: CompleteRunBody):  # type: ignore[valid-type]
        return await complete(request, run_id, body)

    @app.post(
        "/api/v1/validation/{run_id}/finalize", tags=["validation"],
        summary="The final go / no-go (T32); idempotent",
        response_model=response_model(vpb.FinalizeRunResponse.DESCRIPTOR),
    )
    async def finalize_run(request: Request, run_id: str, body: Optional[FinalizeRunBody] = None):  # type: ignore[valid-type]
        run_id = _path_id(run_id)
        message = json_to_message(_body_dict(body), vpb.FinalizeRunRequest())
        message.run_id = run_id
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.validation.FinalizeRun, message, "finalize", run_id)
        return JSONResponse(message_to_json(answer))

    # ------------------------------------------------------------------ operators: callbacks and the results sync
    @app.get(
        "/api/v1/admin/deliveries", tags=["admin"],
        summary="Callbacks to TractionBuild (outbox messages), newest first; state=dead lists the dead letters",
        response_model=response_model(dpb.ListDeliveriesResponse.DESCRIPTOR),
    )
    async def list_deliveries(
        request: Request,
        state: Optional[str] = Query(None, pattern="^(pending|delivered|dead)$"),
        run_id: Optional[str] = Query(None, max_length=128),
        limit: Optional[int] = Query(None, ge=1, le=500),
    ):
        if run_id:
            _checked("run_id", run_id)
        upstream = upstream_of(request)
        message = dpb.ListDeliveriesRequest(state=state or "", run_id=run_id or "", limit=limit or 0)
        answer = await upstream.call(upstream.delivery.ListDeliveries, message, "admin", run_id)
        return JSONResponse(message_to_json(answer))

    @app.post(
        "/api/v1/admin/deliveries/{event_id}/replay", tags=["admin"],
        summary="Put a dead (or delivered) callback back in the queue, attempts reset",
        response_model=response_model(dpb.ReplayDeliveryResponse.DESCRIPTOR),
    )
    async def replay_delivery(request: Request, event_id: str):
        if not 1 <= len(event_id) <= 200:
            raise ApiError(400, "INVALID_ARGUMENT", "event_id must be 1-200 characters",
                           details={"field": "event_id", "reason": "INVALID_FIELD"})
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.delivery.ReplayDelivery, dpb.ReplayDeliveryRequest(event_id=event_id),
                                     "admin", None)
        return JSONResponse(message_to_json(answer))

    @app.post(
        "/api/v1/admin/results-sync", tags=["admin"],
        summary="Run the T0+30 results sync to TractionBuild now (every completed, unsynced run, or those named)",
        response_model=response_model(dpb.SyncResultsResponse.DESCRIPTOR),
    )
    async def results_sync(request: Request, body: Optional[SyncResultsBody] = None):  # type: ignore[valid-type]
        upstream = upstream_of(request)
        message = json_to_message(_body_dict(body), dpb.SyncResultsRequest())
        answer = await upstream.call(upstream.delivery.SyncResults, message, "admin", None)
        return JSONResponse(message_to_json(answer))

    return app

