"""Fault injection for reliability tests: added latency and refused calls, per method, on any service.

Off unless `SMVM_FAULT_INJECTION` is set, e.g.

    SMVM_FAULT_INJECTION="methods=/smvm.v1.PersonaService/*;delay_ms=300;unavailable_first=2"

- `methods`: comma-separated fnmatch patterns of full method names the plan applies to (default all
  but health and reflection);
- `delay_ms`: latency added before the handler runs (the caller's deadline keeps counting);
- `unavailable_first`: the first N calls of each matching method are answered UNAVAILABLE without
  running the handler, which is exactly the case the channels' retry policy (gRFC A6) may retry;
- `unavailable_every`: after that, every Nth call is refused the same way (0 = never).

It lets tests show that deadlines and retries behave as configured, on real processes, without
changing the services' code.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import fnmatch
from typing import Any, Callable

import logging

import grpc
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor

log = logging.getLogger("smvm.faults")
_NEVER = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    methods: tuple[str, ...] = ("*",)
    delay_ms: float = 0.0
    unavailable_first: int = 0
    unavailable_every: int = 0

    @classmethod
    def parse(cls, text: str) -> "FaultPlan | None":
        """The plan a `key=value;...` string describes, None for an empty string; ValueError names the key."""
        if not text.strip():
            return None
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"fault_injection: {part!r} is not key=value")
            try:
                if key == "methods":
                    fields[key] = tuple(m.strip() for m in value.split(",") if m.strip()) or ("*",)
                elif key == "delay_ms":
                    fields[key] = float(value)
                elif key in ("unavailable_first", "unavailable_every"):
                    fields[key] = int(value)
                else:
                    raise ValueError(f"fault_injection: unknown key {key!r}")
            except ValueError as exc:
                if "fault_injection" in str(exc):
                    raise
                raise ValueError(f"fault_injection.{key}: {value!r} is not a number") from None
            if key != "methods" and fields[key] < 0:
                raise ValueError(f"fault_injection.{key}: must be >= 0")
        return cls(**fields)

    def applies_to(self, method_name: str) -> bool:
        if method_name.startswith(_NEVER):
            return False
        return any(fnmatch.fnmatchcase(method_name, pattern) for pattern in self.methods)


class FaultInjectionInterceptor(AsyncServerInterceptor):
    """Delays or refuses matching calls as the plan says; counts calls per method."""

    def __init__(self, plan: FaultPlan):
        self.plan = plan
        self.calls: collections.Counter[str] = collections.Counter()

    def _refuse(self, method_name: str) -> bool:
        n = self.calls[method_name]  # 1-based number of this call
        if n <= self.plan.unavailable_first:
            return True
        every = self.plan.unavailable_every
        return bool(every) and (n - self.plan.unavailable_first) % every == 0

    async def intercept(self, method: Callable, request: Any, context: aio.ServicerContext, method_name: str):
        if not self.plan.applies_to(method_name):
            return await self._call(method, request, context)
        self.calls[method_name] += 1
        if self._refuse(method_name):
            log.info("fault injected", extra={"method": method_name, "fault": "unavailable", "call": self.calls[method_name]})
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"fault injected: call {self.calls[method_name]} refused")
        if self.plan.delay_ms:
            await asyncio.sleep(self.plan.delay_ms / 1000)
        return await self._call(method, request, context)

    @staticmethod
    async def _call(method, request, context):
        response = method(request, context)
        if hasattr(response, "__aiter__"):
            return response
        return await response
