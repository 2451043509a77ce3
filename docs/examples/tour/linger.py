"""A graceful close that lingers: the server says goodbye and closes while the
client is still talking.

Closing a socket with the peer's data unread would send RST, and a RST can
destroy the goodbye before the client reads it. So after close() the
transport sends FIN, discards what still arrives, and closes the socket only
when the client's FIN comes (or after 2 s).
"""

from typing import Any

from protocols import Protocol
from reactor import Reactor


class Bouncer(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(b"goodbye\n")
        self.transport.close()  # connection_lost follows; the socket lingers


class Chatty(Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"hi\n")

    def data_received(self, data: bytes) -> None:
        print("client got", data)
        self.transport.write(b"but wait\n")  # arrives after the server's close()

    def eof_received(self) -> bool:
        return False  # the server's FIN: we close too, and that ends its linger


with Reactor(trace=True) as reactor:
    listener = reactor.listen_tcp(0, Bouncer)
    reactor.connect_tcp("127.0.0.1", listener.port, Chatty)
    reactor.run_once(1.0)
    while reactor.stats()["lingering"] or reactor.stats()["connections"]:
        reactor.run_once(5.0)
