"""Who may do what at the REST gateway: role checks, project scope, and the audit of denials.

The middleware authenticates (smvm.auth) and leaves the caller's `Principal` in the request state;
routes call `require(request, action)` before doing anything. A run in a project the token is not
scoped to answers exactly like a run that does not exist (404 with the orchestrator's body), so a
scoped token cannot learn which runs other projects have. Every denial (401, 403 and the scoped
404) is sent to overwatch's audit trail with actor, run, project and correlation id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Callable

from fastapi import Request
from grpc import aio

from smvm import auth, correlation
from smvm.auth import Principal
from smvm.ids import run_id_from
from smvm.v1 import overwatch_service_pb2 as opb, overwatch_service_pb2_grpc as ogrpc

from services.gateway.errors import ApiError

log = logging.getLogger("smvm.gateway.access")

AUDIT_TIMEOUT_S = 2.0


class AuditSink:
    """Sends access denials to OverwatchService.RecordAuditEvent without holding up the answer."""

    def __init__(self, channel: aio.Channel | None):
        self.stub = ogrpc.OverwatchServiceStub(channel) if channel is not None else None
        self._tasks: set[asyncio.Task] = set()

    def record(self, kind: str, *, actor: str, run_id: str = "", project_id: str = "", payload: dict | None = None) -> None:
        event = opb.AuditEvent(kind=kind, actor=actor, run_id=run_id or "", project_id=project_id or "",
                               correlation_id=correlation.get(), payload_json=json.dumps(payload or {}, sort_keys=True))
        log.warning("access denied", extra={"actor": actor, "run_id": run_id, "kind": kind, **(payload or {})})
        if self.stub is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: opb.AuditEvent) -> None:
        try:
            await self.stub.RecordAuditEvent(opb.RecordAuditEventRequest(event=event), timeout=AUDIT_TIMEOUT_S)
        except aio.AioRpcError as err:
            log.error("could not record an audit event in overwatch", extra={"grpc_code": err.code().name})

    async def drain(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


def audit_of(request: Request) -> AuditSink:
    return request.app.state.audit


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if principal is None:  # the middleware authenticates every /api/ path; reaching here is a bug
        raise ApiError(401, "UNAUTHENTICATED", "a bearer token is required", details={"reason": "MISSING_TOKEN"})
    return principal


def require(request: Request, action: str, *, run_id: str | None = None) -> Principal:
    """The caller, if its role may do `action`; 403 (audited) otherwise."""
    principal = principal_of(request)
    if not principal.allows(action):
        audit_of(request).record("access.denied", actor=principal.name, run_id=run_id or "", payload={
            "reason": "ROLE_NOT_ALLOWED", "role": principal.role, "action": action, "path": request.url.path})
        raise ApiError(403, "PERMISSION_DENIED", f"role {principal.role} may not {action}",
                       details={"reason": "ROLE_NOT_ALLOWED", "action": action}, run_id=run_id)
    auth.acting_for(principal.name)  # named to the orchestrator as the actor, for its audit trail
    return principal


def run_not_found(run_id: str) -> ApiError:
    """Exactly what the orchestrator answers for an unknown run (see services.orchestrator.store)."""
    return ApiError(404, "NOT_FOUND", f"run {run_id_from(run_id)} not found", details={"reason": "RUN_NOT_FOUND"},
                    run_id=run_id)


def check_run_scope(request: Request, principal: Principal, run_id: str, project_id: str) -> None:
    """404 (audited) when the run's project is outside the token's scope."""
    if principal.sees(project_id):
        return
    audit_of(request).record("access.denied", actor=principal.name, run_id=run_id_from(run_id), project_id=project_id,
                             payload={"reason": "PROJECT_OUT_OF_SCOPE", "path": request.url.path, "answered": 404})
    raise run_not_found(run_id)


def check_submit_scope(request: Request, principal: Principal, project_id: str, run_id: str | None) -> None:
    """A submission into a project outside the token's scope is refused (403: the caller named it).
    A missing project_id is left to validation, which names the field (400)."""
    if not project_id or principal.sees(project_id):
        return
    audit_of(request).record("access.denied", actor=principal.name, run_id=run_id or "", project_id=project_id,
                             payload={"reason": "PROJECT_OUT_OF_SCOPE", "path": request.url.path, "answered": 403})
    raise ApiError(403, "PERMISSION_DENIED", f"this token may not submit runs to project {project_id}",
                   details={"reason": "PROJECT_OUT_OF_SCOPE", "field": "project_id"}, run_id=run_id)


def record_refusal(audit: AuditSink, scope: dict[str, Any], error: ApiError) -> None:
    """The middleware's 401s, audited with the path and why."""
    audit.record("access.denied", actor="unauthenticated", payload={
        "reason": error.details.get("reason", ""), "path": scope.get("path", ""), "answered": error.status})


# Every /api/ endpoint whose route enforces its role and project scope (`require` plus a scope
# check). Any other /api/ route is refused to all but all-project admins: an endpoint added without
# authorisation is closed by default rather than open to every valid token. Classify a new
# endpoint here once its route calls `require` and checks the run's or project's scope.
GUARDED_ROUTES: tuple[tuple[frozenset[str], re.Pattern[str]], ...] = tuple(
    (frozenset(methods), re.compile(pattern)) for methods, pattern in (
        ({"POST"}, r"/api/v1/validation/(runs|submit)"),
        ({"GET"}, r"/api/v1/validation/runs"),
        ({"GET"}, r"/api/v1/validation/[^/]+/(status|results|report)"),
        ({"POST"}, r"/api/v1/grounding/imports"),
        ({"PUT", "POST"}, r"/api/v1/validation/[^/]+/complete"),
        ({"POST"}, r"/api/v1/validation/[^/]+/finalize"),
        ({"GET"}, r"/api/v1/audit"),
    )
)


def guarded(method: str, path: str) -> bool:
    return any(method in methods and pattern.fullmatch(path) for methods, pattern in GUARDED_ROUTES)


class DefaultDenyMiddleware:
    """Inside the authenticating middleware: an existing /api/ route that is not in GUARDED_ROUTES
    answers 403 (audited) to anyone but an all-project admin."""

    def __init__(self, app, *, audit: Callable[[], AuditSink], protected_prefix: str = "/api/"):
        self.app = app
        self.audit = audit
        self.protected_prefix = protected_prefix

    async def __call__(self, scope, receive, send) -> None:
        # Whoever a route names as the end user (`require`) is forgotten when the request ends.
        token = auth.acting_for("")
        try:
            await self._dispatch(scope, receive, send)
        finally:
            auth.reset_acting_for(token)

    async def _dispatch(self, scope, receive, send) -> None:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if scope["type"] != "http" or not path.startswith(self.protected_prefix) or guarded(method, path):
            await self.app(scope, receive, send)
            return
        principal = scope.get("state", {}).get("principal")
        admin = principal is not None and principal.role == "admin" and principal.all_projects
        if admin or not self._exists(scope):
            await self.app(scope, receive, send)  # unknown paths get the router's own 404 / 405
            return
        self.audit().record("access.denied", actor=principal.name if principal else "unauthenticated", payload={
            "reason": "ENDPOINT_NOT_CLASSIFIED", "path": path, "method": method})
        error = ApiError(403, "PERMISSION_DENIED", "this endpoint is open to administrators only",
                         details={"reason": "ENDPOINT_NOT_CLASSIFIED"})
        payload = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": 403, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    def _exists(self, scope) -> bool:
        from starlette.routing import Match

        app = scope.get("app")
        routes = getattr(getattr(app, "router", None), "routes", ())
        return any(route.matches(scope)[0] != Match.NONE for route in routes)
