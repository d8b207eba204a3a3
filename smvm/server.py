"""How every SMVM gRPC service starts, reports health and stops.

`ServiceHost` owns a grpc.aio server with the standard interceptors, the grpc.health.v1 service
(NOT_SERVING until warm-up finishes and again while draining) and server reflection.
`run_service` is the `python -m services.<name>` entry point: settings from the environment, JSON
logs, graceful shutdown on SIGTERM / SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Awaitable, Callable, Iterable

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from smvm import logs, metrics
from smvm.channels import MAX_MESSAGE_BYTES
from smvm.config import Settings, load_settings
from smvm.interceptors import server_interceptors

log = logging.getLogger("smvm.server")

# register(server) adds the servicers and returns their full service names.
Register = Callable[[aio.Server], Iterable[str]]
Hook = Callable[[], Awaitable[None]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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
    ):
        self.name = name
        self.address = address
        self._register = register
        self._warmup = warmup
        self._on_start = on_start
        self._on_stop = on_stop
        self.grace_s = grace_s
        self.health = HealthServicer()
        self.server: aio.Server | None = None
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._service_names: list[str] = []
        self._warm_task: asyncio.Task | None = None
        self.metrics_port: int | None = None

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING until warm); return the bound port."""
        server = aio.server(
            interceptors=server_interceptors(),
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
        host = build(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await host.start()
        await stop.wait()
        log.info("shutdown requested; draining", extra={"grace_s": host.grace_s})
        await host.stop()

    asyncio.run(main())
