"""gRPC status -> HTTP, and the one JSON error body every failure answers with.

Body: {"error": <code>, "message": ..., "details": {...}, "run_id": <id or null>}. `error` is the
gRPC status name (INVALID_ARGUMENT, NOT_FOUND, ...) or, for failures the gateway finds itself
before any call, an HTTP-level name (PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, ...).
`details.field` is the dotted path of the offending field when there is one; `details.reason`
the machine-readable reason. Messages of 4xx answers come from the domain errors, which are written
for callers; 5xx answers never carry upstream text (addresses, exception names, stack details).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from starlette.exceptions import HTTPException as StarletteHTTPException

from smvm.errors import InvalidArgument

log = logging.getLogger("smvm.gateway")

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# What a caller is told when the gateway must not repeat the upstream text.
_OPAQUE_MESSAGES = {
    503: "the validation service is unavailable; retry with backoff",
    504: "the validation service did not answer in time",
    500: "internal error",
}

_HTTP_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "ALREADY_EXISTS",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}

# A hint for clients that back off on 503 (RFC 9110 Retry-After, in seconds).
UNAVAILABLE_RETRY_AFTER_S = 1


class ApiError(Exception):
    """An HTTP error answer; raised anywhere in a request, rendered by `error_response`."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        run_id: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details or {}
        self.run_id = run_id
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, "details": self.details, "run_id": self.run_id}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _violations(details: Iterable[Any]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    violations: list[dict[str, str]] = []
    info: dict[str, Any] = {}
    for detail in details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(
                {"field": v.field, "description": v.description, "reason": v.reason} for v in bad.field_violations
            )
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
            info["reason"] = error_info.reason
            if error_info.metadata:
                info["metadata"] = dict(error_info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            info["retry_after_s"] = max(1, round(retry.retry_delay.ToTimedelta().total_seconds()))
    return violations, info


def field_details(violations: Sequence[dict[str, str]]) -> dict[str, Any]:
    """The `details` object for field violations: the first one flat, all of them listed."""
    if not violations:
        return {}
    first = violations[0]
    details: dict[str, Any] = {"field": first["field"], "reason": first.get("reason") or "INVALID_FIELD"}
    if first.get("description"):
        details["description"] = first["description"]
    if len(violations) > 1:
        details["violations"] = list(violations)
    return details


def from_rpc_error(err: grpc.aio.AioRpcError, run_id: str | None = None) -> ApiError:
    """Translate a failed call, decoding the rich status (BadRequest, ErrorInfo, RetryInfo)."""
    code = err.code()
    status = HTTP_STATUS.get(code, 500)
    try:
        rich = rpc_status.from_call(err)
    except ValueError:  # trailing status disagrees with the call's: trust the call
        rich = None
    violations, info = _violations(rich.details) if rich is not None else ([], {})
    message = rich.message if rich is not None else (err.details() or "")
    headers: dict[str, str] = {}
    if status >= 500:
        log.warning("upstream failure", extra={"grpc_code": code.name, "grpc_details": err.details()})
        if status == 503:
            headers["Retry-After"] = str(info.get("retry_after_s", UNAVAILABLE_RETRY_AFTER_S))
        error = "INTERNAL" if status == 500 else code.name
        return ApiError(status, error, _OPAQUE_MESSAGES[status], run_id=run_id, headers=headers)
    details = field_details(violations)
    if "reason" in info:
        details.setdefault("reason", info["reason"])
    if "metadata" in info:
        details["metadata"] = info["metadata"]
    if status == 429:
        retry_after = info.get("retry_after_s")
        if retry_after:
            headers["Retry-After"] = str(retry_after)
            details["retry_after_s"] = retry_after
    # An error about another run than the one asked for (a reused Idempotency-Key) names that run.
    run_id = info.get("metadata", {}).get("run_id") or run_id
    return ApiError(status, code.name, message or code.name.lower(), details=details, run_id=run_id, headers=headers)


def dotted(loc: Sequence[Any]) -> str:
    """("body", "business_idea", "features", 2) -> "business_idea.features[2]"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def from_validation_error(exc: RequestValidationError, run_id: str | None = None) -> ApiError:
    """FastAPI / pydantic validation failures (and undecodable JSON) as a 400 naming the field."""
    violations = []
    for error in exc.errors():
        kind = error.get("type", "")
        if kind == "json_invalid":
            ctx = error.get("ctx") or {}
            violations.append({"field": "body", "description": f"invalid JSON: {ctx.get('error', 'cannot decode')}", "reason": "INVALID_JSON"})
            continue
        field = dotted(error.get("loc", ()))
        if kind == "missing" and field == "body":
            description = "a JSON object body is required"
        else:
            description = error.get("msg", "invalid value")
        violations.append({"field": field, "description": description, "reason": kind.upper() or "INVALID_FIELD"})
    details = field_details(violations)
    first = violations[0] if violations else {"field": "body", "description": "invalid request"}
    return ApiError(400, "INVALID_ARGUMENT", f"{first['field']}: {first['description']}", details=details, run_id=run_id)


# What FastAPI raises (as a 400 HTTPException) when decoding a body fails other than by JSONDecodeError.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


def run_id_of(request: Request) -> str | None:
    """The run a failing request is about: its path id, else what the body named (set by the route)."""
    return request.path_params.get("run_id") or getattr(request.state, "run_id", None)


def install(app) -> None:
    """Route every error FastAPI / Starlette can raise through the one body shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.run_id is None:
            exc.run_id = run_id_of(request)
        return error_response(exc)

    @app.exception_handler(InvalidArgument)
    async def _invalid(request: Request, exc: InvalidArgument) -> JSONResponse:
        violation = {"field": exc.field or "body", "description": exc.message, "reason": exc.reason}
        return error_response(ApiError(400, "INVALID_ARGUMENT", f"{violation['field']}: {exc.message}",
                                       details=field_details([violation]), run_id=run_id_of(request)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(from_validation_error(exc, run_id_of(request)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            # json.loads failed other than by a syntax error (nesting too deep, an integer too long).
            violation = {"field": "body", "description": "invalid JSON: cannot decode (too deep or too long)", "reason": "INVALID_JSON"}
            return error_response(ApiError(400, "INVALID_ARGUMENT", f"body: {violation['description']}",
                                           details=field_details([violation]), run_id=run_id_of(request)))
        name = _HTTP_NAMES.get(exc.status_code, "INTERNAL" if exc.status_code >= 500 else "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else name.lower()
        return error_response(
            ApiError(exc.status_code, name, message, run_id=run_id_of(request), headers=dict(exc.headers or {}))
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in the gateway")
        return error_response(ApiError(500, "INTERNAL", "internal error", run_id=run_id_of(request)))
