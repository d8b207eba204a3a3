"""Who may call SMVM and what they may do: scoped bearer tokens, roles and project scope.

Tokens live hashed (sha256) in a token file (`SMVM_TOKENS_FILE`, YAML or JSON, suitable for a
Kubernetes Secret), written by `smvm token create / revoke / list`:

    tokens:
      - name: tb-acme
        sha256: 5e88...            # of the secret; the secret itself is shown once, at creation
        role: submitter            # submitter | reader | admin | service
        projects: [acme]           # or ["*"] for every project
        expires_at: "2027-01-01T00:00:00Z"   # optional
        revoked: false

The file is re-read when it changes, so a revocation takes effect without a restart. The legacy
`SMVM_API_TOKENS` (and `dev-admin-token` in the dev profile) remain admin tokens for every project;
`SMVM_SERVICE_TOKEN` is the mesh's own service token (a list during a rotation: the first is sent,
all are accepted; `SMVM_SERVICE_TOKENS_ACCEPTED` adds accepted-only ones until removed or until
`SMVM_SERVICE_TOKENS_ACCEPTED_UNTIL`). `authenticate` turns a presented secret into
a `Principal`; `Principal.allows(action)` and `Principal.sees(project_id)` are the whole policy.

For gRPC, `AuthServerInterceptor` requires a service (or admin) token on every call except health
and reflection when the mesh is configured with a service token, and binds the caller so handlers
can name the actor in the audit trail; `ServiceTokenClientInterceptor` sends the token.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import grpc
import yaml
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor

from smvm import correlation, metrics
from smvm.errors import InvalidArgument, Unauthenticated, Unavailable

log = logging.getLogger("smvm.auth")

ROLES = ("submitter", "reader", "admin", "service")
ALL_PROJECTS = "*"
TOKEN_PREFIX = "smvm_"
ACTOR_METADATA_KEY = "x-smvm-actor"  # the end user a service acts for (audit only, never trusted for access)

# Actions of the REST API and the mesh; a role may do exactly these.
SUBMIT, READ, LIST, COMPLETE, FINALIZE, AUDIT, INTERNAL = (
    "runs.submit", "runs.read", "runs.list", "runs.complete", "runs.finalize", "audit.read", "rpc.internal")
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "reader": frozenset({READ, LIST}),
    "submitter": frozenset({SUBMIT, READ, LIST, COMPLETE, FINALIZE}),
    "admin": frozenset({SUBMIT, READ, LIST, COMPLETE, FINALIZE, AUDIT, INTERNAL}),
    "service": frozenset({INTERNAL}),
}

_UNSCOPED_CALLS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


# ---------------------------------------------------------------------------- principals
@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    projects: frozenset[str]  # {"*"} = every project

    @property
    def all_projects(self) -> bool:
        return ALL_PROJECTS in self.projects

    def allows(self, action: str) -> bool:
        return action in ROLE_ACTIONS.get(self.role, frozenset())

    def sees(self, project_id: str) -> bool:
        return self.all_projects or project_id in self.projects


ANONYMOUS = Principal("anonymous", "none", frozenset())

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("smvm_principal", default=None)
_acting_for: contextvars.ContextVar[str] = contextvars.ContextVar("smvm_acting_for", default="")


def current() -> Principal | None:
    return _current.get()


def current_actor() -> str:
    """The audit trail's actor: the end user a service acts for, else the caller, else 'anonymous'."""
    principal = _current.get()
    caller = principal.name if principal else "anonymous"
    behalf = _acting_for.get()
    return f"{behalf} via {caller}" if behalf and behalf != caller else caller


# ---------------------------------------------------------------------------- token records
def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_utc(value: str) -> dt.datetime:
    """An ISO 8601 time as an aware UTC datetime (a time without a zone is UTC); ValueError otherwise."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def iso_z(value: dt.datetime) -> str:
    """RFC 3339 UTC to the second, as the token file stores times."""
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class TokenRecord:
    name: str
    sha256: str
    role: str
    projects: tuple[str, ...] = (ALL_PROJECTS,)
    expires_at: str = ""
    revoked: bool = False
    created_at: str = ""

    @classmethod
    def parse(cls, index: int, raw: Any) -> "TokenRecord":
        where = f"tokens[{index}]"
        if not isinstance(raw, dict):
            raise InvalidArgument(where, "must be a mapping")
        name, digest, role = str(raw.get("name", "")), str(raw.get("sha256", "")).lower(), str(raw.get("role", ""))
        if not name:
            raise InvalidArgument(f"{where}.name", "is required")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidArgument(f"{where}.sha256", "must be 64 hex digits (the sha256 of the token)")
        if role not in ROLES:
            raise InvalidArgument(f"{where}.role", f"must be one of {', '.join(ROLES)}")
        projects = raw.get("projects") or []
        if isinstance(projects, str) or not all(isinstance(p, str) and p for p in projects) or not projects:
            raise InvalidArgument(f"{where}.projects", 'must be a non-empty list of project ids (or ["*"])')
        expires_at = str(raw.get("expires_at") or "")
        if expires_at:
            try:
                parse_utc(expires_at)
            except ValueError:
                raise InvalidArgument(f"{where}.expires_at", "must be an ISO 8601 time") from None
        return cls(name, digest, role, tuple(projects), expires_at, bool(raw.get("revoked", False)),
                   str(raw.get("created_at") or ""))

    def expired(self, now: dt.datetime) -> bool:
        return bool(self.expires_at) and parse_utc(self.expires_at) <= now

    def principal(self) -> Principal:
        return Principal(self.name, self.role, frozenset(self.projects))


class TokenFile:
    """The token file: read (re-read when it changes) and rewritten atomically under a lock."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._records: tuple[TokenRecord, ...] = ()

    def records(self) -> tuple[TokenRecord, ...]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._records = None, ()
            return ()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._records = self._read()
            self._stamp = stamp
        return self._records

    def _read(self) -> tuple[TokenRecord, ...]:
        data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}  # YAML is a superset of JSON
        tokens = data.get("tokens", []) if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise InvalidArgument("tokens", f"{self.path} must hold a mapping with a `tokens` list")
        records = tuple(TokenRecord.parse(i, raw) for i, raw in enumerate(tokens))
        names = [r.name for r in records]
        if len(names) != len(set(names)):
            raise InvalidArgument("tokens.name", f"token names in {self.path} must be unique")
        return records

    def _modify(self, change: Callable[[list[TokenRecord]], list[TokenRecord]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(self.path.suffix + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current_records = list(self._read()) if self.path.exists() else []
            updated = change(current_records)
            body = {"tokens": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(r).items()}
                               for r in updated]}
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                yaml.safe_dump(body, handle, sort_keys=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)

    def create(self, name: str, role: str, projects: Iterable[str], expires_at: dt.datetime | None = None,
               now: dt.datetime | None = None) -> str:
        """Add a token and return its secret (stored only as its hash)."""
        secret = new_secret()
        now = now or dt.datetime.now(dt.timezone.utc)
        raw = {"name": name, "sha256": hash_token(secret), "role": role, "projects": list(projects),
               "expires_at": iso_z(expires_at) if expires_at else "", "revoked": False, "created_at": iso_z(now)}
        record = TokenRecord.parse(0, raw)

        def add(records: list[TokenRecord]) -> list[TokenRecord]:
            if any(r.name == name for r in records):
                raise InvalidArgument("name", f"a token named {name!r} exists already")
            return [*records, record]

        self._modify(add)
        return secret

    def rotate(self, name: str, new_name: str, overlap: dt.timedelta, expires_at: dt.datetime | None = None,
               now: dt.datetime | None = None) -> str:
        """Replace token `name` by `new_name` with the same role and projects, and return the new secret.

        The old token keeps working for `overlap` (its expiry is brought forward to now + overlap,
        never pushed back), so the holder can switch without a window where neither works; a zero
        overlap revokes it at once. Both changes are one write of the file."""
        if overlap < dt.timedelta(0):
            raise InvalidArgument("overlap", "must not be negative")
        secret = new_secret()
        now = now or dt.datetime.now(dt.timezone.utc)

        def replace(records: list[TokenRecord]) -> list[TokenRecord]:
            old = next((r for r in records if r.name == name), None)
            if old is None:
                raise InvalidArgument("name", f"no token named {name!r}")
            if old.revoked:
                raise InvalidArgument("name", f"token {name!r} is revoked; create a new one instead")
            if any(r.name == new_name for r in records):
                raise InvalidArgument("new_name", f"a token named {new_name!r} exists already")
            successor = TokenRecord.parse(len(records), {
                "name": new_name, "sha256": hash_token(secret), "role": old.role, "projects": list(old.projects),
                "expires_at": iso_z(expires_at) if expires_at else "", "revoked": False, "created_at": iso_z(now)})
            if overlap == dt.timedelta(0):
                retired = TokenRecord(**{**asdict(old), "revoked": True})
            else:
                ends = now + overlap
                if old.expires_at and parse_utc(old.expires_at) < ends:
                    ends = parse_utc(old.expires_at)
                retired = TokenRecord(**{**asdict(old), "expires_at": iso_z(ends)})
            return [retired if r.name == name else r for r in records] + [successor]

        self._modify(replace)
        return secret

    def revoke(self, name: str) -> None:
        def mark(records: list[TokenRecord]) -> list[TokenRecord]:
            if not any(r.name == name for r in records):
                raise InvalidArgument("name", f"no token named {name!r}")
            return [TokenRecord(**{**asdict(r), "revoked": True}) if r.name == name else r for r in records]

        self._modify(mark)


@dataclass
class TokenRegistry:
    """Every token SMVM accepts: the token file's, the legacy admin tokens and the service tokens.

    The mesh's service token rotates with an overlap: `service_token` is the current one (what this
    process sends), `other_service_tokens` are accepted too (the next one before every process sends
    it, the previous one until every process does), until `others_accepted_until` when set."""

    token_file: TokenFile | None = None
    legacy_admin_tokens: frozenset[str] = frozenset()
    service_token: str = ""
    other_service_tokens: tuple[str, ...] = ()
    others_accepted_until: dt.datetime | None = None
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))

    @classmethod
    def from_settings(cls, settings) -> "TokenRegistry":
        """The registry the settings describe; a token file that is present but broken fails here, at
        start-up, naming the field, rather than on the first request."""
        service_tokens = settings.service_tokens()
        until = settings.service_tokens_accepted_until
        registry = cls(
            token_file=TokenFile(settings.tokens_file) if getattr(settings, "tokens_file", None) else None,
            legacy_admin_tokens=settings.accepted_tokens(),
            service_token=service_tokens[0] if service_tokens else "",
            other_service_tokens=service_tokens[1:],
            others_accepted_until=parse_utc(until) if until else None,
        )
        if registry.token_file is not None:
            registry.token_file.records()
        return registry

    def authenticate(self, secret: str) -> Principal:
        """The principal a presented secret stands for; Unauthenticated (with a reason) otherwise."""
        if not secret:
            raise Unauthenticated("a bearer token is required", reason="MISSING_TOKEN")
        presented = secret.encode()
        if self.service_token and hmac.compare_digest(presented, self.service_token.encode()):
            metrics.SERVICE_TOKENS_ACCEPTED.labels("current").inc()
            return SERVICE_PRINCIPAL
        if self._is_other_service_token(presented):
            if self.others_accepted_until is not None and self.clock() >= self.others_accepted_until:
                raise Unauthenticated(f"this service token stopped being accepted at {iso_z(self.others_accepted_until)}",
                                      reason="SERVICE_TOKEN_RETIRED")
            metrics.SERVICE_TOKENS_ACCEPTED.labels("other").inc()
            return SERVICE_PRINCIPAL
        matched = ""
        for accepted in self.legacy_admin_tokens:  # compare against all, in constant time each
            if hmac.compare_digest(presented, accepted.encode()):
                matched = accepted
        if matched:
            return Principal(f"api-token:{hash_token(matched)[:8]}", "admin", frozenset({ALL_PROJECTS}))
        digest = hash_token(secret)
        try:
            records = self.token_file.records() if self.token_file else ()
        except (InvalidArgument, OSError, yaml.YAMLError) as exc:  # fail closed, and say why
            log.error("token file unreadable", extra={"error": str(exc)})
            raise Unavailable("the token registry cannot be read; try again later", reason="TOKEN_FILE_UNREADABLE") from None
        for record in records:
            if hmac.compare_digest(record.sha256, digest):
                if record.revoked:
                    raise Unauthenticated(f"token {record.name} has been revoked", reason="TOKEN_REVOKED")
                if record.expired(self.clock()):
                    raise Unauthenticated(f"token {record.name} expired at {record.expires_at}", reason="TOKEN_EXPIRED")
                return record.principal()
        raise Unauthenticated("the bearer token is not valid", reason="INVALID_TOKEN")

    def _is_other_service_token(self, presented: bytes) -> bool:
        matched = False
        for accepted in self.other_service_tokens:  # compare against all, in constant time each
            matched |= hmac.compare_digest(presented, accepted.encode())
        return matched


SERVICE_PRINCIPAL = Principal("service", "service", frozenset({ALL_PROJECTS}))


def bearer(authorization: str) -> str:
    """The secret of an `Authorization: Bearer <secret>` value ('' when absent or another scheme)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


# ---------------------------------------------------------------------------- gRPC
DeniedHook = Callable[[dict], Awaitable[None]]


class AuthServerInterceptor(AsyncServerInterceptor):
    """Every call but health and reflection needs a service or admin token (when `required`)."""

    def __init__(self, registry: TokenRegistry, *, required: bool, on_denied: DeniedHook | None = None):
        self.registry = registry
        self.required = required
        self.on_denied = on_denied

    async def intercept(self, method: Callable, request: Any, context: aio.ServicerContext, method_name: str):
        if method_name.startswith(_UNSCOPED_CALLS):
            return await self._call(method, request, context, None)
        metadata = {k: v for k, v in (context.invocation_metadata() or ())}
        secret = bearer(str(metadata.get("authorization", "")))
        principal: Principal | None = None
        if secret or self.required:
            try:
                principal = self.registry.authenticate(secret)
            except Unauthenticated as exc:
                await self._deny(context, grpc.StatusCode.UNAUTHENTICATED, exc.message, exc.reason, method_name, None)
            except Unavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, exc.message)
            if not principal.allows(INTERNAL):
                await self._deny(context, grpc.StatusCode.PERMISSION_DENIED,
                                 f"role {principal.role} may not call {method_name}", "ROLE_NOT_ALLOWED", method_name,
                                 principal)
        behalf = str(metadata.get(ACTOR_METADATA_KEY, ""))[:200]
        return await self._call(method, request, context, principal, behalf)

    async def _call(self, method, request, context, principal: Principal | None, behalf: str = ""):
        token, behalf_token = _current.set(principal), _acting_for.set(behalf)
        try:
            response = method(request, context)
            if hasattr(response, "__aiter__"):
                return _bound_stream(response, principal, behalf)
            return await response
        finally:
            _current.reset(token)
            _acting_for.reset(behalf_token)

    async def _deny(self, context, code: grpc.StatusCode, message: str, reason: str, method_name: str,
                    principal: Principal | None):
        event = {"kind": "access.denied", "actor": principal.name if principal else "unauthenticated",
                 "correlation_id": correlation.get(), "payload": {"method": method_name, "reason": reason,
                                                                  "transport": "grpc"}}
        log.warning("access denied", extra={"method": method_name, "reason": reason})
        if self.on_denied is not None:
            try:
                await self.on_denied(event)
            except Exception:  # the audit sink failing must not turn a denial into an error
                log.exception("could not record an access denial")
        await context.abort(code, message)


async def _bound_stream(iterator, principal: Principal | None, behalf: str):
    token, behalf_token = _current.set(principal), _acting_for.set(behalf)
    try:
        async for item in iterator:
            yield item
    finally:
        _current.reset(token)
        _acting_for.reset(behalf_token)


class ServiceTokenClientInterceptor(aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor,
                                    aio.StreamStreamClientInterceptor):
    """Send the mesh's service token (none in plaintext dev) and the end user acted for (for the
    audit trail) on every call."""

    def __init__(self, token: str):
        self.token = token

    def _with_token(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()))
        if self.token and "authorization" not in metadata:
            metadata.add("authorization", f"Bearer {self.token}")
        behalf = _acting_for.get()
        if behalf and ACTOR_METADATA_KEY not in metadata:
            metadata.add(ACTOR_METADATA_KEY, behalf)
        return aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_token(client_call_details), request_iterator)


def on_behalf_of() -> str:
    """The end user the current task acts for ('' when none was named)."""
    return _acting_for.get()


def acting_for(actor: str) -> contextvars.Token:
    """Mark the current task as acting for `actor` (the gateway's end user); returns the reset token."""
    return _acting_for.set(actor)


def reset_acting_for(token: contextvars.Token) -> None:
    _acting_for.reset(token)


def describe(principal: Principal) -> dict:
    return {"name": principal.name, "role": principal.role, "projects": sorted(principal.projects)}


def dump_records(records: Iterable[TokenRecord]) -> str:
    """`smvm token list`: every token's metadata, never a hash."""
    return json.dumps([{k: v for k, v in asdict(r).items() if k != "sha256"} for r in records], indent=2, default=list)
