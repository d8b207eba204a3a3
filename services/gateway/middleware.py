"""What every request goes through before a route sees it, as one pure ASGI middleware.

Order: correlation id (so even a refusal is traceable and echoes X-Correlation-ID), access log,
bearer-token auth for /api/ paths, per-token rate limit, then body checks (415 for a body that is
not JSON, 413 over `max_request_bytes`, counted on the wire so chunked uploads cannot slip past).
Pure ASGI rather than BaseHTTPMiddleware so the correlation contextvar set here is the one the
route (and the gRPC client interceptor) runs under.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, Awaitable, Callable

from smvm import correlation, metrics
from smvm.auth import TokenRegistry, bearer
from smvm.errors import Unauthenticated, Unavailable

from services.gateway.errors import ApiError
from services.gateway.ratelimit import RateLimiter, endpoint_of

log = logging.getLogger("smvm.gateway.access")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_CORRELATION_HEADER = correlation.HTTP_HEADER.lower().encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class GatewayMiddleware:
    def __init__(
        self,
        app,
        *,
        accepted_tokens: frozenset[str],
        max_request_bytes: int,
        rate_limiter: RateLimiter | None = None,
        protected_prefix: str = "/api/",
        registry: TokenRegistry | None = None,
        on_denied: Callable[[Scope, ApiError], Awaitable[None]] | None = None,
    ):
        self.app = app
        self.accepted_tokens = tuple(accepted_tokens)
        # Scoped tokens (smvm.auth); without a registry only `accepted_tokens` pass, as admins.
        self.registry = registry or TokenRegistry(legacy_admin_tokens=frozenset(accepted_tokens))
        self.on_denied = on_denied
        self.max_request_bytes = max_request_bytes
        self.rate_limiter = rate_limiter
        self.protected_prefix = protected_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, _CORRELATION_HEADER)
        cid = supplied if supplied and correlation.is_valid(supplied) else correlation.new_id()
        scope.setdefault("state", {})["correlation_id"] = cid
        token = correlation.set(cid)
        started = time.perf_counter()
        outcome = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _CORRELATION_HEADER]
                headers.append((_CORRELATION_HEADER, cid.encode()))
                message = dict(message, headers=headers)
            await send(message)

        try:
            refusal, receive = await self._admit(scope, receive)
            if refusal is not None:
                await _send_error(refusal, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            label = _endpoint_label(scope.get("method", ""), scope.get("path", ""))
            method = scope.get("method", "") if scope.get("method") in _METHODS else "other"
            metrics.HTTP_REQUESTS.labels(label, method, str(outcome["status"])).inc()
            metrics.HTTP_LATENCY.labels(label, method).observe(elapsed)
            log.info(
                "http",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": outcome["status"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            correlation.reset(token)

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[ApiError | None, Receive]:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if not path.startswith(self.protected_prefix):
            return None, receive
        client, refusal = self._authenticate(scope)
        if refusal is not None:
            if self.on_denied is not None:
                await self.on_denied(scope, refusal)
            return refusal, receive
        scope.setdefault("state", {})["client_id"] = client
        if self.rate_limiter is not None and (endpoint := endpoint_of(method, path)) is not None:
            wait_s = self.rate_limiter.acquire(client, endpoint)
            if wait_s > 0:
                retry_after = RateLimiter.retry_after_header(wait_s)
                return ApiError(
                    429, "RESOURCE_EXHAUSTED",
                    f"{self.rate_limiter.describe(endpoint)} exceeded",
                    details={"reason": "RATE_LIMITED", "retry_after_s": int(retry_after)},
                    headers={"Retry-After": retry_after},
                ), receive
        if method in _BODY_METHODS:
            return await self._check_body(scope, receive)
        return None, receive

    def _authenticate(self, scope: Scope) -> tuple[str, ApiError | None]:
        """Who is calling (the principal lands in scope state for the routes); 401 naming why not."""
        secret = bearer(_header(scope, b"authorization") or "")
        if not secret:
            return "", ApiError(
                401, "UNAUTHENTICATED", "a bearer token is required",
                details={"reason": "MISSING_TOKEN"}, headers={"WWW-Authenticate": 'Bearer realm="smvm"'},
            )
        try:
            principal = self.registry.authenticate(secret)
        except Unavailable as exc:
            return "", ApiError(503, "UNAVAILABLE", exc.message, details={"reason": exc.reason},
                                headers={"Retry-After": "1"})
        except Unauthenticated as exc:
            return "", ApiError(
                401, "UNAUTHENTICATED", exc.message if exc.reason != "INVALID_TOKEN" else "the bearer token is not valid",
                details={"reason": exc.reason},
                headers={"WWW-Authenticate": 'Bearer realm="smvm", error="invalid_token"'},
            )
        scope.setdefault("state", {})["principal"] = principal
        return hashlib.sha256(secret.encode()).hexdigest()[:16], None

    async def _check_body(self, scope: Scope, receive: Receive) -> tuple[ApiError | None, Receive]:
        declared = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        try:
            declared_bytes = int(declared) if declared is not None else None
        except ValueError:
            return ApiError(400, "INVALID_ARGUMENT", "Content-Length is not a number", details={"field": "Content-Length"}), receive
        if declared_bytes is not None and declared_bytes > self.max_request_bytes:
            return self._too_large(), receive
        content_type = _header(scope, b"content-type")
        has_body = chunked or bool(declared_bytes)
        if has_body and not (content_type and is_json_media_type(content_type)):
            return ApiError(
                415, "UNSUPPORTED_MEDIA_TYPE", "request bodies must be application/json",
                details={"field": "Content-Type", "reason": "UNSUPPORTED_MEDIA_TYPE", "received": content_type or ""},
            ), receive
        # Read the body now, counting bytes, and hand the route a replay of it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, _replay([], message, receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                return self._too_large(), receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if size and not (content_type and is_json_media_type(content_type)):
            return ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "request bodies must be application/json",
                            details={"field": "Content-Type", "reason": "UNSUPPORTED_MEDIA_TYPE"}), receive
        return None, _replay(chunks, None, receive)

    def _too_large(self) -> ApiError:
        return ApiError(
            413, "PAYLOAD_TOO_LARGE", f"request body exceeds {self.max_request_bytes} bytes",
            details={"reason": "PAYLOAD_TOO_LARGE", "max_bytes": self.max_request_bytes},
        )


_STATIC_LABELS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _endpoint_label(method: str, path: str) -> str:
    """A bounded metrics label: the guide's endpoint name, an admin route, a probe, or "other"."""
    name = endpoint_of(method, path)
    if name is not None:
        return name
    if path.startswith("/api/v1/admin/"):
        return "admin"
    return path if path in _STATIC_LABELS else "other"


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    body = b"".join(chunks)
    state = {"sent": False}

    async def replay() -> Message:
        if not state["sent"]:
            state["sent"] = True
            if pending is not None:
                return pending
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_error(error: ApiError, send: Send) -> None:
    payload = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
