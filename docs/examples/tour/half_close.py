"""A half-close: the client sends its whole request and a FIN, then reads the answer.

The server's eof_received returns True: the connection stays half-open, so it
can still answer after the client's FIN, and then sends its own.
"""

from typing import Any

from protocols import Protocol
from reactor import Reactor


class Counter(Protocol):
    """Counts the bytes of a request that ends with the client's FIN."""

    size = 0

    def data_received(self, data: bytes) -> None:
        self.size += len(data)

    def eof_received(self) -> bool:
        self.transport.write(b"%d bytes\n" % self.size)  # still allowed: half-open
        self.transport.write_eof()  # our FIN: now both directions are done
        return True  # keep the connection open after the peer's FIN


class Client(Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"x" * 1000)
        transport.write_eof()  # FIN: "that is the whole request"

    def data_received(self, data: bytes) -> None:
        print("answer:", data.decode().strip())

    def eof_received(self) -> bool:
        return False  # the server's FIN: close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        reactor.stop()


with Reactor(trace=True) as reactor:
    listener = reactor.listen_tcp(0, Counter)
    reactor.connect_tcp("127.0.0.1", listener.port, Client)
    reactor.run()
    while reactor.stats()["lingering"] or reactor.stats()["connections"]:
        reactor.run_once(5.0)
