"""Mutual TLS between services, from PEM files (a Kubernetes Secret mounted as files).

Plaintext loopback stays the dev default: with no `SMVM_TLS_CERT` / `SMVM_TLS_KEY` / `SMVM_TLS_CA`
every server binds insecurely and every channel dials insecurely. With all three, each server
presents its certificate and *requires* a client certificate signed by the CA, and each channel
presents the same process certificate and verifies the server's against the CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from smvm.errors import InvalidArgument


@dataclass(frozen=True)
class TlsFiles:
    cert: bytes
    key: bytes
    ca: bytes
    server_name: str = ""  # verify servers' certificates against this name instead of the dialled host

    @classmethod
    def from_settings(cls, settings) -> "TlsFiles | None":
        """The files the settings name; None (plaintext) when none are named; an error when only some are."""
        paths = {"tls_cert": settings.tls_cert, "tls_key": settings.tls_key, "tls_ca": settings.tls_ca}
        named = {k: v for k, v in paths.items() if v}
        if not named:
            return None
        missing = sorted(set(paths) - set(named))
        if missing:
            raise InvalidArgument(missing[0], "mTLS needs tls_cert, tls_key and tls_ca together")
        data = {}
        for key, path in paths.items():
            try:
                data[key] = Path(path).read_bytes()
            except OSError as exc:
                raise InvalidArgument(key, f"cannot read {path}: {exc.strerror}") from None
        return cls(data["tls_cert"], data["tls_key"], data["tls_ca"], settings.tls_server_name)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)

    def channel_options(self) -> list[tuple[str, object]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
