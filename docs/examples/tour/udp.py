"""UDP datagrams: no connection, no handshake, no close; each sendto is one
datagram that arrives whole or not at all.

A client sends two datagrams to a server, which answers each; then the client
tries the loopback network's broadcast address, which the kernel refuses until
the socket allows broadcasting (SO_BROADCAST).
"""

from typing import Any

from protocols import DatagramProtocol
from reactor import Reactor


class Upper(DatagramProtocol):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data.upper(), addr)  # the answer goes back to the sender


class Client(DatagramProtocol):
    answers = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.sendto(b"hello", server_address)
        transport.sendto(b"", server_address)  # an empty datagram is a datagram too

    def datagram_received(self, data: bytes, addr: Any) -> None:
        print("answer:", data)
        self.answers += 1
        if self.answers == 2:
            # 127.255.255.255: the broadcast address of the loopback network.
            self.transport.sendto(b"anyone?", ("127.255.255.255", server_address[1]))

    def error_received(self, exc: OSError) -> None:
        print("refused:", exc)  # EACCES: broadcasting needs SO_BROADCAST
        client.set_broadcast(True)  # the endpoint listen_udp returned, below
        self.transport.sendto(b"anyone?", ("127.255.255.255", server_address[1]))
        client.close()
        server.close()
        reactor.stop()


with Reactor(trace=True) as reactor:
    server = reactor.listen_udp(0, Upper())
    server_address = server.get_extra_info("sockname")
    client = reactor.listen_udp(0, Client())
    reactor.run()
