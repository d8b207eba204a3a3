"""Mutual TLS between services with certificates generated here: a client with a certificate from
the mesh's CA is served; one without a certificate, one from another CA, and a plaintext one are
refused; and a whole run goes through a mesh where every hop is mTLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import ipaddress
import json
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smvm.channels import ClientSecurity, open_channel
from smvm.config import Settings
from smvm.errors import InvalidArgument
from smvm.server import ServerSecurity
from smvm.tls import TlsFiles
from smvm.v1 import overwatch_service_pb2 as pb, overwatch_service_pb2_grpc as pb_grpc

from services.overwatch.servicer import build_host

NOW = dt.datetime.now(dt.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key, ca_cert, common_name: str) -> tuple[bytes, bytes]:
    """A certificate for both ends of a connection (server and client auth), valid for loopback."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca("smvm-test-ca")
    rogue_key, rogue_cert = make_ca("rogue-ca")
    files = {"ca": pem(ca_cert)}
    files["mesh_cert"], files["mesh_key"] = make_leaf(ca_key, ca_cert, "smvm-mesh")
    files["rogue_cert"], files["rogue_key"] = make_leaf(rogue_key, rogue_cert, "smvm-mesh")
    paths = {}
    for name, data in files.items():
        (folder / f"{name}.pem").write_bytes(data)
        paths[name] = str(folder / f"{name}.pem")
    return {"bytes": files, "paths": paths}


@pytest.fixture
async def tls_overwatch(pki, tmp_path):
    files = pki["bytes"]
    host = build_host(Settings(profile="test", grace_period_s=1, runs_dir=tmp_path), "127.0.0.1:0",
                      security=ServerSecurity(tls=TlsFiles(files["mesh_cert"], files["mesh_key"], files["ca"])))
    port = await host.start()
    await host.ready.wait()
    yield f"127.0.0.1:{port}"
    await host.stop(0)


def usage_request() -> pb.GetUsageRequest:
    return pb.GetUsageRequest(project_id="PROJ-TLS")


async def test_a_client_with_a_mesh_certificate_is_served(pki, tls_overwatch):
    files = pki["bytes"]
    channel = open_channel(tls_overwatch, ClientSecurity(tls=TlsFiles(files["mesh_cert"], files["mesh_key"], files["ca"])))
    async with channel:
        answer = await pb_grpc.OverwatchServiceStub(channel).GetUsage(usage_request(), timeout=10)
    assert answer.project_usage.scope.startswith("project:PROJ-TLS:")


async def _refused(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.OverwatchServiceStub(channel).GetUsage(usage_request(), timeout=5)
    return err.value


async def test_a_client_without_a_certificate_is_refused(pki, tls_overwatch):
    no_cert = grpc.ssl_channel_credentials(root_certificates=pki["bytes"]["ca"])
    err = await _refused(grpc.aio.secure_channel(tls_overwatch, no_cert))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_with_a_certificate_from_another_ca_is_refused(pki, tls_overwatch):
    files = pki["bytes"]
    rogue = grpc.ssl_channel_credentials(root_certificates=files["ca"], private_key=files["rogue_key"],
                                         certificate_chain=files["rogue_cert"])
    err = await _refused(grpc.aio.secure_channel(tls_overwatch, rogue))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_client_is_refused(tls_overwatch):
    err = await _refused(grpc.aio.insecure_channel(tls_overwatch))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_must_come_together_and_be_readable(pki, tmp_path):
    paths = pki["paths"]
    assert TlsFiles.from_settings(Settings(profile="test")) is None  # plaintext is the default
    with pytest.raises(InvalidArgument) as err:
        TlsFiles.from_settings(Settings(profile="test", tls_cert=paths["mesh_cert"], tls_key=paths["mesh_key"]))
    assert err.value.field == "tls_ca"
    with pytest.raises(InvalidArgument) as err:
        TlsFiles.from_settings(Settings(profile="test", tls_cert=paths["mesh_cert"], tls_key=str(tmp_path / "nope.pem"),
                                        tls_ca=paths["ca"]))
    assert err.value.field == "tls_key"


_spec = importlib.util.spec_from_file_location("secured_mesh", Path(__file__).resolve().parents[1] / "auth" / "conftest.py")
_secured = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_secured)


async def test_a_whole_run_over_a_mesh_where_every_hop_is_mtls(pki, tmp_path):
    paths = pki["paths"]
    idea = json.loads((Path(__file__).resolve().parents[2] / "examples" / "idea.json").read_text())
    idea.update(project_id="PROJ-TLS", run_id="RUN-TLS-1")
    idea["configuration"].update(simulation_iterations=200, persona_count=4, competitor_count=3)
    async with _secured.secured_mesh(tmp_path, tls_cert=paths["mesh_cert"], tls_key=paths["mesh_key"],
                                     tls_ca=paths["ca"]) as (settings, client, secrets, _):
        headers = {"Authorization": f"Bearer {secrets['admin']}"}
        assert (await client.post("/api/v1/validation/runs", json=idea, headers=headers)).status_code == 201
        for _ in range(1200):
            status = (await client.get("/api/v1/validation/RUN-TLS-1/status", headers=headers)).json()
            if status["status"] in ("DECISION_READY", "FAILED", "TIMEOUT"):
                break
            await asyncio.sleep(0.1)
        assert status["status"] == "DECISION_READY", status
        # and the orchestrator itself refuses a plaintext caller
        err = await _refused(grpc.aio.insecure_channel(settings.orchestrator_addr))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
