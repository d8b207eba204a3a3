"""Client channels between services: retries, round-robin over replicas, correlation ids.

The retry policy follows gRFC A6 (service config); it retries only UNAVAILABLE, which a stage
answers only before it has done any work (not started, draining), so retrying is safe. Deadlines are
set per call by the caller; none is implied here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grpc import aio

from smvm.auth import ServiceTokenClientInterceptor
from smvm.interceptors import CorrelationClientInterceptor
from smvm.tls import TlsFiles

RETRY_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def channel_options(service_config: dict | None = None) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", json.dumps(service_config or RETRY_SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        # Reconnect soon after a peer restarts (gRPC's default backoff grows to 120 s); the
        # orchestrator retries a stage that is UNAVAILABLE and should find it as soon as it is back.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        # Never drop to IDLE (gRPC's default after 30 min without calls): a round-robin channel
        # waking up connects to its replicas one by one and sends every call made meanwhile to the
        # first one ready, so the first run after a quiet spell put all its shards on one replica.
        ("grpc.client_idle_timeout_ms", 2**31 - 1),
    ]


def target_for(address: str) -> str:
    """A gRPC target for one address, a comma list (ipv4:a,b) or a dns:/// name (unchanged)."""
    if "://" in address or address.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        return address
    parts = [p.strip() for p in address.split(",") if p.strip()]
    if len(parts) > 1:
        return "ipv4:" + ",".join(parts)
    return parts[0]


def addresses_of(address: str) -> list[str]:
    """The individual replica addresses named by a comma list (a single address otherwise)."""
    return [p.strip() for p in address.split(",") if p.strip()]


class _UnaryStreamOnly(aio.UnaryStreamClientInterceptor):
    """grpc.aio files an interceptor under the first call kind it implements (unary-unary), so one
    that also implements unary-stream must be registered a second time through this adapter, or
    streaming calls (the simulation's) go out without its metadata."""

    def __init__(self, inner: aio.UnaryStreamClientInterceptor):
        self.inner = inner

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self.inner.intercept_unary_stream(continuation, client_call_details, request)


class _StreamStreamOnly(aio.StreamStreamClientInterceptor):
    """The same for bidirectional calls (the gateway's run watch)."""

    def __init__(self, inner: aio.StreamStreamClientInterceptor):
        self.inner = inner

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await self.inner.intercept_stream_stream(continuation, client_call_details, request_iterator)


def _for_every_kind(interceptor) -> list:
    return [interceptor, _UnaryStreamOnly(interceptor), _StreamStreamOnly(interceptor)]


@dataclass(frozen=True)
class ClientSecurity:
    """How a channel proves who it is: the mesh's service token and, for mTLS, its certificate."""

    service_token: str = ""
    tls: TlsFiles | None = None

    @classmethod
    def from_settings(cls, settings) -> "ClientSecurity":
        return cls(service_token=(settings.service_tokens() or ("",))[0], tls=TlsFiles.from_settings(settings))


def open_channel(address: str, security: ClientSecurity | None = None) -> aio.Channel:
    """A channel with the standard options and interceptors: plaintext (loopback, the dev default)
    unless `security` carries TLS files; sending the service token when it has one."""
    interceptors: list = _for_every_kind(CorrelationClientInterceptor())
    if security is not None:  # the service token when there is one, and the end user acted for
        interceptors += _for_every_kind(ServiceTokenClientInterceptor(security.service_token))
    if security is not None and security.tls is not None:
        return aio.secure_channel(
            target_for(address), security.tls.channel_credentials(),
            options=channel_options() + security.tls.channel_options(), interceptors=interceptors,
        )
    return aio.insecure_channel(target_for(address), options=channel_options(), interceptors=interceptors)
