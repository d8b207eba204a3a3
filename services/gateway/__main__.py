"""`python -m services.gateway`: serve the REST gateway on settings.gateway_addr until SIGTERM / SIGINT.

uvicorn's own signal capture re-raises the signal after shutdown (the process would then die by
SIGTERM, exit code -15); here the signal only asks uvicorn to drain: stop accepting, let in-flight
requests finish within grace_period_s, close the upstream channel, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from smvm import logs
from smvm.config import load_settings

from services.gateway.app import create_app

log = logging.getLogger("smvm.gateway")


def split_host_port(address: str) -> tuple[str, int]:
    """"127.0.0.1:8080" -> ("127.0.0.1", 8080); "[::1]:8080" -> ("::1", 8080)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"gateway_addr must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


class _DrainingServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_exit, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _request_exit(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        log.info("shutdown requested; draining", extra={"signal": signal.Signals(sig).name})
        upstream = getattr(getattr(self.config.app, "state", None), "upstream", None)
        if upstream is not None:
            upstream.draining = True
        self.should_exit = True


def main() -> None:
    settings = load_settings()
    logs.configure("gateway", settings.log_level)
    host, port = split_host_port(settings.gateway_addr)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.grace_period_s)), server_header=False,
    )
    asyncio.run(_DrainingServer(config).serve())


if __name__ == "__main__":
    main()
