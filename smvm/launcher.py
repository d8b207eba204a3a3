"""Start the whole mesh on loopback as separate processes, wait until it is ready, stop it cleanly.

Each service runs as `python -m services.<name>`. Children ask the kernel for SIGTERM when the
launcher dies (PR_SET_PDEATHSIG), so even `kill -9` of the launcher leaves no process behind. Used by
`smvm up`, `smvm demo` and the end-to-end tests (which pass free ports and a temporary runs dir).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smvm.channels import addresses_of
from smvm.config import DEFAULT_ADDRS, Settings
from smvm.tls import TlsFiles

STAGES = ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch")
_PR_SET_PDEATHSIG = 1


# Each child first runs this in a fresh interpreter: ask for SIGTERM when the launcher dies (the
# setting survives exec), give up if the launcher is already gone, then exec the service. Doing it
# here rather than in a preexec_fn keeps Python code out of the window between fork and exec, where
# a launcher that has gRPC threads running (a test process, say) can abort the child in gRPC's fork
# handlers.
_DIE_WITH_PARENT_EXEC = (
    "import ctypes, os, signal, sys;"
    f"ctypes.CDLL('libc.so.6', use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM);"
    "os.getppid() == int(sys.argv[1]) or sys.exit(1);"
    "os.execv(sys.argv[2], sys.argv[2:])"
)


_PICKER = random.SystemRandom()  # not the global generator, which tests may seed
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, taken from below the kernel's ephemeral range and never handed out
    twice by this process. Asking the kernel for port 0 would be simpler but races: between this
    call and the server's bind, an outgoing connection may be given the same ephemeral port (it
    happened in CI: `Address already in use`)."""
    low = min(_ephemeral_low(), 65536)
    first = 10000 if low > 12000 else 1025
    if len(_handed_out) > (low - first) // 2:
        _handed_out.clear()
    for _ in range(500):
        port = _PICKER.randrange(first, low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_addresses(simulation_replicas: int = 1) -> dict[str, str]:
    """Loopback addresses on free ports for every process (a comma list for simulation replicas)."""
    addrs = {name: f"127.0.0.1:{free_port()}" for name in DEFAULT_ADDRS}
    addrs["simulation"] = ",".join(f"127.0.0.1:{free_port()}" for _ in range(simulation_replicas))
    return addrs


def unclean_exits(codes: dict[str, int | None]) -> dict[str, int | None]:
    """The processes of a stopped mesh that did not exit 0 by themselves (-9: killed at the deadline)."""
    return {key: code for key, code in codes.items() if code != 0}


class MeshError(RuntimeError):
    pass


class Mesh:
    """The processes of one SMVM mesh."""

    def __init__(
        self,
        settings: Settings,
        *,
        addresses: dict[str, str] | None = None,
        simulation_replicas: int = 1,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        python: str = sys.executable,
    ):
        self.settings = settings
        self.addresses = dict(addresses) if addresses else {name: settings.addr(name) for name in DEFAULT_ADDRS}
        sim = addresses_of(self.addresses["simulation"])
        if simulation_replicas > len(sim):
            sim += [f"127.0.0.1:{free_port()}" for _ in range(simulation_replicas - len(sim))]
        self.addresses["simulation"] = ",".join(sim)
        self.simulation_replicas = sim
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        self.python = python
        self.processes: dict[str, subprocess.Popen] = {}
        # How each process was started (module, environment), so that one can be started again.
        self._specs: dict[str, tuple[str, dict[str, str]]] = {}
        self._logs: list[IO] = []

    @property
    def gateway_url(self) -> str:
        return f"http://{self.addresses['gateway']}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.env_for_children())
        for name, addr in self.addresses.items():
            env[f"SMVM_{name.upper()}_ADDR"] = addr
        env["SMVM_PUBLIC_BASE_URL"] = self.gateway_url
        env["NUMBA_CACHE_DIR"] = str(Path(self.settings.numba_cache_dir).resolve())
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def _spawn(self, key: str, module: str, env: dict[str, str]) -> None:
        stderr: int | IO | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.log_dir / f"{key}.log", "ab")
            self._logs.append(fh)
            stderr = fh
        self._specs[key] = (module, env)
        self.processes[key] = subprocess.Popen(
            [self.python, "-c", _DIE_WITH_PARENT_EXEC, str(os.getpid()), self.python, "-m", f"services.{module}"],
            env=env,
            stdout=stderr if stderr is not None else None,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def start(self, timeout_s: float = 240.0) -> None:
        """Spawn every process and return once all report SERVING and the gateway is ready."""
        env = self._env()
        try:
            for name in STAGES:
                if name == "simulation":
                    for i, addr in enumerate(self.simulation_replicas):
                        self._spawn(f"simulation-{i}", "simulation", dict(env, SMVM_SIMULATION_ADDR=addr))
                else:
                    self._spawn(name, name, env)
            self._spawn("orchestrator", "orchestrator", env)
            self._spawn("memory", "memory", env)
            self._spawn("gateway", "gateway", env)
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def kill(self, key: str) -> int:
        """SIGKILL one process (a crash, no drain) and reap it; return its exit code."""
        proc = self.processes[key]
        proc.kill()
        return proc.wait()

    def restart(self, key: str, timeout_s: float = 120.0, env_changes: dict[str, str] | None = None) -> None:
        """Start a stopped process again with its original settings (`env_changes` applied on top,
        as a rolled pod gets its new Secret) and wait until it is SERVING."""
        if self.processes[key].poll() is None:
            raise MeshError(f"{key} is still running")
        module, env = self._specs[key]
        env = dict(env, **(env_changes or {}))
        self._spawn(key, module, env)
        if module == "gateway":
            self._wait_gateway(key, env.get("SMVM_GATEWAY_ADDR", self.addresses["gateway"]), timeout_s)
            return
        target = self.grpc_targets().get(key)
        deadline = time.monotonic() + timeout_s
        while target is not None and not _serving(target):
            self._check_alive()
            if time.monotonic() > deadline:
                raise MeshError(f"{key} not SERVING {timeout_s:.0f}s after restart")
            time.sleep(0.1)

    def start_extra(self, key: str, module: str, address: str, timeout_s: float = 120.0,
                    env_changes: dict[str, str] | None = None) -> None:
        """One more replica of a service (e.g. a second orchestrator, or a second gateway over the same
        orchestrator) on `address`, with `env_changes` on top of its settings, until SERVING (a
        gateway: until its /readyz answers 200)."""
        module_env = self._specs.get(module, (module, self._env()))[1]
        self._spawn(key, module, dict(module_env, **{f"SMVM_{module.upper()}_ADDR": address}, **(env_changes or {})))
        if module == "gateway":
            self._wait_gateway(key, address, timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while not _serving(address):
            self._check_alive()
            if time.monotonic() > deadline:
                raise MeshError(f"{key} not SERVING after {timeout_s:.0f}s")
            time.sleep(0.1)

    def _wait_gateway(self, key: str, address: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            try:
                if httpx.get(f"http://{address}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise MeshError(f"{key} /readyz not 200 after {timeout_s:.0f}s")
            time.sleep(0.1)

    def grpc_targets(self) -> dict[str, str]:
        targets = {name: self.addresses[name] for name in STAGES if name != "simulation"}
        targets.update({f"simulation-{i}": a for i, a in enumerate(self.simulation_replicas)})
        targets["orchestrator"] = self.addresses["orchestrator"]
        targets["memory"] = self.addresses["memory"]
        return targets

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = dict(self.grpc_targets())
        tls = TlsFiles.from_settings(self.settings)  # an mTLS mesh is probed with the mesh's certificate
        while pending:
            self._check_alive()
            for key, addr in list(pending.items()):
                if _serving(addr, tls):
                    del pending[key]
            if time.monotonic() > deadline:
                raise MeshError(f"not SERVING after {timeout_s:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.2)
        while True:
            self._check_alive()
            try:
                if httpx.get(f"{self.gateway_url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise MeshError(f"gateway /readyz not 200 after {timeout_s:.0f}s")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        for key, proc in self.processes.items():
            if proc.poll() is not None:
                hint = f" (see {self.log_dir / (key + '.log')})" if self.log_dir else ""
                raise MeshError(f"{key} exited with code {proc.returncode} during start-up{hint}")

    def stop(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        """SIGTERM everything (gateway first), wait, SIGKILL stragglers; return the exit codes."""
        order = ["gateway", "orchestrator"] + [k for k in self.processes if k not in ("gateway", "orchestrator")]
        for key in order:
            proc = self.processes.get(key)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fh in self._logs:
            fh.close()
        self._logs.clear()
        return {key: proc.returncode for key, proc in self.processes.items()}

    def __enter__(self) -> "Mesh":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _serving(address: str, tls: TlsFiles | None = None) -> bool:
    try:
        channel = (grpc.secure_channel(address, tls.channel_credentials(), options=tls.channel_options())
                   if tls is not None else grpc.insecure_channel(address))
        with channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            return response.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
