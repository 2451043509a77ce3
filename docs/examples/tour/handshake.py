"""The three-way handshake and the four-way close, seen from both ends.

A client connects to a server in the same reactor, sends one line, gets it
back and closes first (the active close). Run it and read the trace on stderr.
"""

from typing import Any

from protocols import Protocol
from reactor import Reactor


class Echo(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Client(Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"hello\n")

    def data_received(self, data: bytes) -> None:
        print("client got", data)
        self.transport.close()  # our FIN first: the active close

    def connection_lost(self, exc: BaseException | None) -> None:
        reactor.stop()


with Reactor(trace=True) as reactor:
    listener = reactor.listen_tcp(0, Echo)
    reactor.connect_tcp("127.0.0.1", listener.port, Client)
    reactor.run()
    while reactor.stats()["lingering"] or reactor.stats()["connections"]:
        reactor.run_once(5.0)  # let the close finish: FINs both ways
