"""Domain errors, free of any transport.

Domain code raises these; the gRPC error interceptor turns them into status codes (with a
google.rpc.BadRequest naming the field for InvalidArgument) and the REST gateway turns those into
the integration guide's HTTP codes. Keeping them transport-free lets domain logic be tested
without a server.
"""

from __future__ import annotations


class SmvmError(Exception):
    """Base of every error SMVM raises on purpose. `code` is the gRPC status name."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None,
                 metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or self.code
        # Facts a client can act on (e.g. the run_id a conflict is about): google.rpc.ErrorInfo.metadata.
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:  # "field: message" reads well in logs and HTTP bodies
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(SmvmError):
    """The request is malformed; `field` names the offending field path (e.g. "business_idea.title")."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str = "INVALID_FIELD"):
        super().__init__(message, field=field, reason=reason)


class NotFound(SmvmError):
    code = "NOT_FOUND"


class AlreadyExists(SmvmError):
    """A resource with this identity exists with different content (HTTP 409)."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(SmvmError):
    """The resource is not in a state that allows the operation (e.g. results before the decision)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(SmvmError):
    """A budget or ceiling would be exceeded; refused before any work starts."""

    code = "RESOURCE_EXHAUSTED"


class PermissionDenied(SmvmError):
    code = "PERMISSION_DENIED"


class Unauthenticated(SmvmError):
    code = "UNAUTHENTICATED"


class Unavailable(SmvmError):
    code = "UNAVAILABLE"


class DeadlineExceeded(SmvmError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(SmvmError):
    code = "CANCELLED"
