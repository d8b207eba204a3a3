"""The exec probe the mTLS overlay gives every gRPC service (k8s/probe/grpc_health_probe.py), run as
kubelet runs it: a separate process against a real overwatch server that requires client
certificates. SERVING passes; NOT_SERVING, a plaintext dial and a certificate from another CA fail."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from smvm.config import Settings
from smvm.server import ServerSecurity
from smvm.tls import TlsFiles

from services.overwatch.servicer import build_host

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "k8s" / "probe" / "grpc_health_probe.py"


def _pki_helpers():
    """The certificate helpers of the mTLS tests (tests/tls/conftest.py), reused rather than copied."""
    spec = importlib.util.spec_from_file_location("smvm_tls_test_pki", REPO / "tests" / "tls" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    pki = _pki_helpers()
    folder = tmp_path_factory.mktemp("probe-pki")
    ca_key, ca_cert = pki.make_ca("smvm-probe-ca")
    rogue_key, rogue_cert = pki.make_ca("rogue-ca")
    files = {"ca.crt": pki.pem(ca_cert)}
    files["tls.crt"], files["tls.key"] = pki.make_leaf(ca_key, ca_cert, "smvm-mesh")
    files["rogue.crt"], files["rogue.key"] = pki.make_leaf(rogue_key, rogue_cert, "smvm-mesh")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


@pytest.fixture
async def mtls_overwatch(certificates, tmp_path):
    tls = TlsFiles(certificates["tls.crt"].read_bytes(), certificates["tls.key"].read_bytes(),
                   certificates["ca.crt"].read_bytes())
    host = build_host(Settings(profile="test", grace_period_s=1, runs_dir=tmp_path), "127.0.0.1:0",
                      security=ServerSecurity(tls=tls))
    port = await host.start()
    await host.ready.wait()
    yield host, port
    await host.stop(0)


async def probe(port: int, **tls: Path) -> tuple[int, str]:
    """Run the probe as kubelet would: its own process, configured by the pod's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMVM_")}
    env.update(SMVM_PROFILE="test", SMVM_OVERWATCH_ADDR=f"0.0.0.0:{port}")
    if tls:
        env.update(SMVM_TLS_CERT=str(tls["cert"]), SMVM_TLS_KEY=str(tls["key"]), SMVM_TLS_CA=str(tls["ca"]),
                   SMVM_TLS_SERVER_NAME="smvm-mesh")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), "overwatch", "--timeout", "5", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode()


async def test_the_probe_passes_a_serving_mtls_service_and_fails_when_it_stops_serving(mtls_overwatch, certificates):
    host, port = mtls_overwatch
    mesh = {"cert": certificates["tls.crt"], "key": certificates["tls.key"], "ca": certificates["ca.crt"]}
    code, out = await probe(port, **mesh)
    assert (code, out.strip()) == (0, f"127.0.0.1:{port}: SERVING")
    await host.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # as while warming up or draining
    code, out = await probe(port, **mesh)
    assert (code, out.strip()) == (1, f"127.0.0.1:{port}: NOT_SERVING")


async def test_the_probe_fails_without_the_mesh_certificate(mtls_overwatch, certificates):
    _, port = mtls_overwatch
    code, out = await probe(port)  # plaintext: what kubelet's native grpc probe does
    assert code == 1 and "UNAVAILABLE" in out
    code, out = await probe(port, cert=certificates["rogue.crt"], key=certificates["rogue.key"], ca=certificates["ca.crt"])
    assert code == 1 and "UNAVAILABLE" in out


async def test_an_unreadable_key_is_a_probe_error_naming_the_setting(mtls_overwatch, certificates, tmp_path):
    _, port = mtls_overwatch
    code, out = await probe(port, cert=certificates["tls.crt"], key=tmp_path / "missing.key", ca=certificates["ca.crt"])
    assert code == 2 and "tls_key" in out
