"""TLS settings of a client: the CA that signed the server's certificate, and for mutual
TLS the client's own certificate and key.

A server started with ``--tls-cert-file``/``--tls-key-file`` speaks only TLS; with
``--tls-client-ca-file`` as well, it also requires a client certificate signed by that
CA. Each setting takes a path (``str`` or ``os.PathLike``) or the PEM text itself
(``bytes``), so certificates can come from files or from a secret store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import grpc

__all__ = ["TLS", "PEM"]

PEM = Union[bytes, str, "os.PathLike[str]"]
"""PEM data (``bytes``) or the path of a PEM file (``str``, ``os.PathLike``)."""


def _read(pem: PEM | None) -> bytes | None:
    if pem is None or isinstance(pem, bytes):
        return pem
    return Path(pem).read_bytes()


@dataclass(frozen=True)
class TLS:
    """How to reach a server over TLS.

    Attributes:
        ca: the CA certificate(s) to trust for the server's certificate; ``None``: the
            system's roots (as gRPC finds them).
        cert: the client certificate chain, for mutual TLS.
        key: the client certificate's private key, for mutual TLS.
        server_name: the name to verify in the server's certificate instead of the
            target's host (e.g. when connecting through an IP address or a tunnel).

    Example::

        Client("agentry.internal:50051", key, tls=TLS(ca="ca.pem", cert="me.pem", key="me.key"))
    """

    ca: PEM | None = None
    cert: PEM | None = None
    key: PEM | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials (files are read now)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca),
            private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Channel options these settings need (the name override)."""
        return [] if self.server_name is None else [("grpc.ssl_target_name_override", self.server_name)]
