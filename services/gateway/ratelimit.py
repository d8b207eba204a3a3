"""Per-token, per-endpoint rate limits of the integration guide (token buckets, in memory).

A bucket holds `limit` requests and refills at limit/60 per second, so a client may burst up to
its per-minute allowance and then sustains exactly that rate. Refusals carry the seconds until the
next request would pass (for `Retry-After`).

Buckets are per gateway process. With several replicas behind a load balancer that spreads each
token's requests over them (the Ingress balances per request), each replica enforces its share:
`replicas` (SMVM_RATE_LIMIT_REPLICAS, the HPA's minimum) divides every limit, rounded up, so that
`replicas` or more replicas together always allow at least the guide's limit. Sharing the buckets
instead would cost every limited request a durable write in the orchestrator's database and a second
gRPC hop (docs/integration.md, "Rate limits across gateway replicas").
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Callable

# The guide's "Rate Limit" lines, requests per minute per token.
GUIDE_LIMITS_PER_MINUTE: dict[str, int] = {
    "runs": 100,
    "status": 1000,
    "results": 100,
    "complete": 50,
    "finalize": 20,
    "list": 1000,
}

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/v1/validation/(runs|submit)/?$"), "runs"),
    ("GET", re.compile(r"^/api/v1/validation/runs/?$"), "list"),
    ("GET", re.compile(r"^/api/v1/validation/[^/]+/status/?$"), "status"),
    ("GET", re.compile(r"^/api/v1/validation/[^/]+/results/?$"), "results"),
    ("PUT", re.compile(r"^/api/v1/validation/[^/]+/complete/?$"), "complete"),
    ("POST", re.compile(r"^/api/v1/validation/[^/]+/complete/?$"), "complete"),
    ("POST", re.compile(r"^/api/v1/validation/[^/]+/finalize/?$"), "finalize"),
]


def endpoint_of(method: str, path: str) -> str | None:
    """The guide's endpoint name a request counts against, or None when it is not limited."""
    for route_method, pattern, name in _ROUTES:
        if method == route_method and pattern.match(path):
            return name
    return None


def limits_from_setting(text: str) -> dict[str, int]:
    """The limits `SMVM_RATE_LIMITS` asks for: empty = the guide's, "off" = none, or overrides such as
    "status=5000,runs=200" on top of the guide's (0 disables one endpoint's limit). ValueError names the part."""
    text = text.strip()
    if not text:
        return dict(GUIDE_LIMITS_PER_MINUTE)
    if text.lower() == "off":
        return {}
    limits = dict(GUIDE_LIMITS_PER_MINUTE)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in GUIDE_LIMITS_PER_MINUTE:
            raise ValueError(f"rate_limits: {part!r} is not <endpoint>=<per minute> with endpoint one of "
                             f"{', '.join(GUIDE_LIMITS_PER_MINUTE)}")
        try:
            per_minute = int(value)
        except ValueError:
            raise ValueError(f"rate_limits.{name}: {value.strip()!r} is not a whole number") from None
        if per_minute < 0:
            raise ValueError(f"rate_limits.{name}: must be >= 0")
        limits[name] = per_minute
    return limits


def per_replica(limits_per_minute: dict[str, int], replicas: int) -> dict[str, int]:
    """Each replica's share of per-token limits shared by `replicas` gateways: ceil(limit / replicas)
    (0, no limit, stays 0), so that the replicas together allow at least the limit."""
    if replicas < 1:
        raise ValueError(f"rate_limit_replicas: must be >= 1, got {replicas}")
    return {name: math.ceil(limit / replicas) if limit else 0 for name, limit in limits_per_minute.items()}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, limits_per_minute: dict[str, int] | None = None, clock: Callable[[], float] = time.monotonic,
                 *, replicas: int = 1):
        # limits_per_minute: across the gateway; self.limits: this replica's share of them.
        self.limits_across_replicas = dict(GUIDE_LIMITS_PER_MINUTE if limits_per_minute is None else limits_per_minute)
        self.replicas = replicas
        self.limits = per_replica(self.limits_across_replicas, replicas)
        self.clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def describe(self, endpoint: str) -> str:
        """The limit a refusal names, as the caller knows it (the guide's figure) and as this replica applies it."""
        text = f"rate limit of {self.limits_across_replicas[endpoint]} requests/minute for {endpoint}"
        if self.replicas > 1:
            text += f" ({self.limits[endpoint]}/minute on each of {self.replicas} gateway replicas)"
        return text

    def acquire(self, client: str, endpoint: str) -> float:
        """Take one request from the bucket; 0 when allowed, else the seconds to wait."""
        limit = self.limits.get(endpoint)
        if not limit:
            return 0.0
        now = self.clock()
        rate = limit / 60.0
        bucket = self._buckets.get((client, endpoint))
        if bucket is None:
            bucket = self._buckets[(client, endpoint)] = _Bucket(tokens=float(limit), updated=now)
        bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
