"""Certificates and peers for the TLS tests.

Certificates come from trustme (a test CA made in memory per session), never
from keys checked into the repository. The peers are small protocols that
record what happened, so a test can wait on a condition, not on time.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass, field
from typing import Any

import trustme

__all__ = ["Certs", "Recorder", "Sink", "make_certs", "sha256"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Certs:
    """A CA, a server certificate for localhost and 127.0.0.1, and contexts."""

    ca: trustme.CA
    server: trustme.LeafCert
    other_ca: trustme.CA

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def mutual_server_context(self) -> ssl.SSLContext:
        """A server that requires a client certificate from our CA."""
        ctx = self.server_context()
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.ca.configure_trust(ctx)
        return ctx

    def client_with_cert(self, *, expired: bool = False) -> ssl.SSLContext:
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            leaf = self.ca.issue_cert(
                "client.example",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            )
        else:
            leaf = self.ca.issue_cert("client.example")
        ctx = self.client_context()
        leaf.configure_cert(ctx)
        return ctx


def make_certs() -> Certs:
    ca = trustme.CA()
    return Certs(
        ca=ca, server=ca.issue_cert("localhost", "127.0.0.1", "::1"), other_ca=trustme.CA()
    )


@dataclass
class Recorder:
    """A protocol that records every hook; optionally echoes what it receives."""

    echo: bool = False
    transport: Any = None
    data: bytearray = field(default_factory=bytearray)
    made: int = 0
    eof: int = 0
    lost: list[BaseException | None] = field(default_factory=list)
    paused: int = 0
    resumed: int = 0

    def connection_made(self, transport: Any) -> None:
        self.made += 1
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.echo:
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof += 1
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


class Sink(Recorder):
    """Hashes what it receives instead of keeping it (for large transfers)."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)
