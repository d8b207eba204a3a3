"""Client channels between services: retries, round-robin over replicas, correlation ids.

The retry policy follows gRFC A6 (service config); it retries only UNAVAILABLE, which a stage
answers only before it has done any work (not started, draining), so retrying is safe. Deadlines are
set per call by the caller; none is implied here.
"""

from __future__ import annotations

import json

from grpc import aio

from smvm.interceptors import CorrelationClientInterceptor

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


def open_channel(address: str) -> aio.Channel:
    """An insecure (loopback / in-mesh) channel with the standard options and interceptors."""
    return aio.insecure_channel(
        target_for(address), options=channel_options(), interceptors=[CorrelationClientInterceptor()]
    )
