"""Mutual TLS between services with certificates generated here: a client with a certificate from
the mesh's CA is served; one without a certificate, one from another CA, and a plaintext one are
refused. (A whole run over an mTLS mesh of processes: test_secured_process_mesh.py.)"""

from __future__ import annotations

import grpc
import pytest

from smvm.channels import ClientSecurity, open_channel
from smvm.config import Settings
from smvm.errors import InvalidArgument
from smvm.server import ServerSecurity
from smvm.tls import TlsFiles
from smvm.v1 import overwatch_service_pb2 as pb, overwatch_service_pb2_grpc as pb_grpc

from services.overwatch.servicer import build_host


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
