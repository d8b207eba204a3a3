"""The REST face TractionBuild codes against: the integration guide's endpoints over ValidationService.

Each route validates the body against a model derived from the proto, makes one gRPC call with the
guide's per-endpoint timeout as its deadline and the request's correlation id as metadata, and
answers the message as JSON (`jsonview`). No pipeline logic lives here; every decision about a run
is the orchestrator's, and its status codes become HTTP codes in `errors`. GET /status is answered
from the status cache when it is fresh (`status_cache`, fed by `status_watch`), without a call.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable, Optional

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel

from smvm import __version__, auth, correlation, metrics
from smvm.auth import TokenRegistry
from smvm.channels import ClientSecurity, open_channel
from smvm.config import Settings
from smvm.ids import check_id, run_id_from
from smvm.v1 import (
    delivery_service_pb2 as dpb,
    delivery_service_pb2_grpc as dgrpc,
    ingestion_service_pb2 as ipb,
    ingestion_service_pb2_grpc as igrpc,
    overwatch_service_pb2 as opb,
    overwatch_service_pb2_grpc as ogrpc,
    validation_service_pb2 as vpb,
    validation_service_pb2_grpc as vgrpc,
)

from services.gateway import access, errors
from services.gateway.errors import ApiError
from services.gateway import idempotency
from services.gateway.jsonview import JsonBodies, json_to_message, message_to_json
from services.gateway.middleware import GatewayMiddleware
from services.gateway.ratelimit import RateLimiter, limits_from_setting
from services.gateway.schema import request_model, response_model
from services.gateway.status_cache import StatusCache
from services.gateway.status_watch import StatusWatch

IDEMPOTENCY_KEY_DOC = (
    "Optional, 1-255 characters. Retries of the same request with the same key (from the same token) get the "
    "first answer again, on any gateway replica, for at least 24 h (`Idempotent-Replayed: true`); the same key with "
    "another request is 409 IDEMPOTENCY_KEY_REUSED."
)
# The guide's per-endpoint timeouts (seconds), used as gRPC deadlines.
TIMEOUTS_S = {"runs": 30.0, "status": 5.0, "results": 30.0, "complete": 60.0, "finalize": 30.0, "list": 30.0,
              "imports": 30.0, "report": 30.0, "admin": 30.0}
READY_CHECK_TIMEOUT_S = 2.0

# The Idempotency-Key travels in its header; the gateway fills the message's fields from it.
SubmitRunBody = request_model(vpb.SubmitRunRequest.DESCRIPTOR, exclude=("idempotency_key", "idempotency_scope"),
                              name="SubmitRunBody")
CompleteRunBody = request_model(vpb.CompleteRunRequest.DESCRIPTOR, exclude=("run_id",), name="CompleteRunBody")
FinalizeRunBody = request_model(vpb.FinalizeRunRequest.DESCRIPTOR, exclude=("run_id",), name="FinalizeRunBody")
ImportGroundingBody = request_model(ipb.ImportGroundingRequest.DESCRIPTOR, name="ImportGroundingBody")
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
    """An id from the path, query or body, refused before it reaches any service if unsafe
    (InvalidArgument becomes the 400 naming the field in errors.install)."""
    return check_id(field, value)


def _path_id(value: str) -> str:
    """A run_id or validation_id from the path."""
    return _checked("run_id", value)


def _body_dict(body: Any) -> dict[str, Any]:
    return body.model_dump(exclude_none=True, mode="json") if body is not None else {}


class Upstream:
    """The orchestrator's stubs, and whether this gateway is draining."""

    def __init__(self, channel: aio.Channel):
        self.channel = channel
        self.validation = vgrpc.ValidationServiceStub(channel)
        self.delivery = dgrpc.DeliveryServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.draining = False

    async def call(self, method: Callable[..., Awaitable[Message]], request: Message, endpoint: str, run_id: str | None) -> Message:
        metadata = ((correlation.METADATA_KEY, correlation.get() or correlation.new_id()),
                    (auth.ACTOR_METADATA_KEY, auth.on_behalf_of()))
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
    audit_channel: aio.Channel | None = None,
) -> FastAPI:
    """The gateway app. With no `channel`, one to settings.orchestrator_addr (and one to
    settings.overwatch_addr for the audit trail) is opened at startup and closed at shutdown; given
    channels belong to the caller (with a `channel` but no `audit_channel`, denials are only logged).
    `rate_limits_per_minute` overrides the guide's limits (an empty dict disables them)."""
    security = ClientSecurity.from_settings(settings)
    staleness_s = settings.status_cache_staleness_ms / 1000
    status_cache = StatusCache(settings.status_cache_size(), staleness_s) if settings.status_cache_size() else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        own = channel is None
        upstream = Upstream(open_channel(settings.orchestrator_addr, security) if own else channel)
        own_audit = own and audit_channel is None
        audit_to = open_channel(settings.overwatch_addr, security) if own_audit else audit_channel
        app.state.upstream = upstream
        app.state.audit = access.AuditSink(audit_to)
        app.state.overwatch = ogrpc.OverwatchServiceStub(audit_to) if audit_to is not None else None
        watching = None
        if status_cache is not None:
            app.state.status_watch = StatusWatch(upstream.channel, status_cache, sync_interval_s=staleness_s / 4)
            metrics.STATUS_CACHE_SYNC_AGE.set_function(status_cache.sync_age)
            watching = asyncio.create_task(app.state.status_watch.run(), name="status-watch")
        try:
            yield
        finally:
            upstream.draining = True
            if watching is not None:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            await app.state.audit.drain()
            if own:
                await upstream.channel.close()
            if getattr(app.state, "ingestion_channel", None) is not None:
                await app.state.ingestion_channel.close()
            if own_audit:
                await audit_to.close()

    app = FastAPI(
        title="SMVM validation API",
        version=__version__,
        description="TractionBuild's door to the Synthetic Market Validation Module (REST over the gRPC ValidationService).",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    # Tests may build the app without running its lifespan; the upstream then exists from the start.
    if channel is not None:
        app.state.upstream = Upstream(channel)
        app.state.audit = access.AuditSink(audit_channel)
        app.state.overwatch = ogrpc.OverwatchServiceStub(audit_channel) if audit_channel is not None else None
    errors.install(app)

    async def on_denied(scope: dict, error: ApiError) -> None:
        access.record_refusal(app.state.audit, scope, error)

    # Added first, so it runs inside GatewayMiddleware, after the caller is authenticated.
    app.add_middleware(access.DefaultDenyMiddleware, audit=lambda: app.state.audit)
    app.add_middleware(
        GatewayMiddleware,
        accepted_tokens=settings.accepted_tokens(),
        max_request_bytes=settings.max_request_bytes,
        rate_limiter=RateLimiter(limits_from_setting(settings.rate_limits) if rate_limits_per_minute is None
                                 else rate_limits_per_minute, replicas=settings.rate_limit_replicas),
        registry=TokenRegistry.from_settings(settings),
        on_denied=on_denied,
    )

    status_bodies = JsonBodies()  # GET /status bodies by status content (jsonview.JsonBodies says why)
    app.state.status_cache = status_cache
    app.state.status_watch = None

    def upstream_of(request: Request) -> Upstream:
        return request.app.state.upstream

    def wrote(run_id: str | None) -> None:
        """A write to `run_id` went (or may have gone) through: its next read must see it."""
        if status_cache is not None and run_id:
            status_cache.wrote(run_id)
            if app.state.status_watch is not None:
                app.state.status_watch.sync_soon()

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
        principal = access.require(request, auth.SUBMIT, run_id=request.state.run_id)
        # Ids become path components downstream: refuse unsafe ones here, before any call.
        _checked("project_id", data.get("project_id") or "")
        if data.get("run_id"):
            _checked("run_id", data["run_id"])
        access.check_submit_scope(request, principal, data.get("project_id", ""), request.state.run_id)
        message = json_to_message(data, vpb.SubmitRunRequest())
        if idempotency_key is not None:  # kept and checked by the orchestrator, for every replica
            message.idempotency_key = idempotency.check_key(idempotency_key)
            message.idempotency_scope = idempotency.scope_of(request)
        upstream = upstream_of(request)
        try:
            answer: vpb.SubmitRunResponse = await upstream.call(upstream.validation.SubmitRun, message, "runs",
                                                                request.state.run_id)
        finally:
            wrote(request.state.run_id)
        wrote(answer.run_id)
        headers = {"Location": f"/api/v1/validation/{answer.run_id}/status"}
        if answer.replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(message_to_json(answer), status_code=201, headers=headers)

    @app.post(
        "/api/v1/validation/runs", status_code=201, tags=["validation"],
        summary="Initiate a validation run (T0); accepts the `idea` and the `business_idea` shapes",
        response_model=response_model(vpb.SubmitRunResponse.DESCRIPTOR),
    )
    async def submit_run(
        request: Request, body: SubmitRunBody,  # type: ignore[valid-type]
        idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key", description=IDEMPOTENCY_KEY_DOC),
    ):
        return await submit(request, body, idempotency_key)

    @app.post("/api/v1/validation/submit", status_code=201, include_in_schema=False)
    async def submit_alias(
        request: Request, body: SubmitRunBody,  # type: ignore[valid-type]
        idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key", description=IDEMPOTENCY_KEY_DOC),
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
        principal = access.require(request, auth.LIST)
        upstream = upstream_of(request)
        if not principal.all_projects:
            return JSONResponse(await scoped_list(upstream, principal, project_id, page_size, page_token))
        message = vpb.ListRunsRequest(project_id=project_id or "", page_size=page_size or 0, page_token=page_token or "")
        answer = await upstream.call(upstream.validation.ListRuns, message, "list", None)
        return JSONResponse(message_to_json(answer))

    @app.get(
        "/api/v1/audit", tags=["governance"],
        summary="Admin view of the audit trail (access denials, budget events) of a run or a project",
    )
    async def audit_events(
        request: Request,
        run_id: Optional[str] = Query(None, max_length=128),
        project_id: Optional[str] = Query(None, max_length=128),
        kind_prefix: Optional[str] = Query(None, max_length=64),
        page_size: Optional[int] = Query(None, ge=1, le=1000),
        page_token: Optional[str] = Query(None, max_length=32),
    ):
        principal = access.require(request, auth.AUDIT)
        if not run_id and not project_id and not kind_prefix:
            raise ApiError(400, "INVALID_ARGUMENT", "run_id, project_id or kind_prefix is required",
                           details={"field": "run_id", "reason": "REQUIRED"})
        if run_id:
            _checked("run_id", run_id)
        if project_id:
            _checked("project_id", project_id)
        overwatch = request.app.state.overwatch
        if overwatch is None:
            raise ApiError(503, "UNAVAILABLE", "the audit trail is not connected", details={"reason": "NO_AUDIT_CHANNEL"})
        metadata = ((correlation.METADATA_KEY, correlation.get() or correlation.new_id()),)
        try:
            answer = await overwatch.ListAuditEvents(opb.ListAuditEventsRequest(
                run_id=run_id_from(run_id) if run_id else "", project_id=project_id or "", kind_prefix=kind_prefix or "",
                page_size=page_size or 0, page_token=page_token or ""), timeout=TIMEOUTS_S["list"], metadata=metadata)
        except aio.AioRpcError as err:
            raise errors.from_rpc_error(err, run_id) from None
        if not principal.all_projects:  # a project-scoped admin sees its projects' events only
            kept = [e for e in answer.events if principal.sees(e.project_id)]
            del answer.events[:]
            answer.events.extend(kept)
        return JSONResponse(message_to_json(answer))

    @app.get(
        "/api/v1/validation/{run_id}/status", tags=["validation"],
        summary="Where a run stands (accepts a run_id or its validation_id)",
        response_model=response_model(vpb.GetRunStatusResponse.DESCRIPTOR.fields_by_name["status"].message_type),
    )
    async def run_status(request: Request, run_id: str):
        run_id = _path_id(run_id)
        principal = access.require(request, auth.READ, run_id=run_id)
        if status_cache is None:
            upstream = upstream_of(request)
            answer = await upstream.call(upstream.validation.GetRunStatus, vpb.GetRunStatusRequest(run_id=run_id),
                                         "status", run_id)
            access.check_run_scope(request, principal, run_id, answer.status.project_id)
            return Response(status_bodies(answer.status), media_type="application/json")
        entry = status_cache.lookup(run_id)
        if entry is None:
            token = status_cache.read_token()
            upstream = upstream_of(request)
            answer = await upstream.call(upstream.validation.GetRunStatus, vpb.GetRunStatusRequest(run_id=run_id),
                                         "status", run_id)
            entry = status_cache.offer(answer.status, answer.change_seq, token)
        access.check_run_scope(request, principal, run_id, entry.status.project_id)
        if entry.body is None:
            entry.body = status_bodies(entry.status)
        return Response(entry.body, media_type="application/json")

    @app.get(
        "/api/v1/validation/{run_id}/results", tags=["validation"],
        summary="The decision, review, personas, competitors and simulation of a run",
        response_model=response_model(vpb.GetRunResultsResponse.DESCRIPTOR),
    )
    async def run_results(request: Request, run_id: str):
        run_id = _path_id(run_id)
        principal = access.require(request, auth.READ, run_id=run_id)
        upstream = upstream_of(request)
        # The scope is checked on the run's status first: a run of another project that has no
        # results yet must still answer 404, not the 409 its state would give.
        await check_scope_of(request, principal, run_id)
        answer = await upstream.call(upstream.validation.GetRunResults, vpb.GetRunResultsRequest(run_id=run_id), "results", run_id)
        access.check_run_scope(request, principal, run_id, answer.status.project_id)
        return JSONResponse(message_to_json(answer))

    @app.get(
        "/api/v1/validation/{run_id}/report", tags=["validation"],
        summary="The analysis report of a decided run: HTML with charts (default), Markdown or PDF",
        response_class=Response,
        responses={200: {"content": {"text/html": {}, "text/markdown": {}, "application/pdf": {}}}},
    )
    async def run_report(request: Request, run_id: str, format: str = Query("html", pattern="^(html|markdown|pdf)$")):
        run_id = _path_id(run_id)
        principal = access.require(request, auth.READ, run_id=run_id)
        await check_scope_of(request, principal, run_id)
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.validation.GetRunReport, vpb.GetRunReportRequest(run_id=run_id, format=format),
                                     "report", run_id)
        return Response(content=answer.content, media_type=answer.content_type)
    async def check_scope_of(request: Request, principal: auth.Principal, run_id: str) -> None:
        """For a project-scoped token, 404 before acting on a run of another project."""
        if principal.all_projects:
            return
        upstream = upstream_of(request)
        answer = await upstream.call(upstream.validation.GetRunStatus, vpb.GetRunStatusRequest(run_id=run_id), "status", run_id)
        access.check_run_scope(request, principal, run_id, answer.status.project_id)

    async def complete(request: Request, run_id: str, body: Any) -> JSONResponse:
        run_id = _path_id(run_id)
        await check_scope_of(request, access.require(request, auth.COMPLETE, run_id=run_id), run_id)
        message = json_to_message(_body_dict(body), vpb.CompleteRunRequest())
        message.run_id = run_id
        upstream = upstream_of(request)
        try:
            answer = await upstream.call(upstream.validation.CompleteRun, message, "complete", run_id)
        finally:
            wrote(run_id)
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
        await check_scope_of(request, access.require(request, auth.FINALIZE, run_id=run_id), run_id)
        message = json_to_message(_body_dict(body), vpb.FinalizeRunRequest())
        message.run_id = run_id
        upstream = upstream_of(request)
        try:
            answer = await upstream.call(upstream.validation.FinalizeRun, message, "finalize", run_id)
        finally:
            wrote(run_id)
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


    # ------------------------------------------------------------------ grounding imports (IngestionService)
    @app.post(
        "/api/v1/grounding/imports", tags=["grounding"],
        summary="Import a survey export, competitor list or market-size file (CSV, JSON or JSONL; all or nothing)",
        description="`content` is the file's bytes, base64-encoded; `kind` is van_westendorp | gabor_granger | "
                    "competitors | market_size. Answers the import id (reference it in an idea's `grounding_refs`) "
                    "and the data-quality report; 201 for a new import, 200 when the same file was imported before.",
        response_model=response_model(ipb.ImportGroundingResponse.DESCRIPTOR),
    )
    async def import_grounding(request: Request, body: ImportGroundingBody):  # type: ignore[valid-type]
        access.require(request, auth.SUBMIT)
        message = json_to_message(_body_dict(body), ipb.ImportGroundingRequest())
        if getattr(request.app.state, "ingestion_channel", None) is None:
            request.app.state.ingestion_channel = open_channel(settings.ingestion_addr, security)
        upstream = upstream_of(request)
        stub = igrpc.IngestionServiceStub(request.app.state.ingestion_channel)
        answer: ipb.ImportGroundingResponse = await upstream.call(stub.ImportGrounding, message, "imports", None)
        return JSONResponse(message_to_json(answer), status_code=200 if answer.existed else 201)

    _document_grounding_refs(app)
    return app


GROUNDING_REFS_DOC = (
    "Optional. Ids of grounding imports (POST /api/v1/grounding/imports: survey answers, competitor lists, "
    "market sizes) this idea rests on; they are resolved into the canonical idea's `grounding`. An unknown id "
    "is a 400 naming `<shape>.grounding_refs[i]`."
)


def _document_grounding_refs(app: FastAPI) -> None:
    """Describe `grounding_refs` on both request shapes in the OpenAPI document (proto comments do not
    reach the models derived from descriptors)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for shape in ("BusinessIdea", "IdeaSubmission"):
            field = schema.get("components", {}).get("schemas", {}).get(shape, {}).get("properties", {}).get("grounding_refs")
            if field is not None:
                field["description"] = GROUNDING_REFS_DOC
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
async def scoped_list(upstream: Upstream, principal: auth.Principal, project_id: str | None, page_size: int | None,
                      page_token: str | None) -> dict:
    """ListRuns for a project-scoped token: only its projects, newest first, paged here. A project
    outside the scope lists as empty, like a project with no runs."""
    projects = sorted(principal.projects) if not project_id else ([project_id] if principal.sees(project_id) else [])
    size = page_size or 50
    try:
        offset = int(page_token or 0)
        if offset < 0:
            raise ValueError
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", "page_token is not a token this service issued",
                       details={"field": "page_token", "reason": "INVALID_FIELD"}) from None
    runs: list = []
    for project in projects:
        token = ""
        while True:  # every run of the project, a page of 500 at a time
            answer = await upstream.call(upstream.validation.ListRuns, vpb.ListRunsRequest(
                project_id=project, page_size=500, page_token=token), "list", None)
            runs.extend(answer.runs)
            token = answer.next_page_token
            if not token:
                break
    runs.sort(key=lambda r: (r.created_at.seconds, r.created_at.nanos, r.run_id), reverse=True)
    page = runs[offset: offset + size]
    next_token = str(offset + size) if offset + size < len(runs) else ""
    return message_to_json(vpb.ListRunsResponse(runs=page, next_page_token=next_token))

