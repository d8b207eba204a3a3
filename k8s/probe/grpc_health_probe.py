"""Kubelet exec probe for an SMVM gRPC service that serves mutual TLS.

Kubernetes' native `grpc:` probe dials plaintext and presents no client certificate, so once the
mesh runs mTLS (SMVM_TLS_CERT / SMVM_TLS_KEY / SMVM_TLS_CA) every server refuses it. This probe runs
inside the container, dials the service on loopback with the process's own certificate (verifying the
server's against the CA, by SMVM_TLS_SERVER_NAME), asks grpc.health.v1 for the overall status and
exits 0 only for SERVING: NOT_SERVING (warming up, draining) and any error fail the probe.

    python /app/k8s/probe/grpc_health_probe.py SERVICE [--timeout SECONDS]

SERVICE names the process (orchestrator, simulation, ...); its port comes from SMVM_<SERVICE>_ADDR,
like the process's own. Without TLS settings it dials plaintext (the same check as the native probe).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the image's /app (smvm, generated stubs)

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from smvm.config import SERVICES, Settings  # noqa: E402
from smvm.tls import TlsFiles  # noqa: E402


def check(service: str, settings: Settings, timeout_s: float) -> tuple[bool, str]:
    """(serving, what was seen) for `service` on this host."""
    port = settings.addr(service).rsplit(":", 1)[1]
    target = f"127.0.0.1:{port}"
    tls = TlsFiles.from_settings(settings)
    if tls is not None:
        channel = grpc.secure_channel(target, tls.channel_credentials(), options=tls.channel_options())
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as err:
            return False, f"{target}: {err.code().name}: {err.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return answer.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=[s for s in SERVICES if s != "gateway"])
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline of the health call, seconds")
    args = parser.parse_args(argv)
    try:
        serving, seen = check(args.service, Settings(), args.timeout)
    except Exception as exc:  # a misconfiguration (e.g. an unreadable key) must fail the probe, loudly
        print(f"probe error: {exc}", file=sys.stderr)
        return 2
    print(seen, file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
