"""gRPC interceptors every SMVM service and client uses.

Server side (grpc-interceptor): `CorrelationInterceptor` binds the caller's correlation id to the
task and logs one line per call; `DomainErrorInterceptor` turns smvm.errors into status codes, with
a google.rpc.BadRequest naming the field for INVALID_ARGUMENT, and hides unexpected exceptions
behind INTERNAL. Client side: `CorrelationClientInterceptor` copies the id onto outgoing calls.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor
from grpc_interceptor.exception_to_status import AsyncExceptionToStatusInterceptor
from grpc_status import rpc_status

from smvm import correlation, metrics
from smvm.errors import SmvmError

if TYPE_CHECKING:
    from smvm.faults import FaultPlan

log = logging.getLogger("smvm.rpc")

_HEALTH_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class CorrelationInterceptor(AsyncServerInterceptor):
    """Bind the request's correlation id for logs and downstream calls; log the call outcome."""

    async def intercept(self, method: Callable, request: Any, context: aio.ServicerContext, method_name: str):
        token = correlation.set(correlation.from_metadata(context.invocation_metadata()))
        start = time.perf_counter()
        quiet = method_name.startswith(_HEALTH_PREFIXES)
        try:
            response = method(request, context)
            if hasattr(response, "__aiter__"):
                return self._stream(response, context, method_name, start, quiet)
            result = await response
            self._log(context, method_name, start, quiet)
            return result
        except BaseException:
            self._log(context, method_name, start, quiet)
            raise
        finally:
            correlation.reset(token)

    async def _stream(self, iterator, context, method_name, start, quiet):
        token = correlation.set(correlation.from_metadata(context.invocation_metadata()))
        try:
            async for item in iterator:
                yield item
        finally:
            self._log(context, method_name, start, quiet)
            correlation.reset(token)

    @staticmethod
    def _log(context, method_name: str, start: float, quiet: bool) -> None:
        if quiet:
            return
        code = context.code()
        log.info(
            "rpc",
            extra={
                "method": method_name,
                "code": getattr(code, "name", None) or "OK",
                "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            },
        )


class MetricsInterceptor(AsyncServerInterceptor):
    """Count every call by method and status code and time it (smvm.metrics RPC_*); health and
    reflection calls are left out so probes do not drown the figures."""

    async def intercept(self, method: Callable, request: Any, context: aio.ServicerContext, method_name: str):
        if method_name.startswith(_HEALTH_PREFIXES):
            response = method(request, context)
            return response if hasattr(response, "__aiter__") else await response
        start = time.perf_counter()
        try:
            response = method(request, context)
            if hasattr(response, "__aiter__"):
                return self._stream(response, context, method_name, start)
            result = await response
        except BaseException:
            self._observe(context, method_name, start, failed=True)
            raise
        self._observe(context, method_name, start)
        return result

    async def _stream(self, iterator, context, method_name, start):
        failed = False
        try:
            async for item in iterator:
                yield item
        except BaseException:
            failed = True
            raise
        finally:
            self._observe(context, method_name, start, failed=failed)

    @staticmethod
    def _observe(context, method_name: str, start: float, failed: bool = False) -> None:
        code = context.code()
        name = getattr(code, "name", None) or ("UNKNOWN" if failed else "OK")
        metrics.RPC_HANDLED.labels(method_name, name).inc()
        metrics.RPC_LATENCY.labels(method_name).observe(time.perf_counter() - start)


def status_for(error: SmvmError) -> grpc.Status:
    """The rich gRPC status for a domain error (BadRequest for a field, ErrorInfo otherwise)."""
    code = grpc.StatusCode[error.code]
    details = []
    if error.field:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.message, reason=error.reason
                    )
                ]
            )
        )
        details.append(detail)
    if not error.field or error.metadata:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain="smvm", metadata=error.metadata))
        details.append(detail)
    status = status_pb2.Status(code=getattr(code_pb2, error.code), message=str(error), details=details)
    return rpc_status.to_status(status)


class DomainErrorInterceptor(AsyncExceptionToStatusInterceptor):
    """smvm.errors -> status codes; anything unexpected -> INTERNAL without leaking internals."""

    def __init__(self):
        super().__init__(status_on_unknown_exception=grpc.StatusCode.INTERNAL)

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        if isinstance(ex, SmvmError):
            status = status_for(ex)
            await context.abort(status.code, status.details, status.trailing_metadata)
        if isinstance(ex, (aio.AbortError, aio.UsageError)) or context.code() not in (None, grpc.StatusCode.OK):
            raise ex
        log.exception("unhandled error in %s", method_name)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(ex).__name__})")


def server_interceptors(fault_plan: "FaultPlan | None" = None) -> list[aio.ServerInterceptor]:
    """The standard chain, outermost first; fault injection (tests only) innermost when configured.

    Without an explicit plan, the process's `SMVM_FAULT_INJECTION` setting decides (off by default).
    """
    from smvm.config import load_settings
    from smvm.faults import FaultInjectionInterceptor, FaultPlan

    chain: list[aio.ServerInterceptor] = [CorrelationInterceptor(), MetricsInterceptor(), DomainErrorInterceptor()]
    plan = fault_plan if fault_plan is not None else FaultPlan.parse(load_settings().fault_injection)
    if plan is not None:
        chain.append(FaultInjectionInterceptor(plan))
    return chain


class CorrelationClientInterceptor(
    aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor, aio.StreamStreamClientInterceptor
):
    """Add the current correlation id to every outgoing call that lacks one."""

    @staticmethod
    def _with_id(details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()))
        cid = correlation.get()
        if cid and correlation.METADATA_KEY not in metadata:
            metadata.add(correlation.METADATA_KEY, cid)
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._with_id(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._with_id(client_call_details), request)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_id(client_call_details), request_iterator)
