"""TLS over TCP: the handshake after the TCP one, and close_notify before the FIN.

The certificates come from trustme (``pip install trustme``), which makes a
throwaway certificate authority in memory: fine for a demonstration, never
for a real server.
"""

import ssl
from typing import Any

import trustme

from protocols import Protocol
from reactor import Reactor

ca = trustme.CA()
server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost").configure_cert(server_context)
client_context = ssl.create_default_context()
ca.configure_trust(client_context)


class Echo(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Client(Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # after the TLS handshake
        transport.write(b"hello\n")

    def data_received(self, data: bytes) -> None:
        print("client got", data)
        self.transport.close()  # close_notify first, then the TCP close

    def connection_lost(self, exc: BaseException | None) -> None:
        reactor.stop()


with Reactor(trace=True) as reactor:
    listener = reactor.listen_tcp(0, Echo, ssl=server_context)
    reactor.connect_tcp(
        "127.0.0.1", listener.port, Client, ssl=client_context, server_hostname="localhost"
    )
    reactor.run()
    while reactor.stats()["lingering"] or reactor.stats()["connections"]:
        reactor.run_once(5.0)
