"""How every SMVM gRPC service starts, reports health and stops.

`ServiceHost` owns a grpc.aio server with the standard interceptors, the grpc.health.v1 service
(NOT_SERVING until warm-up finishes and again while draining) and server reflection.
`run_service` is the `python -m services.<name>` entry point: settings from the environment, JSON
logs, graceful shutdown on SIGTERM / SIGINT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import concurrent.futures
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from smvm import logs, metrics
from smvm.auth import AuthServerInterceptor, TokenRegistry
from smvm.channels import MAX_MESSAGE_BYTES
from smvm.config import Settings, load_settings
from smvm.interceptors import server_interceptors
from smvm.tls import TlsFiles

log = logging.getLogger("smvm.server")

# register(server) adds the servicers and returns their full service names.
Register = Callable[[aio.Server], Iterable[str]]
Hook = Callable[[], Awaitable[None]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServerSecurity:
    """Who may call a service (token registry; required when the mesh has a service token) and
    whether it serves mTLS. The default (no tokens, no TLS) is the plaintext loopback of dev."""

    registry: TokenRegistry | None = None
    required: bool = False
    tls: TlsFiles | None = None
    on_denied: Callable[[dict], Awaitable[None]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServerSecurity":
        return cls(registry=TokenRegistry.from_settings(settings), required=bool(settings.service_token),
                   tls=TlsFiles.from_settings(settings))


class ServiceHost:
    """One gRPC server process' worth of plumbing, usable from `__main__` and from tests."""

    def __init__(
        self,
        name: str,
        address: str,
        register: Register,
        *,
        warmup: Callable[[], None] | None = None,
        on_start: Hook | None = None,
        on_stop: Hook | None = None,
        grace_s: float = 10.0,
        security: ServerSecurity | None = None,
    ):
        self.name = name
        self.address = address
        self._register = register
        self._warmup = warmup
        self._on_start = on_start
        self._on_stop = on_stop
        self.grace_s = grace_s
        self.security = security or ServerSecurity()
        self.health = HealthServicer()
        self.server: aio.Server | None = None
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._service_names: list[str] = []
        self._warm_task: asyncio.Task | None = None
        self.metrics_port: int | None = None

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING until warm); return the bound port."""
        interceptors = server_interceptors()
        if self.security.registry is not None:
            auth = AuthServerInterceptor(self.security.registry, required=self.security.required,
                                         on_denied=self.security.on_denied)
            interceptors.insert(1, auth)  # after the correlation id is bound, before domain errors
        server = aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # gRPC binds with SO_REUSEPORT by default: a second server on a taken port would then
                # silently share its connections. Fail the bind instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        self._service_names = list(self._register(server))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for service in ["", *self._service_names]:
            await self.health.set(service, NOT_SERVING)
        reflection.enable_server_reflection(
            [*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
        if self.security.tls is not None:
            port = server.add_secure_port(self.address, self.security.tls.server_credentials())
        else:
            port = server.add_insecure_port(self.address)
        if not port:
            raise RuntimeError(f"{self.name}: cannot bind {self.address}")
        await server.start()
        self.server, self.port = server, port
        self.metrics_port = metrics.serve(self.name)
        log.info("listening", extra={"address": self.address, "port": port, "services": self._service_names})
        self._warm_task = asyncio.create_task(self._become_ready())
        return port

    async def _become_ready(self) -> None:
        try:
            if self._warmup is not None:
                started = asyncio.get_running_loop().time()
                await asyncio.to_thread(self._warmup)
                log.info("warmed up", extra={"seconds": round(asyncio.get_running_loop().time() - started, 3)})
            if self._on_start is not None:
                await self._on_start()
        except Exception:
            log.exception("warm-up failed; staying NOT_SERVING")
            return
        for service in ["", *self._service_names]:
            await self.health.set(service, SERVING)
        self.ready.set()
        log.info("serving")

    async def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish within the grace period, then stop."""
        if self.server is None:
            return
        await self.health.enter_graceful_shutdown()
        if self._warm_task is not None and not self._warm_task.done():
            self._warm_task.cancel()
        if self._on_stop is not None:
            await self._on_stop()
        await self.server.stop(self.grace_s if grace_s is None else grace_s)
        self.server = None
        log.info("stopped")


def run_service(
    name: str,
    build: Callable[[Settings], ServiceHost],
) -> None:
    """Entry point of `python -m services.<name>`: serve until SIGTERM / SIGINT, then drain."""
    settings = load_settings()
    logs.configure(name, settings.log_level)

    async def main() -> None:
        # Our own default executor, so that shutdown can tell its busy workers from everything else.
        worker_prefix = f"{name}-worker"
        executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=worker_prefix)
        asyncio.get_running_loop().set_default_executor(executor)
        host = build(settings)
        # Tokens and TLS come from the settings; a denial hook the service installed is kept.
        host.security = dataclasses.replace(ServerSecurity.from_settings(settings), on_denied=host.security.on_denied)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await host.start()
        await stop.wait()
        log.info("shutdown requested; draining", extra={"grace_s": host.grace_s})
        await host.stop()
        await _abandon_busy_workers(executor, worker_prefix, wait_s=max(1.0, min(5.0, host.grace_s)))

    asyncio.run(main())


async def _abandon_busy_workers(executor: concurrent.futures.ThreadPoolExecutor, prefix: str, wait_s: float) -> None:
    """After the drain, give worker threads `wait_s` to finish, then exit without them.

    A handler cancelled at the end of the grace period leaves its thread running (e.g. analysis
    rendering a report under load), and asyncio.run() would join it however long it takes, so a
    SIGTERM'd service could outlive its pod's termination grace and be SIGKILLed. Its caller has
    already been answered CANCELLED and retries elsewhere, so nothing is lost by not waiting."""
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + wait_s
    while True:
        busy = [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]
        if not busy:
            return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    log.warning("worker threads still busy after the drain; exiting without them", extra={"threads": len(busy)})
    logging.shutdown()
    os._exit(0)
